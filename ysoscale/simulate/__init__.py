"""Simulation: priors over stellar parameters, survey models and the training store."""

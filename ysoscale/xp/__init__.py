"""Gaia XP branch: scatter-VAE latent space, populations and anomaly scores.

Modules in the order data flows: :mod:`~ysoscale.xp.normalise` (coefficients -> flux-free
shape), :mod:`~ysoscale.xp.data` (ingest-xp stores), :mod:`~ysoscale.xp.train` (the
training loop), :mod:`~ysoscale.xp.kernel` (latent, chi2/dof, anomaly on arrays),
:mod:`~ysoscale.xp.populations` (HDBSCAN), :mod:`~ysoscale.xp.baseline` (PCA),
:mod:`~ysoscale.xp.cube` (the distributed pass into a posterior cube) and
:mod:`~ysoscale.xp.plots`. The model itself is :mod:`ysoscale.nn.svae`.
"""

from ysoscale.xp.data import XPLookup, read_store
from ysoscale.xp.kernel import encode_arrays
from ysoscale.xp.normalise import NORMALISATION, XPArrays, normalise
from ysoscale.xp.populations import NO_XP, NOISE, Populations, fit_populations
from ysoscale.xp.train import XPTrainingConfig, train_svae, validation_mask

__all__ = [
    "NORMALISATION",
    "NOISE",
    "NO_XP",
    "Populations",
    "XPArrays",
    "XPLookup",
    "XPTrainingConfig",
    "encode_arrays",
    "fit_populations",
    "normalise",
    "read_store",
    "train_svae",
    "validation_mask",
]

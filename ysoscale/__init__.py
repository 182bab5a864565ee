"""ysoscale: calibrated stellar posteriors and a young-star census from multi-survey catalogs."""

__version__ = "0.1.0"

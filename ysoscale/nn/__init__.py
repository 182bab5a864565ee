"""Neural estimators: band tokenizer, set encoder, amortised posterior estimator."""

from ysoscale.nn.config import (
    ATMOSPHERIC_PARAMS,
    DEFAULT_PARAM_BOUNDS,
    PHYSICAL_PARAMS,
    EstimatorConfig,
)
from ysoscale.nn.encoder import SetEncoder
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.tokenizer import BandTokenizer

__all__ = [
    "ATMOSPHERIC_PARAMS",
    "DEFAULT_PARAM_BOUNDS",
    "PHYSICAL_PARAMS",
    "BandTokenizer",
    "EstimatorConfig",
    "PosteriorEstimator",
    "SetEncoder",
]

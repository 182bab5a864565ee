"""Neural estimators: band tokenizer, set encoder, amortised posterior estimator, simformer."""

from ysoscale.nn.config import (
    ATMOSPHERIC_PARAMS,
    DEFAULT_PARAM_BOUNDS,
    PHYSICAL_PARAMS,
    EstimatorConfig,
)
from ysoscale.nn.encoder import SetEncoder
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.nn.tokenizer import BandTokenizer

__all__ = [
    "ATMOSPHERIC_PARAMS",
    "DEFAULT_PARAM_BOUNDS",
    "PHYSICAL_PARAMS",
    "BandTokenizer",
    "EstimatorConfig",
    "PosteriorEstimator",
    "SetEncoder",
    "Simformer",
    "SimformerConfig",
]

"""Validation: calibration (coverage, SBC, TARP), accuracy against reference labels, and
the HTML report of ``ysoscale validate``."""

from ysoscale.validate.accuracy import (
    OUTLIER_THRESHOLDS,
    accuracy,
    accuracy_by_group,
    probability_below,
    survey_combinations,
)
from ysoscale.validate.calibration import (
    LEVELS,
    TarpResult,
    coverage,
    coverage_error,
    coverage_of_pit,
    coverage_tolerance,
    importance_coverage,
    importance_pit,
    pit,
    rank_bins,
    rank_histogram,
    sbc_ranks,
    tarp,
    uniform_scores,
    uniformity_pvalues,
    usable,
)
from ysoscale.validate.data import ValidationData, load, read_reference
from ysoscale.validate.report import ValidationReport, validate

__all__ = [
    "LEVELS",
    "OUTLIER_THRESHOLDS",
    "TarpResult",
    "ValidationData",
    "ValidationReport",
    "accuracy",
    "accuracy_by_group",
    "coverage",
    "coverage_error",
    "coverage_of_pit",
    "coverage_tolerance",
    "importance_coverage",
    "importance_pit",
    "load",
    "probability_below",
    "rank_bins",
    "rank_histogram",
    "pit",
    "read_reference",
    "sbc_ranks",
    "survey_combinations",
    "tarp",
    "uniform_scores",
    "uniformity_pvalues",
    "usable",
    "validate",
]

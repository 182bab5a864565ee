"""Catalogs in: survey adapters, canonical columns and row-level quality checks."""

from ysoscale.catalog.adapters import ADAPTERS, SurveyAdapter, describe_quality, to_canonical
from ysoscale.catalog.columns import (
    BASE_COLUMNS,
    SchemaError,
    bands_in,
    err_column,
    mag_column,
    validate_schema,
)
from ysoscale.catalog.quality import RowCheck, RowFlag, check_rows, describe_flags
from ysoscale.catalog.samples import SAMPLES, load_sample

__all__ = [
    "ADAPTERS",
    "BASE_COLUMNS",
    "RowCheck",
    "RowFlag",
    "SAMPLES",
    "SchemaError",
    "SurveyAdapter",
    "bands_in",
    "check_rows",
    "describe_flags",
    "describe_quality",
    "err_column",
    "load_sample",
    "mag_column",
    "to_canonical",
    "validate_schema",
]

"""Canonical catalog columns and the schema check that runs before any compute.

A canonical catalog (ARCHITECTURE.md, "Canonical names") has ``source_id``, ``ra``,
``dec`` (degrees), optionally ``parallax`` and ``parallax_error`` (mas), and for each
band id of :data:`~ysoscale.physics.passbands.BAND_IDS` it observes a pair
``{band}_mag`` / ``{band}_mag_err``. Any other column is carried through untouched, as
long as it does not *look* canonical (end in ``_mag`` or ``_mag_err``) without being so:
a misspelt band column would otherwise be ignored without a word.

:func:`validate_schema` looks only at column names and dtypes, so it runs on the
``dtypes`` of a pandas frame, a Dask/lsdb frame's ``meta`` or a parquet schema before a
single partition is read.

Examples
--------
>>> import numpy as np
>>> validate_schema({"source_id": np.int64, "ra": float, "dec": float,
...                  "gaia_g_mag": np.float32, "gaia_g_mag_err": np.float32})
('gaia_g',)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ysoscale.physics.passbands import BAND_IDS

__all__ = [
    "BASE_COLUMNS",
    "ERR_SUFFIX",
    "MAG_SUFFIX",
    "SchemaError",
    "bands_in",
    "canonical_columns",
    "err_column",
    "mag_column",
    "validate_schema",
]

BASE_COLUMNS: tuple[str, ...] = ("source_id", "ra", "dec", "parallax", "parallax_error")
"""Non-band canonical columns; ``parallax`` and ``parallax_error`` (mas) are optional."""

REQUIRED_COLUMNS: tuple[str, ...] = ("source_id", "ra", "dec")
MAG_SUFFIX = "_mag"
ERR_SUFFIX = "_mag_err"
_NUMERIC_COLUMNS = ("ra", "dec", "parallax", "parallax_error")
_KNOWN_BANDS = frozenset(BAND_IDS)


class SchemaError(ValueError):
    """A catalog's columns cannot be read as a canonical catalog.

    The message names every offending column; :attr:`columns` lists them.
    """

    def __init__(self, message: str, columns: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.columns: tuple[str, ...] = tuple(columns)


def _check_band(band: str) -> str:
    if band not in _KNOWN_BANDS:
        raise ValueError(f"unknown band id {band!r}{_suggestion(band)}")
    return band


def mag_column(band: str) -> str:
    """Name of the magnitude column of ``band``.

    Examples
    --------
    >>> mag_column("gaia_g")
    'gaia_g_mag'
    """
    return _check_band(band) + MAG_SUFFIX


def err_column(band: str) -> str:
    """Name of the magnitude-error column of ``band``.

    Examples
    --------
    >>> err_column("gaia_g")
    'gaia_g_mag_err'
    """
    return _check_band(band) + ERR_SUFFIX


def canonical_columns(bands: Iterable[str], *, parallax: bool = True) -> list[str]:
    """Canonical column names for ``bands``, in the order adapters write them.

    Examples
    --------
    >>> canonical_columns(["tmass_j"], parallax=False)
    ['source_id', 'ra', 'dec', 'tmass_j_mag', 'tmass_j_mag_err']
    """
    names = list(BASE_COLUMNS if parallax else REQUIRED_COLUMNS)
    for band in bands:
        names += [mag_column(band), err_column(band)]
    return names


def _split(column: str) -> tuple[str, str] | None:
    """``(band, kind)`` of a column that looks canonical, else None."""
    if column.endswith(ERR_SUFFIX):
        return column[: -len(ERR_SUFFIX)], "err"
    if column.endswith(MAG_SUFFIX):
        return column[: -len(MAG_SUFFIX)], "mag"
    return None


def bands_in(columns: Iterable[str]) -> tuple[str, ...]:
    """Canonical bands that have a ``{band}_mag`` column, in :data:`BAND_IDS` order.

    Examples
    --------
    >>> bands_in(["ra", "tmass_j_mag", "gaia_g_mag", "gaia_g_mag_err", "foo_mag"])
    ('gaia_g', 'tmass_j')
    """
    present = {
        column[: -len(MAG_SUFFIX)]
        for column in columns
        if isinstance(column, str) and column.endswith(MAG_SUFFIX)
    }
    return tuple(band for band in BAND_IDS if band in present)


def _suggestion(band: str) -> str:
    """A ' (did you mean ...?)' hint for an unknown band id, or ''."""
    key = band.lower()
    if key in _KNOWN_BANDS:
        return f" (did you mean {key!r}? band ids are lower case)"
    tail = [known for known in BAND_IDS if known.endswith("_" + key)]
    close = tail or difflib.get_close_matches(key, BAND_IDS, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _is_numeric(dtype: Any) -> bool:
    try:
        dtype = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def validate_schema(dtypes: Mapping[str, Any]) -> tuple[str, ...]:
    """Check that columns with these dtypes form a canonical catalog; return its bands.

    Parameters
    ----------
    dtypes : mapping of str to dtype
        Column name to numpy/pandas dtype, e.g. ``dict(frame.dtypes)``.

    Returns
    -------
    tuple of str
        The bands with a magnitude column, in :data:`BAND_IDS` order.

    Raises
    ------
    SchemaError
        Naming every problem column: a missing ``source_id``, ``ra`` or ``dec``; a
        column that ends in ``_mag``/``_mag_err`` but names no known band (with the
        nearest band ids as a hint); a magnitude without its error column or the
        reverse; ``parallax`` without ``parallax_error`` or the reverse; a band,
        position or parallax column whose dtype is not numeric (strings, objects,
        booleans).

    Examples
    --------
    >>> try:
    ...     validate_schema({"source_id": "int64", "ra": "float64", "dec": "float64",
    ...                      "gaia_G_mag": "float32", "gaia_G_mag_err": "float32"})
    ... except SchemaError as err:
    ...     print(err.columns)
    ('gaia_G_mag', 'gaia_G_mag_err')
    """
    problems: list[tuple[str, str]] = []
    names = [name for name in dtypes if isinstance(name, str)]
    present = set(names)
    for name in REQUIRED_COLUMNS:
        if name not in present:
            problems.append((name, f"required column {name!r} is missing"))
    if ("parallax" in present) != ("parallax_error" in present):
        have = "parallax" if "parallax" in present else "parallax_error"
        lack = "parallax_error" if have == "parallax" else "parallax"
        problems.append((lack, f"column {have!r} has no {lack!r} column"))

    bands: dict[str, set[str]] = {}
    for name in names:
        split = _split(name)
        if split is None:
            continue
        band, kind = split
        if band not in _KNOWN_BANDS:
            problems.append(
                (name, f"column {name!r} is not a known band column{_suggestion(band)}")
            )
            continue
        bands.setdefault(band, set()).add(kind)
    for band, kinds in bands.items():
        if kinds != {"mag", "err"}:
            have = mag_column(band) if "mag" in kinds else err_column(band)
            lack = err_column(band) if "mag" in kinds else mag_column(band)
            problems.append((lack, f"column {have!r} has no {lack!r} column"))

    numeric = [n for n in _NUMERIC_COLUMNS if n in present]
    numeric += [col(b) for b in bands for col in (mag_column, err_column) if col(b) in present]
    for name in numeric:
        if not _is_numeric(dtypes[name]):
            problems.append((name, f"column {name!r} has dtype {dtypes[name]}, not numeric"))

    if problems:
        message = "catalog schema: " + "; ".join(text for _, text in problems)
        raise SchemaError(message, [name for name, _ in problems])
    return tuple(band for band in BAND_IDS if band in bands)

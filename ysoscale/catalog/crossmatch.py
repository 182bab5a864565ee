"""Crossmatch secondary surveys to a primary catalog with lsdb, margins included.

Every secondary survey is matched to the primary (Gaia by default) with lsdb's k-d tree
crossmatch, nearest neighbour within a radius, as a *left* join: each primary row comes
out exactly once, with the columns of its nearest counterpart in each secondary survey
(null where none lies within the radius) and the distance in ``{survey}_match_arcsec``.
The right (secondary) catalog must carry a margin cache at least as wide as the radius,
so a star just across a HEALPix partition border from its counterpart is still matched.

A secondary row that no primary row took as its nearest counterpart is *unmatched*:
:func:`unmatched_rows` finds them with lsdb's outer crossmatch (which needs margins on
both sides: primary >= radius, secondary >= twice the radius), so they can be counted
and written instead of vanishing.

Secondary columns are renamed before the join so that nothing clashes
(:func:`secondary_columns`): ``ra``/``dec``/``parallax``/``parallax_error`` become
``{survey}_ra`` etc., ``source_id`` becomes ``{survey}_id`` (or is dropped when the
adapter already wrote ``{survey}_id``). Band columns carry the survey in their band id, so
the same band from two inputs is an error rather than a silent overwrite.

Examples
--------
>>> import pandas as pd, lsdb
>>> primary = lsdb.from_dataframe(
...     pd.DataFrame({"source_id": [1, 2], "ra": [10.0, 20.0], "dec": [0.0, 0.0]}),
...     catalog_name="gaia", margin_threshold=None)
>>> tmass = pd.DataFrame({"tmass_id": ["a", "b"], "ra": [10.0001, 30.0], "dec": [0.0, 0.0],
...                       "tmass_j_mag": [9.0, 8.0], "tmass_j_mag_err": [0.02, 0.03]})
>>> secondary = lsdb.from_dataframe(
...     tmass.rename(columns=secondary_columns("tmass", tmass.columns)),
...     catalog_name="tmass", ra_column="tmass_ra", dec_column="tmass_dec",
...     margin_order=3)  # a margin of order-3 pixels (~4.6 deg) around each partition
>>> matched = crossmatch_to_primary(primary, {"tmass": secondary}, radius_arcsec=1.0)
>>> frame = matched.compute(progress_bar=False)
>>> frame[["source_id", "tmass_id", "tmass_match_arcsec"]].round(2).values.tolist()
[[1, 'a', 0.36], [2, <NA>, <NA>]]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import lsdb
import pandas as pd
from hats.pixel_math.healpix_shim import margin2order

from ysoscale.catalog.columns import BASE_COLUMNS

__all__ = [
    "MATCH_SUFFIX",
    "MARGIN_ORDER_STEP",
    "count_rows",
    "crossmatch_to_primary",
    "margin_order_for",
    "secondary_columns",
    "unmatched_rows",
]

MATCH_SUFFIX = "_match_arcsec"
"""``{survey}_match_arcsec``: distance to the matched counterpart, arcsec (null: none)."""

MARGIN_ORDER_STEP = 4
"""Margin pixels are at most this many HEALPix orders finer than the finest partition.

The margin threshold alone would ask for order ~16 pixels for a 1-2 arcsec margin, and
enumerating those around every partition costs minutes; pixels a few orders finer than the
partitions hold a wider, still correct margin (a margin may hold extra rows, never fewer).
"""

_DISTANCE = "_dist_arcsec"  # lsdb's KdTreeCrossmatch extra column
_RENAMED = tuple(c for c in BASE_COLUMNS if c != "source_id")


def secondary_columns(survey: str, columns: Iterable[str]) -> dict[str, str]:
    """Renames that keep a secondary survey's columns from clashing with the primary's.

    Parameters
    ----------
    survey : str
        Survey name, the prefix of the renamed columns.
    columns : iterable of str
        The secondary frame's (canonical) columns.

    Returns
    -------
    dict
        ``{old: new}`` for ``pandas.DataFrame.rename``; a ``source_id`` that duplicates an
        existing ``{survey}_id`` maps to ``None`` (drop it).

    Examples
    --------
    >>> secondary_columns("tmass", ["source_id", "tmass_id", "ra", "dec", "tmass_j_mag"])
    {'source_id': None, 'ra': 'tmass_ra', 'dec': 'tmass_dec'}
    >>> secondary_columns("wise", ["source_id", "ra", "dec"])
    {'source_id': 'wise_id', 'ra': 'wise_ra', 'dec': 'wise_dec'}
    """
    columns = list(columns)
    renames: dict[str, str | None] = {}
    if "source_id" in columns:
        renames["source_id"] = None if f"{survey}_id" in columns else f"{survey}_id"
    renames |= {name: f"{survey}_{name}" for name in _RENAMED if name in columns}
    return renames


def margin_order_for(highest_order: int, margin_arcsec: float) -> int:
    """HEALPix order of the margin pixels for partitions down to ``highest_order``.

    At most :data:`MARGIN_ORDER_STEP` orders finer than the partitions and never so fine
    that a margin pixel is narrower than ``margin_arcsec``.

    Raises
    ------
    ValueError
        The partitions are so fine that no margin order fits; use fewer, larger
        partitions (a larger ``partition_rows``) or a smaller margin.

    Examples
    --------
    >>> margin_order_for(5, 2.0), margin_order_for(14, 2.0)
    (9, 16)
    """
    finest = int(margin2order(margin_thr_arcmin=margin_arcsec / 60.0))
    order = min(finest, int(highest_order) + MARGIN_ORDER_STEP)
    if order <= highest_order:
        raise ValueError(
            f"partitions of HEALPix order {highest_order} are too small for a "
            f"{margin_arcsec:g} arcsec margin; use a larger partition_rows"
        )
    return order


def _margin_threshold(catalog: lsdb.Catalog) -> float | None:
    if catalog.margin is None:
        return None
    return catalog.margin.hc_structure.catalog_info.margin_threshold


def _require_margin(catalog: lsdb.Catalog, survey: str, needed_arcsec: float) -> None:
    threshold = _margin_threshold(catalog)
    if threshold is None or threshold < needed_arcsec:
        raise ValueError(
            f"{survey}: a margin cache of at least {needed_arcsec:g} arcsec is needed "
            f"(have {threshold}); stars near partition borders would go unmatched"
        )


def crossmatch_to_primary(
    primary: lsdb.Catalog,
    secondaries: Mapping[str, lsdb.Catalog],
    *,
    radius_arcsec: float = 1.0,
) -> lsdb.Catalog:
    """Left-join each secondary survey's nearest counterpart onto the primary (lazy).

    Parameters
    ----------
    primary : lsdb.Catalog
        Canonical primary catalog (``source_id``, ``ra``, ``dec``, ...).
    secondaries : mapping of str to lsdb.Catalog
        Survey name to a catalog whose columns were renamed with
        :func:`secondary_columns` and which has a margin cache >= ``radius_arcsec``.
    radius_arcsec : float
        Matching radius.

    Returns
    -------
    lsdb.Catalog
        One row per primary row, in the primary's order within partitions, with each
        survey's columns and ``{survey}_match_arcsec``.

    Raises
    ------
    ValueError
        A secondary lacks a wide enough margin, or a column appears in two inputs.
    """
    if radius_arcsec <= 0:
        raise ValueError(f"radius_arcsec must be positive, got {radius_arcsec}")
    matched = primary
    for survey, secondary in secondaries.items():
        _require_margin(secondary, survey, radius_arcsec)
        clash = sorted(set(matched.columns) & set(secondary.columns))
        if clash:
            raise ValueError(f"{survey}: columns {clash} are already given by another input")
        if f"{survey}{MATCH_SUFFIX}" in secondary.columns:
            raise ValueError(f"{survey}: column {survey}{MATCH_SUFFIX} is reserved")
        matched = matched.crossmatch(
            secondary,
            n_neighbors=1,
            radius_arcsec=radius_arcsec,
            how="left",
            suffix_method="overlapping_columns",
            log_changes=False,
            output_catalog_name=primary.name,
        ).rename({_DISTANCE: f"{survey}{MATCH_SUFFIX}"})
    return matched


def _right_only(frame: pd.DataFrame, flag: str, keep: list[str]) -> pd.DataFrame:
    """Rows of an outer crossmatch with no primary side (``flag`` is a primary column)."""
    return frame.loc[frame[flag].isna(), keep]


def unmatched_rows(
    primary: lsdb.Catalog,
    secondary: lsdb.Catalog,
    survey: str,
    *,
    radius_arcsec: float = 1.0,
) -> lsdb.Catalog:
    """Secondary rows that no primary row took as its nearest counterpart (lazy).

    The same matching as :func:`crossmatch_to_primary` (nearest neighbour of each primary
    row within the radius), run as lsdb's outer crossmatch against the primary's
    positions only.

    Parameters
    ----------
    primary : lsdb.Catalog
        Primary catalog with a margin cache >= ``radius_arcsec``.
    secondary : lsdb.Catalog
        Renamed secondary catalog (:func:`secondary_columns`) with a margin cache
        >= 2 ``radius_arcsec``.
    survey : str
        Its name (the prefix of its columns).
    radius_arcsec : float
        Matching radius.

    Returns
    -------
    lsdb.Catalog
        The unmatched rows with the secondary's columns, positioned at
        ``{survey}_ra``/``{survey}_dec``.
    """
    _require_margin(primary, "primary", radius_arcsec)
    _require_margin(secondary, survey, 2 * radius_arcsec)
    info = primary.hc_structure.catalog_info
    positions = primary[[info.ra_column, info.dec_column]]
    ra, dec = f"{survey}_ra", f"{survey}_dec"
    with warnings.catch_warnings():
        # the primary's positions are all this needs; lsdb warns about dropped columns
        warnings.simplefilter("ignore", UserWarning)
        outer = positions.crossmatch(
            secondary,
            n_neighbors=1,
            radius_arcsec=radius_arcsec,
            how="outer",
            suffix_method="overlapping_columns",
            log_changes=False,
            output_catalog_name=f"{survey}_unmatched",
        )
    keep = [c for c in secondary.columns if c not in (ra, dec)] + ["_ra", "_dec"]
    meta = outer.meta[keep]
    right_only = outer.map_partitions(_right_only, info.ra_column, keep, meta=meta)
    return right_only.rename({"_ra": ra, "_dec": dec})


def count_rows(catalog: lsdb.Catalog) -> int:
    """Number of rows of a (lazy) catalog, counted partition by partition.

    Examples
    --------
    >>> import pandas as pd, lsdb
    >>> count_rows(lsdb.from_dataframe(pd.DataFrame({"ra": [1.0, 2.0], "dec": [0.0, 0.0]})))
    2
    """
    return int(catalog.to_dask_dataframe().map_partitions(len).sum().compute())

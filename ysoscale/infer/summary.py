"""The summary catalog: the input columns plus ``{param}_median/_p16/_p84``, ``flags``,
``n_bands``, ``p_young``, ``p_disk`` and ``condition_pattern`` (as in the cube; see
:mod:`ysoscale.infer.cube` for their meaning and the bit layout of ``condition_pattern``).

Written as a HATS catalog (``lsdb.open_catalog(OUT/summary)``) after every partition of
the cube is done, from the cube's ``summary`` region of each partition and the input rows:
for a HATS input through lsdb ``map_partitions`` on the same HEALPix partitions, for a
plain file through ``lsdb.from_dataframe``. Rows whose position is unusable cannot be
placed on the sky; they go to ``summary_unplaced.parquet`` beside it, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from ysoscale.catalog.quality import RowFlag
from ysoscale.infer.kernel import STATS

SUMMARY_STATS: tuple[str, ...] = ("median", "p16", "p84")
STAR_COLUMNS: dict[str, type] = {
    "flags": np.uint32,
    "n_bands": np.int16,
    "p_young": np.float32,
    "p_disk": np.float32,
    "condition_pattern": np.uint16,
}
"""Per-star cube variables copied into the summary, with their dtypes, in column order."""
UNPLACED_FILE = "summary_unplaced.parquet"


def summary_columns(params: Sequence[str]) -> list[str]:
    """Columns the summary adds to the input's.

    Examples
    --------
    >>> summary_columns(["av"])
    ['av_median', 'av_p16', 'av_p84', 'flags', 'n_bands', 'p_young', 'p_disk', \
'condition_pattern']
    """
    return [f"{p}_{s}" for p in params for s in SUMMARY_STATS] + list(STAR_COLUMNS)


def read_region(cube_path: str | Path, start: int, rows: int) -> dict[str, np.ndarray]:
    """``summary`` (rows, stat, param), ``source_id`` and the :data:`STAR_COLUMNS` of a
    region of the cube."""
    group = zarr.open_group(str(cube_path), mode="r")
    region = slice(start, start + rows)
    return {name: group[name][region] for name in ("summary", *STAR_COLUMNS, "source_id")}


def summary_frame(
    frame: pd.DataFrame,
    params: Sequence[str],
    summary: np.ndarray,
    star: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """``frame`` with the summary columns appended (same rows, order and index).

    Parameters
    ----------
    frame : pandas.DataFrame
        The input rows.
    params : sequence of str
        The cube's parameters, in the order of the last axis of ``summary``.
    summary : ndarray, shape (n, len(STATS), n_param)
        The cube's ``summary`` of the rows.
    star : mapping of str to ndarray
        One array ``(n,)`` per name of :data:`STAR_COLUMNS` (e.g. :func:`read_region`'s
        output; other keys are ignored).

    Examples
    --------
    >>> frame = pd.DataFrame({"source_id": [1, 2]})
    >>> star = {"flags": np.zeros(2), "n_bands": np.full(2, 3), "p_young": np.full(2, 0.25),
    ...         "p_disk": np.full(2, np.nan), "condition_pattern": np.array([1, 131])}
    >>> out = summary_frame(frame, ["av"], np.ones((2, 5, 1), np.float32), star)
    >>> out.columns.tolist()  # doctest: +NORMALIZE_WHITESPACE
    ['source_id', 'av_median', 'av_p16', 'av_p84', 'flags', 'n_bands', 'p_young', 'p_disk',
     'condition_pattern']
    >>> str(out["condition_pattern"].dtype), str(out["p_young"].dtype)
    ('uint16', 'float32')
    """
    columns = {}
    for j, param in enumerate(params):
        for stat in SUMMARY_STATS:
            columns[f"{param}_{stat}"] = summary[:, STATS.index(stat), j].astype(np.float32)
    for name, dtype in STAR_COLUMNS.items():
        columns[name] = np.asarray(star[name]).astype(dtype)
    added = pd.DataFrame(columns, index=frame.index)
    return pd.concat([frame, added], axis=1)


def _partition_summary(
    frame: pd.DataFrame,
    pixel,
    cube_path: str,
    regions: Mapping[tuple[int, int], tuple[int, int]],
    params: Sequence[str],
) -> pd.DataFrame:
    """lsdb ``map_partitions`` adapter: the summary rows of one HEALPix partition."""
    start, rows = regions[(pixel.order, pixel.pixel)]
    if len(frame) != rows:
        raise RuntimeError(
            f"summary of Norder={pixel.order}/Npix={pixel.pixel}: the input has {len(frame)} "
            f"rows, the cube {rows}; the input changed since the cube was written"
        )
    region = read_region(cube_path, start, rows)
    ids = frame["source_id"].to_numpy(dtype=np.int64, na_value=-1)
    if not np.array_equal(ids, region["source_id"]):
        raise RuntimeError(
            f"summary of Norder={pixel.order}/Npix={pixel.pixel}: source_id order differs "
            "from the cube's; the input changed since the cube was written"
        )
    return summary_frame(frame, params, region["summary"], region)


def write_hats_summary(
    catalog,
    cube_path: str | Path,
    regions: Mapping[tuple[int, int], tuple[int, int]],
    params: Sequence[str],
    out: str | Path,
    *,
    progress: bool = True,
) -> Path:
    """Summary of a HATS input, partition by partition, as a HATS catalog at ``out``.

    ``regions`` maps each partition's ``(order, pixel)`` to its ``(start, rows)`` in the
    cube. Runs on the current Dask client if there is one.
    """
    meta = summary_frame(
        catalog.meta,
        params,
        np.empty((0, len(STATS), len(params)), np.float32),
        {name: np.empty(0, dtype) for name, dtype in STAR_COLUMNS.items()},
    )
    result = catalog.map_partitions(
        _partition_summary, str(cube_path), dict(regions), list(params),
        meta=meta, include_pixel=True,
    )  # fmt: skip
    out = Path(out)
    result.write_catalog(
        out, catalog_name="summary", as_collection=False, overwrite=True,
        progress_bar=progress, error_if_empty=False,
    )  # fmt: skip
    return out


def write_frame_summary(
    frame: pd.DataFrame,
    cube_path: str | Path,
    starts: Sequence[int],
    rows: Sequence[int],
    params: Sequence[str],
    out: str | Path,
    *,
    progress: bool = True,
) -> tuple[Path, int]:
    """Summary of an in-memory input split into consecutive partitions, as HATS at ``out``.

    Rows flagged ``BAD_POSITION`` go to ``summary_unplaced.parquet`` beside ``out``.
    Returns the catalog path and the number of unplaced rows.
    """
    import lsdb

    parts = [read_region(cube_path, s, n) for s, n in zip(starts, rows, strict=True)]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else None
    if joined is None:
        raise ValueError("the input has no rows")
    table = summary_frame(frame.reset_index(drop=True), params, joined["summary"], joined)
    placed = (table["flags"].to_numpy() & np.uint32(RowFlag.BAD_POSITION)) == 0
    out = Path(out)
    unplaced = out.parent / UNPLACED_FILE
    if (~placed).any():
        table[~placed].to_parquet(unplaced)
    elif unplaced.exists():
        unplaced.unlink()
    catalog = lsdb.from_dataframe(
        table[placed], ra_column="ra", dec_column="dec", margin_threshold=None
    )
    catalog.write_catalog(
        out, catalog_name="summary", as_collection=False, overwrite=True,
        progress_bar=progress, error_if_empty=False,
    )  # fmt: skip
    return out, int((~placed).sum())

"""Gaia XP continuous spectra (BP/RP basis coefficients) into a zarr store keyed by source_id.

Reads the Gaia DR3 ``xp_continuous_mean_spectrum`` product in either of its published
layouts, through astropy's table readers (FITS, VOTable, ECSV, parquet):

* archive layout: array columns ``bp_coefficients``, ``bp_coefficient_errors``,
  ``rp_coefficients``, ``rp_coefficient_errors`` (55 each);
* flat layout: ``bp_coeff_0 .. bp_coeff_54``, ``e_bp_coeff_0 ..`` and the same for RP.

The store has dimensions ``(source_id, basis)``, with ``source_id`` as the index
coordinate, so ``xr.open_zarr(path).sel(source_id=ids)`` fetches the coefficients of any
stars; it is sorted by ``source_id`` and chunked along it.

Correlations: where an input carries ``bp_coefficient_correlations`` /
``rp_coefficient_correlations`` (the archive's datalink and VOTable products do; the bulk
chunk files do not), they are kept as ``(source_id, correlation)`` arrays of the 1485
off-diagonal elements in the archive's order (the lower triangle row by row, i.e.
``np.tril_indices(55, -1)``), NaN for the sources of inputs without them. The archive's
VOTables give array columns as variable-length cells; those are read too.

Examples
--------
>>> report = ingest_xp(["xp_continuous_chunk0.fits"], "xp.zarr")  # doctest: +SKIP
>>> xr.open_zarr("xp.zarr").bp_coefficients.sel(source_id=report.first_id)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

N_BASES = 55
"""Hermite basis functions per photometer in Gaia DR3."""
N_CORRELATIONS = N_BASES * (N_BASES - 1) // 2
"""Off-diagonal correlations per photometer (lower triangle, row by row)."""

BANDS = ("bp", "rp")


@dataclass(frozen=True)
class XPReport:
    """What :func:`ingest_xp` wrote."""

    path: Path
    n_sources: int
    first_id: int


def _array_column(table, name: str, width: int) -> np.ndarray:
    """(n, width) float64 values of an array column; masked elements become NaN.

    Variable-length cells (VOTable ``arraysize="*"``, read as an object column) are
    stacked row by row.
    """
    column = table[name]
    if column.dtype == object:
        rows = [np.ma.filled(np.ma.asarray(cell, dtype=np.float64), np.nan) for cell in column]
        widths = {row.shape for row in rows}
        if widths != {(width,)}:
            raise ValueError(f"column {name!r} has cells of shape {sorted(widths)}, not ({width},)")
        return np.stack(rows) if rows else np.empty((0, width))
    values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    if values.ndim != 2 or values.shape[1] != width:
        raise ValueError(f"column {name!r} has shape {values.shape}, not (n, {width})")
    return values


def _columns(table, band: str, errors: bool) -> np.ndarray:
    """(n, 55) coefficients (or errors) of ``band`` in either published layout."""
    names = set(table.colnames)
    array_name = f"{band}_coefficient_errors" if errors else f"{band}_coefficients"
    if array_name in names:
        return _array_column(table, array_name, N_BASES)
    flat = [f"{'e_' if errors else ''}{band}_coeff_{i}" for i in range(N_BASES)]
    missing = [c for c in flat if c not in names]
    if missing:
        raise ValueError(
            f"no {array_name!r} column and flat columns missing (first: {missing[0]!r}); "
            "expected the Gaia DR3 xp_continuous_mean_spectrum schema"
        )
    return np.column_stack([np.asarray(table[c], dtype=np.float64) for c in flat])


def read_xp(path: str | Path) -> xr.Dataset:
    """One file of XP coefficients as a Dataset indexed by ``source_id`` (in file order)."""
    from astropy.table import Table

    table = Table.read(str(path))
    if "source_id" not in table.colnames:
        raise ValueError(f"{path}: no 'source_id' column")
    source_id = np.asarray(table["source_id"], dtype=np.int64)
    data = {}
    for band in BANDS:
        data[f"{band}_coefficients"] = (("source_id", "basis"), _columns(table, band, False))
        data[f"{band}_coefficient_errors"] = (("source_id", "basis"), _columns(table, band, True))
        count = f"{band}_n_relevant_bases"
        if count in table.colnames:
            data[count] = ("source_id", np.ma.filled(table[count], -1).astype(np.int16))
        correlations = f"{band}_coefficient_correlations"
        if correlations in table.colnames:
            values = _array_column(table, correlations, N_CORRELATIONS).astype(np.float32)
            data[correlations] = (("source_id", "correlation"), values)
    return xr.Dataset(data, coords={"source_id": source_id, "basis": np.arange(N_BASES)})


def _with_correlations(part: xr.Dataset) -> xr.Dataset:
    """``part`` with NaN correlation arrays where its input had none (for concatenation)."""
    n = part.sizes["source_id"]
    missing = {
        f"{band}_coefficient_correlations": (
            ("source_id", "correlation"),
            np.full((n, N_CORRELATIONS), np.nan, dtype=np.float32),
        )
        for band in BANDS
        if f"{band}_coefficient_correlations" not in part
    }
    return part.assign(missing)


def ingest_xp(inputs: Sequence[str | Path], out: str | Path, *, chunk: int = 100_000) -> XPReport:
    """Read XP coefficient files and write one zarr store keyed by ``source_id``.

    Raises
    ------
    ValueError
        If a source_id occurs twice (the duplicates are named), a file lacks the
        coefficient columns, or no input is given.
    """
    if not inputs:
        raise ValueError("no XP input file given")
    parts = [read_xp(path) for path in inputs]
    if any("correlation" in part.dims for part in parts):
        parts = [_with_correlations(part) for part in parts]
    merged = xr.concat(parts, dim="source_id") if len(parts) > 1 else parts[0]
    ids = merged.source_id.values
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1]
        raise ValueError(
            f"{len(repeated)} source_id(s) occur more than once, e.g. {repeated[:5].tolist()}"
        )
    merged = merged.sortby("source_id")
    merged.attrs.update(
        {
            "title": "Gaia DR3 XP continuous mean spectra (basis coefficients)",
            "sources": [str(Path(p).name) for p in inputs],
            "units": "coefficients in e-/s (Gaia DR3 convention)",
        }
    )
    merged = merged.chunk(
        {"source_id": chunk, "basis": N_BASES}
        | ({"correlation": N_CORRELATIONS} if "correlation" in merged.dims else {})
    )
    path = Path(out)
    merged.to_zarr(path, mode="w", consolidated=True)
    return XPReport(path, int(merged.sizes["source_id"]), int(merged.source_id.values[0]))


__all__ = ["N_BASES", "N_CORRELATIONS", "XPReport", "ingest_xp", "read_xp"]

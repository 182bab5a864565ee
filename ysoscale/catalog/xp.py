"""Gaia XP continuous spectra (BP/RP basis coefficients) into a zarr store keyed by source_id.

Reads the Gaia DR3 ``xp_continuous_mean_spectrum`` product in either of its published
layouts, through astropy's table readers (FITS, VOTable, ECSV, parquet):

* archive layout: array columns ``bp_coefficients``, ``bp_coefficient_errors``,
  ``rp_coefficients``, ``rp_coefficient_errors`` (55 each);
* flat layout: ``bp_coeff_0 .. bp_coeff_54``, ``e_bp_coeff_0 ..`` and the same for RP.

The store has dimensions ``(source_id, basis)``, with ``source_id`` as the index
coordinate, so ``xr.open_zarr(path).sel(source_id=ids)`` fetches the coefficients of any
stars; it is sorted by ``source_id`` and chunked along it. Correlation matrices are not
stored (the chunk files of the archive carry none).

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

BANDS = ("bp", "rp")


@dataclass(frozen=True)
class XPReport:
    """What :func:`ingest_xp` wrote."""

    path: Path
    n_sources: int
    first_id: int


def _columns(table, band: str, errors: bool) -> np.ndarray:
    """(n, 55) coefficients (or errors) of ``band`` in either published layout."""
    names = set(table.colnames)
    array_name = f"{band}_coefficient_errors" if errors else f"{band}_coefficients"
    if array_name in names:
        values = np.asarray(table[array_name], dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != N_BASES:
            raise ValueError(f"column {array_name!r} has shape {values.shape}, not (n, {N_BASES})")
        return values
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
    return xr.Dataset(data, coords={"source_id": source_id, "basis": np.arange(N_BASES)})


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
    merged = merged.chunk({"source_id": chunk, "basis": N_BASES})
    path = Path(out)
    merged.to_zarr(path, mode="w", consolidated=True)
    return XPReport(path, int(merged.sizes["source_id"]), int(merged.source_id.values[0]))


__all__ = ["N_BASES", "XPReport", "ingest_xp", "read_xp"]

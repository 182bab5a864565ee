"""Reads PARSEC isochrones straight from the lachesis-grids file, independently of
ysoscale's own reader, for tests that check the resampled grids against the source."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def parsec_isochrones() -> Iterator[tuple[float, float, np.ndarray]]:
    """(feh, log age, rows of eep, initial mass, logT, logg, logL, logR) from the h5 file."""
    import h5py
    from lachesis_grids import grid_path

    with h5py.File(grid_path("parsec_v1.25.h5"), "r") as handle:
        cols = [str(c) for c in handle.attrs["columns"]]
        feh, ages = handle["feh_values"][:], handle["age_values"][:]
        lengths, values = handle["lengths"][:], handle["values"][:]
    take = [cols.index(c) for c in ("eep", "initial_mass", "log_Teff", "log_g", "log_L", "log_R")]
    start = 0
    for k, n in enumerate(lengths):
        if n:
            yield (
                float(feh[k // ages.size]),
                float(ages[k % ages.size]),
                values[start : start + n][:, take].astype(float),
            )
        start += n

"""A simulated store as a survey catalog: canonical columns, plus the truth beside them.

``ysoscale infer`` reads catalogs with the canonical columns of ARCHITECTURE.md. This turns
the observed part of a simulated store (noisy magnitudes, errors, parallaxes, positions;
NaN for non-detections) into exactly such a table, with the true parameters kept in
``true_{param}`` columns, so that the whole production chain can be run and checked on
stars whose answer is known (``ysoscale demo``, ``benchmarks/infer_scale.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ysoscale.catalog.columns import err_column, mag_column

TRUE_PREFIX = "true_"


def store_to_catalog(store: str | Path, n: int | None = None, *, first_id: int = 1) -> pd.DataFrame:
    """The first ``n`` stars of a training store as a canonical catalog.

    Parameters
    ----------
    store : path of a store written by :func:`ysoscale.simulate.run.simulate`
    n : number of stars (default: all)
    first_id : ``source_id`` of the first star (ids are consecutive)

    Returns
    -------
    DataFrame
        ``source_id, ra, dec, parallax, parallax_error, {band}_mag, {band}_mag_err`` and
        ``true_{param}`` for every stored parameter, ``population`` (name).

    Examples
    --------
    >>> frame = store_to_catalog("train.zarr", 1000)  # doctest: +SKIP
    >>> frame[["gaia_g_mag", "true_teff"]].head()  # doctest: +SKIP
    """
    with xr.open_zarr(store) as ds:
        rows = slice(0, ds.sizes["star"] if n is None else min(n, ds.sizes["star"]))
        part = ds.isel(star=rows)
        mag, err = part.mag.values, part.mag_err.values
        theta = part.theta.values
        columns: dict[str, np.ndarray] = {
            "source_id": np.arange(first_id, first_id + len(mag), dtype=np.int64),
            "ra": part.ra.values,
            "dec": part.dec.values,
            "parallax": part.parallax.values.astype(np.float64),
            "parallax_error": part.parallax_error.values.astype(np.float64),
        }
        for j, band in enumerate(str(b) for b in ds.band.values):
            columns[mag_column(band)] = mag[:, j].astype(np.float64)
            columns[err_column(band)] = err[:, j].astype(np.float64)
        for j, param in enumerate(str(p) for p in ds.param.values):
            columns[TRUE_PREFIX + param] = theta[:, j].astype(np.float64)
        names = np.array(json.loads(ds.attrs.get("populations", "[]")), dtype=object)
        population = part.population.values
        if len(names):
            columns["population"] = names[np.clip(population, 0, len(names) - 1)]
    return pd.DataFrame(columns)


__all__ = ["TRUE_PREFIX", "store_to_catalog"]

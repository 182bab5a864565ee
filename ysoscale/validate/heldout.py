"""Held-out simulated stars with their truths, and the survey views they are scored in.

The benchmarks of the estimators and the recalibration fit (:mod:`ysoscale.validate.
recalibrate`) read stars of a simulated store kept out of training and look at them as a
catalog with fewer surveys would: Gaia only, Gaia + parallax, Gaia + 2MASS + parallax, or
everything the model reads (:data:`CONDITION_VIEWS`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import xarray as xr

from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.train.loader import StoreLoader

CONDITION_VIEWS: dict[str, tuple[tuple[str, ...] | None, bool]] = {
    "gaia": (("gaia",), False),
    "gaia+plx": (("gaia",), True),
    "gaia+tmass+plx": (("gaia", "tmass"), True),
    "all+plx": (None, True),
}
"""The condition patterns of issue 6's Done-when: ``name: (surveys, parallax)``; ``None``
surveys keep every band of the model the star was detected in."""

HELD_OUT_FIELDS = ("theta", "mag", "mag_err", "parallax", "parallax_error", "mag_true",
                   "l_deg", "b_deg")  # fmt: skip


def held_out_stars(
    store: str | Path, bands: tuple[str, ...], params: tuple[str, ...], n: int
) -> dict[str, np.ndarray]:
    """The first ``n`` stars of ``store`` (in the loader's fixed order, every chunk) as
    observed in the store, in the order of ``bands`` and ``params``, with their truths.

    Returns
    -------
    dict of arrays: ``theta`` (n, param) truths, ``mag``, ``mag_err``, ``mag_true``
    (n, band), ``parallax``, ``parallax_error``, ``l_deg``, ``b_deg`` (n,); fewer than
    ``n`` rows when the store has fewer stars.
    """
    loader = StoreLoader(store, params, bands, split="all", batch_size=n, band_dropout=0.0,
                         survey_dropout=0.0, redraw_noise=False, with_truth=True)  # fmt: skip
    batch = next(loader.epoch(0))
    return {name: getattr(batch, name)[:n] for name in HELD_OUT_FIELDS}


def survey_view(
    data: dict[str, np.ndarray],
    bands: tuple[str, ...],
    surveys: tuple[str, ...] | None,
    parallax: bool,
) -> tuple[np.ndarray, ...]:
    """The stars of ``data`` (:func:`held_out_stars`) as a catalog of ``surveys`` (None: all
    of ``bands``), with or without the parallax, would hold them.

    Returns
    -------
    rows : (n,) bool, the stars left with at least one band
    mag, mag_err, parallax, parallax_error : those stars' columns (NaN: not in the view)

    Examples
    --------
    >>> data = {"mag": np.array([[12.0, 11.0], [np.nan, 10.0]]),
    ...         "mag_err": np.full((2, 2), 0.01), "parallax": np.array([1.0, 2.0]),
    ...         "parallax_error": np.full(2, 0.1)}
    >>> rows, mag, _, plx, _ = survey_view(data, ("gaia_g", "tmass_j"), ("gaia",), False)
    >>> rows.tolist(), mag.tolist(), bool(np.isnan(plx).all())
    ([True, False], [[12.0, nan]], True)
    """
    keep = set(bands) if surveys is None else {b for s in surveys for b in SURVEY_MODELS[s].bands}
    mask = np.array([b in keep for b in bands])
    mag = np.where(mask, data["mag"], np.nan).astype(np.float32)
    err = np.where(mask, data["mag_err"], np.nan).astype(np.float32)
    plx = data["parallax"] if parallax else np.full_like(data["parallax"], np.nan)
    rows = np.isfinite(mag).any(axis=1)
    return rows, mag[rows], err[rows], plx[rows], data["parallax_error"][rows]


def store_identity(store: str | Path) -> str:
    """A simulated store's identity: a hash of the configuration that simulated it.

    Stores are bitwise reproducible from their configuration, so two stores with the same
    identity hold the same stars and two with different ones (another seed) do not.

    Raises
    ------
    ValueError
        If ``store`` is not a zarr store or records no simulation configuration.
    """
    try:
        with xr.open_zarr(store) as ds:
            config = ds.attrs.get("config", "")
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise ValueError(f"{store} is not a simulated store ({error})") from error
    if not config:
        raise ValueError(f"{store} records no simulation config; is it a ysoscale store?")
    return hashlib.sha256(config.encode()).hexdigest()[:16]


__all__ = ["CONDITION_VIEWS", "held_out_stars", "store_identity", "survey_view"]

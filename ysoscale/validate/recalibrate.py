"""Fit an estimator's quantile recalibration on held-out simulated stars.

``ysoscale recalibrate --model DIR --data STORE`` samples the stars of a simulated store
that no training saw, through the inference kernel exactly as ``ysoscale infer`` does, in
several survey views (:data:`RECALIBRATION_VIEWS`); takes the PIT of each true parameter
under its star's samples; fits per condition pattern the maps of
:class:`~ysoscale.nn.recalibration.QuantileRecalibration`; and writes them into the model
directory, where ``ysoscale infer`` picks them up. Score the result on another store
(``benchmarks/simformer.py``): coverage measured on the stars the maps were fitted on
would be calibrated by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ysoscale.infer.kernel import infer_arrays
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.recalibration import QuantileRecalibration, smooth_pit
from ysoscale.nn.simformer import Simformer, load_estimator
from ysoscale.validate.heldout import (
    CONDITION_VIEWS,
    held_out_stars,
    store_identity,
    survey_view,
)

RECALIBRATION_VIEWS: dict[str, tuple[tuple[str, ...] | None, bool]] = {
    **CONDITION_VIEWS,
    "all": (None, False),
}
"""Survey views the maps are fitted in: those of the benchmark and every band without the
parallax, so that the common catalogs' patterns have stars of their own."""

RECALIBRATION_PLOT = "recalibration.png"
"""The figure of the maps written beside them (:func:`~ysoscale.validate.plots.
plot_recalibration`)."""

DISCRETE_PARAMS = ("has_disk",)
"""Parameters left as sampled: a 0/1 indicator has no quantiles to move."""


def recalibrated_params(params: tuple[str, ...]) -> tuple[str, ...]:
    """The parameters of ``params`` a recalibration covers (all but :data:`DISCRETE_PARAMS`).

    >>> recalibrated_params(("log10_age", "av", "has_disk"))
    ('log10_age', 'av')
    """
    return tuple(p for p in params if p not in DISCRETE_PARAMS)


def recalibration_pits(
    model: PosteriorEstimator | Simformer,
    data: Mapping[str, np.ndarray],
    *,
    views: Mapping[str, tuple[tuple[str, ...] | None, bool]] = RECALIBRATION_VIEWS,
    n_samples: int = 32,
    seed: int = 0,
    block: int = 1000,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """PITs ``(star x view, param)`` of the truths of ``data`` (:func:`~ysoscale.validate.
    heldout.held_out_stars`, in ``model``'s band and parameter order) under the kernel's
    samples, and each row's condition pattern; parameters :func:`recalibrated_params`.

    Each view samples with its own seed (``seed + view number``), keyed by the star's row.
    """
    params = recalibrated_params(model.config.params)
    columns = [model.config.params.index(p) for p in params]
    truth = np.asarray(data["theta"])[:, columns]
    jobs = []
    for number, (surveys, parallax) in enumerate(views.values()):
        rows, *arrays = survey_view(dict(data), model.config.bands, surveys, parallax)
        jobs.append((number, np.flatnonzero(rows), arrays))
    total = sum(len(keys) for _, keys, _ in jobs)
    pits, patterns = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="star", unit_scale=True, desc="recalibration samples")
    for number, keys, arrays in jobs:
        for first in range(0, len(keys), block):
            part = slice(first, first + block)
            mag, err, parallax, parallax_error = (a[part] for a in arrays)
            out = infer_arrays(model, mag, err, parallax, parallax_error,
                               np.ones(len(mag), dtype=bool), n_samples, seed + number,
                               source_id=keys[part])  # fmt: skip
            ok = out["sampled"]
            samples = out["samples"][ok][..., columns]
            pits.append(smooth_pit(samples, truth[keys[part]][ok]))
            patterns.append(out["condition_pattern"][ok])
            if bar is not None:
                bar.update(len(mag))
    if bar is not None:
        bar.close()
    if not pits:
        return np.empty((0, len(params))), np.empty(0, dtype=np.uint16)
    return np.concatenate(pits), np.concatenate(patterns)


def fit_recalibration(
    model_dir: str | Path,
    store: str | Path,
    *,
    n_stars: int = 12_000,
    n_samples: int = 32,
    seed: int = 0,
    min_stars: int = 2000,
    progress: bool = True,
    write: bool = True,
) -> QuantileRecalibration:
    """Fit the recalibration of the estimator in ``model_dir`` on the first ``n_stars``
    stars of the simulated ``store`` and (``write``) save it into ``model_dir``.

    Parameters
    ----------
    model_dir : a model directory (set-transformer or simformer)
    store : a simulated store that the model was not trained on
    n_stars : stars read from the store; each is sampled in every view of
        :data:`RECALIBRATION_VIEWS` in which it has a band
    n_samples : samples per star (those of a cube: the maps are fitted for this many)
    seed : seed of the draws
    min_stars : PITs a condition pattern needs for a map of its own
    progress : show a progress bar
    write : save ``recalibration.json`` and its figure ``recalibration.png`` into
        ``model_dir``

    Examples
    --------
    >>> recal = fit_recalibration("sf_model", "recalibration.zarr")  # doctest: +SKIP
    >>> recal.worst_shift()  # doctest: +SKIP
    0.07
    """
    model = load_estimator(model_dir).eval()
    config = model.config
    data = held_out_stars(store, config.bands, config.params, n_stars)
    if len(data["theta"]) == 0:
        raise ValueError(f"{store} has no stars to fit a recalibration on")
    pit, pattern = recalibration_pits(model, data, n_samples=n_samples, seed=seed,
                                      progress=progress)  # fmt: skip
    params = recalibrated_params(config.params)
    lo, hi = config.bounds
    bounds = {p: (lo[config.params.index(p)], hi[config.params.index(p)]) for p in params}
    fitted_on = {
        "store": str(store),
        "store_identity": store_identity(store),
        "stars": int(len(data["theta"])),
        "pits": int(len(pit)),
        "views": list(RECALIBRATION_VIEWS),
        "samples": int(n_samples),
        "seed": int(seed),
        "estimator": getattr(model, "estimator", "npe"),
    }
    recalibration = QuantileRecalibration.fit(pit, pattern, params, min_stars=min_stars,
                                              bounds=bounds, fitted_on=fitted_on)  # fmt: skip
    if write:
        recalibration.save(model_dir)
        from ysoscale.validate.plots import plot_recalibration

        plot_recalibration(recalibration).savefig(Path(model_dir) / RECALIBRATION_PLOT, dpi=110)
    return recalibration


__all__ = [
    "DISCRETE_PARAMS",
    "RECALIBRATION_PLOT",
    "RECALIBRATION_VIEWS",
    "fit_recalibration",
    "recalibrated_params",
    "recalibration_pits",
]

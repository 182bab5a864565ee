"""Accuracy of point estimates against reference labels, and the labels a star's data give.

- :func:`accuracy`: MAD, RMS, bias and outlier fraction of ``estimate - truth``.
- :func:`survey_combinations`: which surveys a star has bands in ("gaia+tmass", …), the
  grouping of every accuracy table.
- :func:`probability_below`: posterior probability that a parameter is below a threshold
  (``p_young`` = P(log10_age < 7) when the cube has no ``p_young`` of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

OUTLIER_THRESHOLDS: dict[str, float] = {
    "log10_mass": 0.2,
    "log10_age": 0.5,
    "mh": 0.4,
    "log10_distance": 0.1,
    "av": 0.5,
    "rv": 1.0,
    "teff": 500.0,
    "logg": 0.5,
    "log10_lum": 0.3,
}
"""|estimate − truth| above which a star is an outlier, in the parameter's units. Parameters
not listed (e.g. ``distance_pc``, ``radius``, whose errors scale with the value) use a
robust 3-sigma cut instead (see :func:`accuracy`)."""

ROBUST_SIGMA = 1.4826
"""MAD × this = standard deviation, for a Gaussian."""


def accuracy(
    estimate: np.ndarray, truth: np.ndarray, *, outlier_threshold: float | None = None
) -> dict[str, float]:
    """MAD, RMS, bias and outlier fraction of ``estimate - truth`` over finite pairs.

    Parameters
    ----------
    estimate, truth : 1-d arrays of one parameter (NaN pairs are left out)
    outlier_threshold : outliers have ``|error| > outlier_threshold``; without one,
        ``|error - bias| > 3 * 1.4826 * MAD`` (a robust 3-sigma cut)

    Returns
    -------
    dict
        ``n``; ``mad`` = median of ``|error - median(error)|`` (not scaled to a sigma);
        ``rms``; ``bias`` = median error; ``outlier_fraction``. NaN statistics when n = 0.

    Examples
    --------
    >>> stats = accuracy(np.array([1.0, 2.0, 3.0, 14.0]), np.array([0.0, 0.0, 0.0, 0.0]),
    ...                  outlier_threshold=5.0)
    >>> stats["mad"], stats["bias"], stats["outlier_fraction"]
    (1.0, 2.5, 0.25)
    >>> round(stats["rms"], 3)
    7.246
    """
    error = np.asarray(estimate) - np.asarray(truth)  # float32 stays float32
    if not np.issubdtype(error.dtype, np.floating):
        error = error.astype(float)
    error = error[np.isfinite(error)]
    if not len(error):
        nan = float("nan")
        return {"n": 0, "mad": nan, "rms": nan, "bias": nan, "outlier_fraction": nan}
    bias = float(np.median(error))
    mad = float(np.median(np.abs(error - bias)))
    if outlier_threshold is None:
        outliers = np.abs(error - bias) > 3.0 * ROBUST_SIGMA * mad
    else:
        outliers = np.abs(error) > outlier_threshold
    return {
        "n": len(error),
        "mad": mad,
        "rms": float(np.sqrt(np.mean(error**2))),
        "bias": bias,
        "outlier_fraction": float(outliers.mean()),
    }


def survey_combinations(
    observed: np.ndarray, band_survey: Sequence[str], order: Sequence[str] | None = None
) -> np.ndarray:
    """Per star, the surveys it has at least one band in, joined by "+" ("none" if none).

    Parameters
    ----------
    observed : (star, band) bool, the band has a usable magnitude
    band_survey : survey of each band column
    order : survey order in the labels (default: first appearance in ``band_survey``)

    Examples
    --------
    >>> observed = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=bool)
    >>> survey_combinations(observed, ["gaia", "gaia", "tmass"]).tolist()
    ['gaia', 'gaia+tmass', 'none']
    """
    observed = np.asarray(observed, dtype=bool)
    assert observed.ndim == 2 and observed.shape[1] == len(band_survey), (
        f"observed must be (star, band) with {len(band_survey)} bands, got {observed.shape}"
    )
    band_survey = list(band_survey)
    order = list(dict.fromkeys(band_survey)) if order is None else list(order)
    missing = sorted(set(band_survey) - set(order))
    assert not missing, f"surveys {missing} are not in order {order}"
    has = np.stack([observed[:, [b == s for b in band_survey]].any(axis=1) for s in order], axis=1)
    codes, inverse = np.unique(has, axis=0, return_inverse=True)
    names = np.array(["+".join(s for s, h in zip(order, row, strict=True) if h) or "none"
                      for row in codes], dtype=object)  # fmt: skip
    return names[inverse.ravel()]


def accuracy_by_group(
    estimate: np.ndarray,
    truth: np.ndarray,
    params: Sequence[str],
    groups: np.ndarray,
    *,
    thresholds: Mapping[str, float] = OUTLIER_THRESHOLDS,
) -> list[dict[str, object]]:
    """:func:`accuracy` of every parameter, for all stars and for each group.

    Parameters
    ----------
    estimate, truth : (star, param)
    params : parameter names (outlier thresholds are looked up by name)
    groups : (star,) group label of each star (e.g. :func:`survey_combinations`)

    Returns
    -------
    list of dict
        One row per (group, param): ``group`` ("all" first, then groups by size),
        ``param``, ``outlier_threshold`` (None: robust 3-sigma) and the statistics.

    Examples
    --------
    >>> rows = accuracy_by_group(np.zeros((3, 1)), np.ones((3, 1)), ["av"],
    ...                          np.array(["gaia", "gaia", "gaia+tmass"]))
    >>> [(r["group"], r["n"], r["bias"]) for r in rows]
    [('all', 3, -1.0), ('gaia', 2, -1.0), ('gaia+tmass', 1, -1.0)]
    """
    estimate, truth = np.asarray(estimate, dtype=float), np.asarray(truth, dtype=float)
    groups = np.asarray(groups)
    labels, counts = np.unique(groups, return_counts=True)
    ordered = [str(label) for label in labels[np.lexsort((labels, -counts))]]
    rows = []
    for group in ["all", *ordered]:
        keep = np.ones(len(groups), bool) if group == "all" else groups == group
        for j, param in enumerate(params):
            threshold = thresholds.get(param)
            stats = accuracy(estimate[keep, j], truth[keep, j], outlier_threshold=threshold)
            rows.append({"group": group, "param": param, "outlier_threshold": threshold,
                         **stats})  # fmt: skip
    return rows


def probability_below(samples: np.ndarray, threshold: float) -> np.ndarray:
    """Share of each star's finite samples below ``threshold`` (NaN without any).

    Parameters
    ----------
    samples : (star, sample) of one parameter

    Examples
    --------
    >>> probability_below(np.array([[6.0, 6.5, 8.0, 9.0], [np.nan] * 4]), 7.0).tolist()
    [0.5, nan]
    """
    samples = np.asarray(samples, dtype=float)
    finite = np.isfinite(samples).sum(axis=1)
    below = (samples < threshold).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite > 0, below / np.maximum(finite, 1), np.nan)


__all__ = [
    "OUTLIER_THRESHOLDS",
    "ROBUST_SIGMA",
    "accuracy",
    "accuracy_by_group",
    "probability_below",
    "survey_combinations",
]

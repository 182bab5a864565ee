"""Young-star products from posterior (predictive) samples: pure torch/numpy functions.

* :func:`p_young` — P(age < threshold | data) from samples of ``log10_age``.
* :func:`p_disk` — P(disk | data) from samples of the 0/1 ``has_disk`` parameter.
* :func:`infrared_excess` — observed minus predicted photospheric magnitude, in units of
  the predicted spread (with the observation error in quadrature); positive means the star
  is brighter than its photosphere, i.e. an excess.
* :func:`roc_auc` — area under the ROC curve of a score for a binary label (Mann-Whitney).

Every function accepts numpy arrays or torch tensors and returns the same kind.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

DEFAULT_AGE_THRESHOLD_MYR = 10.0
"""Age below which a star counts as young for :func:`p_young`."""


def _torch(value: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(value, torch.Tensor):
        return value, False
    return torch.as_tensor(np.asarray(value, dtype=np.float32)), True


def _back(value: torch.Tensor, as_numpy: bool) -> Any:
    return value.detach().cpu().numpy() if as_numpy else value


def _nan_share(
    indicator: torch.Tensor, finite: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Share (weighted, with ``weight``) of finite samples (last axis) where ``indicator``
    holds; NaN without any (or without weight)."""
    if weight is None:
        weight = torch.ones_like(indicator, dtype=torch.float64)
    weight = torch.where(finite, weight.double().nan_to_num(nan=0.0), 0.0)
    total = weight.sum(dim=-1)
    share = (torch.where(indicator, weight, 0.0).sum(dim=-1) / total.clamp(min=1e-300)).float()
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


def p_young(
    log10_age: Any, threshold_myr: float = DEFAULT_AGE_THRESHOLD_MYR, weight: Any = None
) -> Any:
    """P(age < ``threshold_myr``) per star from samples ``(..., n_samples)`` of log10(age/yr),
    or from weighted samples (``weight``, same shape, e.g. importance weights).

    Examples
    --------
    >>> p_young(np.array([[6.5, 6.9, 7.5, 8.0], [9.0, 9.1, 9.2, 9.3]]))
    array([0.5, 0. ], dtype=float32)
    >>> p_young(np.array([[6.5, 8.0]]), weight=np.array([[3.0, 1.0]]))
    array([0.75], dtype=float32)
    """
    if not threshold_myr > 0:
        raise ValueError(f"threshold_myr must be positive, got {threshold_myr}")
    samples, as_numpy = _torch(log10_age)
    weights = None if weight is None else _torch(weight)[0]
    cut = math.log10(threshold_myr * 1e6)
    return _back(_nan_share(samples < cut, torch.isfinite(samples), weights), as_numpy)


def p_disk(has_disk: Any) -> Any:
    """P(disk) per star from samples ``(..., n_samples)`` of the 0/1 disk indicator.

    A sample counts as a disk when it is above 1/2 (flow samples of a binary variable
    land near 0 or 1).

    Examples
    --------
    >>> p_disk(np.array([[0.02, 0.97, 1.01, -0.03]]))
    array([0.5], dtype=float32)
    """
    samples, as_numpy = _torch(has_disk)
    return _back(_nan_share(samples > 0.5, torch.isfinite(samples)), as_numpy)


def infrared_excess(mag: Any, mag_err: Any, predicted: Any) -> Any:
    """Excess score per band: ``(median(predicted) - mag) / sqrt(std(predicted)^2 + err^2)``.

    Parameters
    ----------
    mag, mag_err : array, shape (n, n_band)
        Observed magnitudes and errors (NaN = not observed: the score is NaN).
    predicted : array, shape (n, n_samples, n_band)
        Samples of the photospheric (disk-free) magnitude of each band.

    Returns
    -------
    array, shape (n, n_band)
        Positive where the star is brighter than its predicted photosphere, in units of
        the combined spread; about N(0, 1) for a star without excess.

    Examples
    --------
    >>> pred = np.stack([np.full((1000, 2), 10.0) + np.linspace(-0.1, 0.1, 1000)[:, None]])
    >>> score = infrared_excess(np.array([[10.0, 9.0]]), np.array([[0.05, 0.05]]), pred)
    >>> np.abs(score).round(1)  # band 1 photospheric, band 2 a magnitude too bright
    array([[ 0. , 13.1]], dtype=float32)
    """
    observed, as_numpy = _torch(mag)
    error, _ = _torch(mag_err)
    samples, _ = _torch(predicted)
    assert samples.ndim == 3 and samples.shape[0] == observed.shape[0], (
        f"predicted must be (n, n_samples, n_band), got {tuple(samples.shape)}"
    )
    centre = torch.nanmedian(samples, dim=1).values
    mean = torch.nanmean(samples, dim=1)
    spread2 = torch.nanmean((samples - mean[:, None]) ** 2, dim=1)
    score = (centre - observed) / torch.sqrt(spread2 + error.nan_to_num(0.0) ** 2).clamp(min=1e-6)
    return _back(score, as_numpy)


def roc_auc(score: Any, label: Any) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``label`` (ties count 1/2).

    NaN scores are dropped; NaN when a class is empty.

    Examples
    --------
    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    score = np.asarray(score.cpu() if isinstance(score, torch.Tensor) else score, np.float64)
    label = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label, bool)
    keep = np.isfinite(score)
    score, label = score[keep], label[keep]
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


__all__ = ["DEFAULT_AGE_THRESHOLD_MYR", "infrared_excess", "p_disk", "p_young", "roc_auc"]

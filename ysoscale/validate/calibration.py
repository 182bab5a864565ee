"""Calibration of posterior samples against known truths: coverage, SBC ranks, TARP.

Every function takes ``samples`` of shape ``(star, sample, param)`` and ``truth`` of shape
``(star, param)`` as numpy arrays and returns arrays; NaN marks a value that is missing
(a sample off the isochrones, a star without a reference label) and is left out per
parameter, never propagated.

- Coverage: share of truths inside the central credible interval of each level; for a
  calibrated posterior it equals the level (Talts et al. 2018 use the same check). It is
  computed from the truth's rank among the samples, which is exact for any number of
  samples (sample quantiles are not: see :func:`coverage`).
- SBC (simulation-based calibration, Talts et al. 2018): the rank of the truth among the
  samples is uniform on ``0..L`` for a calibrated posterior; its histogram and a chi-squared
  and a Kolmogorov-Smirnov p-value of uniformity.
- TARP (Lemos et al. 2023): for a random reference point per star, the share of samples
  closer to it than the truth; its distribution function (the expected coverage
  probability, ECP) is the diagonal exactly when the joint posterior is calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVELS = np.linspace(0.1, 0.95, 10)
"""Credible levels of the coverage check (central intervals)."""


def _floating(values: np.ndarray) -> np.ndarray:
    """``values`` as an array, keeping a floating dtype (float32 stays float32)."""
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(float)


def _check(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples, truth = _floating(samples), _floating(truth)
    assert samples.ndim == 3 and truth.ndim == 2, (
        f"samples must be (star, sample, param) and truth (star, param), got "
        f"{samples.shape} and {truth.shape}"
    )
    assert samples.shape[0] == truth.shape[0] and samples.shape[2] == truth.shape[1], (
        f"samples {samples.shape} and truth {truth.shape} disagree on stars or parameters"
    )
    return samples, truth


def usable(samples: np.ndarray, truth: np.ndarray, *, min_samples: int = 2) -> np.ndarray:
    """Stars (star, param) with a finite truth and at least ``min_samples`` finite samples.

    Examples
    --------
    >>> samples = np.array([[[1.0], [np.nan]], [[0.0], [1.0]]])
    >>> usable(samples, np.array([[0.5], [0.5]])).ravel().tolist()
    [False, True]
    """
    samples, truth = _check(samples, truth)
    return np.isfinite(truth) & (np.isfinite(samples).sum(axis=1) >= min_samples)


def coverage(
    samples: np.ndarray,
    truth: np.ndarray,
    levels: np.ndarray = LEVELS,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Empirical coverage (level, param) of central credible intervals, from ranks.

    For each star the truth's place in its posterior is the randomised probability
    integral transform ``u = (r + V) / (L + 1)``: ``r`` the number of (finite) samples
    below the truth, ties shared at random, ``V ~ U(0, 1)``, ``L`` the number of finite
    samples. The truth lies inside the central interval of level ``c`` when
    ``|u - 1/2| <= c / 2``. For a calibrated posterior ``u`` is exactly uniform whatever
    ``L`` is, so the coverage is the level up to binomial scatter.

    The interval between the sample quantiles (``np.quantile`` at ``(1 ± c) / 2``) is not:
    it covers ``c (L - 1) / (L + 1)`` of calibrated truths, 0.92 instead of 0.95 at the
    64 samples per star of a cube, which would read as overconfidence that is not there.

    A star counts for a parameter when :func:`usable`. NaN where no star is usable.

    Parameters
    ----------
    samples : (star, sample, param) posterior samples
    truth : (star, param) true values
    levels : credible levels in (0, 1)
    rng : generator of the tie-breaking and ``V`` draws (default: seed 0, so repeatable)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.normal(size=(4000, 1))
    >>> truth = mu + rng.normal(size=(4000, 1))          # truth ~ N(mu, 1)
    >>> samples = mu[:, None] + rng.normal(size=(4000, 16, 1))  # posterior N(mu, 1)
    >>> bool(np.all(np.abs(coverage(samples, truth)[:, 0] - LEVELS) < 0.03))
    True
    """
    return coverage_of_pit(pit(samples, truth, rng=rng), levels)


def pit(
    samples: np.ndarray, truth: np.ndarray, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The randomised probability integral transform ``u`` (star, param) of :func:`coverage`;
    NaN where the star is not :func:`usable` for the parameter.

    Per-star values, so that runs over different stars can be pooled
    (:func:`coverage_of_pit` of the concatenation).

    >>> u = pit(np.array([[[0.0], [1.0], [2.0]]]), np.array([[1.5]]), rng=np.random.default_rng(0))
    >>> 0.5 <= float(u[0, 0]) <= 0.75
    True
    """
    samples, truth = _check(samples, truth)
    rng = np.random.default_rng(0) if rng is None else rng
    below = (samples < truth[:, None, :]).sum(axis=1)  # NaN compares False: finite only
    ties = (samples == truth[:, None, :]).sum(axis=1)
    n_finite = np.isfinite(samples).sum(axis=1)
    u = (below + rng.random(below.shape) * (ties + 1)) / (n_finite + 1)
    return np.where(usable(samples, truth), u, np.nan)


def coverage_of_pit(u: np.ndarray, levels: np.ndarray = LEVELS) -> np.ndarray:
    """Coverage (level, param) from per-star PIT values ``u`` (star, param), NaN = unusable
    (:func:`pit`, :func:`importance_pit`).

    >>> u = np.random.default_rng(0).random((20000, 1))
    >>> bool(np.all(np.abs(coverage_of_pit(u)[:, 0] - LEVELS) < 0.02))
    True
    """
    u = np.asarray(u, dtype=float)
    return _coverage_of_pit(u, np.isfinite(u), np.asarray(levels, dtype=float))


def _coverage_of_pit(u: np.ndarray, ok: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Share (level, param) of the ``ok`` stars whose PIT ``u (star, param)`` lies in the
    central interval of each level; NaN for a parameter without an ``ok`` star."""
    n_ok = ok.sum(axis=0)
    inside = np.abs(np.nan_to_num(u) - 0.5)[None] <= levels[:, None, None] / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_ok > 0, (inside & ok[None]).sum(axis=1) / n_ok, np.nan)


def importance_coverage(
    proposal: np.ndarray,
    log_weight: np.ndarray,
    truth: np.ndarray,
    truth_log_weight: np.ndarray,
    levels: np.ndarray = LEVELS,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Coverage (level, param) of an importance-weighted posterior, from weighted ranks.

    The weighted counterpart of :func:`coverage`: with ``w_s`` the proposal weights and
    ``w*`` the weight the truth itself would get,

        u = (Σ_s w_s [theta_s < truth] + V w*) / (Σ_s w_s + w*),   V ~ U(0, 1).

    Including the truth's own weight is what makes the check exact for a finite number of
    proposals (the weighted exchangeability of Tibshirani et al. 2019): for a consistent
    weighted posterior the coverage is the level up to binomial scatter, while intervals of
    the draws resampled from a few effective samples are too narrow by about
    ``level * 2 / (ESS + 1)``. So this separates "the importance-weighted posterior is
    right" from "too few effective samples to draw intervals from".

    Parameters
    ----------
    proposal : (star, sample, param)
    log_weight : (star, sample)
        Log weights of the proposal, unnormalised (``-inf`` = zero), on the same scale as
        ``truth_log_weight`` (:func:`ysoscale.infer.importance.log_importance_weight`).
    truth : (star, param)
    truth_log_weight : (star,)
    levels, rng
        As in :func:`coverage`.

    Returns
    -------
    (level, param) array; NaN where no star has a finite truth and a positive total weight.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> truth = rng.normal(size=(4000, 1))          # posterior N(0, 1)
    >>> proposal = 2.0 * rng.normal(size=(4000, 8, 1))  # proposal N(0, 4): 8 draws
    >>> log_w = lambda x: -0.5 * x**2 + 0.5 * (x / 2.0) ** 2
    >>> cov = importance_coverage(proposal, log_w(proposal[..., 0]), truth, log_w(truth[:, 0]))
    >>> bool(np.all(np.abs(cov[:, 0] - LEVELS) < 0.035))
    True
    """
    return coverage_of_pit(importance_pit(proposal, log_weight, truth, truth_log_weight,
                                          rng=rng), levels)  # fmt: skip


def importance_pit(
    proposal: np.ndarray,
    log_weight: np.ndarray,
    truth: np.ndarray,
    truth_log_weight: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The weighted PIT ``u`` (star, param) of :func:`importance_coverage`; NaN where the
    truth is not finite or no weight is positive.

    >>> proposal = np.array([[[0.0], [1.0], [2.0]]])
    >>> u = importance_pit(proposal, np.log([[1.0, 1.0, 2.0]]), np.array([[1.5]]),
    ...                    np.array([-np.inf]))
    >>> float(u[0, 0])
    0.5
    """
    proposal, truth = _check(proposal, truth)
    log_weight = np.asarray(log_weight, dtype=float)
    truth_log_weight = np.asarray(truth_log_weight, dtype=float)
    assert log_weight.shape == proposal.shape[:2] and truth_log_weight.shape == truth.shape[:1], (
        f"log_weight must be {proposal.shape[:2]} and truth_log_weight {truth.shape[:1]}, got "
        f"{log_weight.shape} and {truth_log_weight.shape}"
    )
    rng = np.random.default_rng(0) if rng is None else rng
    log_weight = np.where(np.isfinite(log_weight), log_weight, -np.inf)
    truth_log_weight = np.where(np.isfinite(truth_log_weight), truth_log_weight, -np.inf)
    top = np.maximum(log_weight.max(axis=1), truth_log_weight)
    top = np.where(np.isfinite(top), top, 0.0)
    weight = np.exp(log_weight - top[:, None])
    weight_truth = np.exp(truth_log_weight - top)
    finite = np.isfinite(proposal)
    weight_p = np.where(finite, weight[:, :, None], 0.0)
    below = (weight_p * (np.nan_to_num(proposal) < truth[:, None, :])).sum(axis=1)
    total = weight_p.sum(axis=1) + weight_truth[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (below + rng.random(below.shape) * weight_truth[:, None]) / total
    ok = np.isfinite(truth) & (total > 0) & np.isfinite(u)
    return np.where(ok, u, np.nan)


def coverage_error(
    samples: np.ndarray, truth: np.ndarray, levels: np.ndarray = LEVELS
) -> np.ndarray:
    """Largest |empirical - nominal| :func:`coverage` over ``levels``, per parameter.

    The one-number calibration summary of the benchmarks; NaN for a parameter no star is
    usable for.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.normal(size=(4000, 1))
    >>> truth = mu + rng.normal(size=(4000, 1))
    >>> wide = mu[:, None] + 3.0 * rng.normal(size=(4000, 200, 1))  # underconfident
    >>> narrow = mu[:, None] + rng.normal(size=(4000, 200, 1))  # calibrated
    >>> bool(coverage_error(wide, truth)[0] > 0.2), bool(coverage_error(narrow, truth)[0] < 0.03)
    (True, True)
    """
    levels = np.asarray(levels, dtype=float)
    return np.max(np.abs(coverage(samples, truth, levels) - levels[:, None]), axis=0)


def coverage_tolerance(level: np.ndarray, n: int | np.ndarray, k: float = 2.0) -> np.ndarray:
    """Half-width ``k * sqrt(p (1 - p) / n)`` of the binomial scatter of a coverage.

    Examples
    --------
    >>> round(float(coverage_tolerance(0.5, 400)), 3)
    0.05
    """
    level = np.asarray(level, dtype=float)
    return k * np.sqrt(level * (1.0 - level) / np.maximum(n, 1))


def sbc_ranks(
    samples: np.ndarray, truth: np.ndarray, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Rank of the truth among the samples, ``0..L`` (int, star × param); -1 where unusable.

    A star is usable for a parameter when its truth and all ``L`` samples are finite (the
    rank of a shorter sample set is on another scale). Ties with the truth are broken at
    random, as SBC requires for discrete posteriors.

    Examples
    --------
    >>> samples = np.array([[[0.0], [1.0], [2.0]], [[0.0], [np.nan], [2.0]]])
    >>> sbc_ranks(samples, np.array([[1.5], [1.5]])).ravel().tolist()
    [2, -1]
    """
    samples, truth = _check(samples, truth)
    rng = np.random.default_rng(0) if rng is None else rng
    below = (samples < truth[:, None, :]).sum(axis=1)
    ties = (samples == truth[:, None, :]).sum(axis=1)
    ranks = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(np.int64)
    ok = np.isfinite(samples).all(axis=1) & np.isfinite(truth)
    return np.where(ok, ranks, -1)


def rank_bins(n_samples: int, max_bins: int = 20) -> np.ndarray:
    """Edges (integers, ``0..L+1``) of the rank histogram of ``L = n_samples`` samples.

    Equal-width bins when ``L + 1`` has a divisor between 5 and ``max_bins``; otherwise
    ``min(max_bins, L + 1)`` bins whose widths differ by at most one rank (their expected
    counts are then computed exactly, see :func:`rank_histogram`).

    Examples
    --------
    >>> rank_bins(64).tolist()[:3], len(rank_bins(64)) - 1
    ([0, 5, 10], 13)
    """
    size = n_samples + 1
    divisors = [b for b in range(5, min(max_bins, size) + 1) if size % b == 0]
    n_bins = max(divisors) if divisors else min(max_bins, size)
    return np.round(np.linspace(0, size, n_bins + 1)).astype(np.int64)


def rank_histogram(
    ranks: np.ndarray, n_samples: int, edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts and expected counts (uniform ranks) per bin of one parameter's ranks.

    Parameters
    ----------
    ranks : ranks of one parameter, ``-1`` (unusable) ignored
    n_samples : ``L``, the number of samples the ranks were taken among
    edges : integer bin edges; default :func:`rank_bins`

    Returns
    -------
    counts, expected, edges

    Examples
    --------
    >>> counts, expected, edges = rank_histogram(np.arange(65), 64)
    >>> counts.tolist() == expected.tolist() == [5.0] * 13
    True
    """
    ranks = np.asarray(ranks)
    ranks = ranks[ranks >= 0]
    edges = rank_bins(n_samples) if edges is None else np.asarray(edges)
    counts = np.histogram(ranks, bins=edges - 0.5)[0].astype(float)
    expected = len(ranks) * np.diff(edges) / (n_samples + 1)
    return counts, expected, edges


def uniform_scores(
    ranks: np.ndarray, n_samples: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``(r + V) / (L + 1)`` with ``V ~ U(0, 1)``: exactly U(0, 1) when ``r`` is uniform on
    ``0..L`` (continuous scores for a Kolmogorov-Smirnov test).

    Examples
    --------
    >>> u = uniform_scores(np.array([0, 64]), 64)
    >>> bool(u[0] < 1 / 65 <= 64 / 65 <= u[1] < 1)
    True
    """
    rng = np.random.default_rng(1) if rng is None else rng
    ranks = np.asarray(ranks, dtype=float)
    return (ranks + rng.random(ranks.shape)) / (n_samples + 1)


def uniformity_pvalues(
    ranks: np.ndarray, n_samples: int, *, rng: np.random.Generator | None = None
) -> dict[str, float | int]:
    """Chi-squared (binned) and Kolmogorov-Smirnov p-values that ranks are uniform.

    Returns ``chi2`` and ``ks`` (p-values; small means miscalibrated, NaN when fewer than
    10 ranks are usable) and ``n`` (usable ranks).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> p = uniformity_pvalues(rng.integers(0, 65, 5000), 64)
    >>> p["chi2"] > 0.001 and p["ks"] > 0.001
    True
    >>> uniformity_pvalues(np.full(5000, 32), 64)["ks"] < 1e-6
    True
    """
    ranks = np.asarray(ranks)
    ranks = ranks[ranks >= 0]
    if len(ranks) < 10:
        return {"chi2": float("nan"), "ks": float("nan"), "n": len(ranks)}
    counts, expected, _ = rank_histogram(ranks, n_samples)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    p_chi2 = float(stats.chi2.sf(chi2, df=len(counts) - 1))
    p_ks = float(stats.kstest(uniform_scores(ranks, n_samples, rng), "uniform").pvalue)
    return {"chi2": p_chi2, "ks": p_ks, "n": len(ranks)}


@dataclass(frozen=True)
class TarpResult:
    """Expected coverage probability of TARP.

    Attributes
    ----------
    alpha : credibility levels, ``0..1``
    ecp : expected coverage probability at each ``alpha``
    scores : per star, the share of samples closer to the reference than the truth,
        continuous (:func:`uniform_scores`); uniform on (0, 1) when calibrated
    n : stars used
    ks_pvalue : Kolmogorov-Smirnov p-value that ``scores`` are uniform
    """

    alpha: np.ndarray
    ecp: np.ndarray
    scores: np.ndarray
    n: int
    ks_pvalue: float

    @property
    def max_deviation(self) -> float:
        """Largest ``|ECP - alpha|``."""
        return float(np.max(np.abs(self.ecp - self.alpha))) if self.n else float("nan")


def tarp(
    samples: np.ndarray,
    truth: np.ndarray,
    *,
    n_alpha: int = 50,
    references: np.ndarray | None = None,
    seed: int = 0,
) -> TarpResult:
    """TARP coverage (Lemos et al. 2023) of the joint posterior over all parameters.

    Parameters are scaled to ``[0, 1]`` by the range of the truths; each star gets a
    reference point drawn uniformly from that box (or ``references``, already scaled), and
    Euclidean distances to it rank the truth among the samples. Stars with any non-finite
    truth or sample are left out.

    Parameters
    ----------
    samples : (star, sample, param)
    truth : (star, param)
    n_alpha : number of steps of the ``alpha`` grid
    references : (star, param) reference points in the scaled space; default random
    seed : seed of the reference points and of the tie-breaking noise

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.normal(size=(3000, 2))
    >>> truth = mu + rng.normal(size=(3000, 2))
    >>> good = tarp(mu[:, None] + rng.normal(size=(3000, 100, 2)), truth)
    >>> narrow = tarp(mu[:, None] + 0.3 * rng.normal(size=(3000, 100, 2)), truth)
    >>> good.max_deviation < 0.05 < narrow.max_deviation
    True
    """
    samples, truth = _check(samples, truth)
    rng = np.random.default_rng(seed)
    ok = np.isfinite(samples).all(axis=(1, 2)) & np.isfinite(truth).all(axis=1)
    samples, truth = samples[ok], truth[ok]
    alpha = np.linspace(0.0, 1.0, n_alpha + 1)
    if not len(truth):
        return TarpResult(alpha, np.full_like(alpha, np.nan), np.empty(0), 0, float("nan"))
    lo, hi = truth.min(axis=0), truth.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    samples, truth = (samples - lo) / scale, (truth - lo) / scale
    if references is None:
        references = rng.random(truth.shape)
    else:
        references = np.asarray(references, dtype=float)[ok]
    sample_distance = np.linalg.norm(samples - references[:, None, :], axis=2)
    truth_distance = np.linalg.norm(truth - references, axis=1)
    closer = (sample_distance < truth_distance[:, None]).sum(axis=1)
    scores = uniform_scores(closer, samples.shape[1], rng)
    ecp = (scores[None, :] < alpha[:, None]).mean(axis=1)
    p_value = float(stats.kstest(scores, "uniform").pvalue)
    return TarpResult(alpha, ecp, scores, len(scores), p_value)


__all__ = [
    "LEVELS",
    "TarpResult",
    "coverage",
    "coverage_tolerance",
    "rank_bins",
    "rank_histogram",
    "sbc_ranks",
    "tarp",
    "uniform_scores",
    "uniformity_pvalues",
    "usable",
]

"""Coverage, SBC and TARP on Gaussian toy posteriors whose calibration is known.

Tolerances follow from the sample size: an empirical coverage of n stars scatters by
sqrt(p (1 - p) / n) around its expectation, the level itself (rank-based coverage is exact
for any number L of samples per star; sample-quantile intervals would cover only
level × (L - 1) / (L + 1)).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.validate import PARAMS, toy_posteriors
from ysoscale.validate import (
    LEVELS,
    coverage,
    coverage_tolerance,
    importance_coverage,
    rank_bins,
    rank_histogram,
    sbc_ranks,
    tarp,
    uniformity_pvalues,
    usable,
)

N, L = 3000, 100
K = 4.0  # sigmas: 60 comparisons per test, so a 4-sigma band essentially never fails by chance


@pytest.fixture(scope="module")
def calibrated():
    return toy_posteriors(N, L, seed=11)


@pytest.fixture(scope="module")
def overconfident():
    return toy_posteriors(N, L, seed=12, scale=0.5)


def test_calibrated_coverage_is_within_binomial_scatter(calibrated):
    samples, truth = calibrated
    cov = coverage(samples, truth)
    assert cov.shape == (len(LEVELS), len(PARAMS))
    tolerance = coverage_tolerance(LEVELS, N, k=K)
    assert np.all(np.abs(cov - LEVELS[:, None]) < tolerance[:, None]), cov - LEVELS[:, None]


def test_coverage_from_few_samples_has_no_finite_sample_bias():
    """With 9 samples per star the sample-quantile interval of level 0.95 covers only
    0.95 × 8 / 10 = 0.76 of calibrated truths; the rank-based coverage stays at the level."""
    n, few = 20_000, 9
    samples, truth = toy_posteriors(n, few, seed=13)
    cov = coverage(samples, truth)
    tolerance = coverage_tolerance(LEVELS, n, k=K)
    assert np.all(np.abs(cov - LEVELS[:, None]) < tolerance[:, None]), cov - LEVELS[:, None]
    lo = np.quantile(samples, 0.5 - LEVELS[-1] / 2, axis=1)
    hi = np.quantile(samples, 0.5 + LEVELS[-1] / 2, axis=1)
    quantile_interval = ((truth >= lo) & (truth <= hi)).mean(axis=0)
    assert np.all(LEVELS[-1] - quantile_interval > 0.15)


def test_overconfident_coverage_is_detected(overconfident):
    samples, truth = overconfident
    cov = coverage(samples, truth)
    tolerance = coverage_tolerance(LEVELS, N, k=K)
    # half-width posteriors: a central interval of level c covers P(|z| < z_c / 2)
    assert np.all(cov < (LEVELS - tolerance)[:, None])
    assert np.all(LEVELS[4] - cov[4] > 0.15)


def test_coverage_is_repeatable_and_counts_ties_fairly():
    samples, truth = toy_posteriors(500, 20, seed=14)
    first = coverage(samples, truth)
    np.testing.assert_array_equal(first, coverage(samples, truth))
    # a posterior that is a point mass at the truth: every rank is a tie, u ~ U(0, 1)
    point = np.repeat(truth[:, None, :], 20, axis=1)
    cov = coverage(np.tile(point, (10, 1, 1)), np.tile(truth, (10, 1)))
    tolerance = coverage_tolerance(LEVELS, 5000, k=K)
    assert np.all(np.abs(cov - LEVELS[:, None]) < tolerance[:, None])


def test_coverage_with_missing_values_uses_the_finite_samples(calibrated):
    samples, truth = calibrated[0][:120, :40].copy(), calibrated[1][:120].copy()
    rng = np.random.default_rng(3)
    samples[rng.random(samples.shape) < 0.2] = np.nan
    samples[:5, :, 0] = np.nan  # stars with no finite sample of a parameter
    truth[5:10, 1] = np.nan  # stars without a label
    cov = coverage(samples, truth, rng=np.random.default_rng(4))
    ok = usable(samples, truth)
    assert ok[:5, 0].sum() == 0 and ok[5:10, 1].sum() == 0 and ok[10:].all()
    draws = np.random.default_rng(4).random(truth.shape)  # the same V as coverage drew
    for j in range(len(PARAMS)):
        rows = np.flatnonzero(ok[:, j])
        u = np.empty(len(rows))
        for k, star in enumerate(rows):
            finite = samples[star, :, j][np.isfinite(samples[star, :, j])]
            u[k] = ((finite < truth[star, j]).sum() + draws[star, j]) / (len(finite) + 1)
        for i, level in enumerate(LEVELS):
            inside = np.abs(u - 0.5) <= level / 2
            assert cov[i, j] == pytest.approx(inside.mean(), abs=1e-12)
    nothing = coverage(np.full((3, 4, 1), np.nan), np.zeros((3, 1)))
    assert np.isnan(nothing).all()


def _weighted_toy(n: int, n_proposal: int, seed: int):
    """Posterior N(mu, 1) per star, truth drawn from it; proposal N(mu + 0.5, 2²) with
    weights p/q (unnormalised log weights)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, 1))
    truth = mu + rng.normal(size=(n, 1))
    proposal = mu[:, None] + 0.5 + 2.0 * rng.normal(size=(n, n_proposal, 1))

    def log_weight(x, centre):
        return -0.5 * (x - centre) ** 2 + 0.5 * ((x - centre - 0.5) / 2.0) ** 2

    return proposal, log_weight(proposal[..., 0], mu), truth, log_weight(truth[:, 0], mu[:, 0])


def test_importance_coverage_is_exact_with_few_proposals():
    """8 weighted proposals: with the truth's own weight the coverage is the level; the
    weighted CDF of the proposals alone (truth weight zero) is too narrow."""
    n = 20_000
    proposal, log_w, truth, truth_log_w = _weighted_toy(n, 8, seed=21)
    cov = importance_coverage(proposal, log_w, truth, truth_log_w)
    tolerance = coverage_tolerance(LEVELS, n, k=K)
    assert np.all(np.abs(cov[:, 0] - LEVELS) < tolerance), cov[:, 0] - LEVELS
    without = importance_coverage(proposal, log_w, truth, np.full(n, -np.inf))
    assert LEVELS[-1] - without[-1, 0] > 0.1


def test_importance_coverage_detects_wrong_weights():
    """Equal weights on the wide proposal: the 'posterior' is twice too wide."""
    n = 5000
    proposal, log_w, truth, truth_log_w = _weighted_toy(n, 64, seed=22)
    cov = importance_coverage(proposal, np.zeros_like(log_w), truth, np.zeros(n))
    assert cov[4, 0] - LEVELS[4] > 0.2


def test_importance_coverage_skips_stars_without_weight():
    proposal, log_w, truth, truth_log_w = _weighted_toy(300, 16, seed=23)
    log_w[:10] = -np.inf
    truth_log_w[:10] = -np.inf
    truth[10:20] = np.nan
    cov = importance_coverage(proposal, log_w, truth, truth_log_w)
    expected = importance_coverage(proposal[20:], log_w[20:], truth[20:], truth_log_w[20:],
                                   rng=np.random.default_rng(0))  # fmt: skip
    assert np.isfinite(cov).all() and cov.shape == (len(LEVELS), 1)
    assert np.abs(cov - expected).max() < 0.05  # the same stars, different V draws
    assert np.isnan(importance_coverage(proposal[:10], log_w[:10], truth[:10],
                                        truth_log_w[:10])).all()  # fmt: skip


def test_calibrated_sbc_ranks_are_uniform(calibrated):
    samples, truth = calibrated
    ranks = sbc_ranks(samples, truth, rng=np.random.default_rng(0))
    assert ranks.shape == truth.shape and ranks.min() >= 0 and ranks.max() <= L
    for j in range(len(PARAMS)):
        counts, expected, _ = rank_histogram(ranks[:, j], L)
        assert counts.sum() == N and expected.sum() == pytest.approx(N)
        assert np.all(np.abs(counts - expected) < K * np.sqrt(expected))
        p = uniformity_pvalues(ranks[:, j], L, rng=np.random.default_rng(j))
        assert p["n"] == N and p["chi2"] > 1e-3 and p["ks"] > 1e-3, p


@pytest.mark.parametrize("kind", ["overconfident", "biased", "too wide"])
def test_miscalibrated_sbc_ranks_are_rejected(kind):
    scale = {"overconfident": 0.5, "biased": 1.0, "too wide": 2.0}[kind]
    samples, truth = toy_posteriors(N, L, seed=13, scale=scale)
    if kind == "biased":
        samples = samples + 0.5 * np.array([0.1, 0.4, 0.15, 0.3, 250.0, 0.15])
    ranks = sbc_ranks(samples, truth)
    for j in range(len(PARAMS)):
        p = uniformity_pvalues(ranks[:, j], L)
        assert p["chi2"] < 1e-6 and p["ks"] < 1e-6, (kind, PARAMS[j], p)
    counts, expected, _ = rank_histogram(ranks[:, 0], L)
    if kind == "overconfident":  # truths fall outside the samples: a U shape
        assert counts[0] > 2 * expected[0] and counts[-1] > 2 * expected[-1]


def test_rank_bins_and_unusable_ranks():
    assert rank_bins(63).tolist() == list(range(0, 65, 4))  # 64 ranks, 16 bins
    edges = rank_bins(100)  # 101 ranks (prime): 20 bins of 5 or 6 ranks
    assert len(edges) == 21 and edges[-1] == 101 and set(np.diff(edges)) <= {5, 6}
    counts, expected, _ = rank_histogram(np.arange(101), 100, edges)
    np.testing.assert_allclose(counts, expected)
    samples = np.zeros((3, 4, 1))
    samples[1, 2, 0] = np.nan
    ranks = sbc_ranks(samples, np.array([[1.0], [1.0], [np.nan]]))
    assert ranks.ravel().tolist() == [4, -1, -1]
    assert np.isnan(uniformity_pvalues(ranks[:, 0], 4)["ks"])


def test_ties_are_broken_at_random():
    samples = np.zeros((4000, 9, 1))  # every sample equals the truth
    ranks = sbc_ranks(samples, np.zeros((4000, 1)), rng=np.random.default_rng(0))
    assert uniformity_pvalues(ranks[:, 0], 9)["chi2"] > 1e-3


def test_calibrated_tarp_follows_the_diagonal(calibrated):
    samples, truth = calibrated
    result = tarp(samples, truth, seed=1)
    assert result.n == N and result.alpha[0] == 0.0 and result.alpha[-1] == 1.0
    # sup |ECDF - CDF| of n uniform scores: Kolmogorov, P(> 2 / sqrt(n)) < 1e-3
    assert result.max_deviation < 2.0 / np.sqrt(N)
    assert result.ks_pvalue > 1e-3


def test_overconfident_tarp_is_detected(overconfident):
    samples, truth = overconfident
    result = tarp(samples, truth, seed=1)
    assert result.max_deviation > 0.1 and result.ks_pvalue < 1e-6


def test_tarp_leaves_out_incomplete_stars(calibrated):
    samples, truth = (a[:200].copy() for a in calibrated)
    samples[:10, 0, 2] = np.nan
    truth[10:15, 0] = np.nan
    result = tarp(samples, truth)
    assert result.n == 185 and len(result.scores) == 185
    empty = tarp(samples[:10], truth[:10])
    assert empty.n == 0 and np.isnan(empty.max_deviation)

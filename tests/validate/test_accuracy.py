"""MAD, RMS, bias and outliers on known arrays; survey combinations; P(below)."""

from __future__ import annotations

import numpy as np
import pytest

from ysoscale.validate import (
    accuracy,
    accuracy_by_group,
    probability_below,
    survey_combinations,
)


def test_accuracy_of_known_errors():
    truth = np.array([10.0, 10.0, 10.0, 10.0, 10.0, np.nan])
    estimate = np.array([9.0, 10.0, 11.0, 12.0, 30.0, 10.0])  # errors -1 0 1 2 20 (+ a NaN pair)
    stats = accuracy(estimate, truth, outlier_threshold=5.0)
    assert stats["n"] == 5
    assert stats["bias"] == 1.0  # median error
    assert stats["mad"] == 1.0  # median of |e - 1| = 2 1 0 1 19
    assert stats["rms"] == pytest.approx(np.sqrt((1 + 0 + 1 + 4 + 400) / 5))
    assert stats["outlier_fraction"] == pytest.approx(0.2)
    robust = accuracy(estimate, truth)  # 3 x 1.4826 x MAD = 4.45 around the bias
    assert robust["outlier_fraction"] == pytest.approx(0.2)
    empty = accuracy(np.array([np.nan]), np.array([1.0]))
    assert empty["n"] == 0 and np.isnan(empty["mad"])


def test_accuracy_of_gaussian_errors_matches_theory():
    """MAD = 0.6745 sigma, RMS = sqrt(sigma² + bias²), within their sampling scatter."""
    n, sigma, bias = 40_000, 2.0, 0.3
    truth = np.random.default_rng(4).uniform(0, 10, n)
    estimate = truth + bias + sigma * np.random.default_rng(5).standard_normal(n)
    stats = accuracy(estimate, truth)
    # standard errors: median 1.2533 sigma / sqrt(n); MAD about 1.17 sigma / sqrt(n)
    assert abs(stats["bias"] - bias) < 4 * 1.2533 * sigma / np.sqrt(n)
    assert abs(stats["mad"] - 0.67449 * sigma) < 4 * 1.17 * sigma / np.sqrt(n)
    assert abs(stats["rms"] - np.hypot(sigma, bias)) < 4 * sigma / np.sqrt(2 * n)
    # robust 3-sigma cut: 0.27% of a Gaussian
    assert abs(stats["outlier_fraction"] - 0.0027) < 4 * np.sqrt(0.0027 / n)


def test_accuracy_keeps_float32_arithmetic():
    """As the calibration benchmark always computed it (its printed numbers are unchanged)."""
    rng = np.random.default_rng(0)
    estimate = rng.normal(size=999).astype(np.float32)
    truth = rng.normal(size=999).astype(np.float32)
    error = estimate - truth
    stats = accuracy(estimate, truth)
    assert stats["mad"] == float(np.median(np.abs(error - np.median(error))))
    assert stats["rms"] == float(np.sqrt(np.mean(error**2)))
    assert stats["bias"] == float(np.median(error))


def test_survey_combinations():
    bands = ["gaia", "gaia", "tmass", "wise"]
    observed = np.array(
        [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=bool
    )
    labels = survey_combinations(observed, bands, ["gaia", "tmass", "wise", "ps1"])
    assert labels.tolist() == ["gaia", "gaia+tmass", "gaia+tmass+wise", "none", "wise"]
    with pytest.raises(AssertionError, match="not in order"):
        survey_combinations(observed, bands, ["gaia"])


def test_accuracy_by_group_rows():
    groups = np.array(["gaia+tmass", "gaia", "gaia", "gaia+tmass", "gaia"])
    truth = np.zeros((5, 2))
    estimate = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50]], dtype=float)
    rows = accuracy_by_group(estimate, truth, ["av", "unknown"], groups)
    assert [(r["group"], r["param"]) for r in rows] == [
        ("all", "av"), ("all", "unknown"), ("gaia", "av"), ("gaia", "unknown"),
        ("gaia+tmass", "av"), ("gaia+tmass", "unknown"),
    ]  # fmt: skip
    gaia_av = rows[2]
    assert gaia_av["n"] == 3 and gaia_av["bias"] == 3.0 and gaia_av["outlier_threshold"] == 0.5
    assert gaia_av["outlier_fraction"] == 1.0  # errors 2, 3, 5 all above 0.5 mag
    assert rows[3]["outlier_threshold"] is None  # no threshold: robust 3-sigma


def test_probability_below():
    samples = np.array([[6.0, 6.5, 7.5, 8.0], [9.0, 9.0, np.nan, np.nan], [np.nan] * 4])
    p = probability_below(samples, 7.0)
    assert p[:2].tolist() == [0.5, 0.0] and np.isnan(p[2])

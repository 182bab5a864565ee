"""Quantile recalibration (``ysoscale.nn.recalibration``) on Gaussian posteriors whose
calibration is known: a too-narrow, shifted posterior and a too-wide one are recalibrated
out of sample to within the binomial scatter of the fit and test sets; a calibrated one is
left about as it is; ranks, NaN samples, bounds and the pattern fallback are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ysoscale.nn.recalibration import (
    ALL_PATTERNS,
    RECALIBRATION_FILE,
    QuantileRecalibration,
    _SampleQuantiles,
    smooth_pit,
)
from ysoscale.validate.calibration import LEVELS, coverage

N_FIT, N_TEST, N_SAMPLES = 8000, 20000, 32
# 3-sigma scatter of a quantile of the fit set plus that of a coverage of the test set
TOLERANCE = 3 * np.sqrt(0.25 / N_FIT) + 3 * np.sqrt(0.25 / N_TEST)


def gaussian_problem(rng, n: int, width: float, shift: float):
    """Truths ``mu + N(0, 1)`` and an estimator's samples ``mu + shift + width N(0, 1)``
    (calibrated for width 1, shift 0)."""
    mu = rng.normal(size=(n, 1))
    truth = mu + rng.normal(size=(n, 1))
    samples = mu[:, None] + shift + width * rng.normal(size=(n, N_SAMPLES, 1))
    return samples, truth


def worst_error(samples: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(coverage(samples, truth)[:, 0] - LEVELS).max())


def fitted(rng, width: float, shift: float, pattern: int = 1) -> QuantileRecalibration:
    samples, truth = gaussian_problem(rng, N_FIT, width, shift)
    pattern_of = np.full(N_FIT, pattern)
    return QuantileRecalibration.fit(smooth_pit(samples, truth), pattern_of, ("x",))


@pytest.mark.parametrize("width, shift", [(0.6, 0.3), (1.5, 0.0)])
def test_a_miscalibrated_posterior_is_recalibrated_out_of_sample(width, shift) -> None:
    rng = np.random.default_rng(0)
    recalibration = fitted(rng, width, shift)
    samples, truth = gaussian_problem(rng, N_TEST, width, shift)
    assert worst_error(samples, truth) > 0.1  # the problem is really miscalibrated
    moved = recalibration.apply(samples, np.ones(N_TEST, dtype=int), ("x",))
    assert worst_error(moved, truth) < TOLERANCE


def test_a_calibrated_posterior_is_left_about_as_it_is() -> None:
    rng = np.random.default_rng(1)
    recalibration = fitted(rng, 1.0, 0.0)
    assert recalibration.worst_shift() < 4 * np.sqrt(0.25 / N_FIT)
    samples, truth = gaussian_problem(rng, N_TEST, 1.0, 0.0)
    moved = recalibration.apply(samples, np.ones(N_TEST, dtype=int), ("x",))
    assert worst_error(moved, truth) < TOLERANCE
    assert np.median(np.abs(moved - samples)) < 0.05


def test_each_pattern_gets_its_own_map_and_a_rare_one_the_pooled_map() -> None:
    rng = np.random.default_rng(2)
    narrow, n_narrow = gaussian_problem(rng, N_FIT, 0.6, 0.0)
    wide, n_wide = gaussian_problem(rng, N_FIT, 1.5, 0.0)
    pit = smooth_pit(np.concatenate([narrow, wide]), np.concatenate([n_narrow, n_wide]))
    pattern = np.r_[np.full(N_FIT, 129), np.full(N_FIT, 135)]
    pattern[:10] = 7  # too few stars for a map of its own
    recalibration = QuantileRecalibration.fit(pit, pattern, ("x",), min_stars=2000)
    assert sorted(recalibration.pit_quantiles) == [ALL_PATTERNS, 129, 135]
    np.testing.assert_array_equal(recalibration.level_knots(7),
                                  recalibration.level_knots(ALL_PATTERNS))  # fmt: skip
    for key, width in ((129, 0.6), (135, 1.5)):
        samples, truth = gaussian_problem(rng, N_TEST, width, 0.0)
        moved = recalibration.apply(samples, np.full(N_TEST, key), ("x",))
        assert worst_error(moved, truth) < TOLERANCE, key


def test_ranks_nan_samples_other_parameters_and_bounds_are_kept() -> None:
    rng = np.random.default_rng(3)
    recalibration = QuantileRecalibration(
        ("x",),
        np.array([0.25, 0.5, 0.75]),
        {ALL_PATTERNS: np.array([[0.1], [0.5], [0.9]])},
        {ALL_PATTERNS: np.array([100])},
        bounds={"x": (-2.0, 2.0)},
    )  # fmt: skip  (a widening map: the samples move outwards)
    samples = rng.normal(size=(50, 16, 2)).astype(np.float32)
    samples[0, :3, 0] = np.nan
    samples[1, 1:, 0] = np.nan  # one finite sample: nothing to place it by
    moved = recalibration.apply(samples, np.zeros(50, dtype=int), ("x", "y"))
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved[..., 1], samples[..., 1])  # y is not in the map
    np.testing.assert_array_equal(moved[1], samples[1])
    assert np.isnan(moved[0, :3, 0]).all() and np.isfinite(moved[0, 3:, 0]).all()
    x, new = samples[2:, :, 0], moved[2:, :, 0]
    in_order = np.take_along_axis(new, np.argsort(x, axis=1), axis=1)
    assert np.all(np.diff(in_order, axis=1) >= 0)  # ranks kept (ties only at the bounds)
    assert np.all((new >= -2.0) & (new <= 2.0))
    assert np.all(new.std(axis=1) > x.std(axis=1))  # a widening map widens


def test_the_quantile_function_and_its_inverse_agree() -> None:
    rng = np.random.default_rng(4)
    quantiles = _SampleQuantiles(rng.normal(size=(6, 16)))
    level = np.array([0.001, 0.03, 0.2, 0.5, 0.93, 0.999])[:, None]
    values = quantiles.value(level)
    np.testing.assert_allclose(quantiles.level(values[:, 0]), level[:, 0], atol=1e-9)


def test_save_and_load_keep_the_maps(tmp_path) -> None:
    recalibration = fitted(np.random.default_rng(5), 0.8, 0.1, pattern=131)
    assert QuantileRecalibration.load(tmp_path) is None
    recalibration.save(tmp_path)
    content = json.loads((tmp_path / RECALIBRATION_FILE).read_text())  # plain JSON
    assert content["params"] == ["x"]
    loaded = QuantileRecalibration.load(tmp_path)
    for key in (ALL_PATTERNS, 131):
        np.testing.assert_allclose(loaded.pit_quantiles[key], recalibration.pit_quantiles[key])
    content["format"] = 99
    with pytest.raises(ValueError, match="format"):
        QuantileRecalibration.from_dict(content)


def test_fit_refuses_too_few_stars_and_values_that_are_no_pits() -> None:
    with pytest.raises(ValueError, match=r"\['b'\]"):
        QuantileRecalibration.fit(np.c_[np.full(50, 0.5), np.full(50, np.nan)],
                                  np.ones(50), ("a", "b"), min_stars=10)  # fmt: skip
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QuantileRecalibration.fit(np.full((50, 1), 1.5), np.ones(50), ("a",), min_stars=10)

"""The per-partition kernel: shapes, derived parameters, determinism, unusable rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.infer import BANDS, synthetic_catalog, tiny_model
from ysoscale.catalog.quality import check_rows
from ysoscale.infer.kernel import STATS, infer_arrays, output_params, standard_normal
from ysoscale.nn import PosteriorEstimator
from ysoscale.physics.forward import ForwardModel

N_SAMPLES = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> PosteriorEstimator:
    return PosteriorEstimator.load(tiny_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def forward(photometry_grid, isochrone_grid) -> ForwardModel:
    return ForwardModel(photometry_grid, isochrone_grid, bands=["gaia_g"])


@pytest.fixture(scope="module")
def stars():
    frame = synthetic_catalog(200, seed=3)
    check = check_rows(frame, BANDS)
    return frame["source_id"].to_numpy(), check


def run(model, check, rows=slice(None), ids=None, forward=None, **kwargs):
    return infer_arrays(
        model,
        check.mag[rows],
        check.mag_err[rows],
        check.parallax[rows],
        check.parallax_error[rows],
        check.usable[rows],
        kwargs.pop("n_samples", N_SAMPLES),
        kwargs.pop("seed", 0),
        forward,
        source_id=None if ids is None else ids[rows],
        **kwargs,
    )


def test_shapes_params_and_derived_values(model, forward, stars):
    ids, check = stars
    out = run(model, check, ids=ids, forward=forward)
    params = output_params(model.config.params, isochrones=True)
    n = len(ids)
    assert params[-5:] == ("distance_pc", "teff", "logg", "log10_lum", "radius")
    assert out["samples"].shape == (n, N_SAMPLES, len(params))
    assert out["summary"].shape == (n, len(STATS), len(params))
    assert out["log_prob"].shape == (n, N_SAMPLES)
    assert out["samples"].dtype == np.float32 and out["sampled"].all()

    theta = out["samples"]
    lo, hi = model.config.bounds
    inferred = theta[..., : len(lo)]
    assert ((inferred >= np.float32(lo)) & (inferred <= np.float32(hi))).all()
    j = params.index
    np.testing.assert_allclose(
        theta[..., j("distance_pc")], 10.0 ** theta[..., j("log10_distance")], rtol=1e-5
    )
    # derived values are the isochrones' at each sample (NaN off the tracks)
    flat = theta.reshape(-1, len(params))
    derived, ok = forward.isochrones(
        *(torch.as_tensor(flat[:, j(p)]) for p in ("log10_mass", "log10_age", "mh"))
    )
    teff = np.where(ok.numpy(), 10.0 ** derived["log10_teff"].numpy(), np.nan)
    np.testing.assert_allclose(flat[:, j("teff")], teff, rtol=1e-5)
    assert ok.any()

    # summary = NaN-aware statistics of the samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN derived values
        median = np.nanmedian(theta, axis=1)
        mean = np.nanmean(theta, axis=1)
    summary = out["summary"]
    np.testing.assert_allclose(summary[:, STATS.index("median")], median, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(summary[:, STATS.index("mean")], mean, rtol=1e-4, atol=1e-4)
    p16, p84 = summary[:, STATS.index("p16")], summary[:, STATS.index("p84")]
    finite = np.isfinite(p16)
    assert (p16[finite] <= median[finite] + 1e-5).all()
    assert (p84[finite] >= median[finite] - 1e-5).all()


def test_without_forward_model_only_distance_is_derived(model, stars):
    ids, check = stars
    out = run(model, check, rows=slice(0, 5), ids=ids)
    assert out["samples"].shape[-1] == len(model.config.params) + 1


def test_deterministic_and_seeded(model, stars):
    ids, check = stars
    first = run(model, check, ids=ids)
    again = run(model, check, ids=ids)
    np.testing.assert_array_equal(first["samples"], again["samples"])
    other = run(model, check, ids=ids, seed=1)
    assert not np.allclose(first["samples"], other["samples"])


def test_a_star_does_not_depend_on_its_neighbours(model, stars):
    """Same star, other partition and batch: same draws; equal up to float32 round-off of
    the batched matrix products (bitwise equality would forbid batching)."""
    ids, check = stars
    full = run(model, check, ids=ids)
    order = np.random.default_rng(0).permutation(len(ids))[:57]
    subset = run(model, check, rows=order, ids=ids, batch_size=16)
    np.testing.assert_allclose(subset["samples"], full["samples"][order], rtol=2e-4, atol=2e-4)


def test_unusable_rows_are_nan_and_never_reach_the_model(model, stars, monkeypatch):
    ids, check = stars
    usable = check.usable.copy()
    usable[::3] = False
    seen = []
    original = model.forward

    def spy(mag, *args, **kwargs):
        seen.append(mag.numpy().copy())
        return original(mag, *args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    mag = check.mag.copy()
    mag[::3] = 1e30  # would be absurd inputs if they reached the model
    out = infer_arrays(
        model, mag, check.mag_err, check.parallax, check.parallax_error, usable,
        N_SAMPLES, 0, source_id=ids,
    )  # fmt: skip
    assert not (np.concatenate(seen) > 1e29).any()
    assert sum(len(s) for s in seen) == usable.sum()
    assert np.isnan(out["samples"][~usable]).all() and np.isnan(out["summary"][~usable]).all()
    assert np.isfinite(out["samples"][usable][..., :6]).all()
    np.testing.assert_array_equal(out["sampled"], usable)

    # rows marked usable but with no observed band are treated as unusable, not a crash
    empty = check.mag.copy()
    empty[1] = np.nan
    out = infer_arrays(
        model, empty, check.mag_err, check.parallax, check.parallax_error, check.usable,
        4, 0, source_id=ids,
    )  # fmt: skip
    assert not out["sampled"][1] and np.isnan(out["samples"][1]).all()


def test_no_usable_row_at_all(model, stars):
    _, check = stars
    out = run(model, check, rows=slice(0, 0))
    assert out["samples"].shape == (0, N_SAMPLES, 7)


def test_standard_normal_is_keyed_and_normal():
    keys = np.arange(2000)
    z = standard_normal(keys, seed=5, n_samples=64, n_param=6)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    np.testing.assert_array_equal(standard_normal(keys[::-1], 5, 64, 6), z[::-1])
    assert not np.array_equal(standard_normal(keys, 6, 64, 6), z)
    # negative and huge ids are keys like any other
    big = standard_normal(np.array([-1, 2**62]), 0, 8, 2)
    assert np.isfinite(big).all() and not np.array_equal(big[0], big[1])


def test_a_recalibration_moves_each_star_by_the_map_of_its_pattern(model, stars) -> None:
    """The kernel's samples with a recalibration are the plain ones moved by
    ``QuantileRecalibration.apply`` with each star's condition pattern; what is derived
    (distance_pc) follows the moved samples; the moved samples have no log_prob."""
    from ysoscale.nn.recalibration import ALL_PATTERNS, QuantileRecalibration

    ids, check = stars
    params = model.config.params
    levels = np.array([0.25, 0.5, 0.75])
    widen = np.tile([[0.1], [0.5], [0.9]], (1, len(params)))
    shift = np.tile([[0.4], [0.6], [0.8]], (1, len(params)))
    recalibration = QuantileRecalibration(params, levels, {ALL_PATTERNS: widen, 129: shift},
                                          {ALL_PATTERNS: np.zeros(len(params)),
                                           129: np.zeros(len(params))})  # fmt: skip
    plain = run(model, check, ids=ids)
    moved = run(model, check, ids=ids, recalibration=recalibration)
    sampled = plain["sampled"]
    n_param = len(params)
    expected = recalibration.apply(plain["samples"][..., :n_param], plain["condition_pattern"],
                                   params)  # fmt: skip
    np.testing.assert_allclose(moved["samples"][..., :n_param], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(moved["samples"][sampled], plain["samples"][sampled])
    assert {129} < set(plain["condition_pattern"][sampled].tolist())  # both maps serve
    distance = 10.0 ** moved["samples"][..., params.index("log10_distance")]
    np.testing.assert_allclose(moved["samples"][..., output_params(params, False).index(
        "distance_pc")], distance, rtol=1e-4)  # fmt: skip
    assert np.isnan(moved["log_prob"]).all() and np.isfinite(plain["log_prob"][sampled]).all()
    np.testing.assert_array_equal(moved["condition_pattern"], plain["condition_pattern"])

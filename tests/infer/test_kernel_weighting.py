"""Importance weights in the inference kernel (infer_arrays with a SampleWeighting)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ysoscale.infer.importance import (
    DiskMarginal,
    log_importance_weight,
    normalise_log_weights,
    weigh_samples,
)
from ysoscale.infer.kernel import P16, P84, SampleWeighting, _weighted_summary, infer_arrays
from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.predictive import p_young
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_ks", "wise_w1")
PHYSICAL = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The first sorted value whose cumulative weight share reaches ``q``."""
    keep = np.isfinite(values)
    values, weights = values[keep], weights[keep]
    order = np.argsort(values)
    share = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][np.searchsorted(share, q)])


def test_weighted_summary_by_hand() -> None:
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(2, 50, 3))
    samples[0, :5, 1] = np.nan  # left out of that parameter only
    weights = rng.random((2, 50))
    weights[1, 10:] = 0.0  # a star with 10 samples of nonzero weight
    log_weight = torch.from_numpy(np.log(weights / weights.sum(axis=1, keepdims=True)))
    summary = _weighted_summary(torch.from_numpy(samples), log_weight).numpy()
    for star in range(2):
        for param in range(3):
            x, w = samples[star, :, param], weights[star]
            got = summary[star, :, param]
            for k, q in enumerate((0.5, P16, P84)):
                assert got[k] == pytest.approx(weighted_quantile(x, w, q))
            keep = np.isfinite(x)
            mean = np.average(x[keep], weights=w[keep])
            std = math.sqrt(np.average((x[keep] - mean) ** 2, weights=w[keep]))
            assert got[3] == pytest.approx(mean) and got[4] == pytest.approx(std)
    dead = _weighted_summary(torch.from_numpy(samples[:1]), torch.full((1, 50), -math.inf))
    assert torch.isnan(dead).all()  # no weight: no summary


@pytest.fixture(scope="module")
def stars(photometry_grid, isochrone_grid):
    """Six stars of the prior seen in BANDS (one band missing, one parallax missing) and the
    forward model and prior of the weights."""
    from ysoscale.infer.prior_density import load_default_prior_density
    from ysoscale.physics.forward import ForwardModel
    from ysoscale.simulate.priors import sample_prior

    forward = ForwardModel(photometry_grid, isochrone_grid, bands=BANDS)
    rng = np.random.default_rng(1)
    draws = sample_prior(400, rng)
    phot = forward.physical(*(draws[p] for p in ("log10_mass", "log10_age", "mh")),
                            draws["distance_pc"], draws["av"], draws["rv"])  # fmt: skip
    keep = np.flatnonzero(phot.valid)[:6]
    mag = (np.asarray(phot.mag)[keep] + rng.normal(0.0, 0.02, (6, len(BANDS)))).astype(np.float32)
    mag[1, 3] = np.nan
    err = np.full_like(mag, 0.02)
    plx = (1000.0 / draws["distance_pc"][keep] + rng.normal(0.0, 0.1, 6)).astype(np.float32)
    plx[2] = np.nan
    plx_err = np.full(6, 0.1, dtype=np.float32)
    return {"data": (mag, err, plx, plx_err), "forward": forward,
            "prior": load_default_prior_density(), "source_id": np.arange(100, 106)}  # fmt: skip


def assert_same_stars(first: dict, again: dict, back: np.ndarray) -> None:
    """The same results up to float rounding (a batched matmul rounds by batch size)."""
    for key in ("samples", "summary", "log_weight", "ess", "p_young"):
        a, b = first[key], again[key][back]
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), key
        finite = np.isfinite(a)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-4, atol=1e-3, err_msg=key)


def run(model, stars, order=None, batch_size=4, disk=None, n_samples=64):
    order = np.arange(6) if order is None else np.asarray(order)
    data = [a[order] for a in stars["data"]]
    weighting = SampleWeighting(stars["forward"], stars["prior"], disk=disk)
    return infer_arrays(model, *data, np.ones(len(order), bool), n_samples, seed=5,
                        source_id=stars["source_id"][order], batch_size=batch_size,
                        weighting=weighting)  # fmt: skip


@pytest.fixture(scope="module")
def npe():
    torch.manual_seed(0)
    config = EstimatorConfig(bands=BANDS, width=16, heads=2, depth=1, transforms=2,
                             flow_hidden=(32,))  # fmt: skip
    return PosteriorEstimator(config).eval()


def test_npe_samples_get_the_importance_weights(npe, stars) -> None:
    out = run(npe, stars)
    n_param = len(npe.config.params)
    theta = torch.from_numpy(out["samples"][..., :n_param])
    raw = log_importance_weight(npe, stars["forward"], stars["prior"], theta, *stars["data"],
                                disk=None).numpy()  # fmt: skip
    expected = normalise_log_weights(torch.from_numpy(raw)).numpy()
    got = out["log_weight"]
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert finite.any()
    # the kernel's log q comes from its own pass through the flow (float32)
    np.testing.assert_allclose(got[finite], expected[finite], atol=2e-3)
    # and the raw weights, on the scale of the truth's weight, follow from the evidence
    got_raw = got + out["log_evidence"][:, None] + math.log(64)
    np.testing.assert_allclose(got_raw[finite], raw[finite], rtol=1e-5, atol=2e-3)
    alive = out["ess"] > 0
    total = np.logaddexp.reduce(got[alive].astype(np.float64), axis=1)
    np.testing.assert_allclose(total, 0.0, atol=1e-4)
    assert np.all((out["ess"] >= 0) & (out["ess"] <= 64 + 1e-3))
    assert np.array_equal(out["ood"], out["ess"] < 0.01 * 64)
    age = out["samples"][..., npe.config.params.index("log10_age")]
    np.testing.assert_allclose(out["p_young"], p_young(age, weight=np.exp(got)), atol=1e-6)


def test_a_stars_weighted_result_does_not_depend_on_its_batch(npe, stars) -> None:
    disk = DiskMarginal(n_draws=4)
    first = run(npe, stars, disk=disk)
    again = run(npe, stars, order=[5, 3, 1, 0, 2, 4], batch_size=2, disk=disk)
    assert_same_stars(first, again, np.argsort([5, 3, 1, 0, 2, 4]))


def test_the_disks_draws_are_the_given_uniforms(stars) -> None:
    # young stars (2 Myr) seen as their own photospheres: the disk term matters
    theta = torch.tensor([0.0, 6.3, 0.0, 2.2, 1.0, 3.1]).expand(6, 8, 6).clone()
    theta[:, :, 0] = torch.linspace(-0.5, 0.3, 6)[:, None]
    theta[:, :, 4] += torch.linspace(-0.2, 0.2, 8)
    truth = theta[:, 0]
    phot = stars["forward"].physical(truth[:, 0], truth[:, 1], truth[:, 2],
                                     10.0 ** truth[:, 3], truth[:, 4], truth[:, 5])  # fmt: skip
    mag = torch.as_tensor(phot.mag, dtype=torch.float32)
    err = torch.full_like(mag, 0.05)
    disk = DiskMarginal(n_draws=3)

    def weights(seed: int) -> torch.Tensor:
        uniform = torch.rand(6, 8, 3, 2, generator=torch.Generator().manual_seed(seed))
        return weigh_samples(stars["forward"], stars["prior"], PHYSICAL, BANDS, theta,
                             torch.zeros(6, 8), mag, err, disk=disk,
                             disk_uniform=uniform)  # fmt: skip

    first = weights(0)
    assert torch.isfinite(first).any()
    assert torch.equal(first, weights(0))
    assert not torch.allclose(first, weights(1), equal_nan=True)
    with pytest.raises(ValueError, match="disk_uniform"):
        weigh_samples(stars["forward"], stars["prior"], PHYSICAL, BANDS, theta,
                      torch.zeros(6, 8), mag, err, disk=disk,
                      disk_uniform=torch.rand(6, 8, 2, 2))  # fmt: skip


def test_a_simformer_is_weighted_through_its_kernel_proposal(stars) -> None:
    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, params=(*PHYSICAL, "has_disk"), width=16, heads=2,
                             depth=1, ff=32, default_steps=2)  # fmt: skip
    model = Simformer(config).eval()
    out = run(model, stars, n_samples=32)
    assert out["samples"].shape[:2] == (6, 32)
    assert out["samples"].shape[2] == len(PHYSICAL) + 1  # + distance_pc
    assert np.isnan(out["p_disk"]).all()  # the disk is marginalised, not sampled
    alive = out["ess"] > 0
    assert alive.any()
    total = np.logaddexp.reduce(out["log_weight"][alive].astype(np.float64), axis=1)
    np.testing.assert_allclose(total, 0.0, atol=1e-4)
    again = run(model, stars, order=[4, 5, 0, 1, 2, 3], batch_size=3, n_samples=32)
    assert_same_stars(out, again, np.argsort([4, 5, 0, 1, 2, 3]))


def test_the_detection_pattern_is_weighed_at_each_stars_position(npe, stars) -> None:
    from ysoscale.infer.selection import survey_footprints
    from ysoscale.simulate.surveys import galactic_to_icrs, icrs_to_galactic

    lon = np.array([10.0, 120.0, 200.0, 300.0, 45.0, 250.0])
    lat = np.array([5.0, -40.0, 60.0, -2.0, 80.0, -70.0])
    ra, dec = galactic_to_icrs(lon, lat)
    back = icrs_to_galactic(ra, dec)
    np.testing.assert_allclose(np.column_stack(back), np.column_stack([lon, lat]), atol=1e-9)
    weighting = SampleWeighting(stars["forward"], stars["prior"], disk=None,
                                surveys=("gaia", "tmass", "wise"))  # fmt: skip
    out = infer_arrays(npe, *stars["data"], np.ones(6, bool), 32, seed=5,
                       source_id=stars["source_id"], weighting=weighting,
                       position=(ra, dec))  # fmt: skip
    selection = weighting.selection(BANDS)
    theta = torch.from_numpy(out["samples"][..., : len(PHYSICAL)])
    raw = log_importance_weight(
        npe,
        stars["forward"],
        stars["prior"],
        theta,
        *stars["data"],
        disk=None,
        selection=selection,
        in_footprint=survey_footprints(lon, lat, selection.surveys),
    )
    expected = normalise_log_weights(raw).numpy()
    finite = np.isfinite(expected)
    assert finite.any() and np.array_equal(finite, np.isfinite(out["log_weight"]))
    np.testing.assert_allclose(out["log_weight"][finite], expected[finite], atol=2e-3)
    plain = run(npe, stars, n_samples=32)  # the same samples without the detection term
    assert not np.allclose(plain["log_weight"][finite], out["log_weight"][finite], atol=1e-2)
    with pytest.raises(ValueError, match="ra, dec"):
        infer_arrays(npe, *stars["data"], np.ones(6, bool), 8, seed=5, weighting=weighting)

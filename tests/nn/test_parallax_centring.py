"""The parallax-centred distance coordinate of the estimator's flow."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ysoscale.nn import ATMOSPHERIC_PARAMS, EstimatorConfig, PosteriorEstimator
from ysoscale.nn.parallax_centring import (
    FRAME_INFLATION,
    MIN_WIDTH,
    ParallaxCentring,
    parallax_frame,
)

BANDS = ("gaia_g", "gaia_bp", "gaia_rp")
SMALL = dict(bands=BANDS, width=16, depth=1, heads=2, ff=32, transforms=2, flow_hidden=(16,))
NAN = float("nan")


def _frame(config: EstimatorConfig, plx: list[float], err: list[float]):
    lo, hi = (torch.tensor(b) for b in config.bounds)
    return parallax_frame(config.params, lo, hi, torch.tensor(plx), torch.tensor(err), len(plx))


def test_only_the_distance_of_stars_with_a_significant_parallax_moves():
    config = EstimatorConfig(**SMALL)
    d = config.params.index("log10_distance")
    # S/N: 200, missing, negative, 0.5, missing error, zero error
    centre, width = _frame(
        config, [2.0, NAN, -1.0, 0.05, 2.0, 2.0], [0.01, 0.1, 0.1, 0.1, NAN, 0.0]
    )
    others = [i for i in range(config.n_param) if i != d]
    assert torch.all(centre[:, others] == 0) and torch.all(width[:, others] == 1)
    assert torch.all(centre[1:, d] == 0) and torch.all(width[1:, d] == 1)

    lo, hi = config.param_bounds["log10_distance"]
    p = (math.log10(1000.0 / 2.0) - lo) / (hi - lo)
    s_u = FRAME_INFLATION / (200 * math.log(10.0)) / ((hi - lo) * p * (1 - p))
    assert float(centre[0, d]) == pytest.approx(math.log(p / (1 - p)), rel=1e-4)
    assert float(width[0, d]) == pytest.approx(s_u, rel=1e-3)


def test_absurd_parallaxes_give_a_finite_frame():
    """A parallax error of 1e-30 mas (found by the bad-input fuzz test) or a parallax of
    1e30 mas must not overflow the precision: the width stops at MIN_WIDTH."""
    config = EstimatorConfig(**SMALL)
    d = config.params.index("log10_distance")
    centre, width = _frame(config, [2.0, 1e30, 1e-30], [1e-30, 0.1, 1e-35])
    assert torch.isfinite(centre).all() and torch.isfinite(width).all()
    assert float(width[:, d].min()) == pytest.approx(MIN_WIDTH, rel=1e-3)
    torch.manual_seed(0)
    model = PosteriorEstimator(config)
    mag = torch.tensor([[12.0, 12.4, 11.5]]).expand(3, 3)
    samples, log_prob = model.sample(mag, torch.full_like(mag, 0.01),
                                     torch.tensor([2.0, 1e30, 1e-30]),
                                     torch.tensor([1e-30, 0.1, 1e-35]), n_samples=8)  # fmt: skip
    assert torch.isfinite(samples).all() and torch.isfinite(log_prob).all()


def test_width_shrinks_smoothly_with_signal_to_noise():
    config = EstimatorConfig(**SMALL)
    d = config.params.index("log10_distance")
    snr = np.linspace(0.5, 50.0, 9901)  # steps of 0.005 in S/N
    _, width = _frame(config, list(snr * 0.1), [0.1] * len(snr))
    w = width[:, d].numpy()
    assert np.all(np.diff(w) <= 1e-7), "a better parallax never widens the frame"
    assert w[0] == 1.0 and w[-1] < 0.05
    assert np.max(np.abs(np.diff(w))) < 0.01, "no jump at the S/N thresholds"


def test_distance_modulus_frame_matches_log10_distance():
    """``distance_modulus = 5 log10 d - 5``: the same star gets the same logit centre when the
    two boxes are the same interval, and a width in the ratio of the Jacobians."""
    physical = EstimatorConfig(**SMALL, param_bounds={"log10_distance": (0.5, 4.5)})
    atmospheric = EstimatorConfig(
        **SMALL, params=ATMOSPHERIC_PARAMS, param_bounds={"distance_modulus": (-2.5, 17.5)}
    )
    c1, w1 = _frame(physical, [1.3], [0.02])
    c2, w2 = _frame(atmospheric, [1.3], [0.02])
    i1 = physical.params.index("log10_distance")
    i2 = atmospheric.params.index("distance_modulus")
    assert float(c1[0, i1]) == pytest.approx(float(c2[0, i2]), rel=1e-5)
    assert float(w1[0, i1]) == pytest.approx(float(w2[0, i2]), rel=1e-5)


def test_transform_round_trip_and_jacobian():
    centre = torch.tensor([[0.3, -1.0]])
    width = torch.tensor([[0.01, 1.0]])
    t = ParallaxCentring(centre, width)
    u = torch.randn(5, 1, 2)
    v = t(u)
    assert torch.allclose(t.inv(v), u, atol=1e-6)
    expected = -torch.log(width).expand_as(u)
    assert torch.allclose(t.log_abs_det_jacobian(u, v), expected)


@pytest.mark.parametrize("snr", [3.0, 30.0, 300.0])
def test_posterior_density_integrates_to_one(snr):
    """A distance-only model: ``exp(log_prob)`` over the box integrates to one, whatever the
    parallax; the Jacobian of the centring is exact."""
    config = EstimatorConfig(**SMALL, params=("log10_distance",))
    torch.manual_seed(0)
    model = PosteriorEstimator(config).eval()
    mag = torch.tensor([[12.0, 12.4, 11.5]])
    err = torch.full_like(mag, 0.01)
    plx_err = torch.tensor([0.05])
    plx = snr * plx_err
    centre_pc = 1000.0 / float(plx)
    half = max(40.0 / (snr * math.log(10.0)), 1e-3)  # +-40 first-order widths (dex)
    # inside the box only: outside it the logit is clamped (BOUND_EPS), not a density
    lo, hi = config.param_bounds["log10_distance"]
    a, b = math.log10(centre_pc) - half, math.log10(centre_pc) + half
    grid = torch.linspace(max(a, lo + 1e-9), min(b, hi - 1e-9), 40001)
    with torch.no_grad():
        density = model(mag, err, plx, plx_err).log_prob(grid[:, None, None]).exp().squeeze()
    mass = torch.trapezoid(density, grid)
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_samples_concentrate_on_the_parallax_distance_before_training():
    """The untrained flow's base is a unit normal in the centred coordinate: at S/N 500 its
    samples already lie within a few first-order widths of the parallax distance."""
    config = EstimatorConfig(**SMALL)
    torch.manual_seed(0)
    model = PosteriorEstimator(config)
    mag = torch.tensor([[12.0, 12.4, 11.5]])
    err = torch.full_like(mag, 0.01)
    samples, _ = model.sample(mag, err, torch.tensor([5.0]), torch.tensor([0.01]), 256)
    d = config.params.index("log10_distance")
    offset = samples[0, :, d] - math.log10(1000.0 / 5.0)
    assert float(offset.abs().max()) < 6 * FRAME_INFLATION / (500 * math.log(10.0))

    box = PosteriorEstimator(dataclasses.replace(config, distance_coordinate="box"))
    box.load_state_dict(model.state_dict())
    samples, _ = box.sample(mag, err, torch.tensor([5.0]), torch.tensor([0.01]), 256)
    assert float((samples[0, :, d] - math.log10(200.0)).abs().max()) > 0.1


def test_cards_without_a_distance_coordinate_load_as_box():
    values = EstimatorConfig(**SMALL).to_dict()
    assert values["distance_coordinate"] == "parallax"
    del values["distance_coordinate"]
    assert EstimatorConfig.from_card(values).distance_coordinate == "box"
    assert EstimatorConfig.from_dict(values).distance_coordinate == "parallax"
    with pytest.raises(ValueError, match="distance_coordinate"):
        EstimatorConfig(**SMALL, distance_coordinate="linear")

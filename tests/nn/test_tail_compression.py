"""The compressed logit tails of the estimator's flow (``logit_tails``)."""

from __future__ import annotations

import math

import pytest
import torch

from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.npe import BOUND_EPS, BoxToRealTransform
from ysoscale.nn.tail_compression import KNEE, TailCompression

BANDS = ("gaia_g", "gaia_bp", "gaia_rp")
SMALL = dict(bands=BANDS, width=16, depth=1, heads=2, ff=32, transforms=2, flow_hidden=(16,))
SPLINE_BOUND = 5.0  # zuko's MonotonicRQSTransform default, used by zuko.flows.NSF


def test_the_whole_logit_box_lands_inside_the_splines_domain():
    u_max = math.log((1 - BOUND_EPS) / BOUND_EPS)
    u = torch.linspace(-u_max, u_max, 20001, dtype=torch.float64)
    v = TailCompression()(u)
    assert float(v.abs().max()) < SPLINE_BOUND - 0.05
    assert torch.all(torch.diff(v) > 0), "monotone"
    # A_V = 0.1 mag in the default (0, 30) box: beyond the bound raw, inside compressed
    box = BoxToRealTransform(torch.tensor(0.0), torch.tensor(30.0))
    u_av = box(torch.tensor(0.1))
    assert float(u_av) < -SPLINE_BOUND < float(TailCompression()(u_av))


def test_identity_inside_the_knee_and_smooth_at_it():
    tails = TailCompression()
    u = torch.linspace(-KNEE, KNEE, 801, dtype=torch.float64)
    assert torch.equal(tails(u), u)
    assert torch.all(tails.log_abs_det_jacobian(u, tails(u)) == 0)
    eps = 1e-6
    for side in (-1.0, 1.0):  # derivative 1 on both sides of the knee
        x = torch.tensor([side * (KNEE + eps), side * (KNEE - eps)], dtype=torch.float64)
        slope = float((tails(x)[0] - tails(x)[1]) / (x[0] - x[1]))
        assert slope == pytest.approx(1.0, abs=1e-5)


def test_inverse_and_log_jacobian_are_exact():
    tails = TailCompression()
    u = torch.linspace(-14.0, 14.0, 2801, dtype=torch.float64, requires_grad=True)
    v = tails(u)
    assert torch.allclose(tails.inv(v), u, atol=1e-10)
    (grad,) = torch.autograd.grad(v.sum(), u)
    assert torch.allclose(tails.log_abs_det_jacobian(u, v), grad.log(), atol=1e-10)
    with pytest.raises(ValueError, match="positive"):
        TailCompression(knee=0.0)


def test_compression_changes_the_density_only_in_the_tails():
    """Same weights, raw and compressed: equal log densities where every coordinate is
    inside the knee (so a warm start from a raw-tail model keeps what it learnt there)."""
    torch.manual_seed(0)
    raw = PosteriorEstimator(EstimatorConfig(**SMALL, logit_tails="raw"))
    compressed = PosteriorEstimator(EstimatorConfig(**SMALL, logit_tails="compressed"))
    compressed.load_state_dict(raw.state_dict())
    raw.eval(), compressed.eval()
    mag = torch.tensor([[15.0, 15.4, 14.5]]).expand(2, 3)
    err = torch.full_like(mag, 0.01)
    plx = torch.tensor([float("nan")] * 2)
    # mass, age, [M/H], distance, A_V, R_V: A_V 1.5 (logit -2.9) and 0.1 (logit -5.7)
    theta = torch.tensor([[0.0, 9.0, -0.2, 3.0, 1.5, 3.1], [0.0, 9.0, -0.2, 3.0, 0.1, 3.1]])
    with torch.no_grad():
        a = raw(mag, err, plx, plx).log_prob(theta)
        b = compressed(mag, err, plx, plx).log_prob(theta)
    assert torch.allclose(a[0], b[0], atol=1e-5)
    assert not torch.allclose(a[1], b[1], atol=1e-3)


def test_models_saved_before_the_key_keep_raw_tails():
    card = EstimatorConfig(**SMALL).to_dict()
    del card["logit_tails"]
    assert EstimatorConfig.from_card(card).logit_tails == "raw"
    assert EstimatorConfig(**SMALL).logit_tails == "compressed"
    with pytest.raises(ValueError, match="logit_tails"):
        EstimatorConfig(**SMALL, logit_tails="squashed")

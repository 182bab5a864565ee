"""Exact densities of fixed-step ODE samples (ysoscale.nn.flow_density, simformer_density)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ysoscale.nn.flow_density import integrate_with_log_det, invert_steps, normal_log_prob
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.nn.simformer_density import sample_with_log_prob, simformer_log_prob

BANDS = ("gaia_g", "gaia_bp", "gaia_rp")
PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv", "has_disk")


def _step_matrix(a: torch.Tensor, solver: str, dt: float) -> torch.Tensor:
    """The linear map one step of ``solver`` makes of ``dx/dt = A x``."""
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    h = dt * a
    terms = {"euler": 1, "heun": 2, "rk4": 4}[solver]
    out, power = eye.clone(), eye.clone()
    for k in range(1, terms + 1):
        power = power @ h
        out = out + power / math.factorial(k)
    return out


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_log_det_of_a_linear_flow_is_exact(solver):
    torch.manual_seed(0)
    a = torch.randn(3, 3) * 0.7
    steps = 5
    z = torch.randn(4, 2, 3)
    x, log_det = integrate_with_log_det(z, lambda x, t: x @ a.T, solver, steps)
    step = _step_matrix(a.double(), solver, 1.0 / steps)
    expected = steps * torch.linalg.slogdet(step)[1]
    assert torch.allclose(log_det, expected.expand(4, 2), atol=1e-5)
    assert torch.allclose(x.double(), z.double() @ torch.linalg.matrix_power(step, steps).T,
                          atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_inverse_recovers_the_noise_of_a_nonlinear_flow(solver):
    torch.manual_seed(1)
    w = torch.randn(3, 3) * 0.5

    def velocity(x, t):
        return torch.tanh(x @ w.T) + t * x

    z = torch.randn(50, 3)
    x, log_det = integrate_with_log_det(z, velocity, solver, 4)
    back, log_det_back = invert_steps(x, velocity, solver, 4)
    assert torch.allclose(back, z, atol=1e-4)
    assert torch.allclose(log_det_back, log_det, atol=1e-4)


def test_an_unconverged_inverse_is_nan_not_wrong():
    """Without Newton iterations the backward-Euler guess is not accepted: NaN, not a
    silently wrong density; a folded map inverts to some preimage that maps back."""

    def velocity(x, t):
        return -2.0 * torch.sin(3.0 * x)

    x = torch.tensor([[0.45], [3.0], [-1.1]])
    back, log_det = invert_steps(x, velocity, "euler", 1, iterations=0)
    assert torch.isnan(back).all() and torch.isnan(log_det).all()
    back, log_det = invert_steps(x, velocity, "euler", 1)
    ok = torch.isfinite(log_det)
    assert ok.any()
    assert torch.allclose(back[ok] + velocity(back[ok], 0.0), x[ok], atol=1e-4)


def test_normal_log_prob_with_a_scale():
    z = torch.tensor([[0.5, -1.0]])
    expected = sum(torch.distributions.Normal(0.0, 2.0).log_prob(z[0]).tolist())
    assert float(normal_log_prob(z, 2.0)[0]) == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def small_simformer():
    torch.manual_seed(3)
    config = SimformerConfig(bands=BANDS, params=PARAMS, width=16, heads=2, depth=2, ff=32)
    model = Simformer(config)
    with torch.no_grad():  # a velocity that depends strongly on x: the flow changes volume
        model.value_weight.mul_(4.0)
        model.head.weight.mul_(4.0)
    model.eval()
    return model


def _star():
    mag = torch.tensor([[14.0, 14.5, 13.4]])
    return mag, torch.full_like(mag, 0.02), torch.tensor([1.5]), torch.tensor([0.1])


def test_simformer_density_integrates_to_one(small_simformer):
    """Two free parameters (the rest conditioned): the density on a grid sums to one."""
    model = small_simformer
    mag, err, plx, plx_err = _star()
    fixed = {"log10_mass": 0.0, "mh": 0.0, "log10_distance": 2.8, "rv": 3.1, "has_disk": 0.0}
    samples, _ = sample_with_log_prob(model, mag, err, plx, plx_err, 4000, condition=fixed,
                                      steps=3)  # fmt: skip
    age, av = samples[0, :, 1].numpy(), samples[0, :, 4].numpy()
    ages = np.linspace(age.min() - 1.0, age.max() + 1.0, 90)
    avs = np.linspace(av.min() - 2.0, av.max() + 2.0, 90)
    grid_age, grid_av = np.meshgrid(ages, avs, indexing="ij")
    theta = torch.zeros(1, grid_age.size, len(PARAMS))
    for name, value in fixed.items():
        theta[..., PARAMS.index(name)] = value
    theta[0, :, 1] = torch.as_tensor(grid_age.ravel())
    theta[0, :, 4] = torch.as_tensor(grid_av.ravel())
    log_q = simformer_log_prob(model, theta, mag, err, plx, plx_err, condition=fixed, steps=3)
    density = np.exp(log_q[0].numpy().reshape(grid_age.shape))
    assert np.isfinite(density).all()
    total = np.trapezoid(np.trapezoid(density, avs, axis=1), ages)
    assert total == pytest.approx(1.0, abs=0.02)


def test_simformer_density_matches_its_samples_and_inverse(small_simformer):
    model = small_simformer
    mag, err, plx, plx_err = _star()
    torch.manual_seed(5)
    clipped, _ = model.sample(mag, err, plx, plx_err, n_samples=32, steps=4)
    torch.manual_seed(5)
    samples, log_q = sample_with_log_prob(model, mag, err, plx, plx_err, 32, steps=4)
    assert torch.allclose(model._clip(samples), clipped, atol=1e-5)
    # a scaled start changes the samples and the density consistently
    for scale in (1.0, 1.5):
        torch.manual_seed(6)
        options = {"steps": 4, "condition": {"has_disk": 0.0}, "noise_scale": scale}
        theta, log_q = sample_with_log_prob(model, mag, err, plx, plx_err, 16, **options)
        again = simformer_log_prob(model, theta, mag, err, plx, plx_err, **options)
        assert torch.allclose(log_q, again, atol=1e-3)
        assert (theta[..., PARAMS.index("has_disk")] == 0.0).all()


def test_full_attention_models_have_no_density():
    config = SimformerConfig(bands=BANDS, width=16, heads=2, depth=1, ff=32, attention="full")
    mag, err, plx, plx_err = _star()
    with pytest.raises(ValueError, match="cached_context"):
        sample_with_log_prob(Simformer(config), mag, err, plx, plx_err, 4)


def test_bad_arguments_are_named(small_simformer):
    mag, err, plx, plx_err = _star()
    with pytest.raises(ValueError, match="noise_scale"):
        sample_with_log_prob(small_simformer, mag, err, plx, plx_err, 4, noise_scale=0.0)
    with pytest.raises(ValueError, match="teff"):
        sample_with_log_prob(small_simformer, mag, err, plx, plx_err, 4, condition={"teff": 1})
    with pytest.raises(ValueError, match="solver"):
        sample_with_log_prob(small_simformer, mag, err, plx, plx_err, 4, solver="midpoint")

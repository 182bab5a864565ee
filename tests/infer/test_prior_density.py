"""The fitted density of the training prior: support, save/load, and the shipped fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ysoscale.infer.prior_density import (
    CARD_FILE,
    WEIGHTS_FILE,
    PriorDensity,
    fit_prior_density,
    load_default_prior_density,
    prior_draws,
    prior_support,
)
from ysoscale.nn.config import PHYSICAL_PARAMS
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.priors import PriorConfig


def test_support_is_the_prior_support_inside_the_bounds():
    lo, hi = prior_support(PHYSICAL_PARAMS)
    support = dict(zip(PHYSICAL_PARAMS, zip(lo, hi, strict=True), strict=True))
    assert support["log10_mass"] == pytest.approx((math.log10(0.08), math.log10(20.0)))
    assert support["log10_age"] == pytest.approx((5.7, math.log10(13e9)))  # box starts at 5.7
    assert support["log10_distance"] == pytest.approx((0.5, math.log10(15000.0)))
    assert support["av"] == (0.0, 30.0) and support["rv"] == (2.3, 5.6)
    (lo_m,), (hi_m,) = prior_support(("log10_mass",), PriorConfig(min_mass=0.5, max_mass=2.0))
    assert (lo_m, hi_m) == pytest.approx((math.log10(0.5), math.log10(2.0)))
    with pytest.raises(ValueError, match="teff"):
        prior_support(("teff", "mh"))


def test_prior_draws_lie_inside_the_support():
    theta, kept = prior_draws(5000, PHYSICAL_PARAMS, np.random.default_rng(1))
    lo, hi = prior_support(PHYSICAL_PARAMS)
    assert theta.shape == (5000, 6)
    assert np.all((theta > lo) & (theta < hi))
    assert 0.8 < kept < 0.95  # about 10 % of the prior has A_V > 30


@pytest.fixture(scope="module")
def tiny() -> PriorDensity:
    return fit_prior_density(n=3000, epochs=1, transforms=1, hidden=(16,), bins=4, seed=3)


def test_save_load_round_trip_gives_identical_log_probs(tiny, tmp_path):
    path = tiny.save(tmp_path / "density")
    assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS_FILE, CARD_FILE])
    again = PriorDensity.load(path)
    theta = torch.as_tensor(prior_draws(500, PHYSICAL_PARAMS, np.random.default_rng(2))[0])
    assert torch.equal(again.log_prob(theta), tiny.log_prob(theta))
    assert again.params == tiny.params
    assert again.card["validation_nll"] == tiny.card["validation_nll"]


def test_log_prob_is_minus_infinity_outside_the_support(tiny):
    theta = torch.as_tensor(prior_draws(4, PHYSICAL_PARAMS, np.random.default_rng(4))[0])
    theta = theta.float()
    theta[1, 0] = math.log10(0.07)  # below the IMF's 0.08 Msun
    theta[2, 4] = 31.0  # A_V beyond the grid
    theta[3, 2] = math.nan
    log_p = tiny.log_prob(theta)
    assert torch.isfinite(log_p[0]) and torch.isneginf(log_p[1:]).all()
    assert log_p.shape == (4,) and tiny.log_prob(theta[:, None]).shape == (4, 1)


@pytest.fixture(scope="module")
def shipped() -> PriorDensity:
    return load_default_prior_density()


@pytest.fixture(scope="module")
def fresh_draws() -> torch.Tensor:
    theta, _ = prior_draws(20000, PHYSICAL_PARAMS, np.random.default_rng(20261122))
    return torch.as_tensor(theta, dtype=torch.float32)


def test_shipped_density_matches_the_default_training_prior(shipped):
    assert shipped.params == PHYSICAL_PARAMS
    prior = PriorConfig.from_dict(shipped.card["prior"])
    assert prior == SimulationConfig().prior
    lo, hi = prior_support(PHYSICAL_PARAMS, prior)
    assert torch.allclose(shipped.lo, torch.tensor(lo)) and torch.allclose(
        shipped.hi, torch.tensor(hi)
    )


def test_shipped_density_scores_fresh_draws_as_recorded(shipped, fresh_draws):
    with torch.no_grad():
        log_p = shipped.log_prob(fresh_draws).double()
    assert torch.isfinite(log_p).all()
    nll, spread = float(-log_p.mean()), float(log_p.std() / math.sqrt(len(log_p)))
    recorded = shipped.card["validation_nll"]
    print(
        f"shipped prior density: NLL {nll:.4f} +- {spread:.4f} on fresh draws, "
        f"recorded {recorded:.4f}"
    )
    assert abs(nll - recorded) < 5 * spread + 0.01


def test_shipped_density_samples_look_like_the_prior(shipped, fresh_draws):
    torch.manual_seed(0)
    flow = shipped.sample((3000,))  # NSF sampling inverts splines autoregressively: slow on CPU
    young_prior = float((fresh_draws[:, 1] < math.log10(50e6)).float().mean())
    young_flow = float((flow[:, 1] < math.log10(50e6)).float().mean())
    assert abs(young_prior - young_flow) < 0.025, (young_prior, young_flow)
    for j, name in enumerate(PHYSICAL_PARAMS):  # two-sample Kolmogorov-Smirnov distance
        a, b = fresh_draws[:, j].sort().values, flow[:, j].sort().values
        grid = torch.cat([a, b])
        cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
        cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
        ks = float((cdf_a - cdf_b).abs().max())
        assert ks < 0.045, (name, ks)  # 99.9 % critical value for 3000 vs 20000 is 0.038

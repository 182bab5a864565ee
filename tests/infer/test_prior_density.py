"""The fitted density of the training prior: support, save/load, and the shipped fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ysoscale.infer.prior_density import (
    CARD_FILE,
    WEIGHTS_FILE,
    MassGivenAge,
    PriorDensity,
    RvGivenPopulation,
    fit_prior_density,
    load_default_prior_density,
    prior_draws,
    prior_support,
)
from ysoscale.nn.config import PHYSICAL_PARAMS
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.priors import PriorConfig, kroupa_cdf, sample_prior


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
    assert again.rv_factor == tiny.rv_factor is not None
    assert again.mass_factor == tiny.mass_factor is not None
    assert again.parts == tiny.parts and len(tiny.parts) == 2
    assert tiny.flow_params == tuple(p for p in PHYSICAL_PARAMS if p not in ("rv", "log10_mass"))


def test_exact_factors_and_the_population_split_can_be_switched_off():
    density = fit_prior_density(
        n=500, epochs=1, transforms=1, hidden=(8,), bins=4, exact_rv=False, exact_mass=False,
        split_populations=False,
    )  # fmt: skip
    assert density.rv_factor is None and density.mass_factor is None
    assert density.flow_params == PHYSICAL_PARAMS and len(density.parts) == 1


def test_a_density_of_format_1_loads_with_the_same_log_probs(tmp_path):
    """Format 1 (one flow at ``flow.*``, 1-D shift/scale, no parts): read as one part."""
    one = fit_prior_density(n=500, epochs=1, transforms=1, hidden=(8,), bins=4,
                            exact_mass=False, split_populations=False)  # fmt: skip
    path = one.save(tmp_path / "density")
    card = json.loads((path / CARD_FILE).read_text())
    for key in ("format", "parts", "mass_factor"):
        del card[key]
    (path / CARD_FILE).write_text(json.dumps(card))
    state = {
        ("flow." + k[len("flows.0.") :] if k.startswith("flows.0.") else k): v
        for k, v in one.state_dict().items()
        if k not in ("part_lo", "part_hi", "log_weight")
    }
    state["shift"], state["scale"] = state["shift"][0], state["scale"][0]
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / WEIGHTS_FILE))
    again = PriorDensity.load(path)
    theta = torch.as_tensor(prior_draws(300, PHYSICAL_PARAMS, np.random.default_rng(6))[0])
    # format 1 had no part weight (the density was right up to a constant)
    assert torch.allclose(again.log_prob(theta), one.log_prob(theta) - one.log_weight[0])
    card["format"] = 9
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="format 9"):
        PriorDensity.load(path)


def test_parts_split_the_prior_by_age_with_the_populations_shares(tiny):
    young, field = tiny.parts
    assert (young.name, field.name) == ("young", "field")
    assert young.age_hi == field.age_lo == pytest.approx(YOUNG_CUT)
    # weight = share x fraction of the population's draws inside the support: young
    # stars almost all lie inside, field stars lose those with A_V > 30
    assert young.weight == pytest.approx(0.1, rel=0.01)
    assert 0.75 < field.weight < 0.9
    theta = torch.as_tensor(prior_draws(2000, PHYSICAL_PARAMS, np.random.default_rng(5))[0])
    part = tiny._part_of(theta.float())
    assert torch.equal(part == 0, theta[:, 1] < YOUNG_CUT)
    assert torch.isfinite(tiny.log_prob(theta)).all()


YOUNG_CUT = math.log10(50e6)


@pytest.fixture(scope="module")
def rv_factor() -> RvGivenPopulation:
    return RvGivenPopulation.from_prior(PriorConfig())


@pytest.mark.parametrize("log10_age", [6.5, 9.5])
def test_rv_factor_is_a_normalised_density(rv_factor, log10_age):
    rv = torch.linspace(2.3, 5.6, 330_001, dtype=torch.float64)[1:-1]
    density = rv_factor.log_prob(rv, torch.full_like(rv, log10_age)).exp()
    assert float(torch.trapezoid(density, rv)) == pytest.approx(1.0, abs=2e-3)  # cliffs
    outside = rv_factor.log_prob(torch.tensor([2.2, 5.7]), torch.tensor([6.5, 6.5]))
    assert torch.isneginf(outside).all()


@pytest.mark.parametrize("young", [True, False])
def test_rv_factor_matches_the_priors_draws_in_every_bin(rv_factor, young):
    """Binned share of 4e5 prior draws vs the factor's integral over each bin."""
    theta, _ = prior_draws(400_000, PHYSICAL_PARAMS, np.random.default_rng(7))
    age, rv = theta[:, 1], theta[:, 5]
    sel = age < YOUNG_CUT if young else age >= YOUNG_CUT
    edges = np.array([2.3, 2.8, 3.0, 3.2, 3.4, 3.8, 4.5, 5.0, 5.3, 5.5, 5.6])
    counts, _ = np.histogram(rv[sel], edges)
    fine = torch.linspace(2.3, 5.6, 66_001, dtype=torch.float64)[1:-1]
    dens = rv_factor.log_prob(fine, torch.full_like(fine, 6.5 if young else 9.5)).exp().numpy()
    expected = np.array(
        [
            np.trapezoid(dens[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)])
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]
    )
    n = int(sel.sum())
    spread = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) < 5 * spread + 2e-4), (counts / n, expected)
    assert counts[-1] == 0 and expected[-1] < 1e-5  # nothing between 5.5 and 5.6 (bar the
    # trapezoid rule across the cliff)
    assert counts[-2] > 0.01 * n if young else counts[-2] > 0.001 * n  # the uniform tail


def test_rv_factor_samples_follow_its_density(rv_factor):
    torch.manual_seed(1)
    age = torch.where(torch.rand(200_000) < 0.5, 6.5, 9.5)
    rv = rv_factor.sample(age)
    assert rv.shape == age.shape and bool(((rv > 2.3) & (rv < 5.6)).all())
    for value, tail in ((6.5, 0.3), (9.5, 0.05)):
        share = float((rv[age == value] > 5.0).float().mean())
        expected = tail * 0.5 / 2.2  # the uniform tail's share above 5.0; the core's is ~0
        assert abs(share - expected) < 5 * math.sqrt(expected / 100_000)


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


def test_shipped_density_keeps_the_young_stars_r_v_tail(shipped, fresh_draws):
    """R_V in (5.3, 5.5): 1.4 % of young stars; the first shipped fit gave it no density."""
    young = fresh_draws[fresh_draws[:, 1] < YOUNG_CUT]
    in_tail = (young[:, 5] > 5.3) & (young[:, 5] < 5.5)
    assert float(in_tail.float().mean()) > 0.008
    with torch.no_grad():
        log_p = shipped.log_prob(young)
    # the edge of the tail is as probable as its middle, given the other parameters
    edge, middle = young.clone(), young.clone()
    edge[:, 5], middle[:, 5] = 5.45, 4.4
    with torch.no_grad():
        ratio = (shipped.log_prob(edge) - shipped.log_prob(middle)).exp()
    assert torch.isfinite(log_p[in_tail]).all()
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.05)


@pytest.mark.parametrize("main_sequence_only", [False, True])
def test_mass_factor_is_the_imf_the_prior_draws(main_sequence_only):
    """Binned share of 2e5 prior masses vs the factor's integral over each bin, per age."""
    config = PriorConfig(main_sequence_only=main_sequence_only)
    factor = MassGivenAge.from_prior(config)
    draws = sample_prior(200_000, np.random.default_rng(8), config)
    edges = np.log10([0.08, 0.1, 0.2, 0.35, 0.5, 0.8, 1.0, 1.3, 2.0, 5.0, 20.0])
    fine = torch.linspace(edges[0], edges[-1], 40_001, dtype=torch.float64)[1:-1]
    for lo_age, hi_age in ((6.0, 7.0), (9.9, 10.0)):  # young; oldest (turn-off ~ 1 Msun)
        sel = (draws["log10_age"] >= lo_age) & (draws["log10_age"] < hi_age)
        counts, _ = np.histogram(draws["log10_mass"][sel], edges)
        age = torch.full_like(fine, 0.5 * (lo_age + hi_age))
        dens = factor.log_prob(fine, age).exp().numpy()
        expected = np.array([
            np.trapezoid(dens[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)])
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ])  # fmt: skip
        n = int(sel.sum())
        spread = np.sqrt(expected * (1 - expected) / n)
        # a bin straddling the turn-off changes across the age bin: allow for it there
        slack = 0.02 if main_sequence_only and hi_age == 10.0 else 2e-3
        assert np.all(np.abs(counts / n - expected) < 5 * spread + slack), (counts / n, expected)
    if main_sequence_only:  # nothing above the turn-off of a 10 Gyr star (1 Msun)
        assert torch.isneginf(factor.log_prob(torch.tensor([0.1]), torch.tensor([10.0]))).all()


def test_mass_factor_is_normalised_and_its_samples_follow_it():
    factor = MassGivenAge.from_prior(PriorConfig(main_sequence_only=True))
    m = torch.linspace(math.log10(0.08), math.log10(20.0), 400_001, dtype=torch.float64)[1:-1]
    for age in (6.5, 9.0, 10.05):
        dens = factor.log_prob(m, torch.full_like(m, age)).exp()
        assert float(torch.trapezoid(dens, m)) == pytest.approx(1.0, abs=2e-3)  # the cliff
    torch.manual_seed(2)
    age = torch.full((100_000,), 9.0, dtype=torch.float64)
    mass = factor.sample(age)
    turn_off = (1e10 / 1e9) ** 0.4
    assert float(mass.max()) <= math.log10(turn_off) + 1e-9
    below = float((mass < math.log10(0.5)).double().mean())
    expected = float(kroupa_cdf(np.array(0.5)) / kroupa_cdf(np.array(turn_off)))
    assert abs(below - expected) < 5 * math.sqrt(expected * (1 - expected) / len(mass))

"""Contract tests of the flow-matching simformer, and its young-star products."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from ysoscale.nn.predictive import infrared_excess, p_disk, p_young, roc_auc
from ysoscale.nn.simformer import Simformer, SimformerPosterior
from ysoscale.nn.simformer_config import SimformerConfig

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1")
SMALL = dict(bands=BANDS, width=32, depth=2, heads=4, ff=64, default_steps=3)

CONFIGS = {
    "default": SimformerConfig(**SMALL),
    "guided_no_parallax": SimformerConfig(**SMALL, use_parallax=False, w_r=0.5),
    "atmospheric": SimformerConfig(
        **SMALL, params=("teff", "logg", "mh", "av", "rv", "distance_modulus")
    ),
    "full_attention": SimformerConfig(**SMALL, attention="full"),
    "native_distance": SimformerConfig(**SMALL, distance_frame="native"),
}


def make_batch(config: SimformerConfig, n: int = 12, seed: int = 0):
    """Photometry with gaps (every band observed at least once), some parallaxes missing."""
    gen = torch.Generator().manual_seed(seed)
    n_band = config.n_band
    mag_true = 10.0 + 8.0 * torch.rand(n, n_band, generator=gen)
    err = 0.005 + 0.1 * torch.rand(n, n_band, generator=gen)
    mag = mag_true + err * torch.randn(n, n_band, generator=gen)
    missing = torch.rand(n, n_band, generator=gen) < 0.3
    missing[0] = False
    mag[missing] = float("nan")
    err[missing] = float("nan")
    plx_true = 0.1 + 5.0 * torch.rand(n, generator=gen)
    plx_err = 0.02 + 0.2 * torch.rand(n, generator=gen)
    plx = plx_true + plx_err * torch.randn(n, generator=gen)
    plx[::3] = float("nan")
    lo, hi = (torch.tensor(b) for b in config.bounds)
    theta = lo + (hi - lo) * (0.05 + 0.9 * torch.rand(n, config.n_param, generator=gen))
    if "has_disk" in config.params:
        theta[:, config.params.index("has_disk")] = (torch.arange(n) % 2).float()
    return theta, mag, err, plx, plx_err, mag_true, plx_true


class FakeForward:
    """A differentiable stand-in for the ForwardModel (the real one is tested with grids)."""

    def __init__(self, bands):
        self.bands = tuple(bands)
        self.slopes = torch.linspace(-1.0, 1.0, len(bands))

    def physical(self, log10_mass, log10_age, mh, distance, av, rv):
        from ysoscale.physics.forward import Photometry

        base = 5 * torch.log10(distance)[:, None] - 2.5 * log10_mass[:, None]
        mag = base + av[:, None] * self.slopes + 0.1 * (log10_age + mh + rv)[:, None]
        return Photometry(mag=mag, valid=torch.ones_like(distance, dtype=torch.bool),
                          model_weight=torch.ones_like(distance))  # fmt: skip


@pytest.fixture(params=sorted(CONFIGS))
def model(request) -> Simformer:
    torch.manual_seed(0)
    return Simformer(CONFIGS[request.param])


def test_shapes_and_bounds(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    torch.manual_seed(1)
    samples, log_prob = model.sample(mag, err, plx, plx_err, n_samples=16, batch_size=5)
    assert samples.shape == (mag.shape[0], 16, model.config.n_param)
    assert log_prob.shape == (mag.shape[0], 16) and torch.isnan(log_prob).all()
    lo, hi = (torch.tensor(b) for b in model.config.bounds)
    assert (samples >= lo).all() and (samples <= hi).all()
    joint = model.sample_joint(mag, err, plx, plx_err, n_samples=4)
    assert joint["params"].shape == (mag.shape[0], 4, model.config.n_param)
    assert joint["bands"].shape == (mag.shape[0], 4, model.config.n_band)
    assert torch.isfinite(joint["bands"]).all()
    observed = torch.isfinite(mag)
    assert torch.equal(joint["band_observed"], observed)
    # observed bands come back as given; unobserved ones are predicted (and differ per sample)
    torch.testing.assert_close(joint["bands"][:, 0][observed], mag[observed])
    assert ("parallax" in joint) == model.config.use_parallax


def test_small_token_budget_gives_the_same_samples(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    noise = torch.randn(
        mag.shape[0], 8, model.config.n_param, generator=torch.Generator().manual_seed(2)
    )
    big = model.sample_from_noise(mag, err, plx, plx_err, noise)
    small = model.sample_from_noise(mag, err, plx, plx_err, noise, max_tokens=50)
    torch.testing.assert_close(big, small, rtol=1e-4, atol=1e-4)


def test_solvers_converge_on_a_known_flow(model, monkeypatch):
    """dx/dt = x has x(1) = e x(0): errors shrink with steps and solver order."""
    monkeypatch.setattr(model, "velocity", lambda x, *args, **kwargs: x)
    x0 = torch.randn(5, model.config.n_var, generator=torch.Generator().manual_seed(3))
    condition = torch.zeros_like(x0, dtype=torch.bool)
    condition[:, -1] = True  # an observed token stays put
    variable = torch.arange(model.config.n_var).expand(5, -1)

    def error(solver: str, steps: int) -> float:
        x1 = model._solve(x0, condition, x0, ~condition | True, variable, solver, steps)
        assert torch.equal(x1[:, -1], x0[:, -1])
        return float((x1[:, :-1] - math.e * x0[:, :-1]).abs().max())

    assert error("euler", 1) > error("euler", 4) > error("heun", 4) > error("rk4", 4)
    assert error("rk4", 8) < 1e-4 * float(x0.abs().max())
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    noise = torch.zeros(mag.shape[0], 2, model.config.n_param)
    with pytest.raises(ValueError, match="unknown solver"):
        model.sample_from_noise(mag, err, plx, plx_err, noise, solver="midpoint")


def test_gradients_reach_every_parameter(model):
    theta, mag, err, plx, plx_err, mag_true, plx_true = make_batch(model.config, n=64)
    model.train()
    forward = FakeForward(model.config.bands) if model.config.w_r > 0 else None
    gen = torch.Generator().manual_seed(4)
    loss, parts = model.loss(theta, mag, err, plx, plx_err, mag_true, plx_true,
                             forward_model=forward, generator=gen)  # fmt: skip
    assert torch.isfinite(loss) and np.isfinite(parts["fm"])
    assert np.isfinite(parts["physics"]) == (model.config.w_r > 0)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient in {name}"
        assert param.grad.abs().sum() > 0, f"zero gradient in {name}"


def test_guidance_needs_a_forward_model():
    model = Simformer(CONFIGS["guided_no_parallax"])
    theta, mag, err, plx, plx_err, mag_true, plx_true = make_batch(model.config)
    with pytest.raises(ValueError, match="forward_model"):
        model.loss(theta, mag, err, plx, plx_err, mag_true, plx_true)
    with pytest.raises(ValueError, match="guidance"):
        SimformerConfig(**SMALL, params=("teff", "logg", "mh"), w_r=1.0)


def test_save_load_round_trip(model, tmp_path):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    model.save(tmp_path, {"note": "contract test"})
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["estimator"] == "simformer" and card["note"] == "contract test"
    assert card["config"]["bands"] == list(model.config.bands)
    loaded = Simformer.load(tmp_path)
    assert loaded.config == model.config
    torch.manual_seed(3)
    first = model.sample(mag, err, plx, plx_err, n_samples=8)[0]
    torch.manual_seed(3)
    second = loaded.sample(mag, err, plx, plx_err, n_samples=8)[0]
    assert torch.equal(first, second)
    torch.manual_seed(4)
    first = model.sample_joint(mag, err, plx, plx_err, n_samples=4)["bands"]
    torch.manual_seed(4)
    second = loaded.sample_joint(mag, err, plx, plx_err, n_samples=4)["bands"]
    assert torch.equal(first, second)


def test_npe_directory_is_refused(tmp_path):
    from ysoscale.nn import EstimatorConfig, PosteriorEstimator

    PosteriorEstimator(EstimatorConfig(bands=("gaia_g",), width=8, heads=2, depth=1,
                                       transforms=1, flow_hidden=(8,))).save(tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="not a simformer"):
        Simformer.load(tmp_path)


def test_band_order_invariance(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    config = model.config
    perm = torch.from_numpy(np.random.default_rng(4).permutation(config.n_band))
    permuted_config = dataclasses.replace(
        config, bands=tuple(config.bands[i] for i in perm.tolist())
    )
    permuted = Simformer(permuted_config)
    n_param = config.n_param
    var_perm = torch.cat([torch.arange(n_param), n_param + perm,
                          torch.arange(n_param + config.n_band, config.n_var)])  # fmt: skip
    obs_perm = var_perm[n_param:] - n_param
    state = model.state_dict()
    state["id_embedding.weight"] = state["id_embedding.weight"][var_perm]
    state["value_weight"] = state["value_weight"][var_perm]
    state["error_weight"] = state["error_weight"][obs_perm]
    permuted.load_state_dict(state)
    torch.manual_seed(5)
    first = model.sample(mag, err, plx, plx_err, n_samples=8)[0]
    torch.manual_seed(5)
    second = permuted.sample(mag[:, perm], err[:, perm], plx, plx_err, n_samples=8)[0]
    torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-4)
    torch.manual_seed(6)
    first = model.sample_joint(mag, err, plx, plx_err, n_samples=4)["bands"]
    torch.manual_seed(6)
    second = permuted.sample_joint(mag[:, perm], err[:, perm], plx, plx_err, n_samples=4)["bands"]
    torch.testing.assert_close(first[..., perm], second, rtol=1e-4, atol=1e-4)


def test_star_without_bands_is_rejected(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    mag[[2, 5]] = float("nan")
    with pytest.raises(ValueError, match=r"no observed band \(rows 2, 5\)"):
        model.sample(mag, err, plx, plx_err, n_samples=2)
    with pytest.raises(ValueError, match="no observed band"):
        model(mag, err, plx, plx_err)
    with pytest.raises(ValueError, match="no observed band"):
        model.sample_joint(mag, err, plx, plx_err, n_samples=2)
    # leaving out every observed band of a star is the same mistake
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    with pytest.raises(ValueError, match="no observed band"):
        model.sample_joint(mag, err, plx, plx_err, n_samples=2, leave_out=model.config.bands)


def test_distribution_interface(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    dist = model(mag, err, plx, plx_err)
    assert isinstance(dist, SimformerPosterior)
    assert dist.batch_shape == (mag.shape[0],) and dist.event_shape == (model.config.n_param,)
    assert dist.sample((3,)).shape == (3, mag.shape[0], model.config.n_param)
    value = dist.sample((3,))
    if model.config.attention != "cached_context":
        with pytest.raises(ValueError, match="cached_context"):
            dist.log_prob(value)
        return
    log_q = dist.log_prob(value)  # exact density by inverting the solver's steps
    assert log_q.shape == (3, mag.shape[0])
    assert torch.isfinite(log_q).float().mean() > 0.5


def test_conditioning_on_a_parameter_fixes_it():
    model = Simformer(CONFIGS["default"])
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    joint = model.sample_joint(mag, err, plx, plx_err, n_samples=4, condition={"has_disk": 0.0})
    assert (joint["params"][..., model.config.params.index("has_disk")] == 0).all()
    with pytest.raises(ValueError, match="condition on parameters"):
        model.sample_joint(mag, err, plx, plx_err, n_samples=2, condition={"gaia_g": 1.0})


def _still(model: Simformer) -> Simformer:
    """The model with a zero velocity field: every sample is its starting noise."""
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    return model


@pytest.mark.parametrize("attention", ["cached_context", "full"])
def test_distance_frame_follows_the_parallax(attention):
    """With ``distance_frame="parallax"`` the distance token of a star with a parallax is
    measured from the distance the parallax implies in units of its width: a model that
    does not move its noise returns distances spread by that width around 1000 / parallax,
    and the native frame spreads them over the prior's scale."""
    n, s = 4, 4000
    parallax = torch.tensor([10.0, 2.0, 0.5, float("nan")])
    parallax_error = torch.tensor([0.1, 0.02, 0.05, float("nan")])  # S/N 100, 100, 10, none
    mag = torch.full((n, len(BANDS)), 12.0)
    err = torch.full((n, len(BANDS)), 0.01)
    spreads = {}
    for frame in ("parallax", "native"):
        torch.manual_seed(1)
        model = _still(Simformer(SimformerConfig(**SMALL, attention=attention,
                                                 distance_frame=frame)))  # fmt: skip
        index = model.config.params.index("log10_distance")
        samples, _ = model.sample(mag, err, parallax, parallax_error, n_samples=s)
        distance = samples[..., index].double()
        spreads[frame] = distance.std(dim=1)
        if frame == "native":
            continue
        implied = torch.log10(1000.0 / parallax[:3]).double()
        width = (parallax_error / parallax)[:3].double() / math.log(10.0)
        # mean within 4 standard errors of the implied distance; the spread within 5 %
        # (4 sigma of a standard deviation from s draws is 4 / sqrt(2 s) = 4.5 %)
        assert (distance[:3].mean(dim=1) - implied).abs().max() < 4 * (width / math.sqrt(s)).max()
        ratio = distance[:3].std(dim=1) / width
        assert ((ratio - 1).abs() < 0.05).all(), ratio
    scale = float(model.scale[index])
    assert abs(float(spreads["native"][0]) / scale - 1) < 0.05
    # the star without a parallax is in the native frame either way
    assert torch.allclose(spreads["parallax"][3], spreads["native"][3], rtol=1e-4)


def test_frame_needs_the_parallax_as_a_condition():
    model = Simformer(CONFIGS["default"])
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    obs = model.observations(mag, err, plx, plx_err)
    centre, width = model.frame(obs, obs.observed)
    has = torch.isfinite(plx) & (plx / plx_err > 3)
    index = model.config.params.index("log10_distance")
    assert (width[has, index] < 1).all() and (width[~torch.isfinite(plx), index] == 1).all()
    others = torch.ones(model.config.n_var, dtype=torch.bool)
    others[index] = False
    assert (centre[:, others] == 0).all() and (width[:, others] == 1).all()
    dropped = obs.observed.clone()
    dropped[:, -1] = False  # parallax left out: it cannot set the frame
    centre, width = model.frame(obs, dropped)
    assert (centre == 0).all() and (width == 1).all()


def test_conditioning_on_the_distance_with_a_parallax_fixes_it():
    model = Simformer(CONFIGS["default"])
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    plx = plx.abs() + 1.0
    joint = model.sample_joint(mag, err, plx, plx_err, n_samples=3,
                               condition={"log10_distance": 2.5})  # fmt: skip
    distance = joint["params"][..., model.config.params.index("log10_distance")]
    assert torch.allclose(distance, torch.full_like(distance, 2.5), atol=1e-5)


def test_yso_products_shapes():
    torch.manual_seed(0)
    model = Simformer(CONFIGS["default"])
    _, mag, err, plx, plx_err, _, _ = make_batch(model.config)
    out = model.yso_products(mag, err, plx, plx_err, n_samples=8)
    n = mag.shape[0]
    assert out["p_young"].shape == (n,) and out["p_disk"].shape == (n,)
    assert ((out["p_young"] >= 0) & (out["p_young"] <= 1)).all()
    assert ((out["p_disk"] >= 0) & (out["p_disk"] <= 1)).all()
    scored = [model.config.bands.index(b) for b in ("tmass_h", "tmass_ks", "wise_w1")]
    others = [i for i in range(model.config.n_band) if i not in scored]
    excess = out["excess"]
    assert torch.isnan(excess[:, others]).all()
    has_anchor = torch.isfinite(mag[:, others]).any(dim=1)
    expected = torch.isfinite(mag[:, scored]) & has_anchor[:, None]
    assert torch.equal(torch.isfinite(excess[:, scored]), expected)


def test_predictive_functions():
    ages = np.log10(np.array([[1e6, 5e6, 2e7, 1e9], [3e9, 4e9, 5e9, np.nan]]))
    np.testing.assert_allclose(p_young(ages), [0.5, 0.0])
    np.testing.assert_allclose(p_young(ages, threshold_myr=100), [0.75, 0.0])
    torch.testing.assert_close(p_disk(torch.tensor([[0.9, 0.1, 1.0, 0.0]])), torch.tensor([0.5]))
    rng = np.random.default_rng(0)
    predicted = 12.0 + 0.1 * rng.standard_normal((2000, 200, 1))
    observed = 12.0 + np.sqrt(0.1**2 + 0.05**2) * rng.standard_normal((2000, 1))
    score = infrared_excess(observed, np.full_like(observed, 0.05), predicted)
    assert abs(score.mean()) < 0.1 and abs(score.std() - 1.0) < 0.1  # no excess: ~N(0, 1)
    bright = infrared_excess(observed - 1.0, np.full_like(observed, 0.05), predicted)
    assert np.median(bright) > 5
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1])) == 1.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([1, 1])))

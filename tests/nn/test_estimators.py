"""Contract tests of the amortised posterior estimator (every config, same checks)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ysoscale.nn import (
    ATMOSPHERIC_PARAMS,
    BandTokenizer,
    EstimatorConfig,
    PosteriorEstimator,
    SetEncoder,
)
from ysoscale.physics.passbands import BAND_IDS

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1")
SMALL = dict(bands=BANDS, width=32, depth=2, heads=4, ff=64, transforms=2, flow_hidden=(32, 32))

CONFIGS = {
    "nsf": EstimatorConfig(**SMALL),
    "maf_atmospheric_no_parallax": EstimatorConfig(
        **SMALL, flow="MAF", params=ATMOSPHERIC_PARAMS, use_parallax=False
    ),
    "nsf_coupling": EstimatorConfig(**SMALL, passes=2),
}


def make_batch(config: EstimatorConfig, n: int = 12, seed: int = 0):
    """Photometry with gaps (every band observed at least once), some parallaxes missing."""
    gen = torch.Generator().manual_seed(seed)
    n_band = config.n_band
    mag = 10.0 + 8.0 * torch.rand(n, n_band, generator=gen)
    err = 0.005 + 0.1 * torch.rand(n, n_band, generator=gen)
    missing = torch.rand(n, n_band, generator=gen) < 0.3
    missing[0] = False
    mag[missing] = float("nan")
    plx = 0.1 + 5.0 * torch.rand(n, generator=gen)
    plx_err = 0.02 + 0.2 * torch.rand(n, generator=gen)
    plx[::3] = float("nan")
    lo, hi = (torch.tensor(b) for b in config.bounds)
    theta = lo + (hi - lo) * (0.05 + 0.9 * torch.rand(n, config.n_param, generator=gen))
    return theta, mag, err, plx, plx_err


@pytest.fixture(params=sorted(CONFIGS))
def model(request) -> PosteriorEstimator:
    torch.manual_seed(0)
    return PosteriorEstimator(CONFIGS[request.param])


def test_shapes_and_bounds(model):
    theta, mag, err, plx, plx_err = make_batch(model.config)
    model.eval()
    dist = model(mag, err, plx, plx_err)
    assert dist.batch_shape == (mag.shape[0],)
    assert dist.event_shape == (model.config.n_param,)
    assert torch.isfinite(dist.log_prob(theta)).all()

    torch.manual_seed(1)
    samples, log_prob = model.sample(mag, err, plx, plx_err, n_samples=32, batch_size=5)
    assert samples.shape == (mag.shape[0], 32, model.config.n_param)
    assert log_prob.shape == (mag.shape[0], 32)
    lo, hi = (torch.tensor(b) for b in model.config.bounds)
    assert (samples >= lo).all() and (samples <= hi).all()
    assert torch.isfinite(log_prob).all()


def test_sample_log_prob_matches_density(model):
    _, mag, err, plx, plx_err = make_batch(model.config)
    torch.manual_seed(2)
    samples, log_prob = model.sample(mag, err, plx, plx_err, n_samples=16)
    model.eval()
    with torch.no_grad():
        again = model(mag, err, plx, plx_err).log_prob(samples.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(again, log_prob, rtol=1e-4, atol=1e-3)


def test_gradients_reach_every_parameter(model):
    theta, mag, err, plx, plx_err = make_batch(model.config)
    model.train()
    loss = model.nll(theta, mag, err, plx, plx_err)
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient in {name}"
        assert param.grad.abs().sum() > 0, f"zero gradient in {name}"


def test_save_load_round_trip(model, tmp_path):
    _, mag, err, plx, plx_err = make_batch(model.config)
    model.save(tmp_path, {"note": "contract test"})
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["note"] == "contract test"
    assert card["config"]["bands"] == list(model.config.bands)
    loaded = PosteriorEstimator.load(tmp_path)
    assert loaded.config == model.config
    torch.manual_seed(3)
    first = model.sample(mag, err, plx, plx_err, n_samples=8)
    torch.manual_seed(3)
    second = loaded.sample(mag, err, plx, plx_err, n_samples=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_band_order_invariance(model):
    _, mag, err, plx, plx_err = make_batch(model.config)
    perm = torch.from_numpy(np.random.default_rng(4).permutation(model.config.n_band))
    config = dataclasses.replace(
        model.config, bands=tuple(model.config.bands[i] for i in perm.tolist())
    )
    permuted = PosteriorEstimator(config)
    state = model.state_dict()
    state["tokenizer.band_embedding.weight"] = state["tokenizer.band_embedding.weight"][perm]
    permuted.load_state_dict(state)
    torch.manual_seed(5)
    first, lp1 = model.sample(mag, err, plx, plx_err, n_samples=8)
    torch.manual_seed(5)
    second, lp2 = permuted.sample(mag[:, perm], err[:, perm], plx, plx_err, n_samples=8)
    torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lp1, lp2, rtol=1e-4, atol=1e-3)


def test_star_without_bands_is_rejected(model):
    theta, mag, err, plx, plx_err = make_batch(model.config)
    mag[[2, 5]] = float("nan")
    with pytest.raises(ValueError, match=r"no observed band \(rows 2, 5\)"):
        model(mag, err, plx, plx_err)
    with pytest.raises(ValueError, match="no observed band"):
        model.sample(mag, err, plx, plx_err, n_samples=2)


def test_missing_parallax_equals_no_parallax():
    torch.manual_seed(0)
    model = PosteriorEstimator(CONFIGS["nsf"]).eval()
    _, mag, err, _, _ = make_batch(model.config)
    nan = torch.full((mag.shape[0],), float("nan"))
    with torch.no_grad():
        a = model.context(mag, err)
        b = model.context(mag, err, nan, nan)
    torch.testing.assert_close(a, b)


def test_irisml_config_shapes():
    config = EstimatorConfig.irisml()
    assert (config.width, config.depth, config.heads, config.ff) == (256, 10, 8, 768)
    assert (config.flow, config.transforms, config.bands) == ("MAF", 10, BAND_IDS)
    torch.manual_seed(0)
    model = PosteriorEstimator(config)
    _, mag, err, plx, plx_err = make_batch(config, n=2)
    samples, log_prob = model.sample(mag, err, plx, plx_err, n_samples=4)
    assert samples.shape == (2, 4, 6) and log_prob.shape == (2, 4)


def test_set_encoder_ignores_padding_content():
    torch.manual_seed(0)
    enc = SetEncoder(width=16, depth=2, heads=2, ff=32).eval()
    tokens = torch.randn(3, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, -2:] = True
    changed = tokens.clone()
    changed[:, -2:] = torch.randn(3, 2, 16)
    torch.testing.assert_close(enc(tokens, mask), enc(changed, mask))
    with pytest.raises(AssertionError, match="padding_mask"):
        enc(tokens, mask[:, :3])


def test_tokenizer_mask_and_finite_tokens():
    config = EstimatorConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=8, heads=2)
    tok = BandTokenizer(config)
    mag = torch.tensor([[12.0, float("nan"), 11.0]])
    err = torch.tensor([[0.01, 0.02, float("nan")]])
    tokens, pad = tok(mag, err, torch.tensor([1.0]), torch.tensor([0.1]))
    assert pad.tolist() == [[False, True, True, False, False]]
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(bands=("gaia_g", "not_a_band")), "unknown band"),
        (dict(params=("log10_mass", "colour")), "unknown parameter"),
        (dict(width=30, heads=4), "divisible"),
        (dict(param_bounds={"av": (3.0, 1.0)}), "lo < hi"),
        (dict(flow="RealNVP"), "unknown flow"),
        (dict(passes=7), "passes"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        EstimatorConfig(**bad)


def test_config_round_trip_and_misspelled_keys():
    config = EstimatorConfig(**SMALL, param_bounds={"av": (0.0, 10.0)})
    values = json.loads(config.to_json())
    assert EstimatorConfig.from_dict(values) == config
    assert config.param_bounds["av"] == (0.0, 10.0)
    with pytest.raises(ValueError, match="widht"):
        EstimatorConfig.from_dict({**values, "widht": 64})


@pytest.mark.parametrize("encoding, distinguishes", [("asinh", True), ("snr_clip", False)])
def test_parallax_token_keeps_high_signal_to_noise(encoding, distinguishes):
    """A parallax at S/N 150 and one at S/N 1500 (same error) are 10x apart in distance:
    the asinh encoding gives them different tokens; the clipped S/N of older models cannot."""
    config = dataclasses.replace(CONFIGS["nsf"], parallax_encoding=encoding)
    torch.manual_seed(0)
    tokenizer = BandTokenizer(config)
    mag = torch.full((2, config.n_band), 12.0)
    err = torch.full((2, config.n_band), 0.01)
    plx_err = torch.full((2,), 0.02)
    plx = torch.tensor([150.0, 1500.0]) * plx_err
    with torch.no_grad():
        tokens, _ = tokenizer(mag, err, plx, plx_err)
    differ = not torch.allclose(tokens[0, -1], tokens[1, -1])
    assert differ is distinguishes


def test_cards_without_a_parallax_encoding_load_as_snr_clip():
    values = CONFIGS["nsf"].to_dict()
    assert values["parallax_encoding"] == "asinh"
    del values["parallax_encoding"]
    assert EstimatorConfig.from_card(values).parallax_encoding == "snr_clip"
    assert EstimatorConfig.from_dict(values).parallax_encoding == "asinh"
    with pytest.raises(ValueError, match="parallax_encoding"):
        dataclasses.replace(CONFIGS["nsf"], parallax_encoding="linear")

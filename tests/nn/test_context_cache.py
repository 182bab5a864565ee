"""The cached-context attention mode of the Simformer (ysoscale.nn.context_cache).

Its contract tests (shapes, gradients, save/load, band order, token budget) run with the
other configurations in test_simformer.py; here: the cached sampling path gives what the
stock transformer with the attention mask gives, and the conditioning tokens really are
independent of the unobserved ones and of the flow time.
"""

from __future__ import annotations

import json

import pytest
import torch

from ysoscale.nn.context_cache import attention_mask
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig

from .test_simformer import SMALL, make_batch

CONFIG = SimformerConfig(**SMALL)


@pytest.fixture
def model() -> Simformer:
    torch.manual_seed(0)
    return Simformer(CONFIG).eval()


def _reference(model, obs, condition, present, start, noise, steps):
    """Star by star, the full sequence through the stock transformer with the mask."""
    n_var = model.config.n_var
    variable = torch.arange(n_var)
    rows = []
    for b in range(noise.shape[0]):
        samples = noise.shape[1]
        x = torch.where(condition[b], start[b], noise[b])
        error = torch.where(condition[b], obs.error[b], 0.0).expand(samples, -1)
        x = model._solve(x, condition[b].expand(samples, -1), error,
                         present[b].expand(samples, -1), variable.expand(samples, -1),
                         "heun", steps)  # fmt: skip
        rows.append(torch.where(present[b], x, float("nan")))
    return torch.stack(rows)


@torch.no_grad()
def test_cached_sampling_matches_the_masked_transformer(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(CONFIG, n=9)
    obs = model.observations(mag, err, plx, plx_err)
    n_param = CONFIG.n_param
    noise = torch.randn(9, 5, CONFIG.n_var, generator=torch.Generator().manual_seed(1))
    # parameter-only sampling: unobserved observables left out of the sequence
    present = obs.observed.clone()
    present[:, :n_param] = True
    cached = model._transport(obs, obs.observed, present, obs.values, noise, "heun", 3, None)
    reference = _reference(model, obs, obs.observed, present, obs.values, noise, 3)
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4, equal_nan=True)
    # joint sampling, one parameter fixed, a small token budget (several chunks)
    condition = obs.observed.clone()
    condition[:, CONFIG.params.index("has_disk")] = True
    start = obs.values.clone()
    start[:, CONFIG.params.index("has_disk")] = -1.0
    everything = torch.ones_like(condition)
    cached = model._transport(obs, condition, everything, start, noise, "heun", 3, 60)
    reference = _reference(model, obs, condition, everything, start, noise, 3)
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached[:, :, condition[0]][0], start[0, condition[0]].expand(5, -1))


@torch.no_grad()
def test_conditioning_tokens_ignore_the_unobserved_ones_and_the_time(model):
    _, mag, err, plx, plx_err, _, _ = make_batch(CONFIG, n=6)
    obs = model.observations(mag, err, plx, plx_err)
    condition = obs.observed
    gen = torch.Generator().manual_seed(2)
    x = torch.where(condition, obs.values, torch.randn(obs.values.shape, generator=gen))
    other = torch.where(condition, obs.values, torch.randn(obs.values.shape, generator=gen))
    t = torch.full((6,), 0.2)
    first = model.velocity(x, t, condition, obs.error)
    second = model.velocity(other, t + 0.5, condition, obs.error)
    torch.testing.assert_close(first[condition], second[condition], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first[~condition], second[~condition])
    # with full attention they do depend on them
    full = Simformer(SimformerConfig(**SMALL, attention="full")).eval()
    first = full.velocity(x, t, condition, obs.error)
    second = full.velocity(other, t + 0.5, condition, obs.error)
    assert not torch.allclose(first[condition], second[condition])


def test_attention_mask_rows_are_never_empty():
    gen = torch.Generator().manual_seed(3)
    condition = torch.rand(50, 9, generator=gen) < 0.4
    present = condition | (torch.rand(50, 9, generator=gen) < 0.5)
    present[:, 0] = True
    blocked = attention_mask(condition, present, heads=2)
    assert blocked.shape == (100, 9, 9)
    assert (~blocked).any(dim=-1).all()
    # a conditioning token never sees a non-conditioning one
    first = blocked[::2]
    assert first[condition[:, :, None] & ~condition[:, None, :]].all()


def test_attention_setting_is_checked_and_old_cards_are_full(tmp_path):
    assert SimformerConfig().attention == "cached_context"  # the default of new models
    with pytest.raises(ValueError, match="unknown attention 'causal'"):
        SimformerConfig(**SMALL, attention="causal")
    card = SimformerConfig(**SMALL).to_dict()
    del card["attention"]
    assert SimformerConfig.from_card(card).attention == "full"
    assert SimformerConfig.from_dict(card).attention == "cached_context"  # a new TOML
    # a model saved before the key existed loads as a full-attention model
    Simformer(SimformerConfig(**SMALL, attention="full")).save(tmp_path)
    path = tmp_path / "model_card.json"
    saved = json.loads(path.read_text())
    del saved["config"]["attention"]
    path.write_text(json.dumps(saved))
    assert Simformer.load(tmp_path).config.attention == "full"

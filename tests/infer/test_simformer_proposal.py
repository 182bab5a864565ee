"""The simformer as an importance-sampling proposal (ysoscale.infer.simformer_proposal)."""

from __future__ import annotations

import pytest
import torch

from tests.infer.test_importance import BANDS, GaussianPrior, ToyForward, simulate
from ysoscale.infer.importance import importance_sample, log_importance_weight
from ysoscale.infer.simformer_proposal import SimformerProposal
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv", "has_disk")


@pytest.fixture(scope="module")
def proposal():
    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, params=PARAMS, width=16, heads=2, depth=1, ff=32,
                             use_parallax=False)  # fmt: skip
    return SimformerProposal(Simformer(config), steps=3, noise_scale=1.2)


def test_drops_has_disk_and_picks_each_stars_disk_state(proposal):
    assert proposal.config.params == PARAMS[:6]
    _, mag = simulate(5, seed=3)
    err = torch.full_like(mag, 0.1)
    state = proposal.condition(mag, err, None, None)["has_disk"]
    assert state.shape == (5,) and set(state.tolist()) <= {0.0, 1.0}
    # a function of each star's data alone: the same in any batch
    alone = torch.cat([proposal.condition(mag[i : i + 1], err[i : i + 1], None, None)["has_disk"]
                       for i in range(5)])  # fmt: skip
    assert torch.equal(alone, state)
    fixed = SimformerProposal(proposal.model, disk=0.0)
    assert fixed.condition(mag, err, None, None) == {"has_disk": 0.0}
    with pytest.raises(ValueError, match="auto"):
        SimformerProposal(proposal.model, disk="maybe")


def test_truth_weights_are_the_proposal_weights(proposal):
    """log_importance_weight of the proposal's own samples (the truth-weight path, through
    the inverted solver) equals the weights importance_sample gave them."""
    _, mag = simulate(6, seed=1)
    err = torch.full_like(mag, 0.1)
    result = importance_sample(proposal, ToyForward(), GaussianPrior(), mag, err, n_proposal=16,
                               error_floor=0.0, disk=None, seed=0)  # fmt: skip
    again = log_importance_weight(proposal, ToyForward(), GaussianPrior(), result.proposal, mag,
                                  err, error_floor=0.0, disk=None)  # fmt: skip
    raw = result.raw_log_weight()
    finite = torch.isfinite(raw)
    assert finite.float().mean() > 0.9
    assert torch.equal(finite, torch.isfinite(again))
    assert torch.allclose(again[finite], raw[finite], atol=2e-3)

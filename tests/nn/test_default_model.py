"""The estimator shipped inside the package loads, samples inside its bounds and says
what it was trained on."""

from __future__ import annotations

import numpy as np
import torch

from ysoscale.nn.default import default_model_card, load_default_model
from ysoscale.physics.passbands import BAND_IDS


def test_card_states_its_training() -> None:
    card = default_model_card()
    for key in ("config", "training_store_attrs", "history", "best_validation_nll", "training"):
        assert key in card, key
    assert card["config"]["bands"] == list(BAND_IDS)
    assert card["history"], "the card lists the epochs it was trained for"


def test_samples_stay_inside_the_bounds() -> None:
    model = load_default_model()
    rng = np.random.default_rng(0)
    mag = np.full((3, len(BAND_IDS)), np.nan, dtype=np.float32)
    err = np.full_like(mag, np.nan)
    columns = [BAND_IDS.index(b) for b in ("gaia_g", "gaia_bp", "gaia_rp", "tmass_ks")]
    mag[:, columns] = rng.uniform(12, 15, (3, 4)).astype(np.float32)
    err[:, columns] = 0.02
    parallax = np.array([1.0, 5.0, np.nan], dtype=np.float32)
    parallax_error = np.array([0.05, 0.05, np.nan], dtype=np.float32)
    torch.manual_seed(0)
    samples, log_prob = model.sample(mag, err, parallax, parallax_error, n_samples=16)
    lo, hi = (torch.tensor(b) for b in model.config.bounds)
    assert samples.shape == (3, 16, len(model.config.params))
    assert torch.all((samples >= lo) & (samples <= hi)) and torch.isfinite(log_prob).all()

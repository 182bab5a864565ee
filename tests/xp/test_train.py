"""Training: the loss goes down (synthetic and real data), split, model directory, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.xp import REAL_CHUNK
from tests.xp.conftest import SMALL
from ysoscale.catalog.xp import ingest_xp
from ysoscale.cli import main
from ysoscale.nn.svae import ScatterVAE, SVAEConfig
from ysoscale.xp.data import read_store
from ysoscale.xp.populations import Populations
from ysoscale.xp.train import XPTrainingConfig, fit_svae, new_model, train_svae, validation_mask


def _fit(arrays, config, epochs, seed=0):
    held = validation_mask(arrays.source_id, 0.2, seed)
    train, validation = arrays.subset(~held), arrays.subset(held)
    model = new_model(config, train, seed)
    settings = XPTrainingConfig(epochs=epochs, batch_size=64, seed=seed)
    return fit_svae(model, train, validation, settings)


def test_loss_decreases_on_synthetic_spectra(xp_store):
    history = _fit(read_store(xp_store), SMALL, epochs=12)
    assert history.train_loss[-1] < history.train_loss[0] - 0.5
    assert min(history.validation_loss) < history.validation_loss[0] - 0.2


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CHUNK.exists(), reason="../shared/data is not on this machine")
def test_loss_decreases_on_real_gaia_spectra(tmp_path):
    ingest_xp([REAL_CHUNK], tmp_path / "xp.zarr")
    history = _fit(read_store(tmp_path / "xp.zarr"), SVAEConfig(), epochs=8)
    assert history.train_loss[-1] < history.train_loss[0]
    assert min(history.validation_loss) < history.validation_loss[0]


def test_split_depends_only_on_each_source_id():
    ids = np.arange(10_000, 30_000)
    mask = validation_mask(ids, 0.2, seed=3)
    assert 0.18 < mask.mean() < 0.22
    np.testing.assert_array_equal(validation_mask(ids[::3], 0.2, seed=3), mask[::3])
    assert not np.array_equal(validation_mask(ids, 0.2, seed=4), mask)


def test_model_directory_and_resume(tmp_path, xp_store, svae_dir):
    card = json.loads((svae_dir / "model_card.json").read_text())
    assert card["kind"] == "svae" and card["normalisation"].startswith("bp_coefficients[0]")
    assert card["n_train"] + card["n_validation"] == 400
    assert np.isfinite(card["validation_metrics"]["chi2_dof_median"])
    assert Populations.load(svae_dir).n_populations >= 1

    out = tmp_path / "model"
    config = XPTrainingConfig(epochs=2, batch_size=64, min_cluster_size=10)
    first = train_svae(xp_store, out, SMALL, config, progress=False)
    assert not first.resumed and first.epochs_run == 2
    again = train_svae(xp_store, out, None, config, progress=False)
    assert again.resumed and "further" in again.summary()
    with pytest.raises(ValueError, match="another configuration"):
        train_svae(xp_store, out, SVAEConfig(latent=5), config, progress=False)


def test_training_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="epoch"):
        XPTrainingConfig.from_dict({"epoch": 3})


def test_cli_train_svae(tmp_path, xp_store, capsys):
    (tmp_path / "svae.toml").write_text(
        "[svae]\nlatent = 2\nhidden = [16]\n[training]\nmin_cluster_size = 10\n"
    )
    code = main([
        "train", "--model", "svae", "--data", str(xp_store), "--out", str(tmp_path / "m"),
        "--config", str(tmp_path / "svae.toml"), "--epochs", "2", "--batch-size", "64",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "sVAE trained on" in out and "held-out reconstruction chi2/dof" in out
    assert ScatterVAE.load(tmp_path / "m").config.latent == 2
    (tmp_path / "bad.toml").write_text("[svea]\nlatent = 2\n")
    code = main([
        "train", "--model", "svae", "--data", str(xp_store), "--out", str(tmp_path / "m2"),
        "--config", str(tmp_path / "bad.toml"),
    ])  # fmt: skip
    assert code == 2 and "svea" in capsys.readouterr().err

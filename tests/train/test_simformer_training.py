"""Training the simformer on a store: trainer, resume, CLI, and the effect of guidance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ysoscale.cli import main
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate
from ysoscale.train.loader import StoreLoader
from ysoscale.train.simformer_trainer import train_simformer
from ysoscale.train.trainer import TrainingConfig, store_loaders

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1", "wise_w2")
TINY = SimformerConfig(bands=BANDS, width=16, depth=1, heads=2, ff=32, default_steps=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory, photometry_grid, isochrone_grid) -> Path:
    path = tmp_path_factory.mktemp("simformer") / "store.zarr"
    config = SimulationConfig(n=4000, seed=5, chunk_size=500, require_detection=True)
    simulate(config, path, workers=0, progress=False)
    return path


@pytest.fixture(scope="module")
def forward(photometry_grid, isochrone_grid) -> ForwardModel:
    return ForwardModel(photometry_grid, isochrone_grid, bands=BANDS)


def test_loader_returns_noise_free_targets(store) -> None:
    loader = StoreLoader(store, TINY.params, BANDS, batch_size=400, with_truth=True)
    batch = next(iter(loader.epoch(0)))
    assert batch.mag_true.shape == batch.mag.shape and batch.parallax_true.shape == (400,)
    assert np.isfinite(batch.mag_true).all()
    has_disk = batch.theta[:, TINY.params.index("has_disk")]
    assert set(np.unique(has_disk)) <= {0.0, 1.0}
    plain = next(iter(StoreLoader(store, TINY.params, BANDS, batch_size=400).epoch(0)))
    assert plain.mag_true is None and plain.parallax_true is None
    np.testing.assert_array_equal(plain.mag, batch.mag)  # same batches with or without truth


def test_train_writes_a_loadable_model_and_resumes(store, tmp_path) -> None:
    out = tmp_path / "model"
    first = train_simformer(store, out, TINY, TrainingConfig(epochs=1, batch_size=500),
                            progress=False)  # fmt: skip
    assert first.epochs_run == 1 and np.isfinite(first.best_validation_nll)
    card = json.loads((out / "model_card.json").read_text())
    assert card["estimator"] == "simformer" and card["history"]
    model = Simformer.load(out)
    # the standardisation was fitted on the store (not the bounds' defaults)
    assert model.config.standardization["gaia_g"] != TINY.standardization["gaia_g"]
    resumed = train_simformer(store, out, TINY, TrainingConfig(epochs=2, batch_size=500),
                              progress=False)  # fmt: skip
    assert resumed.epochs_run == 2
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    other = SimformerConfig(bands=BANDS, width=32, depth=1, heads=2, ff=32)
    with pytest.raises(ValueError, match="another configuration"):
        train_simformer(store, out, other, TrainingConfig(epochs=3, batch_size=500),
                        progress=False)  # fmt: skip


def test_cli_trains_a_simformer(store, tmp_path) -> None:
    config = tmp_path / "simformer.toml"
    config.write_text(
        "[estimator]\nbands = " + json.dumps(list(BANDS)) + "\nwidth = 16\ndepth = 1\n"
        "heads = 2\nff = 32\n[training]\nbatch_size = 500\n"
    )
    out = tmp_path / "cli_model"
    args = ["train", "--model", "simformer", "--data", str(store), "--out", str(out),
            "--config", str(config), "--epochs", "1"]  # fmt: skip
    assert main(args) == 0
    assert Simformer.load(out).config.width == 16
    assert main([*args, "--irisml"]) == 2  # an npe-only option is refused by name


def _residual(model: Simformer, forward: ForwardModel, store: Path) -> float:
    """Median |m_fwd(theta) - m_obs| of posterior samples, disk-free validation stars."""
    loader = StoreLoader(store, model.config.params, BANDS, split="validation", batch_size=200,
                         band_dropout=0.0, survey_dropout=0.0, redraw_noise=False)  # fmt: skip
    batch = next(iter(loader.epoch(0)))
    torch.manual_seed(0)
    samples, _ = model.sample(batch.mag, batch.mag_err, batch.parallax, batch.parallax_error,
                              n_samples=8, steps=4)  # fmt: skip
    n, s, _ = samples.shape
    flat = samples.reshape(n * s, -1)
    p = {name: flat[:, i] for i, name in enumerate(model.config.params)}
    fwd = forward.physical(p["log10_mass"], p["log10_age"], p["mh"],
                           10.0 ** p["log10_distance"], p["av"], p["rv"])  # fmt: skip
    m_fwd = fwd.mag.reshape(n, s, -1).numpy()
    disk_free = batch.theta[:, model.config.params.index("has_disk")] < 0.5
    use = np.isfinite(batch.mag)[:, None, :] & disk_free[:, None, None] & np.isfinite(m_fwd)
    return float(np.median(np.abs(m_fwd - batch.mag[:, None, :])[use]))


def test_guidance_reduces_the_physics_residual(store, forward, tmp_path) -> None:
    training = TrainingConfig(epochs=3, batch_size=250, learning_rate=2e-3, warmup_steps=20)
    residual = {}
    for name, weight in (("plain", 0.0), ("guided", 1.0)):
        config = SimformerConfig(bands=BANDS, width=32, depth=2, heads=4, ff=64, w_r=weight)
        train_simformer(store, tmp_path / name, config, training, forward_model=forward,
                        progress=False)  # fmt: skip
        residual[name] = _residual(Simformer.load(tmp_path / name), forward, store)
    print(f"physics residual (median |m_fwd - m_obs|, mag): {residual}")
    assert residual["guided"] < residual["plain"]


def test_simformer_reads_the_loaders_of_the_set_transformer(store, tmp_path) -> None:
    """Regression: the simformer's training loader once dropped ``survey_subset_rate`` and
    ``saturation_release``, so it never saw a bright Gaia-only star (Sco-Cen's ages all came
    out near 10 Myr). Both trainers now build their loaders with ``store_loaders``."""
    training = TrainingConfig(epochs=1, batch_size=500, survey_subset_rate=0.4,
                              saturation_release=0.3)  # fmt: skip
    train, validation, names = store_loaders([store, store], training, TINY.params, BANDS,
                                             with_truth=True)  # fmt: skip
    assert names == [str(store), str(store)]
    for loader in train.loaders:
        assert (loader.survey_subset_rate, loader.saturation_release) == (0.4, 0.3)
        assert loader.with_truth
    for loader in validation.loaders:
        assert (loader.survey_subset_rate, loader.saturation_release, loader.band_dropout) == (
            0.0, 0.0, 0.0)  # fmt: skip
    out = tmp_path / "two_stores"
    report = train_simformer([store, store], out, TINY, training, progress=False)
    assert report.epochs_run == 1
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["stores"] == [str(store), str(store)]
    # resuming on another set of stores restarts the best validation loss
    train_simformer(store, out, TINY, dataclasses.replace(training, epochs=2), progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["stores"] == [str(store)]
    assert state["best"] == state["history"][-1]["validation_loss"]

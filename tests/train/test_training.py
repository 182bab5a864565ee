"""The training path: streaming loader over a store, trainer, checkpoints and resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate
from ysoscale.simulate.surveys import SURVEY_MODELS, SURVEYS
from ysoscale.train.extend import with_new_bands
from ysoscale.train.loader import SURVEY_SUBSETS, StoreLoader, derive_params
from ysoscale.train.trainer import TrainingConfig, train

TINY = EstimatorConfig(width=16, depth=1, heads=2, ff=32, transforms=2, flow_hidden=(32,))


@pytest.fixture(scope="module")
def store(tmp_path_factory, photometry_grid, isochrone_grid) -> Path:
    path = tmp_path_factory.mktemp("train") / "store.zarr"
    config = SimulationConfig(n=6000, seed=5, chunk_size=1000, require_detection=True)
    simulate(config, path, workers=0, progress=False)
    return path


def _loader(store: Path, **options) -> StoreLoader:
    return StoreLoader(store, TINY.params, TINY.bands, batch_size=500, **options)


def test_splits_are_disjoint_chunks(store) -> None:
    train_chunks = set(_loader(store).chunks)
    validation_chunks = set(_loader(store, split="validation").chunks)
    assert train_chunks and validation_chunks and not train_chunks & validation_chunks


def test_batches_are_usable_and_epochs_differ(store) -> None:
    loader = _loader(store)
    first = list(loader.epoch(0))
    again = list(loader.epoch(0))
    second = list(loader.epoch(1))
    for batch in first:
        assert batch.theta.shape == (len(batch), len(TINY.params))
        assert np.isfinite(batch.mag).any(axis=1).all()  # no star without a band
        assert np.array_equal(np.isnan(batch.mag), np.isnan(batch.mag_err))
        assert np.isfinite(batch.theta).all()
    np.testing.assert_array_equal(first[0].mag, again[0].mag)  # an epoch is reproducible
    assert not np.array_equal(first[0].mag, second[0].mag)  # noise and dropout are redrawn


def test_dropout_removes_bands(store) -> None:
    plain = _loader(store, band_dropout=0.0, survey_dropout=0.0)
    dropped = _loader(store, band_dropout=0.5, survey_dropout=0.0)
    n_plain = np.mean([np.isfinite(b.mag).sum(axis=1).mean() for b in plain.epoch(0)])
    n_dropped = np.mean([np.isfinite(b.mag).sum(axis=1).mean() for b in dropped.epoch(0)])
    assert n_dropped < 0.75 * n_plain


def _surveys_of(mag: np.ndarray) -> list[frozenset[str]]:
    """The surveys with an observed band, per star (columns in TINY.bands order)."""
    observed = np.isfinite(mag)
    by_survey = {name: [TINY.bands.index(b) for b in SURVEY_MODELS[name].bands
                        if b in TINY.bands] for name in SURVEYS}  # fmt: skip
    return [frozenset(n for n, cols in by_survey.items() if row[cols].any()) for row in observed]


def test_survey_subsets_restrict_stars_to_common_cross_matches(store) -> None:
    """At rate 1 every star with a Gaia band is cut to one of the subsets, each chosen about
    a third of the time; stars without Gaia keep their surveys; at rate 0 nothing changes."""
    options = {"band_dropout": 0.0, "survey_dropout": 0.0, "redraw_noise": False}
    plain = list(_loader(store, **options).epoch(0))
    cut = list(_loader(store, survey_subset_rate=1.0, **options).epoch(0))
    subsets = [frozenset(s) for s in SURVEY_SUBSETS]
    n_gaia = gaia_only_before = gaia_only_after = 0

    def by_star(batches):  # the shuffle differs: order the epoch's stars by their truth
        theta = np.concatenate([b.theta for b in batches])
        order = np.lexsort(theta.T)
        return theta[order], np.concatenate([b.mag for b in batches])[order]

    (theta_before, mag_before), (theta_after, mag_after) = by_star(plain), by_star(cut)
    np.testing.assert_array_equal(theta_before, theta_after)  # no star lost
    for had, has in zip(_surveys_of(mag_before), _surveys_of(mag_after), strict=True):
        assert has <= had
        if "gaia" in had:
            n_gaia += 1
            gaia_only_before += had == {"gaia"}
            gaia_only_after += has == {"gaia"}
            assert any(has == (s & had) for s in subsets), f"{sorted(has)} of {sorted(had)}"
        else:
            assert has == had or has < had and has & subsets[-1]
    assert n_gaia > 1000
    # a third of the Gaia stars are cut to Gaia alone (4 sigma binomial)
    assert gaia_only_after / n_gaia > 1 / 3 - 4 * np.sqrt(2 / 9 / n_gaia)
    assert gaia_only_before / n_gaia < 0.2
    same = list(_loader(store, survey_subset_rate=0.0, **options).epoch(0))
    for a, b in zip(plain, same, strict=True):
        np.testing.assert_array_equal(a.mag, b.mag)
    with pytest.raises(ValueError, match="survey_subsets"):
        _loader(store, survey_subsets=[("gaia", "hipparcos")])
    with pytest.raises(ValueError, match="survey_subset_rate"):
        _loader(store, survey_subset_rate=1.5)


def test_derived_distance_parameters() -> None:
    theta = np.array([[100.0, 1.0]])
    out = derive_params(theta, ["distance_pc", "av"], ["log10_distance", "distance_modulus"])
    np.testing.assert_allclose(out, [[2.0, 5.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="teff"):
        derive_params(theta, ["distance_pc", "av"], ["teff"])


def test_train_writes_a_loadable_model_and_resumes(store, tmp_path) -> None:
    out = tmp_path / "model"
    first = train(store, out, TINY, TrainingConfig(epochs=1, batch_size=500), progress=False)
    assert first.epochs_run == 1 and np.isfinite(first.best_validation_nll)
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_store"] == str(store) and card["history"]
    model = PosteriorEstimator.load(out)
    assert model.config == TINY
    resumed = train(store, out, TINY, TrainingConfig(epochs=2, batch_size=500), progress=False)
    assert resumed.epochs_run == 2
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]


def test_training_refuses_another_architecture(store, tmp_path) -> None:
    out = tmp_path / "model"
    train(store, out, TINY, TrainingConfig(epochs=1, batch_size=500), progress=False)
    other = EstimatorConfig(width=32, depth=1, heads=2, ff=32, transforms=2, flow_hidden=(32,))
    with pytest.raises(ValueError, match="another configuration"):
        train(store, out, other, TrainingConfig(epochs=2, batch_size=500), progress=False)


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    from ysoscale.train.trainer import _learning_rate_factor

    assert _learning_rate_factor(0, 0.0, 100) == pytest.approx(0.01)
    assert _learning_rate_factor(99, 0.0, 100) == pytest.approx(1.0)
    assert _learning_rate_factor(500, 0.5, 100) == pytest.approx(0.5)
    assert _learning_rate_factor(500, 1.0, 100) == pytest.approx(0.0, abs=1e-12)


def test_first_epoch_uses_a_step_estimate(store) -> None:
    loader = _loader(store)
    assert loader.max_batches() >= sum(1 for _ in loader.epoch(0))


def test_loader_threads_give_the_same_batches(store) -> None:
    one = list(_loader(store, threads=1).epoch(3))
    three = list(_loader(store, threads=3).epoch(3))
    assert len(one) == len(three)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a.mag, b.mag)
        np.testing.assert_array_equal(a.theta, b.theta)


def test_time_budget_stops_and_anneals(store, tmp_path) -> None:
    training = TrainingConfig(epochs=50, batch_size=500, time_budget_minutes=1e-4)
    report = train(store, tmp_path / "model", TINY, training, progress=False)
    assert report.epochs_run == 1  # the budget is spent after the first epoch
    state = json.loads((tmp_path / "model" / "checkpoint" / "state.json").read_text())
    assert state["minutes"] > 1e-4


GAIA = ("gaia_g", "gaia_bp", "gaia_rp")


def test_extending_bands_trains_only_the_new_rows(store, tmp_path) -> None:
    base_config = EstimatorConfig(bands=GAIA, width=16, depth=1, heads=2, ff=32, transforms=2,
                                  flow_hidden=(32,))  # fmt: skip
    training = TrainingConfig(epochs=1, batch_size=500)
    train(store, tmp_path / "base", base_config, training, progress=False)
    base = PosteriorEstimator.load(tmp_path / "base")
    report = train(store, tmp_path / "ext", None, training, extend_from=tmp_path / "base",
                   new_bands=("tmass_ks",), progress=False)  # fmt: skip
    assert report.epochs_run == 1
    extended = PosteriorEstimator.load(tmp_path / "ext")
    assert extended.config.bands == (*GAIA, "tmass_ks")
    card = json.loads((tmp_path / "ext" / "model_card.json").read_text())
    assert card["new_bands"] == ["tmass_ks"]

    old_state, new_state = base.state_dict(), extended.state_dict()
    weight = "tokenizer.band_embedding.weight"
    for name, value in old_state.items():
        if name == weight:
            assert np.array_equal(new_state[name][:3].numpy(), value.numpy())
            start = with_new_bands(base, ["tmass_ks"]).state_dict()[name][3]
            assert not np.array_equal(new_state[name][3].numpy(), start.numpy())  # trained
        else:
            assert np.array_equal(new_state[name].numpy(), value.numpy()), name

    # stars without the new band get exactly the old posterior
    mag = np.array([[14.0, 14.5, 13.4], [16.0, 16.8, 15.1]], np.float32)
    err = np.full_like(mag, 0.01)
    plx, plx_err = np.array([1.0, 0.3], np.float32), np.array([0.05, 0.1], np.float32)
    import torch

    torch.manual_seed(1)
    old, _ = base.sample(mag, err, plx, plx_err, n_samples=16)
    torch.manual_seed(1)
    pad = np.full((2, 1), np.nan, np.float32)
    new, _ = extended.sample(np.hstack([mag, pad]), np.hstack([err, pad]), plx, plx_err,
                             n_samples=16)  # fmt: skip
    np.testing.assert_allclose(new.numpy(), old.numpy(), rtol=1e-5, atol=1e-5)


def test_extending_needs_a_new_band(tmp_path) -> None:
    model = PosteriorEstimator(EstimatorConfig(bands=GAIA, width=16, depth=1, heads=2, ff=32,
                                               transforms=1, flow_hidden=(8,)))  # fmt: skip
    with pytest.raises(ValueError, match="already has"):
        with_new_bands(model, ["gaia_g"])
    with pytest.raises(ValueError, match="unknown|not a band|Unknown"):
        with_new_bands(model, ["gaia_x"])


def test_a_warm_start_cannot_be_combined_with_a_band_extension(tmp_path) -> None:
    with pytest.raises(ValueError, match="init_from cannot be combined with new_bands"):
        train("unused.zarr", tmp_path / "out", extend_from=tmp_path / "base",
              new_bands=["wise_w1"], init_from=tmp_path / "other")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_error_inflation_keeps_values_and_errors_consistent(store) -> None:
    loader = _loader(store, error_inflation=0.5, max_error_factor=10.0)
    rng = np.random.default_rng(0)
    n = 200_000
    value, err = np.zeros(n, np.float32), np.full(n, 0.02, np.float32)
    noisy, new_err = loader._inflate(value, err, 10.0, rng, per_star=False)
    assert np.all(new_err >= err) and np.all(new_err <= 10.0 * 0.02 * (1 + 1e-6))
    inflated = new_err > err
    assert abs(inflated.mean() - 0.5) < 5 * np.sqrt(0.25 / n)
    # the added noise has variance new² - old²: pulls are standard normal
    pulls = noisy[inflated] / np.sqrt(new_err[inflated] ** 2 - err[inflated] ** 2)
    assert abs(pulls.std() - 1.0) < 5 / np.sqrt(2 * inflated.sum())
    assert np.all(noisy[~inflated] == 0)


def test_error_inflation_leaves_infinite_errors_alone(store) -> None:
    # an entry with an infinite error (no measurement) keeps its value, without a
    # RuntimeWarning from inf - inf
    loader = _loader(store, error_inflation=1.0, max_error_factor=10.0)
    value = np.array([1.0, np.nan, 2.0], np.float32)
    err = np.array([np.inf, np.inf, 0.1], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noisy, new_err = loader._inflate(value, err, 10.0, np.random.default_rng(1),
                                         per_star=False)  # fmt: skip
    assert noisy[0] == 1.0 and np.isnan(noisy[1]) and np.isinf(new_err[:2]).all()
    assert noisy[2] != 2.0 and new_err[2] > 0.1


def test_error_inflation_reaches_the_batches(store) -> None:
    plain = next(_loader(store, band_dropout=0.0, survey_dropout=0.0).epoch(0))
    inflated = next(_loader(store, band_dropout=0.0, survey_dropout=0.0,
                            error_inflation=1.0).epoch(0))  # fmt: skip
    ratio = np.nanmedian(inflated.parallax_error / plain.parallax_error)
    assert ratio > 2.0  # log-uniform factor up to 30: median ~5.5


@pytest.fixture(scope="module")
def second_store(tmp_path_factory, photometry_grid, isochrone_grid) -> Path:
    path = tmp_path_factory.mktemp("train2") / "bright.zarr"
    config = SimulationConfig(n=2000, seed=6, chunk_size=1000, require_detection=True,
                              brighter_than=15.0)  # fmt: skip
    simulate(config, path, workers=0, progress=False)
    return path


def test_store_union_reads_every_chunk_of_every_store(store, second_store) -> None:
    from ysoscale.train.loader import StoreUnion

    options = {"band_dropout": 0.0, "survey_dropout": 0.0, "redraw_noise": False}
    first, second = _loader(store, **options), _loader(second_store, seed=1, **options)
    union = StoreUnion([first, second])
    assert len(union.chunks) == len(first.chunks) + len(second.chunks)
    batches = list(union.epoch(0))
    assert all(len(b) == 500 for b in batches[:-1])
    stars = sum(len(b) for b in batches)
    assert stars == sum(len(b) for b in first.epoch(0)) + sum(len(b) for b in second.epoch(0))
    # the same epoch again is the same; the bright store's stars are all in it
    np.testing.assert_array_equal(batches[0].theta, next(iter(union.epoch(0))).theta)
    seen = np.concatenate([b.theta[:, 0] for b in batches])
    bright = np.concatenate([b.theta[:, 0] for b in second.epoch(0)])
    assert np.isin(bright, seen).all()
    with pytest.raises(ValueError, match="different bands"):
        StoreUnion([first, StoreLoader(second_store, TINY.params, GAIA, batch_size=500)])


def test_saturation_release_shows_bright_magnitudes(store) -> None:
    """Released stars report bands brighter than the surveys' saturation limits."""
    from ysoscale.simulate.surveys import SURVEY_MODELS

    ps1 = SURVEY_MODELS["ps1"]
    columns = [TINY.bands.index(b) for b in ps1.bands if b in TINY.bands]
    limits = np.array([ps1.bright_limit[ps1.bands.index(TINY.bands[c])] for c in columns])

    def saturated(release: float) -> int:
        loader = _loader(store, band_dropout=0.0, survey_dropout=0.0, saturation_release=release)
        # 1 mag below the limit: young stars' variability scatters a few tenths past it
        return sum(int((b.mag[:, columns] < limits - 1.0).sum()) for b in loader.epoch(0))

    assert saturated(0.0) == 0
    assert saturated(1.0) > 10
    with pytest.raises(ValueError, match="saturation_release"):
        _loader(store, saturation_release=1.5)


def test_training_on_two_stores_records_both(store, second_store, tmp_path) -> None:
    out = tmp_path / "model"
    train([store, second_store], out, TINY, TrainingConfig(epochs=1, batch_size=500),
          progress=False)  # fmt: skip
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_store"] == str(store)
    assert card["additional_training_stores"][0]["path"] == str(second_store)
    assert json.loads(card["additional_training_stores"][0]["attrs"]["config"])[
        "brighter_than"] == 15.0  # fmt: skip
    # resuming on another set of stores restarts the best validation loss
    report = train(store, out, TINY, TrainingConfig(epochs=2, batch_size=500), progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert report.epochs_run == 2 and state["stores"] == [str(store)]
    assert state["best"] == state["history"][-1]["validation_nll"]


def test_warm_start_keeps_every_weight_that_still_fits(store, tmp_path) -> None:
    """--init-from: a model with another parallax encoding starts from the trained weights
    (all of them: the encoding changes the features, not the shapes), and the card says so."""
    import dataclasses

    import torch

    first = tmp_path / "clip"
    old = dataclasses.replace(TINY, parallax_encoding="snr_clip")
    train(store, first, old, TrainingConfig(epochs=1, batch_size=500), progress=False)
    source = PosteriorEstimator.load(first)
    out = tmp_path / "asinh"
    init = TrainingConfig(epochs=1, batch_size=500, learning_rate=1e-12, warmup_steps=1)
    train(store, out, TINY, init, init_from=first, progress=False)
    model = PosteriorEstimator.load(out)
    assert model.config.parallax_encoding == "asinh"
    for name, value in source.state_dict().items():  # lr ~ 0: the copied weights stay
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-6, rtol=0)
    card = json.loads((out / "model_card.json").read_text())
    assert card["initialised_from"] == str(first)


def test_warm_start_from_an_unrelated_model_is_refused() -> None:
    import torch

    from ysoscale.train.trainer import warm_start

    model = PosteriorEstimator(TINY)
    with pytest.raises(ValueError, match="no weight"):
        warm_start(model, torch.nn.Linear(3, 5))

"""The distributed simulator: determinism, resume after a kill, schema, realism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from ysoscale.simulate.config import THETA_PARAMS, SimulationConfig
from ysoscale.simulate.kernel import simulate_chunk
from ysoscale.simulate.priors import POPULATIONS, PriorConfig
from ysoscale.simulate.run import chunk_rng, simulate
from ysoscale.simulate.surveys import SURVEY_MODELS, SURVEYS

SMALL = SimulationConfig(n=6000, seed=11, chunk_size=2000)
ARRAYS = ("theta", "mag_true", "mag", "mag_err", "parallax", "parallax_error", "l", "b",
          "population", "has_disk", "detected")  # fmt: skip


def _load(path: Path) -> dict[str, np.ndarray]:
    with xr.open_zarr(path) as ds:
        return {name: ds[name].values for name in ARRAYS}


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def serial_store(tmp_path_factory, photometry_grid, isochrone_grid) -> Path:
    path = tmp_path_factory.mktemp("sim") / "serial.zarr"
    simulate(SMALL, path, workers=0, progress=False)
    return path


@pytest.fixture(scope="module")
def field_sample(forward_model) -> dict[str, np.ndarray]:
    """A larger in-memory sample of the default configuration (no store)."""
    config = SimulationConfig(n=60_000, chunk_size=60_000)
    return simulate_chunk(config.n, chunk_rng(5, 0), config, forward_model)


def test_same_output_for_one_and_two_workers(serial_store, tmp_path) -> None:
    """Seeds derive from (seed, chunk), so the store is bitwise identical whatever runs it."""
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    simulate(SMALL, one, workers=1, progress=False)
    simulate(SMALL, two, workers=2, progress=False)
    reference = _load(serial_store)
    _assert_identical(reference, _load(one))
    _assert_identical(reference, _load(two))


def test_second_run_skips_everything(serial_store) -> None:
    report = simulate(SMALL, serial_store, workers=0, progress=False)
    assert report.chunks_run == 0 and report.chunks_skipped == SMALL.n_chunks


def test_other_configuration_is_refused(serial_store) -> None:
    with pytest.raises(ValueError, match="another configuration"):
        simulate(SimulationConfig(n=6000, seed=12, chunk_size=2000), serial_store, workers=0)


def test_killed_run_resumes_to_the_identical_store(tmp_path) -> None:
    """Terminate the CLI mid-run, re-run it: the store equals an uninterrupted run."""
    config = SimulationConfig(n=24_000, seed=3, chunk_size=1000)
    reference = tmp_path / "reference.zarr"
    simulate(config, reference, workers=0, progress=False)
    interrupted = tmp_path / "interrupted.zarr"
    command = [sys.executable, "-m", "ysoscale.cli", "simulate", "--n", "24000", "--seed", "3",
               "--chunk-size", "1000", "--workers", "0", "--out", str(interrupted)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        if (interrupted / "chunk_done" / "zarr.json").exists():
            done = int(np.sum(zarr.open_array(str(interrupted / "chunk_done"), mode="r")[:]))
            if done >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    partial = int(np.sum(zarr.open_array(str(interrupted / "chunk_done"), mode="r")[:]))
    assert 3 <= partial < config.n_chunks
    report = simulate(config, interrupted, workers=0, progress=False)
    assert report.chunks_skipped == partial
    _assert_identical(_load(reference), _load(interrupted))


def test_schema_units_and_attrs(serial_store) -> None:
    with xr.open_zarr(serial_store) as ds:
        assert list(ds.param.values) == list(THETA_PARAMS)
        assert ds.theta.dims == ("star", "param") and ds.mag.dims == ("star", "band")
        for name in ARRAYS + ("mag_true", "parallax_true", "ra", "dec"):
            assert "units" in ds[name].attrs, name
        for key in ("config", "ysoscale_version", "photometry_grid_hash", "isochrone_grid_hash",
                    "param_units", "populations"):  # fmt: skip
            assert ds.attrs[key], key
        assert SimulationConfig.from_dict(json.loads(ds.attrs["config"])) == SMALL
        assert json.loads(ds.attrs["populations"]) == list(POPULATIONS)
        assert ds.sizes["star"] == SMALL.n
        assert int(ds.chunk_done.sum()) == SMALL.n_chunks


def test_non_detections_are_nan_never_0_or_99(serial_store) -> None:
    data = _load(serial_store)
    mag, err = data["mag"], data["mag_err"]
    assert np.array_equal(np.isnan(mag), np.isnan(err))
    finite = mag[np.isfinite(mag)]
    assert not np.any(np.isin(finite, [0.0, 99.0, -99.0, 999.0]))
    assert np.all(err[np.isfinite(err)] > 0)
    assert np.isfinite(data["theta"]).all() and np.isfinite(data["mag_true"]).all()
    no_gaia = ~data["detected"][:, SURVEYS.index("gaia")]
    assert np.isnan(data["parallax"][no_gaia]).all()


def test_only_the_selected_surveys_observe(photometry_grid, forward_model) -> None:
    config = SimulationConfig(n=3000, surveys=("gaia", "tmass"))
    out = simulate_chunk(config.n, chunk_rng(0, 0), config, forward_model)
    bands = list(photometry_grid.band.values)
    for j, band in enumerate(bands):
        if not band.startswith(("gaia", "tmass")):
            assert np.isnan(out["mag"][:, j]).all(), band


def _band_index(band: str) -> int:
    from ysoscale.physics.passbands import BAND_IDS

    return BAND_IDS.index(band)


@pytest.mark.parametrize(
    ("survey", "band"),
    [("gaia", "gaia_g"), ("tmass", "tmass_j"), ("wise", "wise_w1"), ("ps1", "ps1_r"),
     ("sdss", "sdss_r"), ("skymapper", "skymapper_r")],
)  # fmt: skip
def test_counts_rise_to_the_faint_limit_and_stop(field_sample, survey: str, band: str) -> None:
    """Number counts of detected stars grow toward the survey's faint limit and vanish
    beyond it (3-sigma Poisson margin between the bins). GALEX is left out: it detects
    ~0.02 % of a field sample (hot or nearby stars), too few for number counts here."""
    model = SURVEY_MODELS[survey]
    limit = model.faint_limit[model.bands.index(band)]
    mags = field_sample["mag"][:, _band_index(band)]
    mags = mags[np.isfinite(mags)]
    far_brighter = np.sum((mags > limit - 4.0) & (mags <= limit - 3.0))
    near_limit = np.sum((mags > limit - 1.0) & (mags <= limit))
    beyond = np.sum(mags > limit + 1.0)
    assert near_limit > far_brighter + 3 * np.sqrt(far_brighter + 1)
    assert beyond < 0.02 * len(mags) + 5


def test_field_shows_main_sequence_and_red_giant_branch(field_sample) -> None:
    """Gaia-detected field stars of 4000-5200 K split into dwarfs (log L < -0.3) and
    giants of the RGB / red clump (log L > 1, log g < 3.5), both well populated."""
    theta = field_sample["theta"]
    column = {p: theta[:, i] for i, p in enumerate(THETA_PARAMS)}
    gaia = field_sample["detected"][:, SURVEYS.index("gaia")]
    field = gaia & (field_sample["population"] != POPULATIONS.index("young"))
    cool = field & (column["teff"] > 4000) & (column["teff"] < 5200)
    dwarfs = cool & (column["log10_lum"] < -0.3) & (column["logg"] > 4.2)
    giants = cool & (column["log10_lum"] > 1.0) & (column["logg"] < 3.5)
    assert dwarfs.sum() > 100 and giants.sum() > 20, (dwarfs.sum(), giants.sum())
    # the giants are the luminous ones in the CMD too: brighter in absolute G by > 3 mag
    distance = column["distance_pc"]
    absolute = field_sample["mag_true"][:, _band_index("gaia_g")] - 5 * np.log10(distance / 10)
    assert np.median(absolute[dwarfs]) - np.median(absolute[giants]) > 3.0


def test_young_stars_lie_above_the_main_sequence(field_sample) -> None:
    """At fixed Teff (3500-5000 K) stars younger than 10 Myr are more luminous than
    field stars older than 1 Gyr that are still dwarfs (log g > 4.2)."""
    theta = field_sample["theta"]
    column = {p: theta[:, i] for i, p in enumerate(THETA_PARAMS)}
    for lo, hi in ((3500, 4000), (4000, 4500), (4500, 5000)):
        in_bin = (column["teff"] >= lo) & (column["teff"] < hi)
        young = in_bin & (column["log10_age"] < 7.0)
        old = in_bin & (column["log10_age"] > 9.0) & (column["logg"] > 4.2)
        assert young.sum() > 20 and old.sum() > 20, (lo, hi)
        assert np.median(column["log10_lum"][young]) > np.median(column["log10_lum"][old]) + 0.3


def test_disk_fraction_follows_the_configured_law(forward_model) -> None:
    """has_disk vs age follows exp(-t / efold), per age bin within 5 binomial sigmas."""
    config = SimulationConfig(n=40_000, prior=PriorConfig(population="young"))
    out = simulate_chunk(config.n, chunk_rng(9, 0), config, forward_model)
    age_myr = 10 ** (out["theta"][:, THETA_PARAMS.index("log10_age")] - 6)
    efold = config.prior.disk_efold_myr
    for lo, hi in ((0.5, 1.5), (1.5, 3.0), (3.0, 6.0), (6.0, 12.0)):
        in_bin = (age_myr >= lo) & (age_myr < hi)
        expected = np.mean(np.exp(-age_myr[in_bin] / efold))
        observed = out["has_disk"][in_bin].mean()
        sigma = np.sqrt(expected * (1 - expected) / in_bin.sum())
        assert abs(observed - expected) < 5 * sigma + 1e-3, (lo, hi, observed, expected)


def test_detection_fractions_are_reported(serial_store, capsys) -> None:
    config = SimulationConfig(n=2000, seed=2, chunk_size=2000)
    report = simulate(config, serial_store.parent / "report.zarr", workers=0, progress=False)
    print(report.summary())
    text = capsys.readouterr().out
    for survey in SURVEYS:
        assert survey in text
    assert 0 < report.detected["gaia"] <= config.n


def test_plot_store(serial_store, tmp_path) -> None:
    from ysoscale.simulate.plots import plot_store

    for path in plot_store(serial_store, tmp_path):
        assert path.stat().st_size > 10_000


def test_require_detection_keeps_only_catalog_stars(forward_model) -> None:
    """Every kept star is detected by a selected survey; the kept sample is brighter."""
    config = SimulationConfig(n=3000, require_detection=True, surveys=("gaia", "tmass"))
    out = simulate_chunk(config.n, chunk_rng(4, 0), config, forward_model)
    assert len(out["theta"]) == config.n
    assert out["detected"].any(axis=1).all()
    assert np.isfinite(out["mag"]).any(axis=1).all()


def test_brighter_than_makes_a_magnitude_limited_store(forward_model) -> None:
    """Every kept star is brighter than the cut in its noise-free magnitude."""
    from ysoscale.physics.passbands import BAND_IDS

    config = SimulationConfig(n=200, brighter_than=14.0, require_detection=True)
    out = simulate_chunk(config.n, chunk_rng(9, 0), config, forward_model)
    g_true = out["mag_true"][:, BAND_IDS.index("gaia_g")]
    assert len(g_true) == config.n and (g_true < 14.0).all()
    ks_config = SimulationConfig(n=100, brighter_than=10.0, brighter_than_band="tmass_ks")
    ks = simulate_chunk(ks_config.n, chunk_rng(9, 1), ks_config, forward_model)
    assert (ks["mag_true"][:, BAND_IDS.index("tmass_ks")] < 10.0).all()
    with pytest.raises(ValueError, match="brighter_than_band 'gaia_x'"):
        SimulationConfig(brighter_than=14.0, brighter_than_band="gaia_x")

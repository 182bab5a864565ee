"""Young-star and disk probabilities and the condition pattern, from the kernel to the cube
and the summary catalog."""

from __future__ import annotations

import json
import math

import lsdb
import numpy as np
import pytest
import torch
import xarray as xr

from tests.infer import BANDS, synthetic_catalog
from ysoscale.infer import infer, open_cube
from ysoscale.infer import kernel as kernel_module
from ysoscale.infer.cube import create_or_check
from ysoscale.infer.kernel import CONDITION_PATTERN_BITS, condition_pattern, infer_arrays
from ysoscale.infer.summary import summary_columns
from ysoscale.nn import EstimatorConfig, PosteriorEstimator, Simformer, SimformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

GAIA, TMASS, PARALLAX = 1, 2, 128
NAN = np.nan


def bit(name: str) -> int:
    return 1 << CONDITION_PATTERN_BITS.index(name)


def test_bit_layout_is_the_documented_one():
    assert CONDITION_PATTERN_BITS == (
        "gaia", "tmass", "wise", "ps1", "sdss", "galex", "skymapper", "parallax",
    )  # fmt: skip
    assert (bit("gaia"), bit("tmass"), bit("parallax")) == (GAIA, TMASS, PARALLAX)


def test_condition_pattern_of_hand_made_stars():
    """Gaia only; Gaia + 2MASS + parallax; nothing; a band with a non-positive error and a
    parallax without a usable error; a WISE band only."""
    bands = ("gaia_g", "gaia_rp", "tmass_j", "tmass_ks", "wise_w1")
    mag = np.array(
        [
            [12.0, 11.5, NAN, NAN, NAN],
            [12.0, NAN, 10.8, 10.2, NAN],
            [NAN, NAN, NAN, NAN, NAN],
            [12.0, NAN, 10.8, NAN, NAN],
            [NAN, NAN, NAN, NAN, 9.0],
        ]
    )
    err = np.full_like(mag, 0.02)
    err[3, 2] = 0.0  # 2MASS J with a zero error does not reach the model
    parallax = np.array([NAN, 2.0, NAN, 1.0, NAN])
    parallax_error = np.array([NAN, 0.1, NAN, -0.1, NAN])
    pattern = condition_pattern(mag, err, parallax, parallax_error, bands)
    assert pattern.dtype == np.uint16
    assert pattern.tolist() == [GAIA, GAIA | TMASS | PARALLAX, 0, GAIA, bit("wise")]
    without = condition_pattern(mag, err, parallax, parallax_error, bands, use_parallax=False)
    assert without[1] == GAIA | TMASS


@pytest.fixture(scope="module")
def npe():
    torch.manual_seed(0)
    config = EstimatorConfig(
        bands=BANDS, width=16, heads=2, depth=1, ff=32, transforms=1, flow_hidden=(16,)
    )
    return PosteriorEstimator(config)


def _stars():
    """Gaia only; Gaia + 2MASS + parallax; no band at all (but a parallax)."""
    mag = np.full((3, len(BANDS)), NAN, dtype=np.float32)
    mag[0, :3] = (12.0, 12.4, 11.5)
    mag[1] = (13.0, 13.4, 12.5, 11.8, 11.3, 11.1)
    parallax = np.array([NAN, 2.0, 1.0])
    parallax_error = np.array([NAN, 0.05, 0.05])
    return mag, np.full_like(mag, 0.02), parallax, parallax_error


def test_kernel_p_young_is_the_share_of_young_samples(npe, monkeypatch):
    """Hand-made log10_age samples (the sampler's output replaced): p_young is the share
    below log10(threshold * 1e6), at the default 10 Myr and at another threshold."""
    params = npe.config.params
    age = params.index("log10_age")
    ages = np.array([6.0, 6.5, 6.99, 7.01, 7.5, 8.0, 9.0, 9.5], dtype=np.float32)

    def fake_derived(theta, params_, out, forward):
        theta = theta.clone()
        theta[..., age] = torch.as_tensor(ages)
        return original(theta, params_, out, forward)

    original = kernel_module._derived
    monkeypatch.setattr(kernel_module, "_derived", fake_derived)
    mag, err, parallax, parallax_error = _stars()
    usable = np.ones(3, dtype=bool)
    out = infer_arrays(npe, mag, err, parallax, parallax_error, usable, len(ages), seed=0)
    assert out["p_young"].dtype == np.float32 and out["p_young"].shape == (3,)
    np.testing.assert_allclose(out["p_young"][:2], [3 / 8, 3 / 8])
    assert math.isnan(out["p_young"][2])  # no band: not sampled
    older = infer_arrays(
        npe, mag, err, parallax, parallax_error, usable, len(ages), seed=0, young_age_myr=100.0
    )
    np.testing.assert_allclose(older["p_young"][:2], [5 / 8, 5 / 8])
    # the NPE parameters have no has_disk: p_disk is NaN everywhere
    assert out["p_disk"].dtype == np.float32 and np.isnan(out["p_disk"]).all()
    with pytest.raises(ValueError, match="young_age_myr"):
        infer_arrays(npe, mag, err, parallax, parallax_error, usable, 4, 0, young_age_myr=0.0)


def test_kernel_condition_pattern_and_unsampled_rows(npe):
    mag, err, parallax, parallax_error = _stars()
    usable = np.array([True, True, True])
    out = infer_arrays(npe, mag, err, parallax, parallax_error, usable, 4, seed=0)
    assert out["condition_pattern"].dtype == np.uint16
    # the star without a band is not sampled: 0, although it has a parallax
    assert out["condition_pattern"].tolist() == [GAIA, GAIA | TMASS | PARALLAX, 0]
    unusable = infer_arrays(npe, mag, err, parallax, parallax_error, ~usable, 4, seed=0)
    assert (unusable["condition_pattern"] == 0).all()
    assert np.isnan(unusable["p_young"]).all()


def test_p_young_is_nan_without_log10_age():
    """An atmospheric-parameter model (no log10_age): p_young NaN for every star."""
    torch.manual_seed(0)
    params = ("teff", "logg", "mh", "av", "rv", "distance_modulus")
    config = EstimatorConfig(
        bands=BANDS, params=params, width=16, heads=2, depth=1, ff=32, transforms=1,
        flow_hidden=(16,),
    )  # fmt: skip
    mag, err, parallax, parallax_error = _stars()
    out = infer_arrays(
        PosteriorEstimator(config), mag, err, parallax, parallax_error, np.ones(3, bool), 4, 0
    )
    assert np.isfinite(out["samples"][:2]).all()
    assert np.isnan(out["p_young"]).all() and np.isnan(out["p_disk"]).all()
    assert out["condition_pattern"].tolist() == [GAIA, GAIA | TMASS | PARALLAX, 0]


def test_p_disk_from_has_disk_samples():
    """A simformer has a has_disk parameter: p_disk is the share of its samples above 1/2."""
    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, width=16, heads=2, depth=1, ff=32, default_steps=2)
    assert "has_disk" in config.params
    model = Simformer(config)
    mag, err, parallax, parallax_error = _stars()
    out = infer_arrays(model, mag, err, parallax, parallax_error, np.ones(3, bool), 8, 0)
    disk = out["samples"][:2, :, config.params.index("has_disk")]
    np.testing.assert_allclose(out["p_disk"][:2], (disk > 0.5).mean(axis=1), atol=1e-6)
    assert out["p_disk"].dtype == np.float32 and np.isnan(out["p_disk"][2])


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("young")
    frame = synthetic_catalog(40, seed=5)
    frame.loc[frame.index[:5], "parallax"] = NAN  # no parallax
    frame.loc[frame.index[:5], "parallax_error"] = NAN
    frame.to_parquet(root / "catalog.parquet")
    report = infer(
        root / "catalog.parquet", root / "out", model=model_dir, n_samples=8, workers=0,
        progress=False, star_chunk=16, partition_rows=25, young_age_myr=30.0,
    )  # fmt: skip
    return frame, report


def test_cube_has_the_new_variables(run, model_dir):
    frame, report = run
    cube = open_cube(report.cube)
    dtypes = {"p_young": np.float32, "p_disk": np.float32, "condition_pattern": np.uint16}
    for name, dtype in dtypes.items():
        assert cube[name].dims == ("star",) and cube[name].dtype == dtype, name
        assert cube[name].attrs["description"], name
    assert cube.attrs["estimator"] == "npe"
    assert cube.attrs["model"] == str(model_dir.resolve())
    assert cube.attrs["young_age_myr"] == 30.0
    assert json.loads(cube.attrs["run_config"])["young_age_myr"] == 30.0
    bits = json.loads(cube.condition_pattern.attrs["condition_pattern_bits"])
    assert bits == list(CONDITION_PATTERN_BITS)
    assert cube.condition_pattern.attrs["flag_masks"] == [1 << i for i in range(len(bits))]

    age = cube.samples.sel(param="log10_age").values
    expected = (age < math.log10(30.0e6)).mean(axis=1)
    np.testing.assert_allclose(cube.p_young.values, expected, atol=1e-6)
    assert np.isnan(cube.p_disk.values).all()  # the tiny NPE has no has_disk
    pattern = cube.condition_pattern.values.astype(int)
    assert (pattern & GAIA).all()  # every synthetic star has gaia_g
    tmass = frame[[f"{b}_mag" for b in ("tmass_j", "tmass_h", "tmass_ks")]].notna().any(axis=1)
    np.testing.assert_array_equal((pattern & TMASS) != 0, tmass.to_numpy())
    np.testing.assert_array_equal((pattern & PARALLAX) != 0, frame["parallax"].notna().to_numpy())
    padded = xr.open_zarr(report.cube)
    padding = padded.source_id.values == -1
    assert padding.any() and (padded.condition_pattern.values[padding] == 0).all()
    assert np.isnan(padded.p_young.values[padding]).all()


def test_summary_has_the_new_columns(run):
    frame, report = run
    summary = lsdb.open_catalog(report.summary_catalog).compute()
    assert {"p_young", "p_disk", "condition_pattern"} <= set(summary_columns(["av"]))
    dtypes = {"p_young": np.float32, "p_disk": np.float32, "condition_pattern": np.uint16}
    for name, dtype in dtypes.items():  # lsdb reads pyarrow-backed columns
        assert getattr(summary[name].dtype, "numpy_dtype", summary[name].dtype) == dtype, name
    cube = open_cube(report.cube)
    by_id = summary.set_index("source_id").loc[cube.source_id.values]
    np.testing.assert_array_equal(by_id["p_young"].to_numpy(), cube.p_young.values)
    np.testing.assert_array_equal(
        by_id["condition_pattern"].to_numpy(), cube.condition_pattern.values
    )


def test_another_threshold_is_another_run(run, model_dir):
    frame, report = run
    with pytest.raises(ValueError, match="another run_config"):
        infer(
            report.out_dir.parent / "catalog.parquet", report.out_dir, model=model_dir,
            n_samples=8, workers=0, progress=False, star_chunk=16, partition_rows=25,
        )  # fmt: skip


def test_a_cube_without_the_new_variables_is_not_resumed(tmp_path, run):
    """A cube written before p_young existed: resuming into it fails with a clear error."""
    frame, report = run
    old = tmp_path / "old.zarr"
    with xr.open_zarr(report.cube) as cube:
        cube.drop_vars(["p_young", "p_disk", "condition_pattern"]).to_zarr(old)
    from ysoscale.infer.cube import Layout

    with xr.open_zarr(old) as cube:
        layout = Layout(
            tuple(cube.partition_rows.values), tuple(cube.partition_order.values),
            tuple(cube.partition_pixel.values), int(cube.attrs["star_chunk"]),
        )  # fmt: skip
        params = list(cube.param.values)
        attrs = {k: cube.attrs[k] for k in ("model_card", "run_config")}
    with pytest.raises(ValueError, match="older ysoscale.*p_young, p_disk, condition_pattern"):
        create_or_check(old, layout, params, 8, attrs)
    assert open_cube(old).sizes["star"] == len(frame)  # the old cube still opens


def test_cli_young_age_myr(tmp_path, model_dir, run):
    from ysoscale.cli import main

    frame, _ = run
    frame.iloc[:10].to_csv(tmp_path / "catalog.csv", index=False)
    code = main([
        "infer", str(tmp_path / "catalog.csv"), "--out", str(tmp_path / "out"),
        "--model", str(model_dir), "--samples", "4", "--workers", "0", "--young-age-myr", "3",
    ])  # fmt: skip
    assert code == 0
    cube = open_cube(tmp_path / "out" / "posteriors.zarr")
    assert cube.attrs["young_age_myr"] == 3.0
    age = cube.samples.sel(param="log10_age").values
    np.testing.assert_allclose(cube.p_young.values, (age < math.log10(3e6)).mean(axis=1))

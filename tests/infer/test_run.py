"""End to end on small catalogs in this process: cube schema, file and HATS inputs, the
summary catalog and the command line."""

from __future__ import annotations

import json

import lsdb
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.infer import synthetic_catalog, write_hats
from ysoscale.catalog.quality import RowFlag
from ysoscale.cli import build_parser, main
from ysoscale.infer import FLAG_BITS, PADDING, STATS, infer, open_cube
from ysoscale.infer.cube import Layout
from ysoscale.infer.summary import summary_columns

CHUNK = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    return synthetic_catalog(400, seed=1)


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, model_dir, catalog):
    root = tmp_path_factory.mktemp("file_run")
    catalog.to_parquet(root / "catalog.parquet")
    report = infer(
        root / "catalog.parquet", root / "out", model=model_dir, n_samples=8, workers=0,
        progress=False, star_chunk=CHUNK, partition_rows=150,
    )  # fmt: skip
    return report


@pytest.fixture(scope="module")
def hats_run(tmp_path_factory, model_dir, catalog):
    root = tmp_path_factory.mktemp("hats_run")
    write_hats(catalog, root / "catalog")
    report = infer(
        root / "catalog", root / "out", model=model_dir, n_samples=8, workers=0,
        progress=False, star_chunk=CHUNK,
    )  # fmt: skip
    return root, report


def test_layout_gives_each_partition_whole_chunks():
    layout = Layout(rows=(130, 0, 64, 1), order=(3, 3, 4, 4), pixel=(1, 2, 9, 10), star_chunk=64)
    assert layout.start.tolist() == [0, 192, 192, 256]
    assert layout.n_star == 320 and (layout.start % 64 == 0).all()
    assert layout.label(0) == "Norder=3/Npix=1"
    assert Layout((5, 7), (-1, -1), (0, 1), 4).label(1) == "rows 5-12"


def test_cube_schema(file_run, model_dir):
    cube = xr.open_zarr(file_run.cube)
    params = list(cube.param.values)
    assert set(cube.sizes) == {"star", "sample", "param", "stat", "partition"}
    assert cube.sizes["sample"] == 8 and list(cube.stat.values) == list(STATS)
    assert params[:6] == ["log10_mass", "log10_age", "mh", "log10_distance", "av", "rv"]
    assert params[6:] == ["distance_pc", "teff", "logg", "log10_lum", "radius"]
    dims = {
        "samples": ("star", "sample", "param"),
        "summary": ("star", "stat", "param"),
        "flags": ("star",),
        "n_bands": ("star",),
    }
    for name, expected in dims.items():
        assert cube[name].dims == expected
        assert cube[name].attrs["description"]
    assert {"source_id", "healpix29", "param", "stat"} <= set(cube.coords)
    assert cube.samples.dtype == np.float32 and cube.flags.dtype == np.uint32
    assert cube.source_id.dtype == np.int64 and cube.n_bands.dtype == np.int16

    units = json.loads(cube.param.attrs["units"])
    assert units["teff"] == "K" and units["distance_pc"] == "pc" and set(units) == set(params)
    assert set(json.loads(cube.param.attrs["description"])) == set(params)
    assert set(json.loads(cube.stat.attrs["description"])) == set(STATS)
    assert cube.flags.attrs["flag_masks"] == list(FLAG_BITS.values())
    assert cube.flags.attrs["flag_meanings"].split() == list(FLAG_BITS)

    card = json.loads(cube.attrs["model_card"])
    assert card["trained_on"] == "nothing (test model)"
    config = json.loads(cube.attrs["run_config"])
    assert config["n_samples"] == 8 and config["model"] == str(model_dir.resolve())
    assert config["isochrone_grid_hash"] and config["star_chunk"] == CHUNK


def test_each_partition_owns_whole_chunks(file_run):
    cube = xr.open_zarr(file_run.cube)
    assert cube.samples.encoding["chunks"][0] == CHUNK
    starts, rows = cube.partition_start.values, cube.partition_rows.values
    assert (starts % CHUNK == 0).all() and rows.tolist() == [150, 150, 100]
    assert (cube.partition_done.values == 1).all()
    flags = cube.flags.values
    for start, n in zip(starts, rows, strict=True):
        end = start + -(-n // CHUNK) * CHUNK
        assert not (flags[start : start + n] & PADDING).any()
        assert (flags[start + n : end] == PADDING).all()
        assert (cube.source_id.values[start + n : end] == -1).all()


def test_file_input_keeps_every_row_in_order(file_run, catalog):
    cube = open_cube(file_run.cube)
    assert cube.sizes["star"] == len(catalog)
    np.testing.assert_array_equal(cube.source_id.values, catalog["source_id"].to_numpy())
    assert (cube.flags.values == 0).all()
    assert (cube.n_bands.values >= 1).all()
    assert np.isfinite(cube.samples.sel(param="log10_mass").values).all()
    healpix = cube.healpix29.values
    assert (healpix > 0).all()
    assert file_run.partitions_run == 3 and file_run.n_inferred == len(catalog)


def test_summary_catalog_is_hats(file_run, catalog):
    summary = lsdb.open_catalog(file_run.summary_catalog).compute()
    assert len(summary) == len(catalog)
    params = list(xr.open_zarr(file_run.cube).param.values)
    for column in [*catalog.columns, *summary_columns(params)]:
        assert column in summary.columns
    cube = open_cube(file_run.cube)
    median = cube.summary.sel(stat="median", param="av").to_series()
    merged = summary.set_index("source_id")["av_median"]
    by_id = pd.Series(median.values, index=cube.source_id.values)
    np.testing.assert_array_equal(merged.sort_index().values, by_id.sort_index().values)


def test_hats_input_matches_the_file_input(hats_run, file_run, catalog):
    """Partitioning differs (HEALPix pixels vs row ranges); every star's result does not."""
    root, report = hats_run
    assert report.n_partitions > 1 and report.n_stars == len(catalog)
    hats_cube = open_cube(report.cube)
    file_cube = open_cube(file_run.cube)
    assert (hats_cube.partition_order.values >= 0).all()
    a = hats_cube.samples.values[np.argsort(hats_cube.source_id.values)]
    b = file_cube.samples.values[np.argsort(file_cube.source_id.values)]
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
    # the HATS spatial index is carried over as healpix29
    source = lsdb.open_catalog(root / "catalog").compute()
    index = pd.Series(source.index.to_numpy(), index=source["source_id"].to_numpy())
    np.testing.assert_array_equal(
        hats_cube.healpix29.values, index.loc[hats_cube.source_id.values].to_numpy()
    )
    summary = lsdb.open_catalog(report.summary_catalog)
    assert summary.get_healpix_pixels() == lsdb.open_catalog(root / "catalog").get_healpix_pixels()
    assert len(summary.compute()) == len(catalog)


def test_rerun_of_a_complete_run_computes_nothing(file_run, model_dir):
    root = file_run.out_dir.parent
    again = infer(
        root / "catalog.parquet", file_run.out_dir, model=model_dir, n_samples=8, workers=0,
        progress=False, star_chunk=CHUNK, partition_rows=150,
    )  # fmt: skip
    assert again.partitions_run == 0 and again.partitions_skipped == 3


def test_another_configuration_is_refused(file_run, model_dir):
    root = file_run.out_dir.parent
    with pytest.raises(ValueError, match="another run_config"):
        infer(
            root / "catalog.parquet", file_run.out_dir, model=model_dir, n_samples=8, seed=9,
            workers=0, progress=False, star_chunk=CHUNK, partition_rows=150,
        )  # fmt: skip


def test_cli_infer(tmp_path, model_dir, catalog, capsys):
    catalog.iloc[:50].to_csv(tmp_path / "catalog.csv", index=False)
    code = main([
        "infer", str(tmp_path / "catalog.csv"), "--out", str(tmp_path / "out"),
        "--model", str(model_dir), "--samples", "4", "--workers", "0",
    ])  # fmt: skip
    assert code == 0
    assert "50 stars" in capsys.readouterr().out
    assert open_cube(tmp_path / "out" / "posteriors.zarr").sizes["sample"] == 4


def test_unplaced_rows_are_kept_beside_the_summary(tmp_path, model_dir, catalog):
    frame = catalog.iloc[:40].copy()
    frame.loc[frame.index[3], "ra"] = np.nan
    frame.to_parquet(tmp_path / "catalog.parquet")
    report = infer(
        tmp_path / "catalog.parquet", tmp_path / "out", model=model_dir, n_samples=4,
        workers=0, progress=False, star_chunk=CHUNK,
    )  # fmt: skip
    assert report.n_unplaced == 1
    unplaced = pd.read_parquet(tmp_path / "out" / "summary_unplaced.parquet")
    assert unplaced["source_id"].tolist() == [frame["source_id"].iloc[3]]
    assert unplaced["flags"].iloc[0] & RowFlag.BAD_POSITION
    assert len(lsdb.open_catalog(report.summary_catalog).compute()) == 39
    cube = open_cube(report.cube)
    assert cube.healpix29.values[3] == -1
    assert np.isfinite(cube.samples.values[3]).any()  # still inferred from its photometry


def test_hats_collection_input_uses_its_main_catalog(tmp_path, model_dir, catalog):
    frame = catalog.iloc[:120]
    collection = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", partition_rows=50)
    collection.write_catalog(tmp_path / "collection", progress_bar=False)  # with a margin
    assert (tmp_path / "collection" / "collection.properties").exists()
    report = infer(
        tmp_path / "collection", tmp_path / "out", model=model_dir, n_samples=4, workers=0,
        progress=False, star_chunk=CHUNK,
    )  # fmt: skip
    assert report.n_stars == len(frame)
    assert len(lsdb.open_catalog(report.summary_catalog).compute()) == len(frame)


def test_infer_with_a_simformer_model(tmp_path, one_thread):
    """A Simformer model directory (found by its model card) serves ``infer`` like an NPE
    one: same per-star draws wherever a star sits, log_prob NaN (no density)."""
    import torch

    from tests.infer import BANDS, synthetic_catalog
    from ysoscale.infer.kernel import infer_arrays
    from ysoscale.nn import Simformer, SimformerConfig

    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, width=16, heads=2, depth=1, ff=32, default_steps=2)
    model_dir = Simformer(config).save(tmp_path / "simformer")
    frame = synthetic_catalog(60, seed=3)
    frame.to_parquet(tmp_path / "catalog.parquet")
    report = infer(tmp_path / "catalog.parquet", tmp_path / "run", model=model_dir,
                   n_samples=8, workers=0, progress=False)  # fmt: skip
    cube = open_cube(report.cube)
    assert json.loads(cube.attrs["model_card"])["estimator"] == "simformer"
    samples = cube.samples.values
    assert np.isfinite(samples[:, :, : len(config.params)]).all()
    # the same stars, reordered, through the kernel directly: identical draws per star
    order = np.argsort(cube.source_id.values)[::-1]
    bands = list(BANDS)
    table = frame.set_index("source_id").loc[cube.source_id.values[order]]
    direct = infer_arrays(
        Simformer.load(model_dir),
        table[[f"{b}_mag" for b in bands]].to_numpy(),
        table[[f"{b}_mag_err" for b in bands]].to_numpy(),
        table["parallax"].to_numpy(),
        table["parallax_error"].to_numpy(),
        np.ones(len(table), dtype=bool),
        8,
        seed=0,
        source_id=table.index.to_numpy(),
    )
    n_param = len(config.params)
    np.testing.assert_allclose(
        direct["samples"][:, :, :n_param], samples[order][:, :, :n_param], rtol=1e-5, atol=1e-5
    )
    assert np.isnan(direct["log_prob"]).all()


def test_importance_weighted_run(tmp_path, model_dir, catalog):
    """``--importance``: log weights and ESS in the cube, weighted summaries, LOW_ESS flags;
    a cube of an unweighted run is not resumed as a weighted one."""
    from ysoscale.infer.cube import LOW_ESS
    from ysoscale.infer.kernel import P16

    catalog.iloc[:60].to_parquet(tmp_path / "catalog.parquet")
    code = main([
        "infer", str(tmp_path / "catalog.parquet"), "--out", str(tmp_path / "out"),
        "--model", str(model_dir), "--samples", "16", "--workers", "0", "--importance",
    ])  # fmt: skip
    assert code == 0
    cube = open_cube(tmp_path / "out" / "posteriors.zarr")
    assert json.loads(cube.attrs["run_config"])["importance"] is True
    assert cube.log_weight.dims == ("star", "sample") and cube.ess.dims == ("star",)
    log_weight, ess = cube.log_weight.values.astype(np.float64), cube.ess.values
    sampled = np.isfinite(ess)
    assert sampled.sum() > 40
    alive = sampled & (ess > 0)
    assert alive.any()
    np.testing.assert_allclose(np.logaddexp.reduce(log_weight[alive], axis=1), 0.0, atol=1e-4)
    low = (cube.flags.values & LOW_ESS) != 0
    assert np.array_equal(low, sampled & (ess < 0.01 * 16))
    # the summary is the weighted one: the p16 of a parameter by hand
    samples = cube.samples.sel(param="log10_age").values
    p16 = cube.summary.sel(stat="p16", param="log10_age").values
    for star in np.flatnonzero(alive)[:5]:
        weight = np.exp(log_weight[star])
        order = np.argsort(samples[star])
        share = np.cumsum(weight[order]) / weight.sum()
        assert p16[star] == pytest.approx(samples[star][order][np.searchsorted(share, P16)])
    summary = lsdb.open_catalog(tmp_path / "out" / "summary").compute()
    assert len(summary) == 60
    with pytest.raises(ValueError, match="another run_config"):
        infer(tmp_path / "catalog.parquet", tmp_path / "out", model=model_dir, n_samples=16,
              workers=0, progress=False)  # fmt: skip


def test_importance_with_a_simformer_and_a_model_without_physical_parameters(tmp_path):
    import torch

    from tests.infer import BANDS, synthetic_catalog
    from ysoscale.nn import Simformer, SimformerConfig

    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, width=16, heads=2, depth=1, ff=32, default_steps=2)
    model_dir = Simformer(config).save(tmp_path / "simformer")
    synthetic_catalog(40, seed=4).to_parquet(tmp_path / "catalog.parquet")
    report = infer(tmp_path / "catalog.parquet", tmp_path / "run", model=model_dir,
                   n_samples=8, workers=0, progress=False, importance=True)  # fmt: skip
    cube = open_cube(report.cube)
    assert "has_disk" not in cube.param.values and "log10_age" in cube.param.values
    assert np.isnan(cube.p_disk.values).all()  # the disk is marginalised by the weights
    assert np.isfinite(cube.ess.values).sum() > 30
    atmospheric = SimformerConfig(bands=BANDS, params=("teff", "logg", "mh", "av", "rv",
                                                       "distance_modulus"),
                                  width=16, heads=2, depth=1, ff=32)  # fmt: skip
    other = Simformer(atmospheric).save(tmp_path / "atmospheric")
    with pytest.raises(ValueError, match="physical parameters"):
        infer(tmp_path / "catalog.parquet", tmp_path / "run2", model=other, n_samples=8,
              workers=0, progress=False, importance=True)  # fmt: skip


def test_a_model_directory_with_a_recalibration_applies_it(tmp_path, model_dir, catalog):
    """A ``recalibration.json`` beside the weights is applied to every star by its condition
    pattern and recorded (with the file's hash) in the run configuration;
    ``--no-recalibration`` leaves the samples as drawn; a cube of one is not resumed as
    the other."""
    import shutil

    from ysoscale.nn.recalibration import ALL_PATTERNS, QuantileRecalibration
    from ysoscale.nn.simformer import load_estimator

    model = shutil.copytree(model_dir, tmp_path / "model")
    params = load_estimator(model).config.params
    widen = np.tile([[0.1], [0.5], [0.9]], (1, len(params)))
    QuantileRecalibration(params, np.array([0.25, 0.5, 0.75]), {ALL_PATTERNS: widen},
                          {ALL_PATTERNS: np.zeros(len(params))},
                          fitted_on={"store": "test"}).save(model)  # fmt: skip
    catalog.iloc[:60].to_parquet(tmp_path / "catalog.parquet")
    runs, summaries = {}, {}
    for name, recalibrate in (("moved", True), ("plain", False)):
        report = infer(tmp_path / "catalog.parquet", tmp_path / name, model=model, n_samples=8,
                       workers=0, progress=False, recalibrate=recalibrate)  # fmt: skip
        runs[name] = open_cube(report.cube)
        summaries[name] = report.summary()
    assert "recalibrated per condition pattern" in summaries["moved"]
    assert "recalibrated" not in summaries["plain"]
    record = json.loads(runs["moved"].attrs["run_config"])["recalibration"]
    assert record["store"] == "test" and len(record["sha256"]) == 64
    assert json.loads(runs["plain"].attrs["run_config"])["recalibration"] is None
    n_param = len(params)
    plain = runs["plain"].samples.values[..., :n_param]
    expected = QuantileRecalibration.load(model).apply(
        plain, runs["plain"].condition_pattern.values, params)  # fmt: skip
    np.testing.assert_allclose(runs["moved"].samples.values[..., :n_param], expected,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert np.nanmean(np.nanstd(runs["moved"].samples.values[..., :n_param], axis=1)) > (
        np.nanmean(np.nanstd(plain, axis=1))
    )  # the map widens
    with pytest.raises(ValueError, match="another run_config"):
        infer(tmp_path / "catalog.parquet", tmp_path / "plain", model=model, n_samples=8,
              workers=0, progress=False)  # fmt: skip
    args = build_parser().parse_args(["infer", "x", "--out", "y", "--no-recalibration"])
    assert args.no_recalibration

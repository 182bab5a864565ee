"""The XP pass over a posterior cube: schema, chunk alignment, stars without XP, the
distributed path against the in-process path, resume, and ``infer --xp``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from tests.infer import BANDS, synthetic_catalog
from ysoscale.cli import main
from ysoscale.infer.cube import CubeWriter, Layout, create_or_check, padded_block
from ysoscale.nn.svae import ScatterVAE
from ysoscale.xp.cube import DONE, XP_VARIABLES, xp_infer
from ysoscale.xp.data import read_store
from ysoscale.xp.kernel import encode_arrays
from ysoscale.xp.populations import NO_XP, Populations

CHUNK = 32
ROWS = (70, 0, 45)


def _cube(path, seed: int = 0, complete: bool = True):
    """A posterior cube of 115 stars in 3 partitions (one empty), with padding rows;
    two thirds of the source_ids are in the synthetic XP store (1000 + 7 k)."""
    rng = np.random.default_rng(seed)
    layout = Layout(rows=ROWS, order=(-1, -1, -1), pixel=(0, 1, 2), star_chunk=CHUNK)
    params = ("teff", "logg")
    create_or_check(path, layout, params, 2, {"model_card": "{}", "run_config": "{}"})
    writer = CubeWriter(path)
    in_store = 1000 + 7 * rng.choice(400, sum(ROWS), replace=False)
    ids = np.where(rng.random(sum(ROWS)) < 2 / 3, in_store, 10**12 + np.arange(sum(ROWS)))
    first = 0
    for index, (start, n) in enumerate(zip(layout.start, ROWS, strict=True)):
        if n:
            block = padded_block(
                n, CHUNK, 2, 2,
                samples=rng.normal(size=(n, 2, 2)), summary=rng.normal(size=(n, 5, 2)),
                flags=np.zeros(n), n_bands=np.full(n, 3), source_id=ids[first : first + n],
                healpix29=np.arange(n),
            )  # fmt: skip
            writer.write(int(start), block)
            first += n
        if complete or index == 0:
            writer.mark_done(index)
    return path


def _xp_arrays(path) -> dict[str, np.ndarray]:
    with xr.open_zarr(path) as cube:
        return {name: cube[name].values for name in (*XP_VARIABLES, DONE, "source_id")}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, xp_store, svae_dir):
    path = _cube(tmp_path_factory.mktemp("cube") / "posteriors.zarr")
    report = xp_infer(path, xp_store, svae_dir, workers=0, progress=False)
    return path, report


def test_schema_and_chunks_follow_the_cube(in_process, svae_dir):
    path, report = in_process
    cube = xr.open_zarr(path)
    n_star = cube.sizes["star"]
    assert report.n_chunks == n_star // CHUNK and report.chunks_run == report.n_chunks
    assert cube.xp_latent.dims == ("star", "latent") and cube.sizes["latent"] == 2
    assert list(cube.latent.values) == ["z0", "z1"]
    for name in XP_VARIABLES:
        assert cube[name].encoding["chunks"][0] == CHUNK, name
        assert cube[name].attrs["description"]
    assert cube.xp_latent.dtype == np.float32 and cube.xp_population.dtype == np.int16
    card = json.loads(cube.xp_latent.attrs["model_card"])
    assert card["kind"] == "svae"
    assert (cube[DONE].values == 1).all()
    # the posterior variables and the cube's attributes are untouched
    assert cube.samples.shape == (n_star, 2, 2) and (cube.n_bands.values[:70] == 3).all()
    assert cube.attrs["star_chunk"] == CHUNK and cube.attrs["model_card"] == "{}"


def test_values_match_the_kernel_and_stars_without_xp_are_nan(in_process, xp_store, svae_dir):
    path, report = in_process
    out = _xp_arrays(path)
    ids = out["source_id"]
    store = read_store(xp_store)
    in_store = np.isin(ids, store.source_id)
    assert (
        report.n_with_xp == in_store.sum()
        and report.n_without_xp == (ids >= 0).sum() - in_store.sum()
    )
    assert np.isfinite(out["xp_latent"][in_store]).all()
    for name in ("xp_latent", "xp_chi2_dof", "xp_anomaly"):
        assert np.isnan(out[name][~in_store]).all(), name  # padding rows too
    assert (out["xp_population"][~in_store] == NO_XP).all()
    assert (out["xp_population"][in_store] >= -1).all()

    expected = encode_arrays(ScatterVAE.load(svae_dir), store)
    rows = np.searchsorted(store.source_id, ids[in_store])
    np.testing.assert_allclose(out["xp_latent"][in_store], expected["latent"][rows], rtol=1e-5)
    np.testing.assert_allclose(out["xp_chi2_dof"][in_store], expected["chi2_dof"][rows], rtol=1e-5)
    populations = Populations.load(svae_dir).assign(expected["latent"][rows])
    np.testing.assert_array_equal(out["xp_population"][in_store], populations)


def test_distributed_path_equals_in_process_path(tmp_path, in_process, xp_store, svae_dir):
    from distributed import Client, LocalCluster

    path = _cube(tmp_path / "posteriors.zarr")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        report = xp_infer(path, xp_store, svae_dir, client=client, progress=False)
    assert report.chunks_run == in_process[1].chunks_run
    distributed, local = _xp_arrays(path), _xp_arrays(in_process[0])
    for name, values in local.items():
        np.testing.assert_array_equal(distributed[name], values, err_msg=name)


def test_rerun_skips_done_chunks_and_a_new_model_replaces(tmp_path, xp_store, svae_dir):
    path = _cube(tmp_path / "posteriors.zarr")
    first = xp_infer(path, xp_store, svae_dir, workers=0, progress=False)
    again = xp_infer(tmp_path, xp_store, svae_dir, workers=0, progress=False)  # the out dir
    assert again.chunks_run == 0 and again.chunks_skipped == first.n_chunks

    other = tmp_path / "other_model"
    model = ScatterVAE.load(svae_dir)
    with np.errstate(all="ignore"):
        for p in model.parameters():
            p.data.mul_(1.01)
    card = json.loads((svae_dir / "model_card.json").read_text())
    model.save(other, {"note": "perturbed", "normalisation": card["normalisation"]})
    Populations.load(svae_dir).save(other)
    replaced = xp_infer(path, xp_store, other, workers=0, progress=False)
    assert replaced.chunks_run == first.n_chunks
    with xr.open_zarr(path) as cube:
        assert json.loads(cube.xp_latent.attrs["model_card"])["note"] == "perturbed"


def test_incomplete_cube_and_missing_inputs_are_refused(tmp_path, xp_store, svae_dir):
    path = _cube(tmp_path / "posteriors.zarr", complete=False)
    with pytest.raises(ValueError, match="incomplete"):
        xp_infer(path, xp_store, svae_dir, workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="XP store"):
        xp_infer(path, tmp_path / "none.zarr", svae_dir, workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="model card"):
        xp_infer(path, xp_store, tmp_path, workers=0, progress=False)


def test_cli_infer_with_xp_and_plot_latent(tmp_path, xp_store, svae_dir, capsys):
    """``infer --xp`` end to end on a tiny (untrained) atmospheric estimator, then
    ``plot latent`` on the cube (coloured by posterior medians) and on the store."""
    import torch

    from ysoscale.nn import ATMOSPHERIC_PARAMS, EstimatorConfig, PosteriorEstimator

    torch.manual_seed(0)
    config = EstimatorConfig(
        bands=BANDS, params=ATMOSPHERIC_PARAMS, width=16, heads=2, depth=1, ff=32,
        transforms=1, flow_hidden=(16,),
    )  # fmt: skip
    npe = PosteriorEstimator(config).save(tmp_path / "npe", {"trained_on": "nothing"})
    catalog = synthetic_catalog(60, seed=3)
    catalog["source_id"] = np.concatenate([1000 + 7 * np.arange(40), 10**12 + np.arange(20)])
    catalog.to_parquet(tmp_path / "catalog.parquet")
    code = main([
        "infer", str(tmp_path / "catalog.parquet"), "--out", str(tmp_path / "out"),
        "--model", str(npe), "--samples", "4", "--workers", "0",
        "--xp", str(xp_store), "--xp-model", str(svae_dir),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "stars with a usable XP spectrum now: 40" in capsys.readouterr().out
    code = main(["plot", "latent", str(tmp_path / "out"), "--out", str(tmp_path / "plots")])
    assert code == 0
    written = capsys.readouterr().out
    for name in ("latent_populations.png", "latent_teff.png", "latent_logg.png"):
        assert name in written and (tmp_path / "plots" / name).stat().st_size > 10_000
    code = main([
        "plot", "latent", str(xp_store), "--model", str(svae_dir),
        "--out", str(tmp_path / "store_plots"),
    ])  # fmt: skip
    assert code == 0 and (tmp_path / "store_plots" / "xp_anomalies.png").exists()
    assert main(["plot", "latent", str(xp_store), "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    code = main([
        "infer", str(tmp_path / "catalog.parquet"), "--out", str(tmp_path / "out"),
        "--model", str(npe), "--workers", "0", "--xp", str(xp_store),
    ])  # fmt: skip
    assert code == 2 and "--xp-model" in capsys.readouterr().err

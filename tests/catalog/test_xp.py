"""Gaia XP coefficients into a zarr store keyed by source_id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.table import Table

from ysoscale.catalog.xp import N_BASES, ingest_xp, read_xp

REAL = Path(__file__).resolve().parents[3] / "shared/data/xp_gaia_dr3/xp_continuous_chunk0.fits"


def _flat_table(ids: np.ndarray, seed: int) -> Table:
    rng = np.random.default_rng(seed)
    table = Table({"source_id": ids})
    for band in ("bp", "rp"):
        for i in range(N_BASES):
            table[f"{band}_coeff_{i}"] = rng.normal(size=len(ids)).astype(np.float32)
            table[f"e_{band}_coeff_{i}"] = rng.uniform(0.01, 0.1, len(ids)).astype(np.float32)
    table["bp_n_relevant_bases"] = np.full(len(ids), 40, np.int16)
    return table


def test_flat_and_array_layouts_give_the_same_store(tmp_path) -> None:
    flat = _flat_table(np.array([30, 10, 20]), seed=0)
    flat.write(tmp_path / "flat.fits")
    arrays = Table({"source_id": np.array([40, 50])})
    rng = np.random.default_rng(1)
    for band in ("bp", "rp"):
        arrays[f"{band}_coefficients"] = rng.normal(size=(2, N_BASES))
        arrays[f"{band}_coefficient_errors"] = rng.uniform(0.01, 0.1, (2, N_BASES))
    arrays.write(tmp_path / "arrays.fits")

    report = ingest_xp([tmp_path / "flat.fits", tmp_path / "arrays.fits"], tmp_path / "xp.zarr")
    assert report.n_sources == 5 and report.first_id == 10
    store = xr.open_zarr(tmp_path / "xp.zarr")
    assert store.source_id.values.tolist() == [10, 20, 30, 40, 50]
    # values survive the round trip, looked up by source_id
    np.testing.assert_allclose(
        store.bp_coefficients.sel(source_id=30).values,
        [flat[f"bp_coeff_{i}"][0] for i in range(N_BASES)],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        store.rp_coefficient_errors.sel(source_id=50).values,
        arrays["rp_coefficient_errors"][1],
    )
    assert int(store.bp_n_relevant_bases.sel(source_id=10)) == 40


def test_duplicates_and_missing_columns_are_named(tmp_path) -> None:
    _flat_table(np.array([1, 2]), 0).write(tmp_path / "a.fits")
    _flat_table(np.array([2, 3]), 1).write(tmp_path / "b.fits")
    with pytest.raises(ValueError, match=r"more than once.*\[2\]"):
        ingest_xp([tmp_path / "a.fits", tmp_path / "b.fits"], tmp_path / "xp.zarr")
    broken = _flat_table(np.array([1]), 0)
    broken.remove_column("rp_coeff_7")
    broken.write(tmp_path / "broken.fits")
    with pytest.raises(ValueError, match="rp_coeff_7"):
        read_xp(tmp_path / "broken.fits")


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data is not on this machine")
def test_real_gaia_chunk(tmp_path) -> None:
    report = ingest_xp([REAL], tmp_path / "xp.zarr")
    assert report.n_sources == 2000
    store = xr.open_zarr(tmp_path / "xp.zarr")
    assert store.bp_coefficients.shape == (2000, N_BASES)
    finite = np.isfinite(store.bp_coefficients.values).all(axis=1)
    assert finite.mean() > 0.99
    # the first BP coefficient carries most of the flux: positive for real sources
    assert (store.bp_coefficients.values[finite, 0] > 0).mean() > 0.99


def test_cli(tmp_path, capsys) -> None:
    from ysoscale.cli import main

    _flat_table(np.array([5, 6]), 0).write(tmp_path / "xp.fits")
    assert main(["ingest-xp", str(tmp_path / "xp.fits"), "--out", str(tmp_path / "xp.zarr")]) == 0
    assert "2 sources" in capsys.readouterr().out
    assert xr.open_zarr(tmp_path / "xp.zarr").sizes["source_id"] == 2


EXAMPLES = REAL.parent / "xp_continuous_examples_with_correlations.vot"


def test_correlations_are_kept_and_filled_with_nan_where_absent(tmp_path) -> None:
    from ysoscale.catalog.xp import N_CORRELATIONS

    rng = np.random.default_rng(2)
    arrays = Table({"source_id": np.array([7, 8])})
    for band in ("bp", "rp"):
        arrays[f"{band}_coefficients"] = rng.normal(size=(2, N_BASES))
        arrays[f"{band}_coefficient_errors"] = rng.uniform(0.01, 0.1, (2, N_BASES))
        arrays[f"{band}_coefficient_correlations"] = rng.uniform(-0.3, 0.3, (2, N_CORRELATIONS))
    arrays.write(tmp_path / "with.fits")
    _flat_table(np.array([1, 9]), 0).write(tmp_path / "without.fits")

    ingest_xp([tmp_path / "with.fits", tmp_path / "without.fits"], tmp_path / "xp.zarr")
    store = xr.open_zarr(tmp_path / "xp.zarr")
    assert store.rp_coefficient_correlations.shape == (4, N_CORRELATIONS)
    np.testing.assert_allclose(
        store.rp_coefficient_correlations.sel(source_id=8).values,
        arrays["rp_coefficient_correlations"][1],
        rtol=1e-6,
    )
    assert np.isnan(store.bp_coefficient_correlations.sel(source_id=[1, 9]).values).all()
    # a store from inputs without correlations has no correlation variables
    ingest_xp([tmp_path / "without.fits"], tmp_path / "plain.zarr")
    assert "bp_coefficient_correlations" not in xr.open_zarr(tmp_path / "plain.zarr")


@pytest.mark.skipif(not EXAMPLES.exists(), reason="../shared/data is not on this machine")
def test_real_votable_with_correlations(tmp_path) -> None:
    report = ingest_xp([EXAMPLES], tmp_path / "xp.zarr")
    assert report.n_sources == 4
    store = xr.open_zarr(tmp_path / "xp.zarr")
    for band in ("bp", "rp"):
        values = store[f"{band}_coefficient_correlations"].values
        assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
        # the archive's order (lower triangle, row by row) gives positive-definite matrices
        matrix = np.eye(N_BASES)
        matrix[np.tril_indices(N_BASES, -1)] = values[0]
        matrix = matrix + np.tril(matrix, -1).T
        assert np.linalg.eigvalsh(matrix).min() > 0

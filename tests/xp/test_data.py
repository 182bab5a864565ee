"""Normalisation and reading of ingest-xp stores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tests.xp import REAL_CHUNK, REAL_EXAMPLES, synthetic_store, synthetic_xp_table
from ysoscale.catalog.xp import ingest_xp
from ysoscale.xp.data import XPLookup, read_store
from ysoscale.xp.normalise import normalise


def test_normalisation_divides_by_the_flux_proxy():
    table = synthetic_xp_table(5, seed=1)
    bp, rp = np.asarray(table["bp_coefficients"]), np.asarray(table["rp_coefficients"])
    bp_err, rp_err = (np.asarray(table[f"{b}_coefficient_errors"]) for b in ("bp", "rp"))
    bp[1, 3] = np.nan  # unusable: a NaN coefficient
    rp_err[2, 0] = 0.0  # unusable: a zero error
    bp[3, 0] = -rp[3, 0] - 1.0  # unusable: negative flux proxy
    out = normalise(np.arange(5), bp, bp_err, rp, rp_err)
    assert out.usable.tolist() == [True, False, False, False, True]
    flux = bp[0, 0] + rp[0, 0]
    assert out.flux[0] == pytest.approx(flux)
    np.testing.assert_allclose(out.coefficients[0, :55], bp[0] / flux, rtol=1e-6)
    np.testing.assert_allclose(out.errors[4, 55:], rp_err[4] / (bp[4, 0] + rp[4, 0]), rtol=1e-6)
    # BP0 + RP0 is exactly 1 after normalisation
    assert out.coefficients[0, 0] + out.coefficients[0, 55] == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(out.coefficients[1]).all()


def test_wrong_shapes_are_named():
    good = np.ones((2, 55))
    with pytest.raises(ValueError, match="rp_error has shape"):
        normalise(np.arange(2), good, good, good, np.ones((2, 54)))
    with pytest.raises(ValueError, match="both"):
        normalise(np.arange(2), good, good, good, good, bp_correlations=np.zeros((2, 1485)))


def test_read_store_and_lookup(tmp_path, xp_store):
    arrays = read_store(xp_store)
    assert arrays.coefficients.shape == (400, 110) and arrays.correlations is None
    assert arrays.usable.all()
    sample = read_store(xp_store, max_stars=50, seed=1)
    assert len(sample) == 50 and np.isin(sample.source_id, arrays.source_id).all()
    lookup = XPLookup(xp_store)
    wanted = np.array([1007, 5, 1000, 1007, 10**15])
    found, got = lookup.fetch(wanted)
    assert found.tolist() == [True, False, True, True, False]
    assert got.source_id.tolist() == [1007, 1000, 1007]
    np.testing.assert_array_equal(got.coefficients[0], arrays.coefficients[1])


def test_store_errors_name_what_is_missing(tmp_path, xp_store):
    with pytest.raises(FileNotFoundError, match="ingest-xp"):
        read_store(tmp_path / "nothing.zarr")
    broken = xr.open_zarr(xp_store).drop_vars("rp_coefficient_errors")
    broken.to_zarr(tmp_path / "broken.zarr", mode="w")
    with pytest.raises(ValueError, match="rp_coefficient_errors"):
        read_store(tmp_path / "broken.zarr")


def test_correlations_reach_the_arrays(tmp_path):
    store = synthetic_store(tmp_path / "corr.zarr", 6, seed=2, correlations=True)
    arrays = read_store(store)
    assert arrays.correlations.shape == (6, 2, 1485)
    assert np.isfinite(arrays.correlations).all()


@pytest.mark.skipif(not REAL_CHUNK.exists(), reason="../shared/data is not on this machine")
def test_real_chunk_is_usable_and_normalised(tmp_path):
    ingest_xp([REAL_CHUNK, REAL_EXAMPLES], tmp_path / "xp.zarr")
    arrays = read_store(tmp_path / "xp.zarr")
    assert len(arrays) == 2004 and arrays.usable.mean() > 0.99
    ok = arrays.usable
    total = arrays.coefficients[ok, 0] + arrays.coefficients[ok, 55]
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    # the four archive examples carry correlations, the chunk's stars do not
    known = np.isfinite(arrays.correlations).all(axis=(1, 2))
    assert known.sum() == 4

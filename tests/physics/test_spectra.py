"""SEDFit spectra: hash-checked conversion, safe unpickling, holes and energy check."""

from __future__ import annotations

import bz2
import dataclasses
import pickle

import numpy as np
import pytest

from ysoscale.physics import spectra
from ysoscale.physics.spectra import (
    SEDFIT_GRIDS,
    GridFileError,
    _GridUnpickler,
    interpolate_spectrum,
    load_spectral_grid,
)


@pytest.fixture(scope="module")
def btsettl():
    return load_spectral_grid("btsettl")


def test_layout_and_units(btsettl) -> None:
    assert btsettl.log10_flux.dims == ("teff", "logg", "mh", "wavelength")
    assert btsettl.valid.dims == ("teff", "logg", "mh")
    assert btsettl.wavelength.attrs["units"] == "AA"
    assert btsettl.attrs["source_sha256"] == SEDFIT_GRIDS["btsettl"].sha256


def test_a_tampered_file_is_never_unpickled(monkeypatch, tmp_path) -> None:
    """A file whose sha256 is not the pinned one is refused before any unpickling."""
    bogus = dataclasses.replace(SEDFIT_GRIDS["kurucz"], sha256="0" * 64)
    monkeypatch.setitem(SEDFIT_GRIDS, "kurucz", bogus)
    with pytest.raises(GridFileError, match="refusing to unpickle"):
        spectra.convert_library("kurucz")


def test_unpickler_admits_only_array_classes(tmp_path) -> None:
    import os

    payload = bz2.compress(pickle.dumps(os.system))
    path = tmp_path / "evil.p"
    path.write_bytes(payload)
    with bz2.BZ2File(path) as handle, pytest.raises(pickle.UnpicklingError, match="refusing"):
        _GridUnpickler(handle).load()


def test_holes_are_filled_from_the_nearest_logg_and_marked(btsettl) -> None:
    """A filled node copies its nearest computed log g at the same Teff and [M/H]."""
    valid = btsettl.computed.values
    k = int(np.flatnonzero(btsettl.mh.values == 0.0)[0])
    holes = np.argwhere(~valid[:, :, k] & valid[:, :, k].any(axis=1)[:, None])
    assert len(holes) > 0
    for i, j in holes[:: max(1, len(holes) // 20)]:
        good = np.flatnonzero(valid[i, :, k])
        nearest = good[np.abs(good - j).argmin()]
        np.testing.assert_array_equal(
            btsettl.log10_flux.values[i, j, k], btsettl.log10_flux.values[i, nearest, k]
        )


def test_energy_check_flags_sedfits_broken_metallicities(btsettl) -> None:
    """SEDFit's BT-Settl is sound at [M/H] = 0 and broken elsewhere (see spectra docstring).

    At 3000-10000 K, log g 4.5, every solar node passes the 10 % energy check, while a
    large share of the [M/H] = -1, -0.5, +0.5 nodes fail it (measured 37.5 %; the bound
    asks for more than 30 %).
    """
    sub = btsettl.sel(teff=slice(3000, 10000), logg=4.5)
    assert bool(sub.valid.sel(mh=0.0).all())
    off_solar = sub.valid.sel(mh=[-1.0, -0.5, 0.5]).values
    assert off_solar.mean() < 0.7


@pytest.mark.parametrize("library", ["phoenix", "kurucz"])
def test_default_libraries_conserve_energy(library: str) -> None:
    """Every computed PHOENIX and Kurucz dwarf node carries σT⁴ within 10 %."""
    grid = load_spectral_grid(library).sel(logg=slice(3.5, 5.0))
    scale = grid.bolometric_scale.where(grid.valid).values
    assert np.nanmax(np.abs(np.log(scale))) < np.log(1 / 0.9)


def test_interpolated_spectrum_is_exact_on_nodes(btsettl) -> None:
    lam, flux = interpolate_spectrum(btsettl, 5800.0, 4.5, 0.0)
    node = btsettl.sel(teff=5800.0, logg=4.5, mh=0.0)
    expected = 10.0 ** (node.log10_flux.values.astype(float)) * float(node.bolometric_scale)
    np.testing.assert_allclose(flux, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="teff"):
        interpolate_spectrum(btsettl, 1000.0, 4.5, 0.0)

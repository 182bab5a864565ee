"""Tests of the regular isochrone grid (PARSEC + BHAC15) in ysoscale.physics.isochrones.

The grid is built once per module (about 3 s); the source files are read here with h5py
and scipy directly, independently of the module's own readers, to check the resampling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.physics.parsec_source import parsec_isochrones
from ysoscale.cache import CACHE_ENV
from ysoscale.physics import isochrones
from ysoscale.physics.isochrones import (
    BUILD_VERSION,
    ISOCHRONE_VARIABLES,
    SUN_INITIAL_MH,
    build_isochrone_grid,
    interp_linear,
    isochrone_grid_hash,
    load_isochrone_grid,
    resample_isochrone,
)

MYR = 6.0  # log10(1 Myr / yr)


@pytest.fixture(scope="module")
def grid() -> xr.Dataset:
    return build_isochrone_grid(progress=False)


@pytest.fixture(scope="module")
def solar(grid: xr.Dataset) -> xr.Dataset:
    # Interpolating on the mh = 0 plane itself: 3-D linear interpolation at mh = 0 gives the
    # same numbers, except that scipy multiplies the zero weight of the mh = 0.25 plane by its
    # NaNs where that plane is invalid (PARSEC at +0.25 starts at 0.10-0.13 Msun).
    return grid.sel(mh=0.0)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ysoscale-cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


def _interp2(plane: xr.Dataset, mass_msun: np.ndarray, log10_age: np.ndarray) -> xr.Dataset:
    return plane[list(ISOCHRONE_VARIABLES)].interp(
        log10_mass=xr.DataArray(np.log10(mass_msun), dims="p"),
        log10_age=xr.DataArray(log10_age, dims="p"),
    )


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------


def test_layout_dtypes_units_and_size(grid: xr.Dataset) -> None:
    """Dims, dtypes, units, citations, size < 100 MB; axis steps to 1e-9 (float rounding).

    ``phase`` is the post-MS tables' own axis (tested in test_forward_giants.py)."""
    assert tuple(grid.dims) == ("log10_mass", "log10_age", "mh", "phase")
    assert dict(grid.sizes) == {"log10_mass": 541, "log10_age": 178, "mh": 11, "phase": 384}
    for name in ISOCHRONE_VARIABLES:
        assert grid[name].dtype == np.float32
        assert grid[name].dims == ("log10_mass", "log10_age", "mh")
        assert grid[name].attrs["units"]
    assert grid.valid.dtype == bool
    assert grid.source.dtype == np.uint8
    assert "Bressan" in grid.attrs["sources"]
    assert "Baraffe" in grid.attrs["sources"]
    assert grid.attrs["description"]
    assert grid.nbytes < 100e6
    # axes: regular, 0.08 Msun .. >= 20 Msun, 0.5 Myr .. >= 13 Gyr
    for axis, step in (("log10_mass", 0.005), ("log10_age", 0.025), ("mh", 0.25)):
        np.testing.assert_allclose(np.diff(grid[axis].values), step, atol=1e-9)
    assert grid.log10_mass[0] <= np.log10(0.08)
    assert grid.log10_mass[-1] >= np.log10(20.0)
    assert grid.log10_age[0] <= 5.70
    assert grid.log10_age[-1] >= np.log10(13e9)


def test_valid_mask_matches_nans_and_source(grid: xr.Dataset) -> None:
    """valid <=> all four quantities finite <=> source != 0, exactly (boolean, no tolerance)."""
    finite = np.all([np.isfinite(grid[v].values) for v in ISOCHRONE_VARIABLES], axis=0)
    np.testing.assert_array_equal(finite, grid.valid.values)
    np.testing.assert_array_equal(grid.source.values == 0, ~grid.valid.values)
    # BHAC15 is solar-metallicity only
    assert not (grid.source.drop_sel(mh=0.0) == 2).any()
    assert set(np.unique(grid.source.values)) == {0, 1, 2}


# --------------------------------------------------------------------------------------
# physics checks from the issue
# --------------------------------------------------------------------------------------


def test_sun(grid: xr.Dataset) -> None:
    """1 Msun at 4.57 Gyr: Teff within 100 K of 5772 K and log L within 0.05 of 0.

    Evaluated as the forward model will, by 3-D linear interpolation of the grid. ``mh`` is
    PARSEC's initial [M/H] relative to the present solar surface (Z = 0.0152); the Sun was
    born at SUN_INITIAL_MH = +0.07 on that axis (PARSEC's solar calibration, Z = 0.01774),
    and that is where the issue's tolerances (100 K, 0.05 dex) are asserted. At mh = 0 the
    source itself puts this star at 5880 K (1 Msun, Z = 0.0152, 4.47 Gyr isochrone), 108 K
    from the Sun; there the test only checks that the grid reproduces PARSEC (20 K,
    ~0.0015 dex in log Teff, the resampling accuracy).
    """
    point = {"log10_mass": 0.0, "log10_age": np.log10(4.57e9)}
    sun = grid[list(ISOCHRONE_VARIABLES)].interp(**point, mh=SUN_INITIAL_MH)
    assert abs(10 ** float(sun.log10_teff) - 5772.0) < 100.0
    assert abs(float(sun.log10_lum)) < 0.05
    assert abs(float(sun.logg) - 4.438) < 0.05  # 0.05 dex: the same tolerance as log L
    at_zero = grid[list(ISOCHRONE_VARIABLES)].interp(**point, mh=0.0)
    assert abs(10 ** float(at_zero.log10_teff) - 5880.0) < 20.0
    assert abs(float(at_zero.log10_lum) - 0.044) < 0.01


def test_pre_main_sequence_luminosity_falls(solar: xr.Dataset) -> None:
    """Solar-metallicity PMS stars of 0.1-1 Msun fade while they contract.

    Strictly monotonic on 80 log-spaced ages (no tolerance: any rise fails) from 1 to
    20 Myr for 0.1-0.8 Msun, which stay on their convective (Hayashi) tracks all that time.
    0.9 and 1 Msun develop radiative cores and turn onto the Henyey track, where L rises:
    BHAC15 puts their luminosity minimum at 17 and 13 Myr, so for them L must fall from
    1 to 10 Myr and then rise again by > 0.05 dex before 20 Myr (BHAC15: +0.08 dex for
    1 Msun between 13 and 20 Myr).
    """
    ages = np.linspace(MYR, MYR + np.log10(20.0), 80)
    for mass in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8):
        lum = _interp2(solar, np.full(ages.size, mass), ages).log10_lum.values
        assert np.all(np.isfinite(lum)), mass
        assert np.all(np.diff(lum) < 0), (mass, ages[1:][np.diff(lum) >= 0])
    early = np.linspace(MYR, MYR + 1.0, 40)
    for mass in (0.9, 1.0):
        lum = _interp2(solar, np.full(early.size, mass), early).log10_lum.values
        assert np.all(np.diff(lum) < 0), (mass, early[1:][np.diff(lum) >= 0])
    late = np.linspace(MYR + 1.0, MYR + np.log10(20.0), 40)
    lum = _interp2(solar, np.full(late.size, 1.0), late).log10_lum.values
    assert lum[-1] - lum.min() > 0.05


def test_valid_over_young_corner(solar: xr.Dataset) -> None:
    """Every node of 0.08-1 Msun x 0.5-20 Myr at mh = 0 is valid (no tolerance).

    Nodes bracketing the corner are checked, so any point inside interpolates from valid
    nodes only.
    """
    mass = solar.log10_mass.values
    age = solar.log10_age.values
    m_lo = mass[mass <= np.log10(0.08)].max()
    a_hi = age[age >= MYR + np.log10(20.0)].min()
    corner = solar.valid.sel(log10_mass=slice(m_lo, 0.0), log10_age=slice(age[0], a_hi))
    assert corner.size > 0
    assert bool(corner.all())
    assert bool(
        (solar.source.sel(log10_mass=slice(m_lo, 0.0), log10_age=slice(age[0], a_hi)) == 2).all()
    )


@pytest.mark.parametrize("mh", [0.0, -1.0])
def test_valid_for_old_low_mass_main_sequence(grid: xr.Dataset, mh: float) -> None:
    """Old field dwarfs are covered: 0.1-0.75 Msun at 1-13 Gyr (bracketing nodes, all valid).

    The issue's range says up to 1 Msun; a star that has left the main sequence is beyond
    the grid by design (PMS + MS only), and 1 Msun does so at ~10 Gyr at mh = 0 and
    earlier at mh = -1, where even 0.78 Msun is past its turnoff at 13 Gyr. So the full
    0.1-1 Msun range is asserted over 1-8 Gyr at mh = 0, and 0.1-0.75 Msun over 1-13 Gyr
    at both metallicities.
    """
    plane = grid.valid.sel(mh=mh)
    age = plane.log10_age.values
    a_hi = age[age >= np.log10(13e9)].min()
    assert bool(plane.sel(log10_mass=slice(-1.0, np.log10(0.75)), log10_age=slice(9.0, a_hi)).all())
    if mh == 0.0:
        assert bool(plane.sel(log10_mass=slice(-1.0, 0.0), log10_age=slice(9.0, 9.9)).all())


def test_invalid_where_no_star_or_no_source(grid: xr.Dataset) -> None:
    """Nodes with no star (or no source) are invalid; boolean checks, no tolerance."""
    valid = grid.valid
    # 10 Msun lives ~25 Myr: nothing at 10 Gyr, at any metallicity
    assert not valid.sel(log10_mass=1.0, log10_age=10.0).any()
    assert not valid.sel(log10_mass=np.log10(40.0), log10_age=8.0, method="nearest").any()
    # the Sun at 13 Gyr has left the main sequence
    assert not bool(valid.sel(log10_mass=0.0, log10_age=10.125, mh=0.0))
    # PARSEC off-solar starts at 1 Myr and BHAC15 is solar only: no source at 0.5 Myr
    assert not valid.sel(log10_age=5.70).drop_sel(mh=0.0).any()
    # below PARSEC's lowest mass and outside BHAC15's ages (> 316 Myr): nothing at 0.08 Msun
    assert not valid.sel(log10_mass=-1.10, log10_age=slice(8.5, None)).any()


def test_source_policy(grid: xr.Dataset) -> None:
    """Young solar M dwarf -> BHAC15, same star at mh = -1 or old Sun or young 3 Msun -> PARSEC."""
    src = grid.source
    assert int(src.sel(log10_mass=np.log10(0.3), log10_age=6.7, mh=0.0, method="nearest")) == 2
    assert int(src.sel(log10_mass=np.log10(0.3), log10_age=6.7, mh=-1.0, method="nearest")) == 1
    assert int(src.sel(log10_mass=0.0, log10_age=9.65, mh=0.0)) == 1
    assert int(src.sel(log10_mass=np.log10(3.0), log10_age=6.5, mh=0.0, method="nearest")) == 1


def test_bhac15_to_parsec_blend_has_no_seam(solar: xr.Dataset) -> None:
    """Across 100-316 Myr, where the mh = 0 plane passes from BHAC15 to PARSEC.

    For 0.1-0.3 Msun the two models differ there by 0.03-0.06 dex in log Teff, so a hard
    switch would step by that much between adjacent age nodes; the ramp spreads it over
    20 nodes. Bound: 0.01 dex per 0.025 dex age step (measured: 0.006).
    """
    band = solar.log10_teff.sel(log10_mass=slice(-1.0, np.log10(0.3)), log10_age=slice(7.9, 8.6))
    assert bool(np.isfinite(band).all())
    assert float(np.abs(band.diff("log10_age")).max()) < 0.01


# --------------------------------------------------------------------------------------
# fidelity to the sources
# --------------------------------------------------------------------------------------


def test_reproduces_parsec_isochrones(grid: xr.Dataset) -> None:
    """Grid interpolated at PARSEC's own isochrone points (PMS to TAMS, EEP <= 454).

    At PARSEC ages and metallicities the grid has nodes, so trilinear interpolation is
    linear in log mass between 0.005 dex nodes; it must follow the source with a median
    error < 0.001 dex and a 99th percentile < 0.01 dex in every quantity (measured: 1e-4 and
    0.004). The mh = 0 plane below 316 Myr is BHAC15 and is skipped.
    """
    lm_grid = grid.log10_mass.values
    errors = []
    for feh, log_age, rows in parsec_isochrones():
        if not 5.70 <= log_age <= grid.log10_age.values[-1] or (feh == 0.0 and log_age < 8.5):
            continue
        rows = rows[rows[:, 0] <= 454]
        lm = np.log10(rows[:, 1])
        keep = (lm >= lm_grid[0]) & (lm <= lm_grid[-1])
        plane = grid.sel(log10_age=log_age, mh=feh, method="nearest")
        est = np.stack(
            [np.interp(lm[keep], lm_grid, plane[v].values) for v in ISOCHRONE_VARIABLES], -1
        )
        ok = np.all(np.isfinite(est), axis=1)
        errors.append(np.abs(est[ok] - rows[keep][ok][:, 2:]))
    err = np.concatenate(errors)
    assert err.shape[0] > 100_000
    assert np.all(np.median(err, axis=0) < 1e-3)
    assert np.all(np.percentile(err, 99, axis=0) < 1e-2)


def test_reproduces_bhac15_matrix(solar: xr.Dataset) -> None:
    """Grid interpolated at the BHAC15 matrix points it serves alone (< 100 Myr, < 1.1 Msun).

    The matrix has 0.01 dex steps in age, the grid 0.025, so bilinear interpolation of the
    grid must follow it to 0.002 dex in log Teff and 0.005 dex in log L at the 99th
    percentile (measured 0.0002 / 0.0015), and to 0.05 dex everywhere (measured 0.03, the
    deuterium-burning bend of the 0.1 Msun track before 1 Myr).
    """
    from scipy.io import loadmat

    mat = loadmat(isochrones.bhac15_path())
    log_age = mat["log_age"].ravel()
    log_mass = np.log10(mat["mass"].ravel())
    table = mat["logt_logl"]
    a, m = np.meshgrid(log_age, log_mass, indexing="ij")
    sel = (a >= 5.70) & (a <= 8.0) & (m >= -1.10) & (m <= 0.04) & np.isfinite(table[..., 0])
    est = _interp2(solar, 10 ** m[sel], a[sel])
    for name, col, p99 in (("log10_teff", 0, 0.002), ("log10_lum", 1, 0.005)):
        err = np.abs(est[name].values - table[..., col][sel])
        assert np.percentile(err, 99) < p99, name
        assert err.max() < 0.05, name


def test_kernels_never_extrapolate() -> None:
    """Outside the source range the kernels return NaN; inside, exact values (linear data)."""
    out = interp_linear(np.array([0.0, 1.0]), np.array([1.0, 3.0]), np.array([-0.1, 0.5, 1.1]), 0)
    np.testing.assert_array_equal(np.isnan(out), [True, False, True])
    assert out[1] == 2.0
    res = resample_isochrone(
        np.array([0.0, 0.1, 0.3]), np.arange(6.0).reshape(3, 2), np.array([-0.01, 0.0, 0.3, 0.31])
    )
    np.testing.assert_array_equal(np.isnan(res[:, 0]), [True, False, False, True])


# --------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------


def test_second_load_is_a_no_op(cache_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load reads the store without rebuilding and returns identical data (exact)."""
    first = load_isochrone_grid(progress=False)
    assert (cache_env / "isochrones.zarr").is_dir()

    def fail(**_: object) -> xr.Dataset:
        raise AssertionError("the grid was rebuilt although its inputs did not change")

    monkeypatch.setattr(isochrones, "build_isochrone_grid", fail)
    second = load_isochrone_grid(progress=False)
    xr.testing.assert_identical(first, second)
    assert second.attrs["content_hash"] == isochrone_grid_hash()


def test_hash_changes_with_build_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash is deterministic and changes with BUILD_VERSION."""
    before = isochrone_grid_hash()
    assert isochrone_grid_hash() == before
    monkeypatch.setattr(isochrones, "BUILD_VERSION", BUILD_VERSION + 1)
    assert isochrone_grid_hash() != before

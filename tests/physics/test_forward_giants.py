"""Post-main-sequence stars (subgiants, red giants, red clump) through the isochrone lookup.

The post-MS tables (``postms_*`` in the isochrone grid, dims (log10_age, mh, phase)) are
read by ``_IsochroneInterpolator`` wherever the main-sequence grid is not valid. PARSEC's
own isochrones are read here with h5py, independently of the module's reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from tests.physics.parsec_source import parsec_isochrones
from ysoscale.physics.forward import ForwardModel, _IsochroneInterpolator
from ysoscale.physics.isochrones import (
    ISOCHRONE_VARIABLES,
    POSTMS_PREFIX,
    SUN_INITIAL_MH,
    postms_axis,
)
from ysoscale.simulate.priors import kroupa_log10_ppf


@pytest.fixture(scope="module")
def lookup(isochrone_grid: xr.Dataset) -> _IsochroneInterpolator:
    return _IsochroneInterpolator(isochrone_grid, torch.float64)


@pytest.fixture(scope="module")
def ms_only(isochrone_grid: xr.Dataset) -> _IsochroneInterpolator:
    post = [v for v in isochrone_grid.data_vars if str(v).startswith(POSTMS_PREFIX)]
    return _IsochroneInterpolator(isochrone_grid.drop_vars(post), torch.float64)


def _run(lookup: _IsochroneInterpolator, log_m, log_t, mh) -> tuple[dict, np.ndarray]:
    tensors = torch.broadcast_tensors(
        *(torch.atleast_1d(torch.as_tensor(v, dtype=torch.float64)) for v in (log_m, log_t, mh))
    )
    out, ok = lookup(*tensors)
    return {k: v.numpy() for k, v in out.items()}, ok.numpy()


# --------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------


def test_postms_tables_layout_and_monotonic_mass(isochrone_grid: xr.Dataset) -> None:
    """Dims (log10_age, mh, phase); 384 phase nodes in [0, 1]; log mass never decreases
    along phase on valid nodes (exact comparison, float32 as stored); valid <=> finite."""
    phase, eep, _ = postms_axis()
    grid = isochrone_grid
    assert grid.sizes["phase"] == phase.size == 384
    assert grid.phase.values[0] == 0.0 and grid.phase.values[-1] == 1.0
    assert np.all(np.diff(grid.phase.values) > 0)
    names = ["log10_mass", *ISOCHRONE_VARIABLES]
    for name in names:
        assert grid[POSTMS_PREFIX + name].dims == ("log10_age", "mh", "phase")
    mass = grid[POSTMS_PREFIX + "log10_mass"].values
    valid = grid[POSTMS_PREFIX + "valid"].values
    assert np.all(
        np.diff(np.where(valid, mass, np.nan), axis=-1)[valid[..., 1:] & valid[..., :-1]] >= 0
    )
    finite = np.all([np.isfinite(grid[POSTMS_PREFIX + n].values) for n in names], axis=0)
    np.testing.assert_array_equal(finite, valid)
    # the RGB tip (EEP 605) exists at every metallicity from 1 to 13 Gyr
    tip = int(np.flatnonzero(eep == 605.0)[0])
    assert bool(
        valid[(grid.log10_age.values >= 9.0) & (grid.log10_age.values <= 10.1), :, tip].all()
    )


# --------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------


def test_rgb_star_of_1p2_msun(lookup: _IsochroneInterpolator) -> None:
    """1.2 Msun, [M/H] = 0: a main-sequence star at 5 Gyr that ascends the RGB a little
    later. On the RGB (before the tip) Teff is 4000-5000 K for 1.5 < log g < 3.5 and above
    3700 K down to log g = 1 (PARSEC: 3780 K there)."""
    log_m = np.log10(1.2)
    at5, ok5 = _run(lookup, log_m, np.log10(5e9), 0.0)
    assert ok5[0] and at5["logg"][0] > 3.8  # still on / near the main sequence at 5 Gyr
    ages = np.linspace(9.70, 9.80, 4001)
    out, ok = _run(lookup, np.full(ages.size, log_m), ages, 0.0)
    logg, teff = out["logg"], 10 ** out["log10_teff"]
    giant = ok & (logg < 3.5)
    assert giant.sum() > 20
    tip = int(np.argmin(np.where(ok, logg, np.inf)))
    rgb = ok & (logg > 1.0) & (logg < 3.5) & (np.arange(ages.size) < tip)
    assert rgb.sum() > 10
    # PARSEC itself: 4970 K at log g 3.5, 4000 K at log g 1.4, 3780 K at log g 1.0
    upper = rgb & (logg > 1.5)
    assert np.all((teff[upper] > 4000) & (teff[upper] < 5000)), teff[upper]
    assert np.all((teff[rgb] > 3700) & (teff[rgb] < 5000)), teff[rgb]
    # (not monotonic in age at fixed mass: the RGB bump near log L = 1.6 is resolved)
    # older than ~5.8 Gyr no 1.2 Msun star is alive (PARSEC ends at the end of core He burning)
    _, dead = _run(lookup, log_m, np.log10(7e9), 0.0)
    assert not dead[0]


@pytest.mark.parametrize("log_age", [9.30, 9.50, 9.70, 9.90, 10.00])
def test_red_clump(
    isochrone_grid: xr.Dataset, lookup: _IsochroneInterpolator, log_age: float
) -> None:
    """Core-He-burning stars (EEP 631-707) at 2-10 Gyr, [M/H] = 0: sampled uniformly in
    mass (number of stars per mass interval ~ IMF x lifetime, the IMF flat over 0.01 dex),
    their median log L is 1.6-1.8 and median Teff 4500-5000 K, and both match the same
    median of PARSEC's own points (interpolated linearly in EEP) to 0.01 dex (the lookup
    is exact at node ages up to float32 rounding; 0.01 covers the median of a sample)."""
    _, eep, _ = postms_axis()
    plane = isochrone_grid.sel(log10_age=log_age, mh=0.0)
    mass = plane[POSTMS_PREFIX + "log10_mass"].values
    lo, hi = mass[eep == 631.0][0], mass[eep == 707.0][0]
    assert np.isfinite(lo) and np.isfinite(hi) and hi > lo
    masses = np.linspace(lo, hi, 2001)[1:-1]
    out, ok = _run(lookup, masses, log_age, 0.0)
    assert ok.all()
    med_l = float(np.median(out["log10_lum"]))
    med_t = float(np.median(10 ** out["log10_teff"]))
    assert 1.6 < med_l < 1.8, med_l
    assert 4500 < med_t < 5000, med_t
    # the source
    rows = next(r for f, a, r in parsec_isochrones() if f == 0.0 and abs(a - log_age) < 1e-6)
    rows = rows[(rows[:, 0] >= 631) & (rows[:, 0] <= 707)]
    lm = np.log10(rows[:, 1])
    keep = lm >= np.maximum.accumulate(lm)
    src_l = np.interp(masses, lm[keep], rows[keep, 4])
    src_t = np.interp(masses, lm[keep], rows[keep, 2])
    assert abs(med_l - np.median(src_l)) < 0.01
    assert abs(np.log10(med_t) - np.log10(np.median(10**src_t))) < 0.01


def test_reproduces_parsec_post_ms_points(lookup: _IsochroneInterpolator) -> None:
    """At PARSEC ages (grid nodes) the lookup at each post-MS point's initial mass returns
    that point: median error < 0.01 dex in log Teff and log L (measured ~1e-7: float32
    rounding). Points sharing their mass with a neighbour (the artificial He-flash bridge
    EEP 606-630 of low-mass isochrones, float32 ties on the upper RGB) cannot all be
    reproduced: a mass maps to one point; they are counted in the 99th percentile only."""
    errors = []
    for feh, log_age, rows in parsec_isochrones():
        if not 6.5 <= log_age <= 10.1:
            continue
        rows = rows[rows[:, 0] >= 455]
        lm = np.log10(rows[:, 1])
        out, ok = _run(lookup, lm, log_age, feh)
        ok &= np.isfinite(lm)
        est = np.stack([out["log10_teff"], out["log10_lum"]], -1)[ok]
        errors.append(np.abs(est - rows[ok][:, [2, 4]]))
    err = np.concatenate(errors)
    assert err.shape[0] > 100_000
    median = np.median(err, axis=0)
    print(f"post-MS reproduction: median {median}, p90 {np.percentile(err, 90, axis=0)}")
    assert np.all(median < 0.01)


def test_gradcheck_physical_giants(photometry_grid, isochrone_grid) -> None:
    """float64 gradcheck of ForwardModel.physical for a lower-RGB star and a clump star
    (1.2459 Msun, log L 1.73),
    w.r.t. every input. eps 1e-8: the lookup is piecewise linear in log mass with phase
    segments as narrow as 1e-5 dex, and the points are chosen well inside their segments."""
    model = ForwardModel(
        photometry_grid, isochrone_grid, bands=["gaia_bp", "tmass_ks"], dtype=torch.float64
    )
    base = [[np.log10(1.238), np.log10(1.2459)], [9.7013, 9.7037], [0.013, -0.021]]
    base += [[140.0, 55.0], [0.7, 0.3], [3.2, 3.9]]
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in base]
    result = model.physical(*inputs)
    assert bool(result.valid.all())
    assert bool((result.logg < 3.5).all())

    def magnitudes(*args: torch.Tensor) -> torch.Tensor:
        r = model.physical(*args)
        return torch.cat([r.mag, r.teff[:, None], r.log10_lum[:, None]], dim=1)

    assert torch.autograd.gradcheck(magnitudes, inputs, eps=1e-8, atol=1e-4, rtol=1e-3)


def test_main_sequence_unchanged(
    lookup: _IsochroneInterpolator, ms_only: _IsochroneInterpolator, forward_model
) -> None:
    """Where the main-sequence grid is valid the result is bit-identical to the
    MS-only interpolator; the Sun still comes out at 5802 K, log L 0.011 (module docs)."""
    rng = np.random.default_rng(5)
    n = 20_000
    args = (rng.uniform(-1.0, 0.6, n), rng.uniform(6.0, 10.1, n), rng.uniform(-2, 0.5, n))
    new, ok_new = _run(lookup, *args)
    old, ok_old = _run(ms_only, *args)
    assert ok_old.sum() > 5000
    assert np.all(ok_new[ok_old])
    for name in ISOCHRONE_VARIABLES:
        np.testing.assert_array_equal(new[name][ok_old], old[name][ok_old])
    sun = forward_model.physical(0.0, np.log10(4.57e9), SUN_INITIAL_MH, 10.0, 0.0, 3.1)
    assert bool(sun.valid[0])
    assert abs(sun.teff[0] - 5802) < 2 and abs(sun.log10_lum[0] - 0.011) < 0.002


def test_too_massive_for_its_age_is_invalid(lookup: _IsochroneInterpolator) -> None:
    """Stars more massive than any alive at their age are invalid (boolean, no tolerance);
    the most massive live star at each age is a late core-He-burning giant."""
    _, ok = _run(lookup, np.log10([3.0, 1.3, 1.1, 2.5]), np.log10([5e9, 10e9, 13e9, 3e9]), 0.0)
    assert not ok.any()
    ages = np.linspace(9.0, 10.1, 12)
    masses = np.linspace(-0.2, 0.5, 70_001)
    for log_age in ages:
        out, ok = _run(lookup, masses, log_age, -0.5)
        top = masses[ok].max()
        assert not ok[masses > top].any()
        # no hole between the main sequence and the last live star
        assert ok[(masses >= masses[ok].min()) & (masses <= top)].all(), log_age
        assert out["logg"][ok][-1] < 3.0


def test_no_holes_at_the_turnoff(lookup: _IsochroneInterpolator) -> None:
    """Random (age, mh) in 355 Myr - 12.6 Gyr: every mass from 0.15 Msun to the most
    massive live star is valid (MS grid or post-MS tables), i.e. the overlap part of the
    post-MS tables (down to 0.15 dex below the TAMS) covers the main-sequence grid's last
    cell. (Younger than 316 Myr the mh = 0 plane of the MS grid has a pre-existing gap at
    1.38-1.41 Msun, above BHAC15's top inside the BHAC15-PARSEC blend.)"""
    rng = np.random.default_rng(11)
    masses = np.linspace(np.log10(0.15), 1.3, 20_001)
    bad = 0
    for _ in range(40):
        log_age, mh = rng.uniform(8.55, 10.1), rng.uniform(-2.0, 0.5)
        _, ok = _run(lookup, masses, log_age, mh)
        top = masses[ok].max()
        bad += int((~ok[masses <= top]).sum())
    assert bad == 0


def test_kroupa_field_giant_fraction(lookup: _IsochroneInterpolator) -> None:
    """1e5 stars: Kroupa IMF (0.08-100 Msun) x age uniform in 1-10 Gyr, [M/H] = 0. Prints
    the fraction of giants (log g < 3.5) among the stars alive (valid); it must be
    between 0.1 and 5 per cent (measured 0.22; the solar neighbourhood has a few giants
    per thousand stars). Stars below PARSEC's lowest mass at those ages (< 0.09-0.1 Msun)
    are not valid either and are excluded from both counts; dead stars are invalid by
    design."""
    rng = np.random.default_rng(20261122)
    n = 100_000
    mass = 10 ** kroupa_log10_ppf(rng.random(n), 0.08, 100.0)
    age = rng.uniform(1e9, 10e9, n)
    out, ok = _run(lookup, np.log10(mass), np.log10(age), 0.0)
    alive = ok
    giants = ok & (out["logg"] < 3.5)
    frac = giants.sum() / alive.sum()
    clump = giants & (out["log10_lum"] > 1.6) & (out["log10_lum"] < 1.9)
    print(
        f"\nKroupa x U(1-10 Gyr), [M/H]=0, n={n}: alive {alive.sum()}, giants (log g < 3.5) "
        f"{giants.sum()} = {100 * frac:.2f}% of alive ({100 * giants.sum() / n:.2f}% of all); "
        f"clump-like (1.6 < log L < 1.9) {clump.sum()}"
    )
    # dead: more massive than the turnoff; invalid below PARSEC's lowest mass
    assert not ok[mass > 2.5].any()
    assert 0.001 < frac < 0.05

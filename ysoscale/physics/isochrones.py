"""Stellar isochrones on a regular (log10_mass, log10_age, mh) grid.

The forward model needs Teff, log g, L and R for any initial mass, age and metallicity,
evaluated many times per star, so the tabulated isochrones of two model sets are
resampled once onto a regular grid that trilinear interpolation can read:

- ``log10_mass``: log10 initial mass [Msun], -1.10 ... 1.60 in steps of 0.005 dex
  (0.079-40 Msun, 541 nodes);
- ``log10_age``: log10 age [yr], 5.70 ... 10.125 in steps of 0.025 dex
  (0.5 Myr-13.3 Gyr, 178 nodes; every other node is a PARSEC isochrone age);
- ``mh``: [M/H] [dex], -2.0 ... +0.5 in steps of 0.25 (the 11 PARSEC metallicities).

541 x 178 x 11 nodes x 4 float32 quantities, plus ``valid`` and ``source``, is 19 MB.
Linear interpolation between mass nodes reproduces the PARSEC isochrone points it was
built from (at their ages and metallicities, where the grid is valid) to a median below
1e-4 dex and a 99th percentile of 0.002 dex in log Teff and 0.004 dex in log g and log L;
the worst points (0.1 dex in log L) are young stars above 10 Msun where PARSEC jumps
across the Hertzsprung gap. Trilinear interpolation reproduces the BHAC15 matrix
(young corner) to 0.0015 dex (99th percentile) in log L, at most 0.03 dex where
deuterium burning bends the 0.1 Msun track before 1 Myr. A 0.01 dex mass step would
halve the size and about triple these errors.

``mh`` is PARSEC's *initial* [M/H] = log(Z/X) - log(Z/X)_sun with Z_sun = 0.0152, the
present-day solar surface (Caffau et al. 2011). The Sun itself was born metal-richer:
PARSEC's solar calibration starts from Z = 0.01774, Y = 0.28, i.e. ``mh`` =
:data:`SUN_INITIAL_MH` = +0.07 on this axis, where the grid gives 1 Msun at 4.57 Gyr
5802 K and log L = 0.011; at ``mh`` = 0 the same star is 5883 K and log L = 0.044
(atomic diffusion lowers the surface Z of old solar-type stars by about that much).
BHAC15 (solar metallicity, Asplund et al. 2009 mixture, no diffusion) sits on
``mh`` = 0.

Linear interpolation with scipy or ``xarray.Dataset.interp`` multiplies a zero weight
by a NaN neighbour: a point exactly on a node next to an invalid node comes back NaN
(e.g. 0.1 Msun at mh = 0, whose mh = 0.25 neighbour lies below PARSEC's lowest mass
there). Select the plane (``.sel(mh=0.0)``) or mask the neighbours when that matters.

Sources
-------
PARSEC v1.2S (Bressan et al. 2012, MNRAS 427, 127; low-mass calibration of Chen et al.
2014), pre-main sequence included, as shipped in the ``lachesis-grids`` package
(``parsec_v1.25.h5``): isochrones on 106 ages (log t = 5.0 ... 10.25 in 0.05 dex steps at
solar metallicity, from 6.0 otherwise) x 11 metallicities, sampled at equivalent
evolutionary points (EEPs). BHAC15 (Baraffe et al. 2015, A&A 577, A42) as shipped in
``ysoisochrone`` (``Baraffe_AgeMassGrid_YSO_builtin_matrix.mat``): log Teff and log L of
solar-metallicity models on a 0.01 dex grid of log mass (0.01-1.38 Msun) and log age
(0.5-500 Myr). That matrix has no radius or gravity; they follow from Stefan-Boltzmann
with the same solar constants PARSEC uses (Teff_sun = 5772 K, which reproduces PARSEC's
log R exactly) and from the mass (BHAC15 models lose no mass). ysoisochrone's copy is
used rather than lachesis' ``bhac15.h5`` (the original tables, L to 0.01 dex) because it
is complete where BHAC15 serves here and already finely sampled.

Interpolation
-------------
Each PARSEC isochrone is cut at the terminal-age main sequence (EEP 454, the primary EEP
after the main-sequence hook; initial mass rises strictly along every isochrone up to
there) and resampled in log10 mass with a monotone cubic (PCHIP) through its EEPs, then
linearly in log10 age at fixed mass. Sub-giants and giants are not on the mass axis:
beyond the TAMS an isochrone spans a few thousandths of a dex in mass, which a regular
mass axis cannot resolve; they are in the post-MS tables below. BHAC15 is interpolated
bilinearly in (log10 age, log10 mass). Nothing is extrapolated: a node outside a
source's mass or age range (below PARSEC's ~0.09 Msun, past the TAMS, before 1 Myr at
[M/H] != 0, ...) is NaN with ``valid`` False.

Post-main-sequence stars
------------------------
The ``postms_*`` variables (dims ``(log10_age, mh, phase)``, same age and mh axes;
``log10_mass`` initial mass, the four ``ISOCHRONE_VARIABLES`` and ``postms_valid``) hold
each PARSEC isochrone along a normalised coordinate ``phase`` in [0, 1] (384 nodes), so
that interpolating at fixed phase between ages and metallicities joins like with like.
lachesis' EEPs follow the MIST numbering past the TAMS (454 TAMS, 502-605 RGB to its tip,
606-630 a bridge that lachesis fills at constant mass across the He flash of low-mass
stars, 631 zero-age core He burning, 707 end of PARSEC label 4, i.e. of core He burning
for low masses; 708-1200 labels 5-6, the blue loop and the rest of core He burning of
intermediate and massive stars, in isochrones younger than ~1.6 Gyr). The product has no
early-AGB, TP-AGB, post-AGB or WD points. Phase is piecewise linear in EEP:
454 -> 0.1, 605 -> 0.5, 631 -> 0.55, 707 -> 0.8, 1200 -> 1.0, with a node at every EEP
to 707 and 83 even nodes from 707 to 1200. Below EEP 454 lachesis' EEPs are not
evolutionary (they bunch by mass), so phase 0-0.1 is instead a main-sequence overlap at
fixed offsets ``dlogm = 0.15 (1 - s)^2`` dex below the TAMS mass (48 nodes, PCHIP in mass
as above): at ages and metallicities between nodes the trilinear main-sequence grid stops
up to ~0.05 dex below the interpolated TAMS, and the overlap covers that last cell.
Along the TAMS-onwards part points whose mass falls below an earlier point's are dropped
(4034 points of 10 isochrones younger than 15 Myr, massive stars), so log mass never
decreases along phase; runs of equal (float32) mass remain, such as the flash bridge:
a mass there maps to the end of the run (the zero-age clump). Ages are interpolated
linearly at fixed phase (every other age node is a PARSEC isochrone); nodes the
isochrone does not reach are NaN, and the valid nodes of each curve are contiguous.

Which source serves which corner
--------------------------------
BHAC15 exists only at [M/H] = 0, so every node with mh != 0 is PARSEC. On the mh = 0
plane the weight of BHAC15 is ``w = w_age * w_mass``, with ``w_age`` falling linearly
from 1 at log t = 8.0 (100 Myr) to 0 at 8.5 (316 Myr) and ``w_mass`` from 1 at
log M = 0.04 (1.1 Msun) to 0 at 0.15 (1.41 Msun, just above BHAC15's top, 1.38 Msun).
So BHAC15 alone serves
young (< 100 Myr) stars below 1.1 Msun, PARSEC alone serves everything older than
316 Myr or above 1.41 Msun, and in between the two are averaged with weight ``w``; where
0 < w < 1 a node is valid only if both sources cover it, so no seam appears on the plane.
``source`` is 2 (BHAC15) where w >= 0.5, 1 (PARSEC) elsewhere, 0 where invalid.

Why BHAC15 serves the young corner, not only the masses PARSEC lacks: the PARSEC
pre-main-sequence isochrones in this product have few EEPs between ~0.75 and ~3 Msun
below ~30 Myr (at 1 Myr and solar metallicity the points jump from 0.74 to 1.49 to
3.65 Msun), so at fixed mass the resampled L(t) of a solar-mass star is not even
monotonic during Hayashi contraction (log L 0.20 at 1.6 Myr, 0.26 at 1.8 Myr) and differs
from BHAC15 by up to 0.2 dex. BHAC15 is smooth there. The price is on the M dwarfs:
PARSEC v1.2S low-mass stars are cooler than BHAC15 by 0.04-0.08 dex in log Teff (and
0.05-0.14 dex fainter) between 3 and 300 Myr, so for M < 0.5 Msun at those ages the
mh = 0 plane differs from its mh = +-0.25 neighbours by more than metallicity explains;
restricting BHAC15 to below 100-316 Myr keeps old field M dwarfs (PARSEC at every mh)
free of that step. The blends put what remains of the model difference into a smooth
ramp rather than a jump.

Examples
--------
>>> grid = build_isochrone_grid(progress=False)  # doctest: +SKIP
>>> sun = grid[list(ISOCHRONE_VARIABLES)].interp(
...     log10_mass=0.0, log10_age=np.log10(4.57e9), mh=SUN_INITIAL_MH)  # doctest: +SKIP
>>> round(10 ** float(sun.log10_teff)), round(float(sun.log10_lum), 3)  # doctest: +SKIP
(5802, 0.011)
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import xarray as xr

from ysoscale.cache import cache_dir, cached_zarr, content_hash, file_sha256

ISOCHRONE_VARIABLES = ("log10_teff", "logg", "log10_lum", "log10_radius")
BUILD_VERSION = 2

LOG10_MASS = np.round(np.linspace(-1.10, 1.60, 541), 6)
LOG10_AGE = np.round(np.linspace(5.70, 10.125, 178), 6)
MH = np.round(np.linspace(-2.0, 0.5, 11), 6)

SOURCE_NONE, SOURCE_PARSEC, SOURCE_BHAC15 = 0, 1, 2

# PARSEC's solar calibration (Bressan et al. 2012): Z = 0.01774 with Y = 0.2485 + 1.78 Z,
# against Z_sun = 0.0152 for [M/H] = 0: log10(0.01774/0.70216) - log10(0.0152/0.70924)
SUN_INITIAL_MH = 0.0715

PARSEC_FILE = "parsec_v1.25.h5"
BHAC15_FILE = "Baraffe_AgeMassGrid_YSO_builtin_matrix.mat"
PARSEC_LAST_EEP = 454  # terminal-age main sequence in lachesis' EEP numbering
BHAC15_AGE_RAMP = (8.0, 8.5)  # log10 age: BHAC15 weight 1 below, 0 above
BHAC15_MASS_RAMP = (0.04, 0.15)  # log10 mass: same
LOG10_TEFF_SUN = math.log10(5772.0)  # IAU 2015 B3 nominal; PARSEC's log R uses it
LOGG_SUN = math.log10(6.67430e-8 * 1.98847e33 / 6.957e10**2)  # cgs, 4.438

# post-main-sequence tables (module docstring, "Post-main-sequence stars")
POSTMS_PREFIX = "postms_"
POSTMS_VARIABLES = ("log10_mass", *ISOCHRONE_VARIABLES)
POSTMS_OVERLAP_DEX = 0.15  # the tables start this far (log10 mass) below the TAMS
POSTMS_OVERLAP_NODES = 48
# lachesis' EEPs (MIST numbering): TAMS, RGB tip, zero-age core He burning, end of PARSEC
# label 4 (end of core He burning for low masses), last EEP in the product
POSTMS_EEP_KNOTS = (454.0, 605.0, 631.0, 707.0, 1200.0)
POSTMS_PHASE_KNOTS = (0.1, 0.5, 0.55, 0.8, 1.0)
POSTMS_LATE_NODES = 83  # EEP 707 ... 1200 in ~6-EEP steps; every EEP up to 707

_UNITS = {
    "log10_teff": ("dex(K)", "log10 effective temperature"),
    "logg": ("dex(cm s-2)", "log10 surface gravity"),
    "log10_lum": ("dex(Lsun)", "log10 bolometric luminosity"),
    "log10_radius": ("dex(Rsun)", "log10 photospheric radius"),
}
_PARSEC_COLUMNS = ("log_Teff", "log_g", "log_L", "log_R")  # in ISOCHRONE_VARIABLES order
_SOURCES = (
    "PARSEC v1.2S isochrones incl. pre-main sequence (Bressan et al. 2012, MNRAS 427, 127; "
    "Chen et al. 2014, MNRAS 444, 2525) from lachesis-grids parsec_v1.25.h5; "
    "BHAC15 (Baraffe et al. 2015, A&A 577, A42) from ysoisochrone "
    "Baraffe_AgeMassGrid_YSO_builtin_matrix.mat"
)


# --------------------------------------------------------------------------------------
# source files
# --------------------------------------------------------------------------------------


def parsec_path() -> Path:
    """Path of the PARSEC isochrone file shipped in ``lachesis-grids``."""
    from lachesis_grids import grid_path

    return Path(grid_path(PARSEC_FILE))


def bhac15_path() -> Path:
    """Path of the BHAC15 age-mass matrix shipped in ``ysoisochrone``.

    Located with :func:`importlib.util.find_spec`, which does not run the package (its
    ``__init__`` imports plotting code we do not need).
    """
    spec = importlib.util.find_spec("ysoisochrone")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ysoisochrone is not installed; it ships the BHAC15 tracks")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / BHAC15_FILE
    if not path.is_file():
        raise FileNotFoundError(f"BHAC15 matrix not found: {path}")
    return path


def _read_parsec(path: Path) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Read lachesis' sparse PARSEC store.

    Returns the metallicity and log-age nodes and, for each (feh, age) pair in row-major
    order, an array ``(n_eep, 6)`` of eep, initial mass and the four
    ``_PARSEC_COLUMNS``, or None where the store has no isochrone.
    """
    import h5py

    with h5py.File(path, "r") as handle:
        columns = [str(c) for c in handle.attrs["columns"]]
        feh = np.asarray(handle["feh_values"][:], dtype=float)
        ages = np.asarray(handle["age_values"][:], dtype=float)
        lengths = np.asarray(handle["lengths"][:], dtype=np.int64)
        values = np.asarray(handle["values"][:])
    # rows are the isochrones concatenated in (feh, age) order; "offsets" is the first EEP
    if lengths.size != feh.size * ages.size or lengths.sum() != values.shape[0]:
        raise ValueError(f"unexpected layout of {path}")
    take = [columns.index(c) for c in ("eep", "initial_mass", *_PARSEC_COLUMNS)]
    age_col = columns.index("age")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    isochrones: list[np.ndarray | None] = []
    for k, n in enumerate(lengths):
        if n == 0:
            isochrones.append(None)
            continue
        rows = values[starts[k] : starts[k + 1]]
        if not np.allclose(rows[:, age_col], ages[k % ages.size], atol=1e-4):
            raise ValueError(f"{path}: isochrone {k} is not at log age {ages[k % ages.size]}")
        isochrones.append(rows[:, take].astype(float))
    return feh, ages, isochrones


def _read_bhac15(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ysoisochrone's BHAC15 matrix: log10 age, log10 mass, (age, mass, [logT, logL])."""
    from scipy.io import loadmat

    mat = loadmat(path)
    log10_age = np.asarray(mat["log_age"], dtype=float).ravel()
    log10_mass = np.log10(np.asarray(mat["mass"], dtype=float).ravel())
    table = np.asarray(mat["logt_logl"], dtype=float)
    if table.shape != (log10_age.size, log10_mass.size, 2):
        raise ValueError(f"unexpected shape {table.shape} of logt_logl in {path}")
    return log10_age, log10_mass, table


# --------------------------------------------------------------------------------------
# numeric kernels (arrays in, arrays out)
# --------------------------------------------------------------------------------------


def interp_linear(x: np.ndarray, values: np.ndarray, x_new: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` without extrapolation.

    A result is NaN outside ``[x[0], x[-1]]`` and wherever a bracketing value it needs
    is NaN; a point on a node (to 1e-9) takes that node's value alone.

    Examples
    --------
    >>> interp_linear(np.array([0.0, 1.0, 2.0]), np.array([0.0, np.nan, 4.0]),
    ...               np.array([0.0, 0.5, 2.0, 3.0]), axis=0)
    array([ 0., nan,  4., nan])
    """
    x = np.asarray(x, dtype=float)
    x_new = np.asarray(x_new, dtype=float)
    v = np.moveaxis(np.asarray(values, dtype=float), axis, 0)
    i = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, x.size - 2)
    w = (x_new - x[i]) / (x[i + 1] - x[i])
    w = np.where(np.abs(w) < 1e-9, 0.0, np.where(np.abs(w - 1) < 1e-9, 1.0, w))
    shape = (-1,) + (1,) * (v.ndim - 1)
    w = w.reshape(shape)
    lo, hi = v[i], v[i + 1]
    out = np.where(w == 0, lo, np.where(w == 1, hi, (1 - w) * lo + w * hi))
    out = np.where(((w < 0) | (w > 1)), np.nan, out)
    return np.moveaxis(out, 0, axis)


def resample_isochrone(
    log10_mass: np.ndarray, quantities: np.ndarray, log10_mass_new: np.ndarray
) -> np.ndarray:
    """Resample one isochrone onto ``log10_mass_new`` with a monotone cubic (PCHIP).

    ``log10_mass`` must rise strictly; ``quantities`` is ``(n_points, n_quantities)``.
    Masses outside the isochrone's range give NaN.

    Examples
    --------
    >>> out = resample_isochrone(np.array([0.0, 1.0, 2.0]), np.array([[0.0], [1.0], [2.0]]),
    ...                          np.array([-0.5, 0.5, 1.5]))
    >>> out.ravel()
    array([nan, 0.5, 1.5])
    """
    from scipy.interpolate import PchipInterpolator

    out = np.full((log10_mass_new.size, quantities.shape[1]), np.nan)
    inside = (log10_mass_new >= log10_mass[0] - 1e-9) & (log10_mass_new <= log10_mass[-1] + 1e-9)
    if log10_mass.size >= 2 and inside.any():
        x = np.clip(log10_mass_new[inside], log10_mass[0], log10_mass[-1])
        out[inside] = PchipInterpolator(log10_mass, quantities, axis=0)(x)
    return out


def bhac15_weight(log10_mass: np.ndarray, log10_age: np.ndarray) -> np.ndarray:
    """Weight of BHAC15 on the mh = 0 plane, ``(mass, age)``; PARSEC gets ``1 - w``.

    Examples
    --------
    >>> bhac15_weight(np.array([-1.0, 0.095, 0.5]), np.array([7.0, 8.25])).round(2)
    array([[1.  , 0.5 ],
           [0.5 , 0.25],
           [0.  , 0.  ]])
    """

    def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip((hi - np.asarray(x, dtype=float)) / (hi - lo), 0.0, 1.0)

    return ramp(log10_mass, *BHAC15_MASS_RAMP)[:, None] * ramp(log10_age, *BHAC15_AGE_RAMP)


def combine_sources(parsec: np.ndarray, bhac15: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend two ``(..., n_quantities)`` node arrays with the BHAC15 ``weight`` (``(...)``).

    Weight 1 (0) takes BHAC15 (PARSEC) alone; in between both must be finite, else NaN.

    Examples
    --------
    >>> combine_sources(np.array([[1.0], [1.0], [np.nan]]), np.array([[3.0], [np.nan], [3.0]]),
    ...                 np.array([0.5, 0.0, 1.0])).ravel()
    array([2., 1., 3.])
    """
    w = weight[..., None]
    mixed = (1 - w) * parsec + w * bhac15
    return np.where(w == 0, parsec, np.where(w == 1, bhac15, mixed))


def bhac15_quantities(log10_mass: np.ndarray, logt_logl: np.ndarray) -> np.ndarray:
    """Four ``ISOCHRONE_VARIABLES`` from BHAC15 log Teff, log L at ``log10_mass`` (no mass loss).

    ``logt_logl`` is ``(..., n_mass, 2)``; returns ``(..., n_mass, 4)``.
    """
    log_t, log_l = logt_logl[..., 0], logt_logl[..., 1]
    log_r = 0.5 * log_l - 2.0 * (log_t - LOG10_TEFF_SUN)
    logg = LOGG_SUN + log10_mass - 2.0 * log_r
    return np.stack([log_t, logg, log_l, log_r], axis=-1)


# --------------------------------------------------------------------------------------
# build, hash, load
# --------------------------------------------------------------------------------------


def _parsec_nodes(progress: bool) -> np.ndarray:
    """PARSEC on the regular grid, ``(mass, age, mh, 4)``, NaN where not covered."""
    from tqdm.auto import tqdm

    feh, ages, isochrones = _read_parsec(parsec_path())
    if not np.allclose(feh, MH):
        raise ValueError(f"PARSEC metallicities {feh} differ from the grid's {MH}")
    out = np.full((LOG10_MASS.size, LOG10_AGE.size, MH.size, 4), np.nan)
    for j in tqdm(range(feh.size), desc="isochrones (PARSEC [M/H])", disable=not progress):
        per_age = np.full((ages.size, LOG10_MASS.size, 4), np.nan)
        for k in range(ages.size):
            iso = isochrones[j * ages.size + k]
            if iso is None:
                continue
            iso = iso[iso[:, 0] <= PARSEC_LAST_EEP]
            log_m = np.log10(iso[:, 1])
            if iso.shape[0] < 2 or np.any(np.diff(log_m) <= 0):
                raise ValueError(f"PARSEC isochrone feh={feh[j]}, log t={ages[k]} not monotonic")
            per_age[k] = resample_isochrone(log_m, iso[:, 2:], LOG10_MASS)
        out[:, :, j] = np.moveaxis(interp_linear(ages, per_age, LOG10_AGE, axis=0), 0, 1)
    return out


def _bhac15_nodes() -> np.ndarray:
    """BHAC15 on the regular (mass, age) grid at mh = 0, ``(mass, age, 4)``."""
    log_age, log_mass, table = _read_bhac15(bhac15_path())
    on_mass = interp_linear(log_mass, table, LOG10_MASS, axis=1)  # (age, mass, 2)
    on_grid = interp_linear(log_age, on_mass, LOG10_AGE, axis=0)  # (age, mass, 2)
    return np.moveaxis(bhac15_quantities(LOG10_MASS[None, :], on_grid), 0, 1)


def postms_axis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes of the post-MS ``phase`` axis: (phase, EEP, log10 mass below the TAMS).

    Phase 0 ... 0.1 is the main-sequence overlap, at ``dlogm`` =
    POSTMS_OVERLAP_DEX (1 - s)^2 below the TAMS mass (s = 0 ... 47/48, denser towards the
    TAMS; EEP is NaN there); from 0.1 (EEP 454) on the nodes are EEPs, every EEP up to 707,
    then POSTMS_LATE_NODES evenly to 1200, and phase is piecewise linear in EEP through
    POSTMS_EEP_KNOTS -> POSTMS_PHASE_KNOTS (``dlogm`` is NaN there).

    Examples
    --------
    >>> phase, eep, dlogm = postms_axis()
    >>> phase.size, float(phase[48]), float(eep[48]), float(eep[-1])
    (384, 0.1, 454.0, 1200.0)
    """
    s = np.arange(POSTMS_OVERLAP_NODES) / POSTMS_OVERLAP_NODES
    eep = np.concatenate(
        [np.arange(POSTMS_EEP_KNOTS[0], 707.0), np.linspace(707.0, 1200.0, POSTMS_LATE_NODES)]
    )
    phase = np.concatenate(
        [POSTMS_PHASE_KNOTS[0] * s, np.interp(eep, POSTMS_EEP_KNOTS, POSTMS_PHASE_KNOTS)]
    )
    eep_all = np.concatenate([np.full(s.size, np.nan), eep])
    dlogm = np.concatenate([POSTMS_OVERLAP_DEX * (1 - s) ** 2, np.full(eep.size, np.nan)])
    return np.round(phase, 9), eep_all, dlogm


def postms_isochrone(iso: np.ndarray) -> tuple[np.ndarray, int]:
    """One PARSEC isochrone on the post-MS phase nodes, and how many points were dropped.

    ``iso`` is ``(n_eep, 6)``: eep, initial mass, ``_PARSEC_COLUMNS``. Returns
    ``(n_phase, 5)``: log10 initial mass and the four ``ISOCHRONE_VARIABLES``, NaN where
    the isochrone does not reach (all NaN if it has no TAMS). The overlap part is
    resampled in log mass with PCHIP (as the main-sequence grid); from the TAMS on,
    points whose initial mass falls below that of an earlier point are dropped and the
    rest interpolated linearly in EEP, so mass never decreases along phase.
    """
    _, eep_nodes, dlogm = postms_axis()
    out = np.full((eep_nodes.size, 5), np.nan)
    eep = iso[:, 0]
    if not np.any(eep == PARSEC_LAST_EEP):
        return out, 0
    ms = iso[eep <= PARSEC_LAST_EEP]
    lm_ms = np.log10(ms[:, 1])
    if np.any(np.diff(lm_ms) <= 0):
        raise ValueError("PARSEC isochrone not monotonic in mass before the TAMS")
    overlap = ~np.isnan(dlogm)
    lm_overlap = lm_ms[-1] - dlogm[overlap]
    out[overlap, 1:] = resample_isochrone(lm_ms, ms[:, 2:], lm_overlap)
    out[overlap, 0] = np.where(np.isfinite(out[overlap, 1]), lm_overlap, np.nan)
    post = iso[eep >= PARSEC_LAST_EEP]
    lm = np.log10(post[:, 1])
    keep = lm >= np.maximum.accumulate(lm)
    columns = np.column_stack([lm, post[:, 2:]])[keep]
    at = eep_nodes[~overlap]
    inside = at <= post[keep][-1, 0] + 1e-9
    for q in range(5):
        out[np.flatnonzero(~overlap)[inside], q] = np.interp(
            at[inside], post[keep][:, 0], columns[:, q]
        )
    return out, int((~keep).sum())


def _postms_nodes(progress: bool) -> tuple[np.ndarray, int]:
    """Post-MS tables ``(age, mh, phase, 5)`` on LOG10_AGE, and the points dropped."""
    from tqdm.auto import tqdm

    feh, ages, isochrones = _read_parsec(parsec_path())
    n_phase = postms_axis()[0].size
    out = np.full((LOG10_AGE.size, MH.size, n_phase, 5), np.nan)
    dropped = 0
    for j in tqdm(range(feh.size), desc="isochrones (post-MS [M/H])", disable=not progress):
        per_age = np.full((ages.size, n_phase, 5), np.nan)
        for k in range(ages.size):
            iso = isochrones[j * ages.size + k]
            if iso is not None:
                per_age[k], n_drop = postms_isochrone(iso)
                dropped += n_drop
        out[:, j] = interp_linear(ages, per_age, LOG10_AGE, axis=0)
    valid = np.all(np.isfinite(out), axis=-1)
    out[~valid] = np.nan
    # every (age, mh) curve: valid nodes contiguous, log mass non-decreasing along them
    first = np.argmax(valid, axis=-1)
    count = valid.sum(axis=-1)
    span = np.arange(n_phase) - first[..., None]
    if np.any(valid != ((span >= 0) & (span < count[..., None]))):
        raise ValueError("post-MS tables have interior holes")
    if np.any(np.diff(out[..., 0], axis=-1) < 0):  # NaN compares False
        raise ValueError("post-MS initial mass decreases along phase")
    return out, dropped


def build_isochrone_grid(*, progress: bool = True) -> xr.Dataset:
    """Resample PARSEC and BHAC15 isochrones onto the regular grid.

    Parameters
    ----------
    progress : bool
        Show a progress bar (one step per PARSEC metallicity).

    Returns
    -------
    xarray.Dataset
        Dims ``(log10_mass, log10_age, mh)``; float32 ``log10_teff``, ``logg``,
        ``log10_lum``, ``log10_radius`` (NaN where no source covers the node), bool
        ``valid`` and uint8 ``source`` (0 none, 1 PARSEC, 2 BHAC15). The module
        docstring says which source serves which corner.

    Examples
    --------
    >>> grid = build_isochrone_grid(progress=False)  # doctest: +SKIP
    >>> dict(grid.sizes)  # doctest: +SKIP
    {'log10_mass': 541, 'log10_age': 178, 'mh': 11}
    >>> bool(grid.valid.sel(log10_mass=0.0, log10_age=9.65, mh=0.0))  # doctest: +SKIP
    True
    """
    nodes = _parsec_nodes(progress)
    weight = np.zeros(nodes.shape[:3])
    solar = int(np.argmin(np.abs(MH)))
    weight[:, :, solar] = bhac15_weight(LOG10_MASS, LOG10_AGE)
    nodes[:, :, solar] = combine_sources(nodes[:, :, solar], _bhac15_nodes(), weight[:, :, solar])
    valid = np.all(np.isfinite(nodes), axis=-1)
    nodes[~valid] = np.nan
    source = np.where(weight >= 0.5, SOURCE_BHAC15, SOURCE_PARSEC)
    source = np.where(valid, source, SOURCE_NONE).astype(np.uint8)
    dims = ("log10_mass", "log10_age", "mh")
    data_vars: dict[str, tuple] = {
        name: (dims, nodes[..., q].astype(np.float32), {"units": u, "long_name": ln})
        for q, (name, (u, ln)) in enumerate(_UNITS.items())
    }
    data_vars["valid"] = (dims, valid, {"long_name": "a source covers this node"})
    data_vars["source"] = (
        dims,
        source,
        {
            "long_name": "source serving the node",
            "flag_values": "0 1 2",
            "flag_meanings": "none PARSEC BHAC15",
        },
    )
    postms, dropped = _postms_nodes(progress)
    postms_valid = np.all(np.isfinite(postms), axis=-1)
    post_dims = ("log10_age", "mh", "phase")
    post_units = {"log10_mass": ("dex(Msun)", "log10 initial mass"), **_UNITS}
    for q, (name, (u, ln)) in enumerate(post_units.items()):
        data_vars[POSTMS_PREFIX + name] = (
            post_dims,
            postms[..., q].astype(np.float32),
            {"units": u, "long_name": f"{ln} along the post-main-sequence isochrone"},
        )
    data_vars[POSTMS_PREFIX + "valid"] = (
        post_dims,
        postms_valid,
        {"long_name": "the PARSEC isochrone reaches this phase", "dropped_points": dropped},
    )
    phase, phase_eep, phase_dlogm = postms_axis()
    return xr.Dataset(
        data_vars,
        coords={
            "phase": (
                "phase",
                phase,
                {"long_name": "normalised position along the post-MS isochrone (0-1)"},
            ),
            "phase_eep": ("phase", phase_eep, {"long_name": "lachesis/MIST EEP (NaN: overlap)"}),
            "phase_dlogm": (
                "phase",
                phase_dlogm,
                {"units": "dex(Msun)", "long_name": "log10 mass below the TAMS (overlap)"},
            ),
            "log10_mass": (
                "log10_mass",
                LOG10_MASS,
                {"units": "dex(Msun)", "long_name": "log10 initial mass"},
            ),
            "log10_age": ("log10_age", LOG10_AGE, {"units": "dex(yr)", "long_name": "log10 age"}),
            "mh": ("mh", MH, {"units": "dex", "long_name": "[M/H]"}),
        },
        attrs={
            "description": (
                "PMS + main-sequence isochrones (to the TAMS) resampled onto a regular grid; "
                "BHAC15 serves mh=0 below 100 Myr and 1.1 Msun, blended into PARSEC up to "
                "316 Myr and 1.41 Msun; PARSEC serves everything else; NaN/valid=False where "
                "no source covers a node; postms_* variables: PARSEC subgiants, red giants and "
                "core He burning (plus an upper-MS overlap) on (log10_age, mh, phase), phase "
                "an EEP-based coordinate along each isochrone"
            ),
            "sources": _SOURCES,
            "build_version": BUILD_VERSION,
        },
    )


def isochrone_grid_hash() -> str:
    """Content hash of the grid's inputs: source files, axes, policy and BUILD_VERSION.

    Examples
    --------
    >>> len(isochrone_grid_hash())
    64
    """
    return content_hash(
        file_sha256(parsec_path()),
        file_sha256(bhac15_path()),
        LOG10_MASS,
        LOG10_AGE,
        MH,
        {
            "parsec_last_eep": PARSEC_LAST_EEP,
            "bhac15_age_ramp": BHAC15_AGE_RAMP,
            "bhac15_mass_ramp": BHAC15_MASS_RAMP,
            "postms": (
                POSTMS_OVERLAP_DEX,
                POSTMS_OVERLAP_NODES,
                POSTMS_EEP_KNOTS,
                POSTMS_PHASE_KNOTS,
                POSTMS_LATE_NODES,
            ),
        },
        BUILD_VERSION,
    )


def isochrone_grid_path() -> Path:
    """Cache path of the isochrone grid."""
    return cache_dir() / "isochrones.zarr"


def load_isochrone_grid(*, force: bool = False, progress: bool = True) -> xr.Dataset:
    """Return the isochrone grid from the cache, building it only if its inputs changed.

    Parameters
    ----------
    force : bool
        Rebuild even if the cached store is current.
    progress : bool
        Show a progress bar while building.

    Examples
    --------
    >>> grid = load_isochrone_grid(progress=False)  # doctest: +SKIP
    >>> grid.log10_teff.dims  # doctest: +SKIP
    ('log10_mass', 'log10_age', 'mh')
    """
    dataset, _ = cached_zarr(
        isochrone_grid_path(),
        isochrone_grid_hash,
        lambda: build_isochrone_grid(progress=progress),
        force=force,
    )
    return dataset

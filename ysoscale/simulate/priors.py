"""Prior over stellar parameters: a Galaxia-like Milky Way, young regions with disks, 3-D dust.

:func:`sample_prior` draws θ for ``n`` stars the way the sky does. Field stars come from
four components (thin disk, thick disk, stellar halo, bulge/bar) whose positions are
drawn from their density laws and kept within ``max_distance_pc`` of the Sun; young stars
come from star-forming regions near the plane, carry circumstellar disks with a
probability that decays with age, and sit behind extra, embedded extinction. A_V follows
from an exponential dust layer integrated along each sight line, R_V from a mixture.

Geometry
--------
Galactocentric Cartesian frame, x from the Galactic centre away from the Sun's side
(the Sun at ``x = -R0``), y towards l = 90°, z towards the north Galactic pole.
``R0 = 8.2 kpc`` and ``z_sun = +20 pc`` (Bland-Hawthorn & Gerhard 2016, ARA&A 54, 529).
(l, b, d) are heliocentric; the 0.14° tilt of the plane that z_sun implies is ignored.

Components (values as commonly quoted)
--------------------------------------
- Thin disk: ρ ∝ exp(-R/2.6 kpc) exp(-|z|/300 pc) (Jurić et al. 2008, ApJ 673, 864;
  Bland-Hawthorn & Gerhard 2016). Constant star-formation rate from
  ``young_age_myr[1]`` (younger stars are the young component's) to 10 Gyr (Robin et al.
  2003, A&A 409, 523; Sharma et al. 2011, ApJ 730, 3 - Galaxia). [M/H] ~ N(-0.1, 0.2)
  around a radial gradient of -0.06 dex/kpc (Luck & Lambert 2011; Genovali et al. 2014).
- Thick disk: ρ ∝ exp(-R/3.6 kpc) exp(-|z|/900 pc) (Jurić et al. 2008); ages uniform in
  10-12 Gyr, [M/H] ~ N(-0.6, 0.3) (Robin et al. 2003; Sharma et al. 2011).
- Halo: oblate power law ρ ∝ (r_q² + r_c²)^(-2.77/2), r_q² = R² + (z/0.64)² (Jurić et al.
  2008: n_H = 2.77, q_H = 0.64) with a 1 kpc core, cut at r_q = 100 kpc; ages uniform in
  12-13 Gyr, [M/H] ~ N(-1.5, 0.5).
- Bulge/bar: exponential triaxial ellipsoid ρ ∝ exp(-r_s), r_s² = (x'/0.70)² + (y'/0.28)²
  + (z'/0.25)² kpc (Dwek et al. 1995 "E" form; axis ratios ~10:4:3.5 as in Robin et al.
  2012 and Wegg & Gerhard 2013), major axis 27° from the Sun-centre line, near end at
  l > 0 (Wegg & Gerhard 2013). Ages uniform in 8-12 Gyr, [M/H] ~ N(0.0, 0.4).

Weights
-------
The number of field stars of a component is taken proportional to its stellar mass
inside the sampling sphere, i.e. the same number of stars per solar mass in every
component (one IMF, remnants and mass loss ignored). Total masses (Bland-Hawthorn &
Gerhard 2016, rounded): thin 3.5e10, thick 0.6e10, halo 1e9, bulge 1.5e10 Msun. The
fraction inside ``max_distance_pc`` is a fixed-seed Monte Carlo integral
(:func:`component_weights`); for the default 15 kpc the weights are about
thin 0.61, thick 0.094, halo 0.008, bulge 0.29.

Masses
------
Kroupa (2001, MNRAS 322, 231) broken power law, dN/dm ∝ m^-0.3 (0.01-0.08), m^-1.3
(0.08-0.5), m^-2.3 (> 0.5 Msun), between ``min_mass`` and ``max_mass``, drawn by exact
inverse-CDF. ``main_sequence_only`` truncates it per star at the mass whose
main-sequence lifetime, 10 Gyr (M/Msun)^-2.5, equals the star's age (the isochrone grid
stops at the terminal-age main sequence).

Young stars
-----------
Regions of ``young_stars_per_region`` stars on average: centres with heliocentric
distances in ``young_distance_pc`` (cut at ``max_distance_pc``, which bounds every star;
a star scattered beyond it is scattered again) uniform in disk area, weighted by the thin-disk
surface density, with |z| exponential of scale ``young_scale_height_pc`` (50 pc, as
commonly quoted for OB associations and molecular clouds, e.g. Bobylev & Bajkova 2016);
one log-uniform age per region in ``young_age_myr`` and a star-to-star spread of
``young_age_spread_dex``; stars scattered by an isotropic Gaussian whose σ is
log-uniform in ``young_region_size_pc``. [M/H] is the thin-disk gradient with the solar
value at R0 and 0.1 dex scatter between regions (nearby young clusters are near solar,
Spina et al. 2017). A star has a disk with probability exp(-t / ``disk_efold_myr``)
(Mamajek 2009, AIP Conf. Proc. 1158, 3: τ ≈ 2.5 Myr; Fedele et al. 2010, A&A 510, A72:
≈ 2.5-3 Myr); the rule is applied to every star, and for field ages it is nil. A disk
re-radiates ``disk_frac`` = L_disk/L_star, log-uniform in ``disk_frac_range``, as a
blackbody of ``disk_temp`` K, log-uniform in ``disk_temp_range_k``.

Dust
----
A_V = a_0 f_R ∫_0^d exp(-|z_sun + s sin b| / h) ds × c, with the integral in closed form,
a local mid-plane a_0 = 0.7 mag/kpc and h = 120 pc (Drimmel & Spergel 2001, ApJ 556,
181; Marshall et al. 2006, A&A 453, 635: h ≈ 110-130 pc; a_0 chosen so that the polar
A_V ≈ 0.07 mag matches E(B-V) ≈ 0.02 at the poles of Schlegel et al. 1998). f_R =
exp(-(R_m - R0) / 2.3 kpc) is the dust disk's radial profile (Drimmel & Spergel 2001,
h_R ≈ 0.28 R0) evaluated at R_m, the Galactocentric radius half-way through the part of
the sight line inside the layer; c is a mean-one log-normal clumpiness factor
(σ_ln = ``av_clump_sigma``). Young stars add an embedded A_V, log-normal with median
``young_av_median`` and σ_ln ``young_av_sigma``. A_V is not clipped: stars beyond the
photometry grid's 30 mag are invalid for the forward model and the simulator redraws
them, so the prior is truncated there without a pile-up at the edge.

R_V is N(3.1, 0.2) (Fitzpatrick & Massa 2007, ApJ 663, 320; Schlafly et al. 2016, ApJ
821, 78: σ(R_V) ≈ 0.18) with probability 1 - p, and uniform in 3.3-5.5 (dense-cloud
grain growth) with p = ``rv_tail_field`` for field and ``rv_tail_young`` for young stars,
clipped to 2.3-5.6, the range of the G23 extinction law.

Binaries
--------
With ``binaries``, a star is an unresolved binary with probability rising with primary
mass, clip(0.46 + 0.3 log10 M, 0.1, 0.8) (Raghavan et al. 2010; Duchêne & Kraus 2013:
~25 % for M dwarfs, ~45 % for FGK, > 60 % for B stars), with mass ratio q uniform in
(0.1, 1] (Raghavan et al. 2010; Moe & Di Stefano 2017, roughly flat); ``mass_ratio`` is
NaN for single stars. ``log10_mass`` is the primary's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ysoscale.settings import reject_unknown_keys

POPULATIONS = ("thin", "thick", "halo", "bulge", "young")
FIELD = POPULATIONS[:4]
YOUNG_CODE = POPULATIONS.index("young")
PRIOR_KEYS = (
    "log10_mass",
    "log10_age",
    "mh",
    "distance_pc",
    "l_deg",
    "b_deg",
    "av",
    "rv",
    "population",
    "has_disk",
    "disk_frac",
    "disk_temp",
)

R0_PC = 8200.0
Z_SUN_PC = 20.0
MH_RANGE = (-2.0, 0.5)
RV_RANGE = (2.3, 5.6)
MAX_LOG10_AGE = math.log10(13e9)
NO_DISK_TEMP = 800.0

COMPONENT_MASS_MSUN = {"thin": 3.5e10, "thick": 0.6e10, "halo": 1.0e9, "bulge": 1.5e10}
DISK_GEOMETRY_PC = {"thin": (2600.0, 300.0), "thick": (3600.0, 900.0)}  # (h_R, h_z)
HALO_POWER = 2.77
HALO_FLATTENING = 0.64
HALO_CORE_PC = 1000.0
HALO_MAX_RADIUS_PC = 100e3
BULGE_SCALES_PC = (700.0, 280.0, 250.0)
BAR_ANGLE_DEG = 27.0
# age (Gyr, uniform) and [M/H] (mean, sigma) per field component; thin lower age is config
AGE_RANGE_GYR = {"thin": (None, 10.0), "thick": (10.0, 12.0), "halo": (12.0, 13.0),
                 "bulge": (8.0, 12.0)}  # fmt: skip
MH_NORMAL = {"thin": (-0.1, 0.2), "thick": (-0.6, 0.3), "halo": (-1.5, 0.5), "bulge": (0.0, 0.4)}
MH_GRADIENT_PER_PC = -0.06e-3
YOUNG_MH_SCATTER = 0.1

DUST_SCALE_HEIGHT_PC = 120.0
DUST_SCALE_LENGTH_PC = 2300.0
DUST_MIDPLANE_AV_PER_PC = 0.7e-3
RV_CORE = (3.1, 0.2)
RV_TAIL = (3.3, 5.5)

KROUPA_BREAKS = (0.01, 0.08, 0.5, math.inf)
KROUPA_SLOPES = (0.3, 1.3, 2.3)
MS_LIFETIME_YR = 1e10  # t_MS ≈ 1e10 yr (M/Msun)^-2.5

_CALIBRATION_DRAWS = 1 << 17
_MAX_BATCH = 1 << 21
_MAX_ROUNDS = 10_000


@dataclass(frozen=True)
class PriorConfig:
    """Knobs of :func:`sample_prior`; every default is the documented Milky Way prior.

    Parameters
    ----------
    population : {"all", "field", "young"}
        Which stars to draw: field components and young regions, or one of the two.
    young_fraction : float
        Share of young stars when ``population == "all"`` (a training choice, far above
        the true share so that young stars are well sampled).
    max_distance_pc : float
        Heliocentric radius within which every star is drawn.
    young_distance_pc : (float, float)
        Heliocentric distance range of young-region centres (cut at ``max_distance_pc``).
    young_age_myr : (float, float)
        Age range of young regions (log-uniform); the thin disk starts at the upper end.
    young_age_spread_dex : float
        Gaussian spread of log10 age within a region (kept inside ``young_age_myr``).
    young_stars_per_region : float
        Mean number of stars per young region.
    young_region_size_pc : (float, float)
        Range of the Gaussian σ of a region's stars (log-uniform).
    young_scale_height_pc : float
        Exponential scale height of region centres about the plane.
    disk_efold_myr : float
        e-folding time of the disk fraction, f(t) = exp(-t / efold).
    disk_frac_range : (float, float)
        Log-uniform range of L_disk / L_star for stars with a disk.
    disk_temp_range_k : (float, float)
        Log-uniform range of the disk temperature (K).
    min_mass, max_mass : float
        Range of the Kroupa IMF (Msun); 0.01 ≤ min_mass < max_mass ≤ 150.
    main_sequence_only : bool
        Truncate the IMF per star at the mass whose main-sequence lifetime is its age.
    binaries : bool
        Draw unresolved binaries and return ``mass_ratio``.
    av_clump_sigma : float
        σ of the mean-one log-normal clumpiness factor on the smooth dust A_V.
    young_av_median, young_av_sigma : float
        Median (mag) and log-normal σ of the embedded A_V of young stars.
    rv_tail_field, rv_tail_young : float
        Probability that R_V comes from the dense-cloud tail (3.3-5.5).

    Examples
    --------
    >>> PriorConfig(population="young").young_fraction
    0.1
    >>> PriorConfig.from_dict({"populaton": "young"})
    Traceback (most recent call last):
    ...
    ValueError: unknown prior setting(s) ['populaton'] (did you mean 'population'?); known: ...
    """

    population: str = "all"
    young_fraction: float = 0.1
    max_distance_pc: float = 15000.0
    young_distance_pc: tuple[float, float] = (100.0, 3000.0)
    young_age_myr: tuple[float, float] = (0.5, 50.0)
    young_age_spread_dex: float = 0.1
    young_stars_per_region: float = 200.0
    young_region_size_pc: tuple[float, float] = (1.0, 10.0)
    young_scale_height_pc: float = 50.0
    disk_efold_myr: float = 2.5
    disk_frac_range: tuple[float, float] = (0.01, 0.3)
    disk_temp_range_k: tuple[float, float] = (300.0, 1500.0)
    min_mass: float = 0.08
    max_mass: float = 20.0
    main_sequence_only: bool = False
    binaries: bool = False
    av_clump_sigma: float = 0.4
    young_av_median: float = 1.0
    young_av_sigma: float = 0.8
    rv_tail_field: float = 0.05
    rv_tail_young: float = 0.3

    def __post_init__(self) -> None:
        if self.population not in ("all", "field", "young"):
            raise ValueError(
                f"PriorConfig.population must be 'all', 'field' or 'young'; got {self.population!r}"
            )
        for name in ("young_fraction", "rv_tail_field", "rv_tail_young"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PriorConfig.{name} must lie in [0, 1]; got {value!r}")
        for name in (
            "max_distance_pc",
            "young_stars_per_region",
            "young_scale_height_pc",
            "disk_efold_myr",
            "young_av_median",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PriorConfig.{name} must be finite and > 0; got {value!r}")
        for name in ("young_age_spread_dex", "av_clump_sigma", "young_av_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PriorConfig.{name} must be finite and >= 0; got {value!r}")
        for name, low in (
            ("young_distance_pc", 0.0),
            ("young_age_myr", 0.0),
            ("young_region_size_pc", 0.0),
            ("disk_frac_range", 0.0),
            ("disk_temp_range_k", 0.0),
        ):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"PriorConfig.{name} must be a pair (low, high); got {value!r}"
                ) from None
            if not (math.isfinite(hi) and low < lo < hi):
                raise ValueError(
                    f"PriorConfig.{name} must satisfy {low:g} < low < high < inf; got {value!r}"
                )
            object.__setattr__(self, name, (lo, hi))
        if self.population != "field" and self.young_distance_pc[0] >= self.max_distance_pc:
            raise ValueError(
                f"PriorConfig.young_distance_pc must start inside max_distance_pc="
                f"{self.max_distance_pc!r}; got {self.young_distance_pc!r}"
            )
        if self.young_age_myr[1] > 10e3:
            raise ValueError(
                f"PriorConfig.young_age_myr must end below 10 Gyr (the thin disk's oldest "
                f"stars); got {self.young_age_myr!r}"
            )
        if not 0.01 <= self.min_mass < self.max_mass <= 150.0:
            raise ValueError(
                "PriorConfig.min_mass and max_mass must satisfy 0.01 <= min_mass < max_mass "
                f"<= 150; got min_mass={self.min_mass!r}, max_mass={self.max_mass!r}"
            )

    @property
    def young_below_log10_age(self) -> float:
        """log10 age (yr) below which a star counts as young: the young regions' oldest age.

        Examples
        --------
        >>> PriorConfig().young_below_log10_age  # 50 Myr
        7.698970004336019
        """
        return math.log10(self.young_age_myr[1] * 1e6)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorConfig:
        """Build from a mapping (e.g. a TOML table), rejecting unknown keys by name."""
        reject_unknown_keys(cls, d, "prior")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of every knob; ``PriorConfig.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- IMF


@functools.cache
def kroupa_segments(lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """Per IMF segment inside [lo, hi]: lower edge, 1 - slope, normalisation, cumulative.

    The IMF normalised on [lo, hi] is ``dN/dm = norm[i] * m ** (one[i] - 1)`` on segment
    ``i`` (``lower[i] <= m``), whose CDF starts at ``cum[i]``.
    """
    k = [1.0]
    for i in range(1, len(KROUPA_SLOPES)):
        k.append(k[-1] * KROUPA_BREAKS[i] ** (KROUPA_SLOPES[i] - KROUPA_SLOPES[i - 1]))
    edges, alpha, norm = [lo], [], []
    for i, slope in enumerate(KROUPA_SLOPES):
        a, b = max(lo, KROUPA_BREAKS[i]), min(hi, KROUPA_BREAKS[i + 1])
        if a < b:
            edges.append(b)
            alpha.append(slope)
            norm.append(k[i])
    edges_a, norm_a = np.array(edges), np.array(norm)
    one = 1.0 - np.array(alpha)
    mass = norm_a * (edges_a[1:] ** one - edges_a[:-1] ** one) / one
    cum = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    return edges_a[:-1], one, norm_a / mass.sum(), cum


def turn_off_mass(log10_age: Any) -> Any:
    """Mass (Msun) whose main-sequence lifetime ``MS_LIFETIME_YR * M**-2.5`` is the age.

    Works on floats, numpy arrays and torch tensors alike: the simulator's IMF truncation
    and the prior density's :class:`~ysoscale.infer.prior_density.MassGivenAge` both call it.

    Examples
    --------
    >>> round(turn_off_mass(10.0), 3)  # 10 Gyr: the Sun
    1.0
    """
    return (MS_LIFETIME_YR / 10.0**log10_age) ** 0.4


def kroupa_cdf(mass: np.ndarray, lo: float = 0.08, hi: float = 20.0) -> np.ndarray:
    """Fraction of Kroupa (2001) IMF stars in [lo, hi] below ``mass`` (Msun).

    Examples
    --------
    >>> round(float(kroupa_cdf(np.array(0.5))), 3)
    0.762
    """
    lower, one, norm, cum = kroupa_segments(float(lo), float(hi))
    m = np.clip(np.asarray(mass, dtype=float), lo, hi)
    seg = np.clip(np.searchsorted(lower, m, side="right") - 1, 0, one.size - 1)
    e, p = lower[seg], one[seg]
    return np.minimum(cum[seg] + norm[seg] * (m**p - e**p) / p, 1.0)


def kroupa_log10_ppf(u: np.ndarray, lo: float = 0.08, hi: float = 20.0) -> np.ndarray:
    """log10 of the Kroupa (2001) IMF mass (Msun) at quantiles ``u`` in [0, 1]; exact inverse.

    Examples
    --------
    >>> round(float(kroupa_log10_ppf(kroupa_cdf(np.array(2.0)))), 9)
    0.301029996
    """
    lower, one, norm, cum = kroupa_segments(float(lo), float(hi))
    u = np.asarray(u, dtype=float)
    seg = np.zeros(u.shape, dtype=np.intp)
    for c in cum[1:-1]:  # at most two breaks: cheaper than searchsorted
        seg += u >= c
    base = (lower**one)[seg] + (u - cum[seg]) * (one / norm)[seg]
    log10_m = np.log(np.maximum(base, 1e-300)) * (1.0 / (one * math.log(10.0)))[seg]
    return np.clip(log10_m, math.log10(lo), math.log10(hi))


# --------------------------------------------------------------------------- geometry


@functools.cache
def _halo_table() -> tuple[np.ndarray, np.ndarray, float]:
    """Radius grid, CDF of r_q and the normalising volume integral of the halo."""
    r = np.concatenate([[0.0], np.geomspace(1.0, HALO_MAX_RADIUS_PC, 4095)])
    f = r**2 * (r**2 + HALO_CORE_PC**2) ** (-HALO_POWER / 2)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(r))])
    return r, cum / cum[-1], 4 * np.pi * HALO_FLATTENING * cum[-1]


def _halo_profile(r_q: np.ndarray) -> np.ndarray:
    return np.where(r_q <= HALO_MAX_RADIUS_PC, (r_q**2 + HALO_CORE_PC**2) ** (-HALO_POWER / 2), 0.0)


def _bar_axes() -> tuple[np.ndarray, np.ndarray]:
    phi = math.radians(BAR_ANGLE_DEG)
    # major axis points to the near end, which lies at l > 0 (x < 0, y > 0)
    return np.array([-math.cos(phi), math.sin(phi)]), np.array([math.sin(phi), math.cos(phi)])


def _isotropic(m: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    cos_t = rng.uniform(-1.0, 1.0, m)
    phi = rng.uniform(0.0, 2 * np.pi, m)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t


def _laplace(scale: float, m: int, rng: np.random.Generator) -> np.ndarray:
    # faster than Generator.laplace: one uniform, one log
    u = rng.uniform(-1.0, 1.0, m)
    return np.copysign(scale, u) * -np.log1p(-np.abs(u))


def _propose(component: str, m: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Galactocentric (x, y, z) in pc drawn from a component's density law."""
    if component in DISK_GEOMETRY_PC:
        h_r, h_z = DISK_GEOMETRY_PC[component]
        # Gamma(2) radius = surface density exp(-R/h) times the 2πR ring
        r = -h_r * np.log(rng.random(m) * rng.random(m))
        phi = rng.uniform(0.0, 2 * np.pi, m)
        return r * np.cos(phi), r * np.sin(phi), _laplace(h_z, m, rng)
    if component == "halo":
        grid, cdf, _ = _halo_table()
        r = np.interp(rng.random(m), cdf, grid)
        ux, uy, uz = _isotropic(m, rng)
        return r * ux, r * uy, HALO_FLATTENING * r * uz
    if component == "bulge":
        r = -np.log(rng.random(m) * rng.random(m) * rng.random(m))  # Gamma(3): r² e^-r
        ux, uy, uz = _isotropic(m, rng)
        a, b, c = BULGE_SCALES_PC
        major, minor = _bar_axes()
        u, v = r * ux * a, r * uy * b
        return u * major[0] + v * minor[0], u * major[1] + v * minor[1], r * uz * c
    raise ValueError(f"unknown field component {component!r}")


def _density(component: str, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Normalised number density (pc^-3, integrates to one) of a component."""
    if component in DISK_GEOMETRY_PC:
        h_r, h_z = DISK_GEOMETRY_PC[component]
        rad = np.sqrt(x**2 + y**2)
        return np.exp(-rad / h_r - np.abs(z) / h_z) / (4 * np.pi * h_r**2 * h_z)
    if component == "halo":
        return _halo_profile(np.sqrt(x**2 + y**2 + (z / HALO_FLATTENING) ** 2)) / _halo_table()[2]
    if component == "bulge":
        a, b, c = BULGE_SCALES_PC
        major, minor = _bar_axes()
        u = x * major[0] + y * major[1]
        v = x * minor[0] + y * minor[1]
        r_s = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (z / c) ** 2)
        return np.exp(-r_s) / (8 * np.pi * a * b * c)
    raise ValueError(f"unknown field component {component!r}")


def _density_bound(component: str, max_distance_pc: float) -> float:
    """Upper bound of :func:`_density` inside the heliocentric sphere."""
    r_min = max(math.hypot(R0_PC, Z_SUN_PC) - max_distance_pc, 0.0)
    if component in DISK_GEOMETRY_PC:
        h_r, h_z = DISK_GEOMETRY_PC[component]
        return math.exp(-max(R0_PC - max_distance_pc, 0.0) / h_r) / (4 * np.pi * h_r**2 * h_z)
    if component == "halo":
        return float(_halo_profile(np.array(r_min))) / _halo_table()[2]
    a, b, c = BULGE_SCALES_PC
    return math.exp(-r_min / max(a, b, c)) / (8 * np.pi * a * b * c)


def _in_sphere(m: int, rng: np.random.Generator, max_distance_pc: float) -> tuple[np.ndarray, ...]:
    """Galactocentric (x, y, z) uniform in the heliocentric sphere."""
    d = max_distance_pc * np.cbrt(rng.random(m))
    ux, uy, uz = _isotropic(m, rng)
    return d * ux - R0_PC, d * uy, d * uz + Z_SUN_PC


def _propose_slab(
    component: str, m: int, rng: np.random.Generator, max_distance_pc: float
) -> tuple[np.ndarray, ...]:
    """Disk proposal: uniform in the circle of the sphere's radius, z from the vertical law.

    Returns (x, y, z, accept) where ``accept`` already applies the radial law and the sphere.
    """
    h_r, h_z = DISK_GEOMETRY_PC[component]
    rho = max_distance_pc * np.sqrt(rng.random(m))
    phi = rng.uniform(0.0, 2 * np.pi, m)
    x, y, z = rho * np.cos(phi) - R0_PC, rho * np.sin(phi), _laplace(h_z, m, rng)
    r_min = max(R0_PC - max_distance_pc, 0.0)
    accept = (rho**2 + (z - Z_SUN_PC) ** 2 <= max_distance_pc**2) & (
        rng.random(m) < np.exp((r_min - np.sqrt(x**2 + y**2)) / h_r)
    )
    return x, y, z, accept


def _draw(
    component: str, strategy: str, m: int, rng: np.random.Generator, max_distance_pc: float
) -> tuple[np.ndarray, ...]:
    """m proposals of one strategy: galactocentric (x, y, z) and the accepted mask."""
    if strategy == "law":
        x, y, z = _propose(component, m, rng)
        return x, y, z, (x + R0_PC) ** 2 + y**2 + (z - Z_SUN_PC) ** 2 <= max_distance_pc**2
    if strategy == "slab":
        return _propose_slab(component, m, rng, max_distance_pc)
    x, y, z = _in_sphere(m, rng, max_distance_pc)
    bound = _density_bound(component, max_distance_pc)
    return x, y, z, rng.random(m) * bound < _density(component, x, y, z)


@functools.lru_cache(maxsize=32)
def _calibration(max_distance_pc: float) -> dict[str, tuple[float, str, float]]:
    """Per component: mass fraction inside the sphere, sampling strategy, acceptance rate.

    Fixed-seed Monte Carlo estimates of the fraction from up to three proposals: the
    density law (fraction accepted), uniform points in the sphere (volume × mean density)
    and, for disks, the slab proposal of :func:`_propose_slab`; the estimate with the
    smallest relative error is kept, and the proposal with the highest acceptance rate is
    the one that samples.
    """
    rng = np.random.default_rng(0x5EED)
    n = _CALIBRATION_DRAWS
    dmax = max_distance_pc

    def binomial(p: float, scale: float) -> tuple[float, float]:
        return p * scale, (math.sqrt((1 - p) / (n * p)) if p > 0 else math.inf)

    out = {}
    for component in FIELD:
        *_, keep = _draw(component, "law", n, rng, dmax)
        p_law = np.count_nonzero(keep) / n
        estimates = [binomial(p_law, 1.0)]
        rates = {"law": p_law}
        rho = _density(component, *_in_sphere(n, rng, dmax))
        mean = float(rho.mean())
        rates["sphere"] = mean / _density_bound(component, dmax)
        rel = float(rho.std()) / (mean * math.sqrt(n)) if mean > 0 else math.inf
        estimates.append((min(4.0 / 3.0 * np.pi * dmax**3 * mean, 1.0), rel))
        if component in DISK_GEOMETRY_PC:
            h_r, _ = DISK_GEOMETRY_PC[component]
            *_, keep = _draw(component, "slab", n, rng, dmax)
            rates["slab"] = np.count_nonzero(keep) / n
            r_min = max(R0_PC - dmax, 0.0)
            estimates.append(
                binomial(rates["slab"], dmax**2 / (2 * h_r**2) * math.exp(-r_min / h_r))
            )
        fraction = min(estimates, key=lambda e: e[1])[0]
        strategy = max(rates, key=rates.__getitem__)
        out[component] = (fraction, strategy, rates[strategy])
    return out


def component_weights(max_distance_pc: float = 15000.0) -> np.ndarray:
    """Share of field stars per component (thin, thick, halo, bulge) inside the sphere.

    Mass of the component inside ``max_distance_pc`` of the Sun, normalised; the same
    IMF (stars per solar mass) is assumed in every component.

    Examples
    --------
    >>> w = component_weights(15000.0)
    >>> bool(abs(w.sum() - 1) < 1e-12 and w[0] > w[3] > w[1] > w[2])
    True
    """
    cal = _calibration(float(max_distance_pc))
    mass = np.array([COMPONENT_MASS_MSUN[c] * cal[c][0] for c in FIELD])
    return mass / mass.sum()


def _heliocentric(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    dx, dz = x + R0_PC, z - Z_SUN_PC
    d = np.maximum(np.sqrt(dx * dx + y * y + dz * dz), 1e-6)
    sin_b = np.clip(dz / d, -1.0, 1.0)
    lon = np.arctan2(y, dx)
    lon[lon < 0] += 2 * np.pi
    lon *= 180.0 / np.pi
    return {
        "distance_pc": d,
        "l_deg": lon,
        "b_deg": np.arcsin(sin_b) * (180.0 / np.pi),
        "sin_b": sin_b,
        "cos_b_cos_l": dx / d,
        "R": np.sqrt(x * x + y * y),
    }


def _field_positions(
    component: str, m: int, rng: np.random.Generator, max_distance_pc: float
) -> dict[str, np.ndarray]:
    _, strategy, rate = _calibration(float(max_distance_pc))[component]
    if m > 0 and rate <= 0:
        raise RuntimeError(f"no {component} stars within {max_distance_pc} pc to sample")
    parts: list[tuple[np.ndarray, ...]] = [(np.empty(0),) * 3]
    got = 0
    for _ in range(_MAX_ROUNDS):
        need = m - got
        if need <= 0:
            break
        size = min(int(need / rate * 1.05) + 64, _MAX_BATCH)
        x, y, z, keep = _draw(component, strategy, size, rng, max_distance_pc)
        idx = np.flatnonzero(keep)[:need]
        parts.append((x[idx], y[idx], z[idx]))
        got += idx.size
    else:
        raise RuntimeError(f"rejection sampling of {component} stars did not converge")
    x, y, z = (np.concatenate(p) if len(p) > 2 else p[-1] for p in zip(*parts, strict=True))
    return _heliocentric(x, y, z)


# --------------------------------------------------------------------------- parameters


def _truncated_normal(
    mean: np.ndarray | float,
    sigma: float,
    lo: float,
    hi: float,
    m: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """N(mean, sigma) restricted to [lo, hi] by redrawing (then clipping the rare rest)."""
    mean = np.broadcast_to(np.asarray(mean, dtype=float), (m,))
    out = mean + sigma * rng.standard_normal(m)
    for _ in range(20):
        bad = np.flatnonzero((out < lo) | (out > hi))
        if bad.size == 0:
            break
        out[bad] = mean[bad] + sigma * rng.standard_normal(bad.size)
    return np.clip(out, lo, hi, out=out)


def _log_uniform(lo: float, hi: float, m: int, rng: np.random.Generator) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), m))


def _log10_masses(
    log10_age: np.ndarray, config: PriorConfig, rng: np.random.Generator
) -> np.ndarray:
    lo, hi = config.min_mass, config.max_mass
    u = rng.random(log10_age.size)
    if config.main_sequence_only:
        m_up = np.clip(turn_off_mass(log10_age), lo * (1 + 1e-9), hi)
        u = u * kroupa_cdf(m_up, lo, hi)
    return kroupa_log10_ppf(u, lo, hi)


def _dust_av(
    pos: dict[str, np.ndarray], config: PriorConfig, rng: np.random.Generator
) -> np.ndarray:
    """Smooth-layer A_V along each sight line times a log-normal clumpiness factor."""
    d, sin_b = pos["distance_pc"], pos["sin_b"]
    h = DUST_SCALE_HEIGHT_PC
    z_end = Z_SUN_PC + d * sin_b
    # G(z) = ∫_0^z exp(-|t|/h) dt is odd and continuous, so the column
    # ∫_0^d exp(-|z_sun + s sin b|/h) ds = (G(z_end) - G(z_sun)) / sin b in closed form
    g_end = np.copysign(h, z_end) * (1.0 - np.exp(np.abs(z_end) * (-1.0 / h)))
    g_sun = math.copysign(h, Z_SUN_PC) * (1.0 - math.exp(-abs(Z_SUN_PC) / h))
    with np.errstate(divide="ignore", invalid="ignore"):
        column = (g_end - g_sun) / sin_b
    flat = np.flatnonzero(np.abs(d * sin_b) < 1e-6 * h)
    column[flat] = d[flat] * math.exp(-abs(Z_SUN_PC) / h)
    s_mid = 0.5 * np.minimum(d, h / np.maximum(np.abs(sin_b), 1e-12))
    r2_mid = R0_PC**2 + s_mid * (s_mid * (1 - sin_b**2) - 2 * R0_PC * pos["cos_b_cos_l"])
    r_mid = np.sqrt(np.maximum(r2_mid, 0.0))
    s = config.av_clump_sigma
    log_factor = (R0_PC - r_mid) / DUST_SCALE_LENGTH_PC + s * rng.standard_normal(d.size)
    return (DUST_MIDPLANE_AV_PER_PC * math.exp(-0.5 * s * s)) * column * np.exp(log_factor)


def _rv(m: int, tail_prob: float, rng: np.random.Generator) -> np.ndarray:
    rv = RV_CORE[0] + RV_CORE[1] * rng.standard_normal(m)
    tail = np.flatnonzero(rng.random(m) < tail_prob)
    rv[tail] = rng.uniform(*RV_TAIL, tail.size)
    return np.clip(rv, *RV_RANGE, out=rv)


def _field_stars(
    component: str, m: int, config: PriorConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    pos = _field_positions(component, m, rng, config.max_distance_pc)
    lo_gyr, hi_gyr = AGE_RANGE_GYR[component]
    if lo_gyr is None:
        lo_gyr = config.young_age_myr[1] * 1e-3
    log10_age = np.log10(rng.uniform(lo_gyr * 1e9, hi_gyr * 1e9, m))
    mean, sigma = MH_NORMAL[component]
    if component == "thin":
        mean = mean + MH_GRADIENT_PER_PC * (pos["R"] - R0_PC)
    pos["log10_age"] = np.minimum(log10_age, MAX_LOG10_AGE, out=log10_age)
    pos["mh"] = _truncated_normal(mean, sigma, *MH_RANGE, m, rng)
    pos["av"] = _dust_av(pos, config, rng)
    pos["rv"] = _rv(m, config.rv_tail_field, rng)
    return pos


def _young_centres(k: int, config: PriorConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Galactocentric (x, y, z) of k region centres, area-uniform × thin-disk surface density."""
    d_lo, d_hi = config.young_distance_pc
    d_hi = min(d_hi, config.max_distance_pc)
    h_r = DISK_GEOMETRY_PC["thin"][0]
    r_floor = max(R0_PC - d_hi, 0.0)
    parts: list[tuple[np.ndarray, ...]] = []
    got = 0
    for _ in range(_MAX_ROUNDS):
        need = k - got
        if need <= 0:
            break
        size = 4 * need + 16
        d = np.sqrt(rng.uniform(d_lo**2, d_hi**2, size))
        lon = rng.uniform(0.0, 2 * np.pi, size)
        x, y = d * np.cos(lon) - R0_PC, d * np.sin(lon)
        z = _laplace(config.young_scale_height_pc, size, rng)
        keep = (rng.random(size) < np.exp(-(np.sqrt(x * x + y * y) - r_floor) / h_r)) & (
            d * d + (z - Z_SUN_PC) ** 2 <= config.max_distance_pc**2
        )
        idx = np.flatnonzero(keep)[:need]
        parts.append((x[idx], y[idx], z[idx]))
        got += idx.size
    else:
        raise RuntimeError("rejection sampling of young-region centres did not converge")
    x, y, z = (np.concatenate(p) for p in zip(*parts, strict=True))
    return x, y, z


def _young_stars(m: int, config: PriorConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_reg = max(1, math.ceil(m / config.young_stars_per_region))
    cx, cy, cz = _young_centres(n_reg, config, rng)
    t_lo, t_hi = (math.log10(t * 1e6) for t in config.young_age_myr)
    reg_age = rng.uniform(t_lo, t_hi, n_reg)
    reg_size = _log_uniform(*config.young_region_size_pc, n_reg, rng)
    reg_mh = MH_GRADIENT_PER_PC * (np.sqrt(cx**2 + cy**2) - R0_PC)
    reg_mh += YOUNG_MH_SCATTER * rng.standard_normal(n_reg)
    reg = rng.integers(0, n_reg, m)
    dmax2 = config.max_distance_pc**2
    x, y, z = np.empty(m), np.empty(m), np.empty(m)
    todo = np.arange(m)
    for _ in range(20):  # scatter about the centre again where a star left the sphere
        offset = rng.standard_normal((3, todo.size)) * reg_size[reg[todo]]
        x[todo], y[todo] = cx[reg[todo]] + offset[0], cy[reg[todo]] + offset[1]
        z[todo] = cz[reg[todo]] + offset[2]
        todo = todo[(x[todo] + R0_PC) ** 2 + y[todo] ** 2 + (z[todo] - Z_SUN_PC) ** 2 > dmax2]
        if todo.size == 0:
            break
    x[todo], y[todo], z[todo] = cx[reg[todo]], cy[reg[todo]], cz[reg[todo]]
    pos = _heliocentric(x, y, z)
    pos["log10_age"] = _truncated_normal(
        reg_age[reg], config.young_age_spread_dex, t_lo, t_hi, m, rng
    )
    pos["mh"] = np.clip(reg_mh[reg], *MH_RANGE)
    embedded = config.young_av_median * np.exp(config.young_av_sigma * rng.standard_normal(m))
    pos["av"] = _dust_av(pos, config, rng) + embedded
    pos["rv"] = _rv(m, config.rv_tail_young, rng)
    return pos


def sample_prior(
    n: int, rng: np.random.Generator, config: PriorConfig = PriorConfig()
) -> dict[str, np.ndarray]:
    """Draw θ for ``n`` stars from the Milky Way + young-population + dust prior.

    Parameters
    ----------
    n : int
        Number of stars.
    rng : numpy.random.Generator
        Source of randomness; the same seed gives the same draws.
    config : PriorConfig
        Knobs; see the module docstring for the model and its sources.

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays of length ``n``, the stars' populations in random order:
        ``log10_mass`` (initial mass, Msun), ``log10_age`` (yr), ``mh`` (dex, in
        [-2, 0.5]), ``distance_pc``, ``l_deg`` (in [0, 360)), ``b_deg``, ``av`` (mag, in
        [0, 30]), ``rv`` (in [2.3, 5.6]) as float64; ``population`` (uint8 index into
        :data:`POPULATIONS`); ``has_disk`` (bool); ``disk_frac`` (L_disk / L_star, 0
        without a disk) and ``disk_temp`` (K, 800 without a disk) as float64; with
        ``config.binaries`` also ``mass_ratio`` (q in (0.1, 1], NaN for single stars).

    Examples
    --------
    >>> theta = sample_prior(1000, np.random.default_rng(0))
    >>> sorted(theta) == sorted(PRIOR_KEYS)
    True
    >>> bool(np.all(theta["distance_pc"] <= 15000.0))
    True
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if not isinstance(config, PriorConfig):
        raise TypeError(f"config must be a PriorConfig; got {type(config).__name__}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")

    share = np.zeros(len(POPULATIONS))
    if config.population != "young":
        young = 0.0 if config.population == "field" else config.young_fraction
        share[:YOUNG_CODE] = (1.0 - young) * component_weights(config.max_distance_pc)
    share[YOUNG_CODE] = 1.0 - share[:YOUNG_CODE].sum()
    # iid population codes: the stars come out in random order, and writing each
    # population back through sorted indices is cheaper than a permutation
    u = rng.random(n)
    population = np.zeros(n, dtype=np.uint8)
    for c in np.cumsum(share[:-1]):
        population += u >= c

    float_keys = ("log10_age", "mh", "distance_pc", "l_deg", "b_deg", "av", "rv")
    out = {key: np.empty(n) for key in float_keys}
    for code, name in enumerate(POPULATIONS):
        idx = np.flatnonzero(population == code)
        if idx.size == 0:
            continue
        if code == YOUNG_CODE:
            part = _young_stars(idx.size, config, rng)
        else:
            part = _field_stars(name, idx.size, config, rng)
        for key in float_keys:
            out[key][idx] = part[key]

    log10_age = out["log10_age"]
    out["log10_mass"] = _log10_masses(log10_age, config, rng)
    np.maximum(out["av"], 0.0, out=out["av"])
    # beyond 40 e-folding times the disk probability (< 5e-18) is taken as zero
    maybe = np.flatnonzero(log10_age < math.log10(40.0 * config.disk_efold_myr * 1e6))
    p_disk = np.exp(-(10.0 ** log10_age[maybe]) / (config.disk_efold_myr * 1e6))
    with_disk = maybe[rng.random(maybe.size) < p_disk]
    has_disk = np.zeros(n, dtype=bool)
    has_disk[with_disk] = True
    disk_frac = np.zeros(n)
    disk_temp = np.full(n, NO_DISK_TEMP)
    disk_frac[with_disk] = _log_uniform(*config.disk_frac_range, with_disk.size, rng)
    disk_temp[with_disk] = _log_uniform(*config.disk_temp_range_k, with_disk.size, rng)
    out.update(population=population, has_disk=has_disk, disk_frac=disk_frac, disk_temp=disk_temp)
    if config.binaries:
        p_bin = np.clip(0.46 + 0.3 * out["log10_mass"], 0.1, 0.8)
        q = 1.0 - 0.9 * rng.random(n)
        out["mass_ratio"] = np.where(rng.random(n) < p_bin, q, np.nan)
    keys = (*PRIOR_KEYS, "mass_ratio") if config.binaries else PRIOR_KEYS
    return {key: out[key] for key in keys}

"""Survey observation models: footprint, saturation, depth, completeness and noise.

Each survey ysoscale simulates (:data:`SURVEYS`) is a :class:`SurveyModel`: which part of
the sky it covers, the magnitude range it measures in each band, the probability that a
source of a given true magnitude is detected, and the uncertainty the catalog reports.
:func:`observe` pushes true magnitudes (in :data:`~ysoscale.physics.passbands.BAND_IDS`
order) and true parallaxes through every selected survey and returns catalog-like arrays:
NaN wherever a band was not measured, never 0 or 99.

Error law
---------
With ``x = 10**(0.4 * (m - m5))`` (``m5`` = :attr:`SurveyModel.snr5_mag`, the magnitude at
which the signal-to-noise ratio is 5) the noise-to-signal ratio of a point source is

    (N/S)**2 = ((1 - g) * x**2 + g * x) / 25

where the ``x**2`` term is background (sky, read, dark) noise and the ``x`` term is the
source's own photon noise; ``g`` (:attr:`SurveyModel.source_noise_fraction`) is the share
of the variance at ``m5`` that comes from source photons (Ivezić et al. 2019, eq. 5, write
the same law as ``(0.04 - γ) x + γ x**2``). The magnitude error is

    σ(m) = sqrt(floor**2 + (1.0857 * N/S)**2)

so ``σ(m5) ≈ 0.217`` mag (S/N = 5) and ``σ → floor`` for bright sources. The floor
(:attr:`SurveyModel.error_floor`) stands for calibration errors. :func:`observe` draws the
noise with σ at the *true* magnitude and reports σ at the *observed* magnitude, as
catalogs do.

Completeness and saturation
---------------------------
A band is detected with probability ``1 / (1 + exp((m - m_faint) / w))`` (0.5 at
:attr:`SurveyModel.faint_limit`, width ``w`` = :attr:`SurveyModel.completeness_width`)
and with probability 0 when the true magnitude is brighter than
:attr:`SurveyModel.bright_limit`: saturated sources are treated as non-detections in that
band (their catalog photometry is missing or flagged and would be dropped). A source
enters a survey's catalog when it lies in the footprint and at least one of the survey's
:attr:`SurveyModel.detection_bands` is detected; its other bands are kept only where they
were detected themselves, so bands go missing independently near the limit as they do in
real catalogs.

Numbers
-------
All depths, saturation limits and floors below are approximate values as commonly quoted
from the cited papers and documentation, not fits to the catalogs; magnitudes are in the
survey's published system (Vega for Gaia, 2MASS and WISE; AB otherwise).

Example
-------
>>> import numpy as np
>>> from ysoscale.physics.passbands import BAND_IDS
>>> rng = np.random.default_rng(0)
>>> n = 1000
>>> true_mag = np.full((n, len(BAND_IDS)), 17.0)
>>> obs = observe(true_mag, rng.uniform(0, 360, n), rng.uniform(-90, 90, n),
...               np.full(n, 1.0), rng)
>>> obs.mag.shape, obs.detected.shape
((1000, 28), (1000, 7))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ysoscale.physics.passbands import BAND_IDS

__all__ = [
    "SURVEYS",
    "SURVEY_MODELS",
    "Observation",
    "SurveyModel",
    "galactic_to_icrs",
    "gaia_parallax_error",
    "observe",
]

SURVEYS: tuple[str, ...] = ("gaia", "tmass", "wise", "ps1", "sdss", "galex", "skymapper")
"""Survey names in the column order of :attr:`Observation.detected` for the default call."""

_MAG_PER_NSR = 2.5 / math.log(10.0)  # 1.0857 mag of error per unit noise-to-signal ratio
_SNR_AT_M5 = 5.0

Footprint = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# --- sky footprints -------------------------------------------------------------------------


def _all_sky(ra: np.ndarray, dec: np.ndarray, l: np.ndarray, b: np.ndarray) -> np.ndarray:  # noqa: E741
    return np.ones(np.shape(ra), dtype=bool)


def _ps1_footprint(ra: np.ndarray, dec: np.ndarray, l: np.ndarray, b: np.ndarray) -> np.ndarray:  # noqa: E741
    # 3π survey: the sky north of dec = -30 deg (Chambers et al. 2016).
    return np.asarray(dec) > -30.0


def _skymapper_footprint(
    ra: np.ndarray,
    dec: np.ndarray,
    l: np.ndarray,  # noqa: E741
    b: np.ndarray,
) -> np.ndarray:
    # Southern hemisphere; DR4 reaches slightly north of the equator in places (Onken et al.
    # 2024), simplified here to dec < +2 deg.
    return np.asarray(dec) < 2.0


def _galex_footprint(ra: np.ndarray, dec: np.ndarray, l: np.ndarray, b: np.ndarray) -> np.ndarray:  # noqa: E741
    # AIS avoided the Galactic plane and bright-source fields; approximated as |b| > 10 deg
    # (Bianchi et al. 2017 GUVcat_AIS covers ~24,800 deg², mostly at |b| > 10 deg).
    return np.abs(np.asarray(b)) > 10.0


_SEGUE_STRIPE_L = (50.0, 94.0, 110.0, 130.0, 150.0, 178.0, 187.0, 203.0)
_SEGUE_HALF_WIDTH = 1.25
# Stripe edges fall on multiples of 0.25 deg in l, so a 0.25-deg lookup table is exact:
# l0 - 1.25 <= l < l0 + 1.25.
_SEGUE_LUT = np.zeros(4 * 360 + 1, dtype=bool)
for _l0 in _SEGUE_STRIPE_L:
    _SEGUE_LUT[int(4 * (_l0 - _SEGUE_HALF_WIDTH)) : int(4 * (_l0 + _SEGUE_HALF_WIDTH))] = True
del _l0


def _sdss_footprint(ra: np.ndarray, dec: np.ndarray, l: np.ndarray, b: np.ndarray) -> np.ndarray:  # noqa: E741
    # Rough DR9+ imaging footprint: the northern Galactic cap (b > 30, dec > -5), the southern
    # Galactic cap imaging of DR8/BOSS (b < -30, dec > -10, RA within 60 deg of RA = 0),
    # Stripe 82 (|dec| < 1.25, -60 < RA < 60) and 2.5-deg wide SEGUE stripes at constant l
    # crossing the plane (dec > -10). Good to a few hundred deg²; not for selection studies.
    ra = np.asarray(ra)
    dec = np.asarray(dec)
    b = np.asarray(b)
    ra_near_0 = np.abs((ra + 180.0) % 360.0 - 180.0) < 60.0
    ngc = (b > 30.0) & (dec > -5.0)
    sgc = (b < -30.0) & (dec > -10.0) & ra_near_0
    stripe82 = (np.abs(dec) < 1.25) & ra_near_0
    segue = _SEGUE_LUT[(4.0 * (np.asarray(l) % 360.0)).astype(np.intp)] & (dec > -10.0)
    return ngc | sgc | stripe82 | segue


# --- survey model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyModel:
    """Footprint, magnitude limits and error law of one survey.

    Per-band tuples follow the order of :attr:`bands`.

    Parameters
    ----------
    name
        Survey name (one of :data:`SURVEYS` for the shipped models).
    bands
        Band ids (from :data:`~ysoscale.physics.passbands.BAND_IDS`) the survey measures.
    bright_limit
        Saturation limit (mag): sources brighter than this are not detected in the band.
    faint_limit
        Magnitude of 50 % completeness, ≈ the 5σ depth for sky-limited surveys.
    snr5_mag
        Magnitude at which S/N = 5 in the error law; equals :attr:`faint_limit` except where
        detection is not set by S/N (Gaia G, limited by on-board detection near G ≈ 21).
    error_floor
        Calibration floor of the magnitude error (mag).
    source_noise_fraction
        Share ``g`` of the variance at ``snr5_mag`` due to source photon noise (0 ≤ g < 1).
    completeness_width
        Logistic width (mag) of the completeness roll-off at :attr:`faint_limit`.
    detection_bands
        A source enters the catalog if at least one of these bands is detected.
    footprint
        ``f(ra_deg, dec_deg, l_deg, b_deg) -> bool array``; a module-level function so the
        model pickles.
    reference
        Where the numbers come from.

    Examples
    --------
    >>> import numpy as np
    >>> m = SURVEY_MODELS["ps1"]
    >>> err = m.magnitude_error(np.array([[15.0, 15.0, 15.0, 15.0, 15.0]]))
    >>> bool(np.all(err < 0.02))
    True
    """

    name: str
    bands: tuple[str, ...]
    bright_limit: tuple[float, ...]
    faint_limit: tuple[float, ...]
    snr5_mag: tuple[float, ...]
    error_floor: tuple[float, ...]
    source_noise_fraction: tuple[float, ...]
    completeness_width: tuple[float, ...]
    detection_bands: tuple[str, ...]
    footprint: Footprint = field(repr=False)
    reference: str = ""

    def __post_init__(self) -> None:
        n = len(self.bands)
        if n == 0:
            raise ValueError(f"{self.name}: a survey needs at least one band")
        unknown = [b for b in self.bands if b not in BAND_IDS]
        if unknown:
            raise ValueError(f"{self.name}: unknown band ids {unknown}")
        if len(set(self.bands)) != n:
            raise ValueError(f"{self.name}: duplicate bands in {self.bands}")
        for attr in (
            "bright_limit",
            "faint_limit",
            "snr5_mag",
            "error_floor",
            "source_noise_fraction",
            "completeness_width",
        ):
            value = getattr(self, attr)
            if len(value) != n:
                raise ValueError(f"{self.name}: {attr} has {len(value)} entries, need {n}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{self.name}: {attr} must be finite, got {value}")
        if np.any(np.asarray(self.bright_limit) >= np.asarray(self.faint_limit)):
            raise ValueError(f"{self.name}: bright_limit must be brighter than faint_limit")
        if np.any(np.asarray(self.error_floor) <= 0):
            raise ValueError(f"{self.name}: error_floor must be positive")
        g = np.asarray(self.source_noise_fraction)
        if np.any((g < 0) | (g >= 1)):
            raise ValueError(f"{self.name}: source_noise_fraction must lie in [0, 1)")
        if np.any(np.asarray(self.completeness_width) <= 0):
            raise ValueError(f"{self.name}: completeness_width must be positive")
        if not self.detection_bands or any(b not in self.bands for b in self.detection_bands):
            raise ValueError(f"{self.name}: detection_bands must be a non-empty subset of bands")

    @property
    def band_index(self) -> np.ndarray:
        """Column of each band in :data:`~ysoscale.physics.passbands.BAND_IDS`."""
        return np.array([BAND_IDS.index(b) for b in self.bands], dtype=np.intp)

    def in_footprint(
        self,
        ra_deg: np.ndarray,
        dec_deg: np.ndarray,
        l_deg: np.ndarray,
        b_deg: np.ndarray,
    ) -> np.ndarray:
        """Whether each position lies in the survey footprint (bool, shape of ``ra_deg``)."""
        return np.asarray(self.footprint(ra_deg, dec_deg, l_deg, b_deg), dtype=bool)

    def magnitude_error(self, mag: np.ndarray) -> np.ndarray:
        """Magnitude error σ(m) of the error law (module docstring), per band.

        ``mag`` has shape ``(..., len(bands))``; NaN in gives NaN out.
        """
        mag = np.asarray(mag, dtype=np.float64)
        return _error_law(
            mag,
            np.asarray(self.snr5_mag),
            np.asarray(self.source_noise_fraction),
            np.asarray(self.error_floor),
        )

    def detection_probability(self, mag: np.ndarray) -> np.ndarray:
        """Probability that a source of true magnitude ``mag`` is detected, per band.

        Logistic in magnitude, 0.5 at :attr:`faint_limit`; exactly 0 brighter than
        :attr:`bright_limit` (saturation) and for NaN magnitudes.
        ``mag`` has shape ``(..., len(bands))``.
        """
        mag = np.asarray(mag, dtype=np.float64)
        return _detection_probability(
            mag,
            np.asarray(self.bright_limit),
            np.asarray(self.faint_limit),
            np.asarray(self.completeness_width),
        )


def _error_law(
    mag: np.ndarray, m5: np.ndarray, g: np.ndarray, floor: np.ndarray, extra_var=None
) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.exp((0.4 * math.log(10.0)) * (mag - m5))
        # (1.0857 N/S)^2 = (σ5^2) * ((1 - g) x^2 + g x), σ5 = 1.0857 / 5
        var = x * ((1.0 - g) * x + g)
        var *= (_MAG_PER_NSR / _SNR_AT_M5) ** 2
        var += floor * floor
        if extra_var is not None:
            var += extra_var
        return np.sqrt(var, out=var)


def _detection_probability(
    mag: np.ndarray, bright: np.ndarray, faint: np.ndarray, width: np.ndarray
) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        p = 1.0 / (1.0 + np.exp((mag - faint) / width))
    p = np.where(mag >= bright, p, 0.0)
    return np.where(np.isnan(p), 0.0, p).astype(mag.dtype, copy=False)


# --- the shipped models ---------------------------------------------------------------------

_REF_GAIA = (
    "Gaia Collaboration, Vallenari et al. 2023 (DR3); Riello et al. 2021, A&A 649, A3 "
    "(G/BP/RP photometry: σ ≈ 0.3/0.9/0.6 mmag at G<13, 1/12/6 mmag at G=17, "
    "6/108/52 mmag at G=20 for G/BP/RP, as commonly quoted); Lindegren et al. 2021, A&A 649, "
    "A2 (parallax σ ≈ 0.02-0.03 mas at G<15, 0.07 at 17, 0.5 at 20, 1.3 at 21); "
    "completeness G ≈ 3-21 (Fabricius et al. 2021)"
)
_REF_TMASS = (
    "Skrutskie et al. 2006, AJ 131, 1163: 10σ limits J 15.8, H 15.1, Ks 14.3 (so 5σ ≈ "
    "16.5/15.8/15.0); read-1 photometry of bright stars taken here down to ~3 mag; "
    "~0.02 mag calibration floor (approximate)"
)
_REF_WISE = (
    "Cutri et al. 2013, AllWISE Explanatory Supplement: 5σ W1 16.9, W2 16.0, W3 11.5, W4 8.0 "
    "(Vega, typical coverage); saturation W1 8.1, W2 6.7, W3 3.8, W4 -0.4 (approximate)"
)
_REF_PS1 = (
    "Chambers et al. 2016, arXiv:1612.05560 (3π stack 5σ g 23.3 r 23.2 i 23.1 z 22.3 y 21.4; "
    "single-epoch 5σ g 22.0 r 21.8 i 21.5 z 20.9 y 19.7, used here for DR2 mean PSF mags); "
    "Magnier et al. 2020 (saturation ≈ 12-14 mag, ~0.01 mag calibration); approximate"
)
_REF_SDSS = (
    "SDSS DR9+ imaging (Ahn et al. 2012; York et al. 2000): 95 % completeness u 22.0 g 22.2 "
    "r 22.2 i 21.3 z 20.5; saturation ≈ 13-14 mag (u, z ≈ 12-13); footprint rough; approximate"
)
_REF_GALEX = (
    "Bianchi et al. 2017, ApJS 230, 24 (GUVcat AIS, typical depth FUV 19.9, NUV 20.8 AB); "
    "Morrissey et al. 2007 (10 % count-rate nonlinearity FUV ≈ 13.7, NUV ≈ 13.9; zero-point "
    "repeatability 0.05 FUV, 0.03 NUV); approximate"
)
_REF_SKYMAPPER = (
    "Onken et al. 2024, PASA 41, e061 (SkyMapper DR4; Main Survey 5σ ≈ u 20.0 v 20.0 g 21.5 "
    "r 21.5 i 20.5 z 19.5, Shallow Survey reaches ≈ 9 mag); Onken et al. 2019 (DR2); "
    "approximate"
)


def _model(name: str, rows: dict[str, tuple[float, ...]], **kwargs) -> SurveyModel:
    bands = tuple(rows)
    cols = list(zip(*rows.values(), strict=True))
    return SurveyModel(
        name=name,
        bands=bands,
        bright_limit=cols[0],
        faint_limit=cols[1],
        snr5_mag=cols[2],
        error_floor=cols[3],
        source_noise_fraction=cols[4],
        completeness_width=cols[5],
        **kwargs,
    )


# band: (bright, faint, snr5, floor, g, width)
SURVEY_MODELS: dict[str, SurveyModel] = {
    "gaia": _model(
        "gaia",
        {
            # G: detection limit (on-board) ~21; snr5/g fitted to the Riello et al. anchors.
            "gaia_g": (3.0, 21.0, 24.13, 0.0003, 0.0124, 0.2),
            "gaia_bp": (3.0, 20.8, 20.80, 0.0009, 0.0725, 0.2),
            "gaia_rp": (3.0, 20.5, 21.62, 0.0006, 0.0397, 0.2),
        },
        detection_bands=("gaia_g",),
        footprint=_all_sky,
        reference=_REF_GAIA,
    ),
    "tmass": _model(
        "tmass",
        {
            "tmass_j": (3.0, 16.5, 16.5, 0.02, 0.05, 0.15),
            "tmass_h": (3.0, 15.8, 15.8, 0.02, 0.05, 0.15),
            "tmass_ks": (3.0, 15.0, 15.0, 0.02, 0.05, 0.15),
        },
        detection_bands=("tmass_j", "tmass_h", "tmass_ks"),
        footprint=_all_sky,
        reference=_REF_TMASS,
    ),
    "wise": _model(
        "wise",
        {
            "wise_w1": (8.1, 16.9, 16.9, 0.02, 0.05, 0.15),
            "wise_w2": (6.7, 16.0, 16.0, 0.02, 0.05, 0.15),
            "wise_w3": (3.8, 11.5, 11.5, 0.02, 0.05, 0.15),
            "wise_w4": (-0.4, 8.0, 8.0, 0.03, 0.05, 0.15),
        },
        detection_bands=("wise_w1", "wise_w2", "wise_w3", "wise_w4"),
        footprint=_all_sky,
        reference=_REF_WISE,
    ),
    "ps1": _model(
        "ps1",
        {
            "ps1_g": (14.0, 22.0, 22.0, 0.01, 0.05, 0.15),
            "ps1_r": (14.0, 21.8, 21.8, 0.01, 0.05, 0.15),
            "ps1_i": (14.0, 21.5, 21.5, 0.01, 0.05, 0.15),
            "ps1_z": (13.0, 20.9, 20.9, 0.01, 0.05, 0.15),
            "ps1_y": (12.0, 19.7, 19.7, 0.015, 0.05, 0.15),
        },
        detection_bands=("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"),
        footprint=_ps1_footprint,
        reference=_REF_PS1,
    ),
    "sdss": _model(
        "sdss",
        {
            "sdss_u": (13.0, 22.0, 22.0, 0.02, 0.05, 0.15),
            "sdss_g": (14.0, 22.2, 22.2, 0.01, 0.05, 0.15),
            "sdss_r": (14.0, 22.2, 22.2, 0.01, 0.05, 0.15),
            "sdss_i": (14.0, 21.3, 21.3, 0.01, 0.05, 0.15),
            "sdss_z": (12.5, 20.5, 20.5, 0.015, 0.05, 0.15),
        },
        detection_bands=("sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z"),
        footprint=_sdss_footprint,
        reference=_REF_SDSS,
    ),
    "galex": _model(
        "galex",
        {
            # Photon counting, no sky-limited regime: more source noise than CCD surveys.
            "galex_fuv": (13.7, 19.9, 19.9, 0.05, 0.3, 0.15),
            "galex_nuv": (13.9, 20.8, 20.8, 0.03, 0.3, 0.15),
        },
        detection_bands=("galex_fuv", "galex_nuv"),
        footprint=_galex_footprint,
        reference=_REF_GALEX,
    ),
    "skymapper": _model(
        "skymapper",
        {
            "skymapper_u": (9.0, 20.0, 20.0, 0.03, 0.05, 0.15),
            "skymapper_v": (9.0, 20.0, 20.0, 0.03, 0.05, 0.15),
            "skymapper_g": (9.0, 21.5, 21.5, 0.01, 0.05, 0.15),
            "skymapper_r": (9.0, 21.5, 21.5, 0.01, 0.05, 0.15),
            "skymapper_i": (9.0, 20.5, 20.5, 0.01, 0.05, 0.15),
            "skymapper_z": (9.0, 19.5, 19.5, 0.015, 0.05, 0.15),
        },
        detection_bands=(
            "skymapper_u",
            "skymapper_v",
            "skymapper_g",
            "skymapper_r",
            "skymapper_i",
            "skymapper_z",
        ),
        footprint=_skymapper_footprint,
        reference=_REF_SKYMAPPER,
    ),
}
"""The shipped survey models, keyed by the names in :data:`SURVEYS`."""


# --- Gaia parallax --------------------------------------------------------------------------

# Lindegren et al. 2021 (EDR3 = DR3 astrometry), five-parameter solutions, as commonly quoted:
# 0.02-0.03 mas at G < 15, 0.07 mas at G = 17, 0.5 mas at G = 20, 1.3 mas at G = 21.
_PLX_G = np.array([13.0, 15.0, 17.0, 20.0, 21.0])
_PLX_LOG_SIGMA = np.log(np.array([0.02, 0.03, 0.07, 0.5, 1.3]))
_PLX_FAINT_SLOPE = (_PLX_LOG_SIGMA[-1] - _PLX_LOG_SIGMA[-2]) / (_PLX_G[-1] - _PLX_G[-2])


def gaia_parallax_error(g_mag: np.ndarray) -> np.ndarray:
    """Gaia DR3 parallax uncertainty (mas) as a function of G.

    Linear interpolation of log σ in G through the Lindegren et al. (2021) values above;
    constant (0.02 mas) brighter than G = 13, extrapolated with the G = 20-21 slope fainter
    than 21. NaN in gives NaN out.

    Examples
    --------
    >>> float(gaia_parallax_error(np.array([17.0]))[0])  # doctest: +ELLIPSIS
    0.07...
    """
    g = np.asarray(g_mag, dtype=np.float64)
    log_sigma = np.interp(g, _PLX_G, _PLX_LOG_SIGMA)
    faint = g > _PLX_G[-1]
    log_sigma = np.where(faint, _PLX_LOG_SIGMA[-1] + _PLX_FAINT_SLOPE * (g - _PLX_G[-1]), log_sigma)
    return np.exp(log_sigma)


# --- coordinates ----------------------------------------------------------------------------


GALACTIC_TO_ICRS = np.array([
    [-0.05487565771259218, 0.49410943719272665, -0.8676661375596585],
    [-0.8734370519556162, -0.4448297212232957, -0.19807633727300056],
    [-0.4838350736167156, 0.7469821839866677, 0.45598381368730206],
])  # fmt: skip
"""Rotation taking Galactic unit vectors to ICRS ones: astropy's Galactic -> ICRS transform
(Galactic -> FK5 J2000 -> ICRS frame bias, a chain of constant rotations) evaluated on the
Galactic basis. Kept as a constant so that simulation workers need no astropy (GPU nodes
and slim containers lack it); ``tests/simulate`` checks it against astropy to 1e-15."""
GALACTIC_TO_ICRS.setflags(write=False)


def icrs_to_galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) to Galactic (l, b), all in degrees; l in [0, 360): the inverse of
    :func:`galactic_to_icrs` (the transposed rotation).

    Examples
    --------
    >>> l, b = icrs_to_galactic(*galactic_to_icrs(np.array([30.0]), np.array([-5.0])))
    >>> round(float(l[0]), 9), round(float(b[0]), 9)
    (30.0, -5.0)
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    x, y, z = np.cos(ra) * np.cos(dec), np.sin(ra) * np.cos(dec), np.sin(dec)
    m = GALACTIC_TO_ICRS
    gx = m[0, 0] * x + m[1, 0] * y + m[2, 0] * z
    gy = m[0, 1] * x + m[1, 1] * y + m[2, 1] * z
    gz = m[0, 2] * x + m[1, 2] * y + m[2, 2] * z
    b = np.degrees(np.arctan2(gz, np.hypot(gx, gy)))
    l_deg = np.degrees(np.arctan2(gy, gx)) % 360.0
    l_deg[l_deg >= 360.0] = 0.0
    return l_deg, b


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) to ICRS (ra, dec), all in degrees; ra in [0, 360).

    Uses the constant rotation :data:`GALACTIC_TO_ICRS` (astropy's transform), so converting
    millions of points costs a few array passes and no astropy overhead.

    Examples
    --------
    >>> ra, dec = galactic_to_icrs(np.array([0.0]), np.array([0.0]))
    >>> round(float(ra[0]), 3), round(float(dec[0]), 3)
    (266.405, -28.936)
    """
    l_rad = np.radians(np.asarray(l_deg, dtype=np.float64))
    b_rad = np.radians(np.asarray(b_deg, dtype=np.float64))
    cos_b = np.cos(b_rad)
    gx = np.cos(l_rad)
    gx *= cos_b
    gy = np.sin(l_rad)
    gy *= cos_b
    gz = np.sin(b_rad)
    m = GALACTIC_TO_ICRS
    x = m[0, 0] * gx + m[0, 1] * gy + m[0, 2] * gz
    y = m[1, 0] * gx + m[1, 1] * gy + m[1, 2] * gz
    z = m[2, 0] * gx + m[2, 1] * gy + m[2, 2] * gz
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    ra = np.degrees(np.arctan2(y, x, out=x), out=x)
    ra += np.where(ra < 0.0, 360.0, 0.0)
    ra[ra >= 360.0] = 0.0  # -1e-15 + 360 rounds to 360
    return ra, dec


# --- observation ----------------------------------------------------------------------------


@dataclass
class Observation:
    """Catalog-like result of :func:`observe` for ``n`` stars.

    Attributes
    ----------
    mag, mag_err
        ``(n, 28)`` float32 in :data:`~ysoscale.physics.passbands.BAND_IDS` order; NaN where
        the band was not observed (out of footprint, not detected, saturated, survey not
        selected, or no true magnitude), never 0 or 99.
    parallax, parallax_error
        ``(n,)`` float32, mas; NaN without a Gaia G detection.
    detected
        ``(n, len(surveys))`` bool: the star is in that survey's catalog.
    surveys
        Survey names of the columns of :attr:`detected`.
    """

    mag: np.ndarray
    mag_err: np.ndarray
    parallax: np.ndarray
    parallax_error: np.ndarray
    detected: np.ndarray
    surveys: tuple[str, ...] = SURVEYS

    @property
    def observed(self) -> np.ndarray:
        """``(n, 28)`` bool: the band has a measurement."""
        return np.isfinite(self.mag)


_CHUNK = 16384
"""Stars per block inside :func:`observe`: keeps the (block, 28) work arrays in cache. Part of
the random stream's layout, so changing it changes the draws for a given seed."""

_SIGMA5_SQ = (_MAG_PER_NSR / _SNR_AT_M5) ** 2
_LN10_04 = 0.4 * math.log(10.0)


@dataclass(frozen=True)
class _BandTable:
    """Per-band parameters of a set of surveys laid out over all of BAND_IDS (NaN = unused)."""

    bright: np.ndarray
    faint: np.ndarray
    inv_width: np.ndarray
    snr5: np.ndarray
    coef_x2: np.ndarray  # (1 - g) σ5²
    coef_x: np.ndarray  # g σ5²
    floor_sq: np.ndarray
    survey_of_band: np.ndarray  # (28,) index of the survey measuring each band; len(surveys) = none
    detection_cols: tuple[np.ndarray, ...]  # per survey: columns of its detection bands


@functools.lru_cache(maxsize=32)
def _band_table(surveys: tuple[str, ...]) -> _BandTable:
    nb = len(BAND_IDS)
    par = np.full((7, nb), np.nan, dtype=np.float64)
    survey_of_band = np.full(nb, len(surveys), dtype=np.intp)
    det_cols, seen = [], set()
    for i, name in enumerate(surveys):
        m = SURVEY_MODELS[name]
        idx = [BAND_IDS.index(b) for b in m.bands]
        if seen.intersection(idx):
            raise ValueError(f"surveys {surveys} measure the same band twice")
        seen.update(idx)
        g = np.asarray(m.source_noise_fraction)
        par[0, idx] = m.bright_limit
        par[1, idx] = m.faint_limit
        par[2, idx] = 1.0 / np.asarray(m.completeness_width)
        par[3, idx] = m.snr5_mag
        par[4, idx] = (1.0 - g) * _SIGMA5_SQ
        par[5, idx] = g * _SIGMA5_SQ
        par[6, idx] = np.square(m.error_floor)
        survey_of_band[idx] = i
        det_cols.append(np.array([BAND_IDS.index(b) for b in m.detection_bands], dtype=np.intp))
    par = par.astype(np.float32)
    for row in par:
        row.setflags(write=False)
    survey_of_band.setflags(write=False)
    return _BandTable(*par, survey_of_band=survey_of_band, detection_cols=tuple(det_cols))


def _sigma_into(
    mag: np.ndarray,
    table: _BandTable,
    extra_var: np.ndarray | None,
    out: np.ndarray,
    tmp: np.ndarray,
) -> np.ndarray:
    """The error law of the module docstring on float32 work arrays, written to ``out``."""
    np.subtract(mag, table.snr5, out=out)
    out *= np.float32(_LN10_04)
    np.exp(out, out=out)  # x = 10**(0.4 (m - m5))
    np.multiply(out, table.coef_x2, out=tmp)
    tmp += table.coef_x
    out *= tmp
    out += table.floor_sq
    if extra_var is not None:
        out += extra_var
    return np.sqrt(out, out=out)


def _observe_block(
    true_mag: np.ndarray,
    l_deg: np.ndarray,
    b_deg: np.ndarray,
    extra_var: np.ndarray | None,
    unsaturated: np.ndarray | None,
    rng: np.random.Generator,
    surveys: tuple[str, ...],
    table: _BandTable,
    mag_out: np.ndarray,
    err_out: np.ndarray,
    detected_out: np.ndarray,
    z_plx_out: np.ndarray,
) -> None:
    """Observe one block of stars, writing into views of the output arrays."""
    shape = true_mag.shape
    m = true_mag.astype(np.float32, copy=False)
    u = rng.random(shape, dtype=np.float32)
    z = rng.standard_normal(shape, dtype=np.float32)
    rng.standard_normal(out=z_plx_out, dtype=np.float32)

    # Detection: u < 1 / (1 + exp((m - faint) / w))  <=>  u exp(.) < 1 - u; NaN -> False.
    t = np.subtract(m, table.faint, out=err_out)  # the output views double as scratch
    t *= table.inv_width
    np.exp(t, out=t)
    t *= u
    np.subtract(np.float32(1.0), u, out=u)
    det = np.less(t, u)
    not_saturated = np.greater_equal(m, table.bright, out=np.empty(shape, dtype=bool))
    if unsaturated is not None:  # stars measured by a bright-star survey on this system
        not_saturated |= unsaturated[:, None] & np.isfinite(m)
    det &= not_saturated

    ra, dec = galactic_to_icrs(l_deg, b_deg)
    hit = np.zeros((shape[0], len(surveys) + 1), dtype=bool)  # last column: no survey
    for i, name in enumerate(surveys):
        np.any(det[:, table.detection_cols[i]], axis=1, out=hit[:, i])
        hit[:, i] &= SURVEY_MODELS[name].in_footprint(ra, dec, l_deg, b_deg)
    detected_out[...] = hit[:, :-1]
    det &= hit[:, table.survey_of_band]

    # 0 / 1 = 0 and 0 / 0 = NaN: true magnitudes masked to NaN where not observed, so the
    # NaN flows through the noise and the error law (much faster than masked copies).
    masked = np.divide(np.float32(0.0), det.view(np.uint8), out=mag_out, dtype=np.float32)
    masked += m
    _sigma_into(masked, table, extra_var, out=err_out, tmp=u)
    z *= err_out
    masked += z  # observed magnitudes, in mag_out
    _sigma_into(masked, table, extra_var, out=err_out, tmp=u)


def observe(
    true_mag: np.ndarray,
    l_deg: np.ndarray,
    b_deg: np.ndarray,
    true_parallax_mas: np.ndarray,
    rng: np.random.Generator,
    *,
    surveys: Sequence[str] = SURVEYS,
    variability: np.ndarray | None = None,
    unsaturated: np.ndarray | None = None,
) -> Observation:
    """Observe true magnitudes and parallaxes with the selected surveys.

    For each star and survey: the star must lie in the footprint; each band is detected
    with :meth:`SurveyModel.detection_probability` of its true magnitude (one Bernoulli
    draw); the observed magnitude is ``true + N(0, σ(true))``, the reported error is
    ``σ(observed)``; the survey keeps the star if any of its detection bands was detected
    and then reports only the detected bands. The Gaia parallax is ``true + N(0, σ_ϖ(G))``
    (:func:`gaia_parallax_error`, drawn at true G, reported at observed G) for stars with
    a Gaia G measurement; every such star is given a five-parameter solution (DR3 has
    position-only solutions for ~20 % of its mostly faint sources, not modelled here).

    Stars are processed in blocks of :data:`_CHUNK` with whole-array numpy operations, so
    the result is a deterministic function of the generator's state (and the block size).

    Parameters
    ----------
    true_mag
        ``(n, 28)`` true magnitudes in BAND_IDS order; NaN = not computable (never observed).
    l_deg, b_deg
        ``(n,)`` Galactic coordinates (deg).
    true_parallax_mas
        ``(n,)`` true parallaxes (mas).
    rng
        Source of all random draws.
    surveys
        Surveys to simulate (distinct names from :data:`SURVEYS`); bands of other surveys
        are NaN. :attr:`Observation.detected` has one column per entry, in this order.
    variability
        Optional ``(n,)`` extra magnitude scatter (mag), e.g. 0.05-0.3 for young stars. It
        is added in quadrature both to the noise drawn and to the reported error of every
        observed band, mimicking how variability inflates mean-magnitude uncertainties in
        multi-epoch catalogs. It changes neither detection nor the parallax.
    unsaturated
        Optional ``(n,)`` bool: stars for which no band saturates. Catalogs of bright stars
        on a survey's system (the KIC's griz on SDSS, APASS, SkyMapper's shallow survey)
        report magnitudes brighter than the survey's own saturation limit; a training set
        that never shows such magnitudes leaves an estimator lost on them (issue 4, the
        Kepler giants at g = 10-13). Default: every star saturates as the survey does.

    Returns
    -------
    Observation

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> m = np.full((4, 28), 12.0)
    >>> obs = observe(m, np.zeros(4), np.full(4, 60.0), np.ones(4), rng, surveys=("gaia",))
    >>> bool(np.isnan(obs.mag[:, 21:]).all()), bool(np.isfinite(obs.parallax).all())
    (True, True)
    """
    surveys = tuple(surveys)
    unknown = [s for s in surveys if s not in SURVEY_MODELS]
    if unknown:
        raise ValueError(f"unknown surveys {unknown}; known: {tuple(SURVEY_MODELS)}")
    if len(set(surveys)) != len(surveys):
        raise ValueError(f"duplicate surveys in {surveys}")
    true_mag = np.asarray(true_mag)
    if true_mag.ndim != 2 or true_mag.shape[1] != len(BAND_IDS):
        raise ValueError(f"true_mag must have shape (n, {len(BAND_IDS)}), got {true_mag.shape}")
    n = true_mag.shape[0]
    l_deg = np.asarray(l_deg, dtype=np.float64)
    b_deg = np.asarray(b_deg, dtype=np.float64)
    true_parallax_mas = np.asarray(true_parallax_mas, dtype=np.float64)
    for name, arr in (("l_deg", l_deg), ("b_deg", b_deg), ("true_parallax_mas", true_parallax_mas)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    extra_var = None
    if variability is not None:
        variability = np.asarray(variability, dtype=np.float32)
        if variability.shape != (n,):
            raise ValueError(f"variability must have shape ({n},), got {variability.shape}")
        if not np.all(variability >= 0):
            raise ValueError("variability must be non-negative and finite")
        extra_var = np.square(variability)[:, None]

    if unsaturated is not None:
        unsaturated = np.asarray(unsaturated, dtype=bool)
        if unsaturated.shape != (n,):
            raise ValueError(f"unsaturated must have shape ({n},), got {unsaturated.shape}")
    table = _band_table(surveys)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _observe(
            true_mag, l_deg, b_deg, true_parallax_mas, extra_var, unsaturated, rng, surveys, table
        )


def _observe(
    true_mag: np.ndarray,
    l_deg: np.ndarray,
    b_deg: np.ndarray,
    true_parallax_mas: np.ndarray,
    extra_var: np.ndarray | None,
    unsaturated: np.ndarray | None,
    rng: np.random.Generator,
    surveys: tuple[str, ...],
    table: _BandTable,
) -> Observation:
    n = true_mag.shape[0]
    mag_out = np.empty((n, len(BAND_IDS)), dtype=np.float32)
    err_out = np.empty((n, len(BAND_IDS)), dtype=np.float32)
    detected = np.zeros((n, len(surveys)), dtype=bool)
    z_plx = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        _observe_block(
            true_mag[sl],
            l_deg[sl],
            b_deg[sl],
            None if extra_var is None else extra_var[sl],
            None if unsaturated is None else unsaturated[sl],
            rng,
            surveys,
            table,
            mag_out[sl],
            err_out[sl],
            detected[sl],
            z_plx[sl],
        )

    parallax = np.full(n, np.nan, dtype=np.float32)
    parallax_error = np.full(n, np.nan, dtype=np.float32)
    g_col = BAND_IDS.index("gaia_g")
    has_g = np.isfinite(mag_out[:, g_col])
    if has_g.any():
        g_true = true_mag[has_g, g_col].astype(np.float64)
        parallax[has_g] = true_parallax_mas[has_g] + z_plx[has_g] * gaia_parallax_error(g_true)
        parallax_error[has_g] = gaia_parallax_error(mag_out[has_g, g_col])
    return Observation(mag_out, err_out, parallax, parallax_error, detected, surveys)

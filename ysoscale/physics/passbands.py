"""Passbands of the canonical bands, their magnitude systems and photon-counting integration.

Every band ysoscale knows has a canonical id (see :data:`BAND_IDS`). The order of
:data:`BAND_IDS` is the token index of each band in the estimators and never changes
once released; new bands are appended and :data:`BAND_LIST_VERSION` is raised.

Curves come from pyphot's filter library (GALEX, SDSS, Pan-STARRS1, SkyMapper, 2MASS,
WISE relative spectral responses) and from speclite (Gaia DR3 G/BP/RP, the EDR3/DR3
passbands of Riello et al. 2021). All curves are photon-counting responses, so the
mean flux density a band measures is

    <F_lambda> = ∫ F_lambda(λ) T(λ) λ dλ / ∫ T(λ) λ dλ

and a magnitude is ``-2.5 log10(<F_lambda> / <F_ref>) + m_ref`` with the reference
spectrum of the band's published system: AB (3631 Jy, Oke & Gunn 1983) for GALEX,
SDSS, PS1 and SkyMapper; Vega for Gaia, 2MASS and WISE, with the CALSPEC
``alpha_lyr_stis_011`` spectrum (Bohlin et al. 2020) that pyphot ships and the
magnitude each survey assigns to Vega (``vega_mag``).

Integration treats a sampled spectrum as piecewise linear in wavelength and is exact
for that interpolant up to the subdivision of each interval (:func:`band_flux_matrix`),
so a whole grid of spectra is integrated by one matrix product.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BAND_LIST_VERSION = 1
"""Version of :data:`BAND_IDS`; raise it when bands are appended."""

BAND_IDS: tuple[str, ...] = (
    "galex_fuv",
    "galex_nuv",
    "sdss_u",
    "sdss_g",
    "sdss_r",
    "sdss_i",
    "sdss_z",
    "ps1_g",
    "ps1_r",
    "ps1_i",
    "ps1_z",
    "ps1_y",
    "skymapper_u",
    "skymapper_v",
    "skymapper_g",
    "skymapper_r",
    "skymapper_i",
    "skymapper_z",
    "gaia_g",
    "gaia_bp",
    "gaia_rp",
    "tmass_j",
    "tmass_h",
    "tmass_ks",
    "wise_w1",
    "wise_w2",
    "wise_w3",
    "wise_w4",
)
"""Canonical band ids in token order (ARCHITECTURE.md)."""

SPEED_OF_LIGHT_AA_S = 2.99792458e18
AB_ZERO_POINT_JY = 3631.0

# band id -> (survey, system, package, curve name in that package, magnitude of Vega)
# Vega magnitudes: Gaia DR3 VEGAMAG puts Vega at 0.023 in G, BP, RP (Riello et al. 2021,
# following Evans et al. 2018); 2MASS (Cohen et al. 2003) and WISE (Wright et al. 2010,
# Jarrett et al. 2011) define Vega as 0 mag.
_CATALOG: dict[str, tuple[str, str, str, str, float]] = {
    "galex_fuv": ("GALEX", "AB", "pyphot", "GALEX_FUV", 0.0),
    "galex_nuv": ("GALEX", "AB", "pyphot", "GALEX_NUV", 0.0),
    **{f"sdss_{b}": ("SDSS", "AB", "pyphot", f"SDSS_{b}", 0.0) for b in "ugriz"},
    **{f"ps1_{b}": ("PS1", "AB", "pyphot", f"PS1_{b}", 0.0) for b in "grizy"},
    **{f"skymapper_{b}": ("SkyMapper", "AB", "pyphot", f"SkyMapper_{b}", 0.0) for b in "uvgriz"},
    "gaia_g": ("Gaia DR3", "Vega", "speclite", "gaiadr3-G", 0.023),
    "gaia_bp": ("Gaia DR3", "Vega", "speclite", "gaiadr3-BP", 0.023),
    "gaia_rp": ("Gaia DR3", "Vega", "speclite", "gaiadr3-RP", 0.023),
    "tmass_j": ("2MASS", "Vega", "pyphot", "2MASS_J", 0.0),
    "tmass_h": ("2MASS", "Vega", "pyphot", "2MASS_H", 0.0),
    "tmass_ks": ("2MASS", "Vega", "pyphot", "2MASS_Ks", 0.0),
    **{f"wise_w{i}": ("AllWISE", "Vega", "pyphot", f"WISE_RSR_W{i}", 0.0) for i in range(1, 5)},
}

VEGA_FLAVOR = "stis_011"


@dataclass(frozen=True, eq=False)
class Band:
    """One photometric band: its curve, magnitude system and zero point.

    Attributes
    ----------
    id : str
        Canonical band id, e.g. ``"gaia_g"``.
    survey : str
        Survey that publishes magnitudes in this band.
    system : {"AB", "Vega"}
        Magnitude system of the survey's published magnitudes.
    wavelength : numpy.ndarray
        Wavelengths of the curve in Å, increasing.
    transmission : numpy.ndarray
        Photon-counting response at ``wavelength`` (peak normalised to 1).
    source_package, source_name : str
        Where the curve comes from.
    vega_mag : float
        Magnitude of Vega in this band (Vega systems only; 0 for AB).
    zero_point_flux : float
        Photon-weighted mean F_lambda (erg s⁻¹ cm⁻² Å⁻¹) of a 0-mag source.
    """

    id: str
    survey: str
    system: str
    wavelength: np.ndarray
    transmission: np.ndarray
    source_package: str
    source_name: str
    vega_mag: float
    zero_point_flux: float

    @property
    def pivot_wavelength(self) -> float:
        """Pivot wavelength in Å, sqrt(∫T λ dλ / ∫T/λ dλ)."""
        lam, t = self.wavelength, self.transmission
        return float(np.sqrt(np.trapezoid(t * lam, lam) / np.trapezoid(t / lam, lam)))

    @property
    def wavelength_range(self) -> tuple[float, float]:
        """Smallest and largest wavelength (Å) where the response is above 0.1 % of peak."""
        inside = self.wavelength[self.transmission > 1e-3]
        return float(inside[0]), float(inside[-1])

    def describe(self) -> dict[str, object]:
        """Plain-dict summary (id, survey, system, pivot wavelength, source package)."""
        return {
            "id": self.id,
            "survey": self.survey,
            "system": self.system,
            "pivot_wavelength_aa": round(self.pivot_wavelength, 2),
            "zero_point_flux": self.zero_point_flux,
            "vega_mag": self.vega_mag,
            "source_package": self.source_package,
            "source_name": self.source_name,
        }


def _read_curve(package: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (wavelength Å, photon response) of one curve from pyphot or speclite."""
    if package == "pyphot":
        curve = _pyphot_library()[name]
        if curve.dtype != "photon":
            raise ValueError(f"pyphot curve {name} is {curve.dtype}-counting, expected photon")
        lam = np.asarray(curve.wavelength.to("AA").value, dtype=float)
        trans = np.asarray(curve.transmit, dtype=float)
    elif package == "speclite":
        import speclite.filters

        curve = speclite.filters.load_filter(name)
        lam = np.asarray(curve.wavelength, dtype=float)
        trans = np.asarray(curve.response, dtype=float)
    else:  # pragma: no cover - the catalog names only these two
        raise ValueError(f"unknown passband package {package!r}")
    order = np.argsort(lam)
    lam, trans = lam[order], np.clip(trans[order], 0.0, None)
    return lam, trans / trans.max()


@functools.cache
def _pyphot_library():  # noqa: ANN202 - pyphot's library type
    import pyphot

    return pyphot.get_library()


@functools.cache
def vega_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """Return the CALSPEC Vega spectrum pyphot ships: (wavelength Å, F_lambda erg/s/cm²/Å)."""
    import pyphot

    vega = pyphot.Vega(flavor=VEGA_FLAVOR)
    lam = np.asarray(vega.wavelength.to("AA").value, dtype=float)
    flux = np.asarray(vega.flux.to("erg / (s cm2 AA)").value, dtype=float)
    return lam, flux


def ab_reference_flux(wavelength_aa: np.ndarray) -> np.ndarray:
    """F_lambda (erg/s/cm²/Å) of a flat 3631 Jy (AB = 0) source at ``wavelength_aa``."""
    return AB_ZERO_POINT_JY * 1e-23 * SPEED_OF_LIGHT_AA_S / np.asarray(wavelength_aa) ** 2


def _band_mean_on_own_grid(
    lam: np.ndarray, trans: np.ndarray, flux_of: Callable[[np.ndarray], np.ndarray]
) -> float:
    fine = _subdivide(lam, 8)
    t = np.interp(fine, lam, trans)
    return float(np.trapezoid(flux_of(fine) * t * fine, fine) / np.trapezoid(t * fine, fine))


@functools.cache
def _build_band(band_id: str) -> Band:
    survey, system, package, name, vega_mag = _CATALOG[band_id]
    lam, trans = _read_curve(package, name)
    if system == "AB":
        zero_point = _band_mean_on_own_grid(lam, trans, ab_reference_flux)
    else:
        vlam, vflux = vega_spectrum()
        if lam[0] < vlam[0] or lam[-1] > vlam[-1]:
            raise ValueError(f"Vega spectrum does not cover band {band_id}")
        vega_mean = _band_mean_on_own_grid(lam, trans, lambda x: np.interp(x, vlam, vflux))
        zero_point = vega_mean * 10 ** (0.4 * vega_mag)
    return Band(
        id=band_id,
        survey=survey,
        system=system,
        wavelength=lam,
        transmission=trans,
        source_package=package,
        source_name=name,
        vega_mag=vega_mag,
        zero_point_flux=zero_point,
    )


def validate_band_ids(ids: Sequence[str]) -> tuple[str, ...]:
    """Return ``ids`` as a tuple, raising a ValueError that names any unknown band id."""
    if isinstance(ids, str):
        ids = [part.strip() for part in ids.split(",") if part.strip()]
    unknown = [band for band in ids if band not in _CATALOG]
    if unknown:
        raise ValueError(f"unknown band id(s) {unknown}; known bands: {', '.join(BAND_IDS)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate band ids in {list(ids)}")
    if not ids:
        raise ValueError("no bands given")
    return tuple(ids)


def get_bands(ids: Sequence[str] | None = None) -> tuple[Band, ...]:
    """Return the :class:`Band` objects for ``ids`` (default: all of :data:`BAND_IDS`).

    Examples
    --------
    >>> g, ks = get_bands(["gaia_g", "tmass_ks"])
    >>> g.system, ks.system
    ('Vega', 'Vega')
    >>> 6000 < g.pivot_wavelength < 6300
    True
    """
    return tuple(_build_band(band) for band in validate_band_ids(ids or BAND_IDS))


def _subdivide(knots: np.ndarray, parts: int) -> np.ndarray:
    steps = np.linspace(0.0, 1.0, parts, endpoint=False)
    inner = knots[:-1, None] + np.diff(knots)[:, None] * steps[None, :]
    return np.concatenate([inner.ravel(), knots[-1:]])


def band_flux_matrix(
    wavelength_aa: np.ndarray, bands: Sequence[Band], *, subdivide: int = 4
) -> np.ndarray:
    """Matrix ``W`` with ``spectrum @ W`` = photon-weighted mean F_lambda in each band.

    The spectrum is taken as piecewise linear between its samples; the product with the
    (piecewise-linear) response is integrated by the trapezoid rule on the union of both
    knot sets, each interval split into ``subdivide`` parts.

    Parameters
    ----------
    wavelength_aa : numpy.ndarray
        Increasing sample wavelengths (Å) of the spectra that will be integrated.
    bands : sequence of Band

    Returns
    -------
    numpy.ndarray
        Shape ``(n_wavelength, n_band)``.

    Raises
    ------
    ValueError
        If a band's response extends beyond the sampled wavelength range.

    Examples
    --------
    >>> lam = np.geomspace(3000, 12000, 2000)
    >>> (g,) = get_bands(["gaia_g"])
    >>> w = band_flux_matrix(lam, [g])
    >>> bool(np.isclose((np.ones_like(lam) @ w)[0], 1.0))
    True
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    if lam.ndim != 1 or np.any(np.diff(lam) <= 0):
        raise ValueError("wavelength_aa must be one-dimensional and strictly increasing")
    matrix = np.zeros((lam.size, len(bands)))
    for column, band in enumerate(bands):
        lo, hi = band.wavelength_range
        if lo < lam[0] or hi > lam[-1]:
            raise ValueError(
                f"band {band.id} ({lo:.0f}-{hi:.0f} Å) is not covered by the spectrum "
                f"({lam[0]:.0f}-{lam[-1]:.0f} Å)"
            )
        inside = lam[(lam > band.wavelength[0]) & (lam < band.wavelength[-1])]
        knots = np.union1d(band.wavelength, inside)
        fine = _subdivide(knots, subdivide)
        response = np.interp(fine, band.wavelength, band.transmission) * fine
        weights = np.zeros_like(fine)
        dx = np.diff(fine)
        weights[:-1] += 0.5 * dx
        weights[1:] += 0.5 * dx
        weights *= response
        weights /= weights.sum()
        # scatter each fine point's weight onto its two neighbouring spectrum samples
        right = np.clip(np.searchsorted(lam, fine, side="right"), 1, lam.size - 1)
        left = right - 1
        frac = (fine - lam[left]) / (lam[right] - lam[left])
        np.add.at(matrix[:, column], left, weights * (1 - frac))
        np.add.at(matrix[:, column], right, weights * frac)
    return matrix


def zero_point_fluxes(bands: Sequence[Band]) -> np.ndarray:
    """Zero-point fluxes of ``bands`` as an array (erg/s/cm²/Å)."""
    return np.array([band.zero_point_flux for band in bands])


def synthetic_magnitudes(
    wavelength_aa: np.ndarray, flux_lambda: np.ndarray, bands: Sequence[Band]
) -> np.ndarray:
    """Magnitudes of spectra ``flux_lambda[..., n_wavelength]`` in each band's own system.

    Examples
    --------
    >>> lam, flux = vega_spectrum()
    >>> keep = (lam > 3000) & (lam < 30000)
    >>> mags = synthetic_magnitudes(lam[keep], flux[keep], get_bands(["tmass_j", "gaia_g"]))
    >>> np.round(mags, 3).tolist()
    [0.0, 0.023]
    """
    matrix = band_flux_matrix(wavelength_aa, bands)
    mean_flux = np.asarray(flux_lambda) @ matrix
    with np.errstate(divide="ignore"):
        return -2.5 * np.log10(mean_flux / zero_point_fluxes(bands))

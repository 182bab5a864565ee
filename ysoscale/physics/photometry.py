"""The photometry grid: every model spectrum × extinction × band, integrated once.

``build_photometry_grid`` integrates each spectrum of a converted SEDFit library
(:mod:`ysoscale.physics.spectra`), reddened by an extinction law
(:mod:`ysoscale.physics.extinction`) at each (A_V, R_V) node, through each passband
(:mod:`ysoscale.physics.passbands`). Alongside each magnitude it stores the exact
derivative dm/dA_V (the band-averaged A_λ/A_V of the reddened spectrum), so the
forward model interpolates along A_V with cubic Hermite polynomials: magnitudes curve
noticeably with A_V in broad bands (the band's effective wavelength moves redward), and
value-plus-slope interpolation follows that curvature with few nodes.

Magnitudes are *surface* magnitudes: those of a star of radius R seen from distance d
are ``mag - 5 log10(R / d)``. Each spectrum is scaled to carry σT⁴ (see
``bolometric_scale`` in :mod:`ysoscale.physics.spectra`).

A blackbody table for circumstellar disks, magnitudes per unit bolometric flux at
each (disk temperature, A_V, R_V) node, is stored in the same dataset.

The store lives in the cache directory with a content hash of every input (spectra,
passbands, extinction law and nodes), so ``ysoscale grid build`` twice is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ysoscale.cache import cache_dir, cached_zarr, content_hash
from ysoscale.physics.extinction import DEFAULT_LAW, extinction_curve, law_wavelength_range
from ysoscale.physics.passbands import (
    BAND_IDS,
    band_flux_matrix,
    get_bands,
    validate_band_ids,
    zero_point_fluxes,
)
from ysoscale.physics.spectra import (
    STEFAN_BOLTZMANN_CGS,
    load_spectral_grid,
    planck_lambda,
    spectral_grid_hash,
)

BUILD_VERSION = 2
LN10 = math.log(10.0)

DEFAULT_AV_NODES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0)
# About evenly spaced in 1/R_V (steps 0.021-0.034), with 3.1 a node. The R_V direction is
# the grid's only large interpolation error: at high A_V a band magnitude is a log-sum of
# 10^(-0.4 A_V k(lambda, R_V)) over the band, which curves in 1/R_V as A_V² × the spread of
# k across the band, most in GALEX. With the earlier 6 nodes (steps up to 0.062) GALEX FUV
# was off direct integration by 0.087 mag at the 99th percentile; with these 11, 0.028
# (tests/physics/test_photometry.py prints the figures).
DEFAULT_RV_NODES = (2.3, 2.45, 2.6, 2.8, 3.1, 3.35, 3.7, 4.05, 4.5, 5.0, 5.6)
DEFAULT_DISK_TEMPS = tuple(float(t) for t in np.round(np.geomspace(100.0, 2500.0, 33), 3))


@dataclass(frozen=True)
class PhotometryGridSpec:
    """What a photometry grid is built from. Every field enters the content hash.

    Parameters
    ----------
    library : str
        SEDFit spectral library, or several joined by ``+`` and split in Teff at
        ``switch_teff``. Default ``phoenix+kurucz``: PHOENIX up to 12,000 K, Kurucz above
        (see :mod:`ysoscale.physics.spectra` for why not BT-Settl). The [M/H] nodes
        that every library shares are kept; log g nodes of any library are kept, filled
        and marked invalid where a library lacks them.
    law : str
        Extinction law (``G23`` by default).
    bands : tuple of str
        Band ids, in the order of the grid's ``band`` axis.
    av_nodes, rv_nodes : tuple of float
        A_V (mag) and R_V nodes. R_V is interpolated linearly in 1/R_V, the variable
        in which the parametrised laws are (near-)linear.
    teff_range, mh_range : tuple of float
        Library nodes kept (inclusive).
    disk_temps : tuple of float
        Blackbody temperatures (K) of the disk table.
    """

    library: str = "phoenix+kurucz"
    switch_teff: tuple[float, ...] = (12000.0,)
    law: str = DEFAULT_LAW
    bands: tuple[str, ...] = BAND_IDS
    av_nodes: tuple[float, ...] = DEFAULT_AV_NODES
    rv_nodes: tuple[float, ...] = DEFAULT_RV_NODES
    teff_range: tuple[float, float] = (2000.0, 50000.0)
    mh_range: tuple[float, float] = (-3.0, 0.5)
    disk_temps: tuple[float, ...] = field(default=DEFAULT_DISK_TEMPS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", validate_band_ids(self.bands))
        for name in ("av_nodes", "rv_nodes", "disk_temps"):
            nodes = np.asarray(getattr(self, name), dtype=float)
            if nodes.size < 2 or np.any(np.diff(nodes) <= 0):
                raise ValueError(f"{name} must be at least two increasing values, got {nodes}")
            object.__setattr__(self, name, tuple(float(v) for v in nodes))
        if self.av_nodes[0] != 0.0:
            raise ValueError("av_nodes must start at 0")
        libraries = self.library.split("+")
        if len(self.switch_teff) < len(libraries) - 1:
            raise ValueError(f"{len(libraries)} libraries need {len(libraries) - 1} switch_teff")

    def hash(self) -> str:
        """Content hash of this spec and of the spectra it reads."""
        bands = get_bands(self.bands)
        curves = [np.concatenate([b.wavelength, b.transmission]) for b in bands]
        return content_hash(
            asdict(self),
            [spectral_grid_hash(lib) for lib in self.library.split("+")],
            BUILD_VERSION,
            *curves,
        )


def _reddening_weights(
    lam: np.ndarray, bands_matrix: np.ndarray, rv: float, law: str, band_ids: Sequence[str]
) -> np.ndarray:
    """A_λ/A_V on ``lam``, computed where some band looks and 0 elsewhere."""
    used = bands_matrix.any(axis=1)
    lo, hi = law_wavelength_range(law)
    outside = used & ((lam < lo) | (lam > hi))
    if outside.any():
        bad = [b for j, b in enumerate(band_ids) if np.any(bands_matrix[outside, j] != 0)]
        raise ValueError(
            f"extinction law {law} covers {lo:.0f}-{hi:.0f} Å only; bands {bad} reach beyond "
            "it. Use law='G23' or leave these bands out."
        )
    curve = np.zeros_like(lam)
    curve[used] = extinction_curve(lam[used], rv, law)
    return curve


def integrate_slab(
    lam: np.ndarray,
    flux: np.ndarray,
    bands_matrix: np.ndarray,
    zero_points: np.ndarray,
    curve: np.ndarray,
    av_nodes: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes and dm/dA_V of spectra ``flux[n_model, n_wave]`` at each A_V node.

    Pure numpy; the kernel that both the serial and the Dask build call.

    Returns
    -------
    mag, dmag_dav : numpy.ndarray
        Shape ``(n_model, n_av, n_band)``.
    """
    n_model, n_band = flux.shape[0], bands_matrix.shape[1]
    mag = np.empty((n_model, len(av_nodes), n_band))
    slope = np.empty_like(mag)
    weighted = bands_matrix * curve[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, av in enumerate(av_nodes):
            reddened = flux * 10.0 ** (-0.4 * av * curve)[None, :]
            mean = reddened @ bands_matrix
            mag[:, i] = -2.5 * np.log10(mean / zero_points)
            slope[:, i] = (reddened @ weighted) / mean
    return mag, slope


def spectral_segments(spec: PhotometryGridSpec) -> list[xr.Dataset]:
    """The spectral grids of ``spec``'s libraries, each cut to its Teff range, all on the
    log g and [M/H] nodes they share."""
    libraries = spec.library.split("+")
    edges = [spec.teff_range[0], *spec.switch_teff[: len(libraries) - 1], spec.teff_range[1]]
    grids = [load_spectral_grid(lib) for lib in libraries]
    logg = sorted(set.union(*(set(g.logg.values.tolist()) for g in grids)))
    mh = sorted(set.intersection(*(set(g.mh.values.tolist()) for g in grids)))
    mh = [m for m in mh if spec.mh_range[0] <= m <= spec.mh_range[1]]
    segments = []
    for i, grid in enumerate(grids):
        teff = grid.teff.values
        keep = (teff > edges[i]) if i else (teff >= edges[i])
        keep &= teff <= edges[i + 1]
        segment = grid.sel(teff=teff[keep], mh=mh)
        # a log g node another library has but this one lacks (Kurucz stops at 5.0,
        # PHOENIX reaches 6.0 for M dwarfs) is filled from the nearest node, never valid
        has_node = xr.DataArray(np.isin(logg, grid.logg.values), coords={"logg": logg})
        segment = segment.reindex(logg=logg, method="nearest")
        segment["valid"] = segment.valid & has_node
        segment["computed"] = segment.computed & has_node
        segments.append(segment)
    return segments


def _slab_for_rv(spec: PhotometryGridSpec, rv: float) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes for one R_V node (reads the cached spectral grids itself)."""
    bands = get_bands(spec.bands)
    mags, slopes = [], []
    for grid in spectral_segments(spec):
        lam = grid.wavelength.values
        matrix = band_flux_matrix(lam, bands)
        flux = 10.0 ** grid.log10_flux.values.astype(np.float64)
        flux *= grid.bolometric_scale.values.astype(np.float64)[..., None]
        shape = flux.shape[:3]
        curve = _reddening_weights(lam, matrix, rv, spec.law, spec.bands)
        mag, slope = integrate_slab(
            lam, flux.reshape(-1, lam.size), matrix, zero_point_fluxes(bands), curve, spec.av_nodes
        )
        mags.append(mag.reshape(*shape, *mag.shape[1:]))
        slopes.append(slope.reshape(*shape, *slope.shape[1:]))
    return np.concatenate(mags), np.concatenate(slopes)


def _disk_table(spec: PhotometryGridSpec, rv: float) -> tuple[np.ndarray, np.ndarray]:
    """Blackbody magnitudes per unit bolometric flux (1 erg/s/cm²) and dm/dA_V."""
    bands = get_bands(spec.bands)
    lam = np.geomspace(900.0, 320000.0, 6000)
    matrix = band_flux_matrix(lam, bands)
    temps = np.asarray(spec.disk_temps)
    flux = planck_lambda(lam[None, :], temps[:, None]) / (
        STEFAN_BOLTZMANN_CGS * temps[:, None] ** 4
    )
    curve = _reddening_weights(lam, matrix, rv, spec.law, spec.bands)
    return integrate_slab(lam, flux, matrix, zero_point_fluxes(bands), curve, spec.av_nodes)


def _build_one_rv(spec: PhotometryGridSpec, rv: float) -> tuple[np.ndarray, ...]:
    return (*_slab_for_rv(spec, rv), *_disk_table(spec, rv))


def build_photometry_grid(
    spec: PhotometryGridSpec | None = None,
    *,
    progress: bool = True,
    client: object | None = None,
) -> xr.Dataset:
    """Integrate spectra × extinction × bands into a photometry grid.

    Parameters
    ----------
    spec : PhotometryGridSpec, optional
        What to build; the default covers all bands with G23.
    progress : bool
        Show a progress bar (one step per R_V node).
    client : dask.distributed.Client, optional
        When given, one task per R_V node runs on the client's cluster.

    Returns
    -------
    xarray.Dataset
        ``mag`` and ``dmag_dav`` with dims ``(teff, logg, mh, av, rv, band)``;
        ``valid (teff, logg, mh)``; ``disk_mag``/``disk_dmag_dav`` with dims
        ``(disk_temp, av, rv, band)``.
    """
    from tqdm.auto import tqdm

    spec = spec or PhotometryGridSpec()
    segments = spectral_segments(spec)  # converts the libraries once, before any fan-out
    results: dict[float, tuple[np.ndarray, ...]] = {}
    bar = tqdm(total=len(spec.rv_nodes), desc="photometry grid (R_V nodes)", disable=not progress)
    if client is None:
        for rv in spec.rv_nodes:
            results[rv] = _build_one_rv(spec, rv)
            bar.update()
    else:
        from distributed import as_completed

        futures = {client.submit(_build_one_rv, spec, rv, pure=False): rv for rv in spec.rv_nodes}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    bar.close()
    stack = [np.stack([results[rv][k] for rv in spec.rv_nodes], axis=-2) for k in range(4)]
    bands = get_bands(spec.bands)
    band_dims = ("teff", "logg", "mh", "av", "rv", "band")
    disk_dims = ("disk_temp", "av", "rv", "band")
    return xr.Dataset(
        {
            "mag": (band_dims, stack[0].astype(np.float32), {"units": "mag (surface)"}),
            "dmag_dav": (band_dims, stack[1].astype(np.float32), {"units": "mag/mag"}),
            "valid": xr.concat([g.valid for g in segments], "teff").reset_coords(drop=True),
            "disk_mag": (disk_dims, stack[2].astype(np.float32), {"units": "mag per erg/s/cm2"}),
            "disk_dmag_dav": (disk_dims, stack[3].astype(np.float32), {"units": "mag/mag"}),
            "zero_point_flux": (
                ("band",),
                zero_point_fluxes(bands),
                {"units": "erg s-1 cm-2 AA-1"},
            ),
            "system": (("band",), np.array([b.system for b in bands])),
        },
        coords={
            "teff": np.concatenate([g.teff.values for g in segments]),
            "logg": segments[0].logg.values,
            "mh": segments[0].mh.values,
            "av": ("av", np.asarray(spec.av_nodes), {"units": "mag"}),
            "rv": ("rv", np.asarray(spec.rv_nodes)),
            "band": ("band", np.asarray(spec.bands)),
            "disk_temp": ("disk_temp", np.asarray(spec.disk_temps), {"units": "K"}),
        },
        attrs={
            "library": spec.library,
            "law": spec.law,
            "switch_teff": list(spec.switch_teff),
            "spectra_citation": "; ".join(g.attrs.get("citation", "") for g in segments),
            "description": "surface magnitudes; observed = mag - 5 log10(R/d)",
        },
    )


def photometry_grid_path(spec: PhotometryGridSpec | None = None) -> Path:
    """Cache path of the grid for ``spec`` (one store per library and law)."""
    spec = spec or PhotometryGridSpec()
    return cache_dir() / f"photometry_{spec.library.replace('+', '-')}_{spec.law}.zarr"


def load_photometry_grid(
    spec: PhotometryGridSpec | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    client: object | None = None,
) -> tuple[xr.Dataset, bool]:
    """Return the photometry grid for ``spec``, building it only if its inputs changed.

    Returns
    -------
    grid, built : xarray.Dataset, bool

    Examples
    --------
    >>> grid, built = load_photometry_grid(progress=False)  # doctest: +SKIP
    >>> grid.mag.dims  # doctest: +SKIP
    ('teff', 'logg', 'mh', 'av', 'rv', 'band')
    """
    spec = spec or PhotometryGridSpec()
    return cached_zarr(
        photometry_grid_path(spec),
        spec.hash,
        lambda: build_photometry_grid(spec, progress=progress, client=client).chunk({"rv": 1}),
        force=force,
    )


class DirectIntegrator:
    """Magnitudes by direct spectral integration, one star at a time (the reference path).

    For each star: interpolate the spectrum of the library segment that holds its Teff
    (:func:`ysoscale.physics.spectra.interpolate_spectrum`), redden it with the exact
    extinction curve at (A_V, R_V), and integrate it through each band. Band matrices
    are computed once per segment. This is what the photometry grid approximates, and
    the baseline its speed is measured against.

    Examples
    --------
    >>> direct = DirectIntegrator(PhotometryGridSpec(bands=("gaia_g",)))  # doctest: +SKIP
    >>> direct(5772.0, 4.44, 0.0, 0.0, 3.1).round(2)                      # doctest: +SKIP
    array([4.69])
    """

    def __init__(self, spec: PhotometryGridSpec | None = None) -> None:
        self.spec = spec or PhotometryGridSpec()
        self.bands = get_bands(self.spec.bands)
        self.zero_points = zero_point_fluxes(self.bands)
        from ysoscale.physics.spectra import scaled_log_flux

        self.segments = [
            (
                (grid.teff.values, grid.logg.values, grid.mh.values),
                scaled_log_flux(grid),
                grid.wavelength.values,
                band_flux_matrix(grid.wavelength.values, self.bands),
            )
            for grid in spectral_segments(self.spec)
        ]

    def __call__(
        self,
        teff: float,
        logg: float,
        mh: float,
        av: float,
        rv: float,
        radius: float = 1.0,
        distance: float = 10.0,
    ) -> np.ndarray:
        """Magnitudes (n_band,) of one star; radius in R☉, distance in pc.

        Raises
        ------
        ValueError
            If ``teff`` lies in a cell whose two Teff nodes come from different
            libraries (there is no spectrum to interpolate there).
        """
        from ysoscale.physics.forward import LOG10_R_SUN_OVER_PC
        from ysoscale.physics.spectra import interpolate_log_flux

        for axes, cube, lam, matrix in self.segments:  # noqa: B007 - used after the break
            if axes[0][0] <= teff <= axes[0][-1]:
                break
        else:
            raise ValueError(f"teff = {teff} K falls between two spectral libraries")
        flux = 10.0 ** interpolate_log_flux(axes, cube, teff, logg, mh)
        curve = _reddening_weights(lam, matrix, rv, self.spec.law, self.spec.bands)
        mag, _ = integrate_slab(lam, flux[None, :], matrix, self.zero_points, curve, [av])
        return mag[0, 0] - 5.0 * (np.log10(radius / distance) + LOG10_R_SUN_OVER_PC)

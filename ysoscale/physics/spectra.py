"""Model-atmosphere spectra from SEDFit, converted once into a regular zarr grid.

SEDFit (Kounkel et al.) ships four model-atmosphere libraries resampled to a common
log-wavelength grid (Δlog10 λ = 0.003, 913 Å – 32 µm; Kurucz on its native grid with a
blackbody tail): BT-Settl CIFIST (Allard et al. 2012; the primary grid), PHOENIX
(Husser et al. 2013), Kurucz/ATLAS9 (Castelli & Kurucz 2003) and Coelho (2014). They
are stored as bz2-compressed *pickles* of ``[log10(λF_λ), astropy Table, wavelength]``.

Security: ysoscale never unpickles a file whose sha256 differs from the digest pinned in
:data:`SEDFIT_GRIDS`, and even then only through an unpickler that admits numpy and
astropy table classes. This happens once, when the grid is converted
(``ysoscale grid build``); afterwards everything reads the zarr store in the cache.

Grid holes. The libraries are irregular: not every (Teff, log g, [M/H]) combination was
computed (BT-Settl has 12,093 of 142 × 13 × 11 nodes). The zarr grid is regular, and each
node that the library lacks is *filled* and marked ``valid = False``:

1. from the nearest computed log g at the same Teff and [M/H] (a star's SED depends
   on gravity far more weakly than on temperature);
2. where a whole (Teff, [M/H]) column is missing, from the nearest filled [M/H] at the
   same Teff;
3. where a whole Teff plane is missing, from the nearest Teff.

Downstream, every interpolated quantity carries the interpolated ``valid`` weight, so a
star that leans on filled nodes is flagged instead of silently trusted. Fluxes that
SEDFit stored as its global minimum (its own fill for zero flux, far in the Wien tail)
are kept: they mean "no measurable flux".

Energy conservation. Integrated over all wavelengths, the SEDFit spectra carry 2–7 % less
than σT⁴ (more for low-gravity models), partly from SEDFit's binning, which averages the
native samples in each 0.003-dex bin. Teff is *defined* by ∫F_λ dλ = σT⁴, and the
forward model ties luminosity, radius and Teff together through that identity, so the
grid stores ``bolometric_scale = σT⁴ / ∫F_λ dλ`` per node; the photometry grid applies it
(the bolometric-correction convention). The integral adds blackbody tails below 913 Å
and beyond 32 µm, scaled to the model flux at each edge. A model more than 10 % off
σT⁴ is not a usable atmosphere and is marked ``valid = False``.

Known defect of SEDFit 0.6.1: its BT-Settl grid is sound at [M/H] = 0 but broken at every
other metallicity (fluxes 0.36–1.0 × σT⁴ and jumps between neighbouring Teff; the
metallicity labels appear scrambled when SEDFit built the pickle). The energy check
marks most of those nodes invalid. That is why the default photometry grid is built
from PHOENIX (≤ 12,000 K) and Kurucz (> 12,000 K), which pass the check everywhere, and
BT-Settl is kept as an option and as the reference for the solar-metallicity tests.
"""

from __future__ import annotations

import bz2
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ysoscale.cache import cache_dir, cached_zarr, content_hash, file_sha256

CONVERSION_VERSION = 4
ENERGY_TOLERANCE = 0.9
"""A computed model whose ∫F_λ dλ is not within 0.9–1/0.9 of σT⁴ is marked invalid."""


@dataclass(frozen=True)
class SpectralLibrary:
    """A model-atmosphere library that SEDFit ships."""

    name: str
    filename: str
    sha256: str
    citation: str


SEDFIT_GRIDS: dict[str, SpectralLibrary] = {
    "btsettl": SpectralLibrary(
        "btsettl",
        "sed_btsettl.p",
        "440b38f5dbc56caf0df8c922a66e378ce7151b1d548c3c261f3c3858d2221bdc",
        "BT-Settl (AGSS2009 abundances), Allard, Homeier & Freytag (2012), via SEDFit 0.6.1",
    ),
    "phoenix": SpectralLibrary(
        "phoenix",
        "sed_phoenix.p",
        "29e7e98b2ad67327d44bd64363b14602fa3262b573a06d943c85dc85ffd656e2",
        "PHOENIX, Husser et al. (2013), via SEDFit 0.6.1",
    ),
    "kurucz": SpectralLibrary(
        "kurucz",
        "sed_kurucz.p",
        "4aedb57f07688a273b27a9abf08fe872d7c2ade7939e48eb2ca5ed139ee7a1ef",
        "ATLAS9, Castelli & Kurucz (2003), via SEDFit 0.6.1",
    ),
    "coelho": SpectralLibrary(
        "coelho",
        "sed_coelho.p",
        "abec7358ad06920caf94ed502004e3f2ce2a61087d4941d4edac03d4e82f8db6",
        "Coelho (2014), via SEDFit 0.6.1",
    ),
}
DEFAULT_LIBRARY = "btsettl"


class GridFileError(RuntimeError):
    """A SEDFit grid file is missing or is not the file whose digest is pinned."""


class _GridUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy, astropy and harmless builtin classes."""

    _allowed_roots = ("numpy", "astropy", "collections", "copyreg", "_codecs")
    _allowed_builtins = {"slice", "range", "complex", "set", "frozenset", "bytearray", "object"}

    def find_class(self, module: str, name: str) -> type:
        root = module.split(".")[0]
        if root in self._allowed_roots or (module == "builtins" and name in self._allowed_builtins):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a grid file")


def sedfit_path(library: str) -> Path:
    """Path of ``library``'s file inside the installed SEDFit package (not imported)."""
    if library not in SEDFIT_GRIDS:
        raise ValueError(f"unknown spectral library {library!r}; choose from {list(SEDFIT_GRIDS)}")
    spec = importlib.util.find_spec("SEDFit")
    if spec is None or not spec.submodule_search_locations:
        raise GridFileError(
            "SEDFit is not installed; install it with `pip install --no-deps SEDFit==0.6.1`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SEDFIT_GRIDS[library].filename
    if not path.exists():
        raise GridFileError(f"SEDFit does not contain {path.name}")
    return path


def _read_verified(library: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (log10 λF_λ [n_model, n_wave], parameters [n_model, 4], wavelength Å)."""
    path = sedfit_path(library)
    expected = SEDFIT_GRIDS[library].sha256
    actual = file_sha256(path)
    if actual != expected:
        raise GridFileError(
            f"{path} has sha256 {actual}, expected {expected}; refusing to unpickle it"
        )
    with bz2.BZ2File(path, "rb") as handle:
        log_lam_flux, table, wavelength = _GridUnpickler(handle).load()
    params = np.column_stack([np.asarray(table[c], dtype=float) for c in table.colnames[:4]])
    lam = np.asarray(getattr(wavelength, "value", wavelength), dtype=float)
    return np.asarray(log_lam_flux, dtype=float), params, lam


def _fill_holes(cube: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill nodes of ``cube[teff, logg, mh, wave]`` where ``valid`` is False (see module doc)."""
    filled = cube.copy()
    have = valid.copy()
    n_teff, n_logg, n_mh = valid.shape
    for i in range(n_teff):
        for k in range(n_mh):
            good = np.flatnonzero(have[i, :, k])
            if good.size and good.size < n_logg:
                nearest = good[np.abs(np.arange(n_logg)[:, None] - good[None, :]).argmin(axis=1)]
                filled[i, :, k] = filled[i, nearest, k]
        columns = np.flatnonzero(have[i].any(axis=0))
        if columns.size:
            have[i, :, columns] = True
            nearest = columns[np.abs(np.arange(n_mh)[:, None] - columns[None, :]).argmin(axis=1)]
            filled[i] = filled[i][:, nearest]
            have[i] = True
    planes = np.flatnonzero(have.all(axis=(1, 2)))
    if planes.size < n_teff:
        nearest = planes[np.abs(np.arange(n_teff)[:, None] - planes[None, :]).argmin(axis=1)]
        filled = filled[nearest]
    return filled


STEFAN_BOLTZMANN_CGS = 5.670374419e-5
_HC_OVER_K_AA_K = 1.438776877e8  # h c / k in Å K


def planck_lambda(wavelength_aa: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Blackbody π B_λ(T) in erg s⁻¹ cm⁻² Å⁻¹ (surface flux), broadcasting its inputs."""
    lam = np.asarray(wavelength_aa, dtype=float)
    x = _HC_OVER_K_AA_K / (lam * np.asarray(teff, dtype=float))
    # 2 pi h c^2 in erg Å^4 s^-1 cm^-2, divided by λ^5 (Å^5) gives per Å
    return 3.741771852e27 / lam**5 / np.expm1(np.minimum(x, 700.0))


def _tail_integral(edge: float, toward: float, teff: np.ndarray) -> np.ndarray:
    """∫ π B_λ dλ from ``edge`` toward ``toward`` (0 or ∞), per unit π B_λ(edge)."""
    lam = np.geomspace(edge, toward, 4000) if toward > edge else np.geomspace(10.0, edge, 4000)
    bb = planck_lambda(lam[None, :], teff[:, None])
    at_edge = planck_lambda(np.array([edge]), teff[:, None])[:, 0]
    return np.abs(np.trapezoid(bb, lam, axis=1)) / at_edge


def bolometric_scale(lam: np.ndarray, log10_flux: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """σT⁴ / (∫F_λ dλ + blackbody tails) for a cube ``log10_flux[teff, ..., wavelength]``."""
    flux = 10.0**log10_flux
    inside = np.trapezoid(flux, lam, axis=-1)
    blue = _tail_integral(lam[0], 0.0, teff)
    red = _tail_integral(lam[-1], 1e9, teff)
    extra_shape = (slice(None),) + (None,) * (log10_flux.ndim - 2)
    total = inside + flux[..., 0] * blue[extra_shape] + flux[..., -1] * red[extra_shape]
    return STEFAN_BOLTZMANN_CGS * teff[extra_shape] ** 4 / total


def convert_library(library: str = DEFAULT_LIBRARY) -> xr.Dataset:
    """Read a SEDFit library (hash-checked) and return it as a regular grid.

    Returns
    -------
    xarray.Dataset
        Dims ``(teff, logg, mh, wavelength)``; ``log10_flux`` is log10 of the surface
        flux density F_λ in erg s⁻¹ cm⁻² Å⁻¹ (float32); ``valid (teff, logg, mh)`` is True
        where the library computed the model and False where it was filled.
        Models with α/Fe ≠ 0 (Kurucz, Coelho) are left out.
    """
    log_lam_flux, params, lam = _read_verified(library)
    if library == "kurucz":
        # SEDFit 0.6.1 splices a blackbody F_λ tail beyond 10 µm onto log(λF_λ) without the
        # factor λ (anchored at 10⁵ Å), so its tail falls as λ⁻⁵ instead of λ⁻⁴: restore λ.
        tail = lam > 1.0e5
        log_lam_flux[:, tail] += np.log10(lam[tail] / 1.0e5)
    keep = params[:, 3] == 0.0
    log_lam_flux, params = log_lam_flux[keep], params[keep]
    axes = [np.unique(params[:, j]) for j in range(3)]
    index = tuple(np.searchsorted(axes[j], params[:, j]) for j in range(3))
    shape = tuple(len(a) for a in axes)
    cube = np.zeros((*shape, lam.size))
    valid = np.zeros(shape, dtype=bool)
    cube[index] = log_lam_flux - np.log10(lam)
    valid[index] = True
    cube = _fill_holes(cube, valid)
    scale = bolometric_scale(lam, cube, axes[0])
    computed = valid.copy()
    failed_energy_check = valid & (np.abs(np.log(scale)) > np.log(1.0 / ENERGY_TOLERANCE))
    valid &= ~failed_energy_check
    source = SEDFIT_GRIDS[library]
    return xr.Dataset(
        {
            "log10_flux": (
                ("teff", "logg", "mh", "wavelength"),
                cube.astype(np.float32),
                {"units": "log10(erg s-1 cm-2 AA-1)", "description": "surface flux F_lambda"},
            ),
            "bolometric_scale": (
                ("teff", "logg", "mh"),
                scale.astype(np.float32),
                {"description": "sigma Teff^4 / integral of F_lambda (applied by photometry)"},
            ),
            "computed": (
                ("teff", "logg", "mh"),
                computed,
                {"description": "True where the library has the model (else hole-filled)"},
            ),
            "valid": (
                ("teff", "logg", "mh"),
                valid,
                {"description": "computed and passes the energy check"},
            ),
        },
        coords={
            "teff": ("teff", axes[0], {"units": "K"}),
            "logg": ("logg", axes[1], {"units": "dex (cgs)"}),
            "mh": ("mh", axes[2], {"units": "dex"}),
            "wavelength": ("wavelength", lam, {"units": "AA"}),
        },
        attrs={
            "library": library,
            "citation": source.citation,
            "source_sha256": source.sha256,
            "fill_strategy": "nearest logg, then nearest [M/H], then nearest Teff",
            "energy_check": f"nodes whose flux integral is outside {ENERGY_TOLERANCE}-"
            f"{1 / ENERGY_TOLERANCE:.3f} x sigma T^4 are marked invalid "
            f"({int(failed_energy_check.sum())} here)",
        },
    )


def spectral_grid_hash(library: str = DEFAULT_LIBRARY) -> str:
    """Content hash of a converted library: the pinned file digest and converter version."""
    return content_hash(SEDFIT_GRIDS[library].sha256, CONVERSION_VERSION)


def load_spectral_grid(library: str = DEFAULT_LIBRARY, *, force: bool = False) -> xr.Dataset:
    """Return the converted spectral grid, converting it into the cache on first use.

    Examples
    --------
    >>> grid = load_spectral_grid("btsettl")  # doctest: +SKIP
    >>> grid.log10_flux.dims  # doctest: +SKIP
    ('teff', 'logg', 'mh', 'wavelength')
    """
    path = cache_dir() / f"spectra_{library}.zarr"
    dataset, _ = cached_zarr(
        path, spectral_grid_hash(library), lambda: convert_library(library), force=force
    )
    return dataset


def scaled_log_flux(grid: xr.Dataset) -> np.ndarray:
    """log10 F_λ with the bolometric scale applied, as float64 (teff, logg, mh, wavelength)."""
    return (
        grid.log10_flux.values.astype(np.float64)
        + np.log10(grid.bolometric_scale.values.astype(np.float64))[..., None]
    )


def interpolate_log_flux(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    cube: np.ndarray,
    teff: float,
    logg: float,
    mh: float,
) -> np.ndarray:
    """Multilinear interpolation of ``cube[teff, logg, mh, wavelength]`` in
    (log10 Teff, log g, [M/H]); the numpy kernel of :func:`interpolate_spectrum`."""
    corners = []
    for name, nodes, value, log in zip(
        ("teff", "logg", "mh"), axes, (teff, logg, mh), (True, False, False), strict=True
    ):
        if not nodes[0] <= value <= nodes[-1]:
            raise ValueError(f"{name} = {value} outside the grid ({nodes[0]}-{nodes[-1]})")
        i = int(np.clip(np.searchsorted(nodes, value, side="right") - 1, 0, nodes.size - 2))
        lo, hi, x = (np.log10(v) if log else v for v in (nodes[i], nodes[i + 1], value))
        corners.append((i, (x - lo) / (hi - lo)))
    (i, fi), (j, fj), (k, fk) = corners
    block = cube[i : i + 2, j : j + 2, k : k + 2]
    weights = np.einsum("a,b,c->abc", [1 - fi, fi], [1 - fj, fj], [1 - fk, fk])
    return np.einsum("abc,abcw->w", weights, block)


def interpolate_spectrum(
    grid: xr.Dataset, teff: float, logg: float, mh: float
) -> tuple[np.ndarray, np.ndarray]:
    """Surface spectrum at one off-node point: (wavelength Å, F_λ erg/s/cm²/Å).

    log10 F_λ (with the bolometric scale applied) is interpolated multilinearly in
    (log10 Teff, log g, [M/H]) — the same weights the photometry grid is interpolated
    with, so the two can be compared directly.

    Examples
    --------
    >>> lam, flux = interpolate_spectrum(load_spectral_grid(), 5772.0, 4.44, 0.0)  # doctest: +SKIP
    """
    axes = (grid.teff.values, grid.logg.values, grid.mh.values)
    return grid.wavelength.values, 10.0 ** interpolate_log_flux(
        axes, scaled_log_flux(grid), teff, logg, mh
    )

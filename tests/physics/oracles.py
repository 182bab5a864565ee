"""Loaders for external oracle tables used to check ysoscale's synthetic photometry.

The oracles are data files shipped inside two PyPI wheels that are installed for the
tests only (``pip install --no-deps astroARIADNE astroLACHESIS``). Their Python modules
are never imported (they pull dependencies we do not install, and the ARIADNE wheel
also ships pickles, which we never read); we only locate the package directories with
:func:`importlib.util.find_spec`, which does not execute the package, and read the
plain-text / HDF5 tables with numpy, pandas and h5py.

Every loader returns plain numpy arrays or a pandas DataFrame whose units are stated
in its docstring, and calls :func:`pytest.skip` when the package that ships the table
is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# --------------------------------------------------------------------------------------
# ARIADNE (Vines & Jenkins 2022, MNRAS 513, 2719; PyPI ``astroARIADNE``)
# --------------------------------------------------------------------------------------

ARIADNE_TO_BAND: dict[str, str] = {
    "GALEX_FUV": "galex_fuv",
    "GALEX_NUV": "galex_nuv",
    **{f"SDSS_{b}": f"sdss_{b}" for b in "ugriz"},
    **{f"PS1_{b}": f"ps1_{b}" for b in "grizy"},
    **{f"SkyMapper_{b}": f"skymapper_{b}" for b in "uvgriz"},
    # ARIADNE integrates the *revised Gaia DR2* passbands (pyphot "GaiaDR2v2"), ours are
    # the EDR3/DR3 passbands of Riello et al. (2021): same bands, different curves.
    "GaiaDR2v2_G": "gaia_g",
    "GaiaDR2v2_BP": "gaia_bp",
    "GaiaDR2v2_RP": "gaia_rp",
    "2MASS_J": "tmass_j",
    "2MASS_H": "tmass_h",
    "2MASS_Ks": "tmass_ks",
    **{f"WISE_RSR_W{i}": f"wise_w{i}" for i in range(1, 5)},
}
"""ARIADNE column name (= pyphot filter-library name) -> ysoscale band id."""

ARIADNE_FLUX_TO_PER_AA = 1e-4
"""ARIADNE grid fluxes are erg s⁻¹ cm⁻² µm⁻¹; multiply by this to get erg s⁻¹ cm⁻² Å⁻¹."""


def package_dir(module: str, pip_name: str) -> Path:
    """Directory of the installed top-level package ``module``, without importing it.

    Calls :func:`pytest.skip` (naming the pip package) when it is not installed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            f"oracle package {pip_name} is not installed (pip install --no-deps {pip_name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def ariadne_grid_path(model: str = "BT_Settl") -> Path:
    """Path of ARIADNE's pre-integrated model grid ``model_grid_<model>.dat``."""
    path = package_dir("astroARIADNE", "astroARIADNE") / (
        f"Datafiles/model_grids/model_grid_{model}.dat"
    )
    if not path.is_file():
        pytest.skip(f"astroARIADNE does not ship {path.name}")
    return path


@functools.cache
def _read_ariadne(model: str) -> pd.DataFrame:
    path = ariadne_grid_path(model)
    with open(path) as handle:
        header = handle.readline()
    if not header.startswith("#"):
        raise ValueError(f"{path}: expected a '#' header line naming the columns")
    names = header.lstrip("#").split()
    table = pd.read_csv(path, sep=r"\s+", comment="#", header=None, names=names)
    return table.rename(columns={"Teff": "teff", "[Fe/H]": "mh"})


def load_ariadne_grid(model: str = "BT_Settl") -> pd.DataFrame:
    """ARIADNE's pre-integrated band fluxes of a model-atmosphere grid, in our units.

    ``astroARIADNE/Datafiles/model_grids/model_grid_<model>.dat`` is a whitespace table
    with a ``#`` header line: ``Teff logg [Fe/H]`` followed by 48 pyphot filter names
    (GALEX, Strömgren, SkyMapper, SDSS, Johnson/Cousins, Tycho, PS1, Gaia DR2 revised,
    Kepler, TESS, NGTS, 2MASS, WISE, Spitzer IRAC, Herschel PACS); one row per model
    that exists in the source grid (13 617 rows for BT-Settl: Teff 2300-70000 K,
    logg -0.5-6.0, [Fe/H] -4.0-+0.5). Each value is the photon-weighted mean surface
    flux density ``∫F_λ T λ dλ / ∫T λ dλ`` (pyphot ``Filter.get_flux``) of the model
    spectrum at the stellar surface in erg s⁻¹ cm⁻² µm⁻¹: ARIADNE (Vines & Jenkins
    2022, MNRAS 513, 2719; PyPI ``astroARIADNE``) scales it by ``(R/D)²`` to predict
    observed fluxes that it converts from magnitudes with zero points in
    erg s⁻¹ cm⁻² µm⁻¹. No extinction, no zero point: the values are absolute fluxes,
    independent of AB/Vega. For BT-Settl the spectra are the Allard et al. (2012)
    BT-Settl models as integrated by the ARIADNE authors.

    Returns a DataFrame with columns ``teff`` (K), ``logg`` (cgs dex), ``mh`` ([Fe/H],
    dex) and one column per ysoscale band id of :data:`ARIADNE_TO_BAND` holding the
    surface flux in erg s⁻¹ cm⁻² Å⁻¹ (ARIADNE's value × 1e-4). Band mapping: GALEX_FUV/
    NUV -> galex_fuv/nuv, SDSS_[ugriz] -> sdss_*, PS1_[grizy] -> ps1_*, SkyMapper_
    [uvgriz] -> skymapper_*, GaiaDR2v2_G/BP/RP -> gaia_g/bp/rp (note: DR2-revised
    curves versus our DR3 curves), 2MASS_J/H/Ks -> tmass_j/h/ks, WISE_RSR_W1-4 ->
    wise_w1-4.
    """
    raw = _read_ariadne(model)
    out = raw[["teff", "logg", "mh"]].copy()
    for name, band in ARIADNE_TO_BAND.items():
        out[band] = raw[name].to_numpy(dtype=float) * ARIADNE_FLUX_TO_PER_AA
    return out


# --------------------------------------------------------------------------------------
# MIST bolometric corrections (Choi et al. 2016; Dotter 2016), as shipped by LACHESIS
# --------------------------------------------------------------------------------------

# MIST photometric system (HDF5 group) -> {MIST band name: ysoscale band id}
MIST_TO_BAND: dict[str, dict[str, str]] = {
    "GALEX": {"GALEX_FUV": "galex_fuv", "GALEX_NUV": "galex_nuv"},
    "SDSSugriz": {f"SDSS_{b}": f"sdss_{b}" for b in "ugriz"},
    "PanSTARRS": {f"PS_{b}": f"ps1_{b}" for b in "grizy"},
    "SkyMapper": {f"SkyMapper_{b}": f"skymapper_{b}" for b in "uvgriz"},
    "UBVRIplus": {
        "Gaia_G_EDR3": "gaia_g",
        "Gaia_BP_EDR3": "gaia_bp",
        "Gaia_RP_EDR3": "gaia_rp",
        "2MASS_J": "tmass_j",
        "2MASS_H": "tmass_h",
        "2MASS_Ks": "tmass_ks",
    },
    "WISE": {f"WISE_W{i}": f"wise_w{i}" for i in range(1, 5)},
}
"""MIST system -> (MIST band name -> ysoscale band id)."""

MIST_SYSTEM_ZERO_POINT: dict[str, str] = {
    "GALEX": "AB",
    "SDSSugriz": "AB",
    "PanSTARRS": "AB",
    "SkyMapper": "AB",
    "UBVRIplus": "Vega",
    "WISE": "Vega",
}
"""Magnitude system of each MIST BC table (MIST documentation; LACHESIS ``bc.py``)."""

MIST_MBOL_SUN = 4.74
"""Solar absolute bolometric magnitude of the MIST BCs (IAU 2015 Resolution B2)."""


@dataclass(frozen=True)
class MistBC:
    """MIST bolometric corrections on their rectangular node grid.

    ``bc[i_teff, i_logg, i_feh, i_av, i_band]`` in mag, ``BC = M_bol - M_band`` with
    ``M_bol,⊙ = 4.74``; ``bands`` are ysoscale band ids, ``systems`` their AB/Vega
    system. ``rv`` is the single R_V of the tables (3.1).
    """

    teff: np.ndarray
    logg: np.ndarray
    feh: np.ndarray
    av: np.ndarray
    rv: float
    bands: tuple[str, ...]
    systems: tuple[str, ...]
    bc: np.ndarray

    def at(self, teff: float, logg: float, feh: float, av: float) -> np.ndarray:
        """BCs (mag, one per band) at an exact grid node; KeyError if it is not a node."""
        index = []
        for axis, value, name in (
            (self.teff, teff, "teff"),
            (self.logg, logg, "logg"),
            (self.feh, feh, "feh"),
            (self.av, av, "av"),
        ):
            hits = np.flatnonzero(np.isclose(axis, value, rtol=0, atol=1e-6))
            if hits.size != 1:
                raise KeyError(f"{name}={value} is not a MIST BC grid node")
            index.append(int(hits[0]))
        return self.bc[tuple(index)]


def mist_bc_path() -> Path:
    """Path of LACHESIS's ``bc_tables.h5`` (all MIST BC systems in one HDF5 file)."""
    path = package_dir("lachesis", "astroLACHESIS") / "Datafiles/BC_tables/bc_tables.h5"
    if not path.is_file():
        pytest.skip("astroLACHESIS does not ship Datafiles/BC_tables/bc_tables.h5")
    return path


@functools.cache
def load_mist_bc() -> MistBC:
    """MIST v1.2 bolometric corrections for every band MIST and ysoscale share.

    ``lachesis/Datafiles/BC_tables/bc_tables.h5`` (PyPI ``astroLACHESIS``) repackages
    the MIST v1.2 BC tables (Choi et al. 2016, ApJ 823, 102; Dotter 2016; computed by
    C. Conroy from ATLAS12/SYNTHE spectra with CCM89 extinction, R_V = 3.1). One HDF5
    group per MIST photometric system, each with ``band_names`` (bytes), ``feh_values``
    (18 values, -4.0 to +0.75) and ``data`` float32 of shape (n_feh, 23660, 5 + n_band)
    whose columns are ``Teff logg [Fe/H] Av Rv BC_1 ... BC_n``; the 23660 rows of each
    [Fe/H] slice are the full rectangle Teff (70 values, 2500 K-1e6 K) × logg (26,
    -4.0-9.5) × Av (13: 0, 0.05, ..., 1, 2, 4, 6), so nodes outside the atmosphere grid
    hold MIST's extrapolated fill values. BCs are in mag, ``BC = M_bol - M_band`` with
    ``M_bol,⊙ = 4.74``. GALEX, SDSS, PanSTARRS and SkyMapper are AB; UBVRIplus (Gaia
    EDR3, 2MASS) and WISE are Vega. Band mapping: GALEX_FUV/NUV -> galex_fuv/nuv,
    SDSS_[ugriz] -> sdss_*, PS_[grizy] -> ps1_*, SkyMapper_[uvgriz] -> skymapper_*,
    Gaia_{G,BP,RP}_EDR3 -> gaia_g/bp/rp, 2MASS_J/H/Ks -> tmass_j/h/ks, WISE_W1-4 ->
    wise_w1-4 (PS_w, PS_open, Bessell, Tycho, Kepler, TESS, Gaia DR2 are not read).
    """
    import h5py

    path = mist_bc_path()
    axes = None
    blocks: list[np.ndarray] = []
    bands: list[str] = []
    systems: list[str] = []
    with h5py.File(path, "r") as h5:
        for system, mapping in MIST_TO_BAND.items():
            group = h5[system]
            names = [name.decode() for name in group["band_names"][:]]
            raw = group["data"][:]  # (n_feh, n_rows, 5 + n_band), float32
            feh = np.asarray(group["feh_values"][:], dtype=float)
            teff = np.unique(raw[0, :, 0]).astype(float)
            logg = np.unique(raw[0, :, 1]).astype(float)
            av = np.unique(raw[0, :, 3]).astype(float)
            rv = np.unique(raw[..., 4])
            if rv.size != 1:
                raise ValueError(f"{system}: expected a single R_V, found {rv}")
            if axes is None:
                axes = (teff, logg, feh, av, float(rv[0]))
            elif not all(
                np.array_equal(a, b) for a, b in zip(axes[:4], (teff, logg, feh, av), strict=True)
            ):
                raise ValueError(f"{system}: node axes differ from the other MIST systems")
            i_t = np.searchsorted(teff, raw[..., 0])
            i_g = np.searchsorted(logg, raw[..., 1])
            i_a = np.searchsorted(av, raw[..., 3])
            if (
                np.any(teff[i_t] != raw[..., 0])
                or np.any(logg[i_g] != raw[..., 1])
                or np.any(av[i_a] != raw[..., 3])
                or np.any(np.abs(raw[..., 2] - feh[:, None]) > 1e-4)
            ):
                raise ValueError(f"{system}: rows do not sit on the node grid")
            i_f = np.broadcast_to(np.arange(feh.size)[:, None], i_t.shape)
            columns = [names.index(name) for name in mapping]
            block = np.full((teff.size, logg.size, feh.size, av.size, len(columns)), np.nan)
            block[i_t, i_g, i_f, i_a, :] = raw[..., 5 + np.asarray(columns)]
            blocks.append(block)
            bands.extend(mapping.values())
            systems.extend([MIST_SYSTEM_ZERO_POINT[system]] * len(columns))
    teff, logg, feh, av, rv = axes
    return MistBC(
        teff=teff,
        logg=logg,
        feh=feh,
        av=av,
        rv=rv,
        bands=tuple(bands),
        systems=tuple(systems),
        bc=np.concatenate(blocks, axis=-1),
    )

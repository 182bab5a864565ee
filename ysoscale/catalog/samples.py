"""Real star samples shipped with ysoscale, converted to canonical columns with provenance.

Three public data sets from the project's shared data folder are converted once by
:func:`build_samples` and shipped as small parquet files in ``ysoscale/data/samples/``
with ``provenance.json`` (source file, its sha256, licence, reference and every
conversion choice). :func:`load_sample` reads them without the source files.

``rho_oph``
    Canovas et al. (2019), 48 ρ Ophiuchi members (1-3 Myr) with SEDs: Gaia DR2 G/BP/RP,
    2MASS J/H/Ks and WISE W1-W4 given as band-integrated fluxes λF_λ (W m⁻²) with
    errors. Each flux is divided by the band's pivot wavelength to give a mean F_λ and
    turned into a magnitude in the band's own system with the zero point of
    :mod:`ysoscale.physics.passbands`; the error is ``1.0857 σ_F / F`` (Gaia bands: plus
    :data:`GAIA_DR2_SYSTEMATIC` in quadrature for the DR2 → DR3 passband difference).
    Position and parallax come from the authors' candidate table (``tab_3.dat``).
``scocen``
    Damiani et al. (2019), 14,437 Gaia DR2 stars towards Sco-Cen with G, BP-RP (no
    errors), parallax, flag ``S`` and population. DR2 G is used as ``gaia_g`` with
    :data:`GAIA_DR2_SYSTEMATIC` as its error (the table gives none; the term covers the
    DR2 → DR3 passband and calibration differences of Riello et al. 2021 and the
    0.01 mag rounding). BP and RP are not published separately: they are rebuilt from
    G and BP-RP with the G-RP(BP-RP) relation :func:`g_minus_rp` of ysoscale's own
    synthetic Gaia DR3 photometry, and given :data:`DERIVED_BP_RP_ERROR`; the rows say
    so in ``gaia_bp_rp_derived``.
``kepler``
    2,236 Kepler stars with asteroseismic logg, spectroscopic Teff/[Fe/H], TGAS parallax,
    KIC griz and 2MASS JHK. 2MASS goes to ``tmass_*`` as published. KIC griz are tied to
    SDSS but not identical (Brown et al. 2011; Pinsonneault et al. 2012 find offsets of a
    few hundredths of a magnitude): they are mapped to ``sdss_g..sdss_z`` unchanged with
    :data:`KIC_SDSS_SYSTEMATIC` added in quadrature to their errors; -99 means missing.
    The labels are kept as ``teff``, ``logg``, ``feh`` and ``*_err`` columns.

Where a sample has a Gaia DR2 parallax without an error, ``parallax_error`` is the typical
DR2 uncertainty at the star's G (:func:`gaia_dr2_parallax_error`) and
``parallax_error_assumed`` is True.

Examples
--------
>>> sample = load_sample("rho_oph")
>>> len(sample), sample["sed_class"].iloc[0]
(48, 'Class II')
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ysoscale.catalog.columns import err_column, mag_column, validate_schema

__all__ = [
    "DERIVED_BP_RP_ERROR",
    "GAIA_DR2_SYSTEMATIC",
    "KIC_SDSS_SYSTEMATIC",
    "SAMPLES",
    "build_samples",
    "convert_kepler",
    "convert_rho_oph",
    "convert_scocen",
    "g_minus_rp",
    "gaia_dr2_parallax_error",
    "load_sample",
    "sample_provenance",
]

SAMPLES: tuple[str, ...] = ("rho_oph", "scocen", "kepler")
MAG_PER_FLUX_RATIO = 2.5 / math.log(10.0)

GAIA_DR2_SYSTEMATIC = 0.03
"""Error (mag) assumed for Gaia DR2 G/BP/RP read as DR3 bands (Riello et al. 2021 show
EDR3 - DR2 differences of a few 0.01 mag with magnitude and colour trends)."""
DERIVED_BP_RP_ERROR = 0.04
"""Error (mag) of BP and RP rebuilt from G and BP-RP: the DR2 term above plus the 0.008 mag
scatter of :func:`g_minus_rp` about the synthetic photometry and the 0.01 mag rounding."""
KIC_SDSS_SYSTEMATIC = 0.05
"""Error (mag) added in quadrature to KIC griz read as SDSS griz."""
DR2_PARALLAX_SYSTEMATIC = 0.1
"""Regional systematic of DR2 parallaxes, mas (Lindegren et al. 2018)."""

# G - RP = sum c_k (BP - RP)^k, least-squares fit to ysoscale's synthetic Gaia DR3
# photometry (PHOENIX + Kurucz grid, G23 extinction, R_V = 3.1) over 2300 K <= Teff <=
# 12000 K, 3 <= logg <= 5, -0.5 <= [M/H] <= 0.5, 0 <= A_V <= 6 (7,665 models,
# -0.13 <= BP-RP <= 7.5): rms 0.008 mag, largest residual 0.07 mag.
_G_MINUS_RP = (0.00103, 0.69210, -0.10978, 0.00656)

# Gaia DR2 parallax uncertainty at G (Gaia Collaboration, Brown et al. 2018): 0.04 mas
# brighter than G = 15, 0.1 mas at G = 17, 0.7 mas at G = 20.
_DR2_PLX_G = np.array([15.0, 17.0, 20.0])
_DR2_PLX_SIGMA = np.array([0.04, 0.1, 0.7])

_PACKAGE = "ysoscale"
_DATA_PATH = ("data", "samples")
_PROVENANCE = "provenance.json"


def g_minus_rp(bp_rp: np.ndarray) -> np.ndarray:
    """G - RP of a star of colour BP - RP (Gaia DR3 bands), from synthetic photometry.

    Examples
    --------
    >>> np.round(g_minus_rp(np.array([0.0, 1.0, 3.0])), 3).tolist()
    [0.001, 0.59, 1.266]
    """
    return np.polynomial.polynomial.polyval(np.asarray(bp_rp, dtype=np.float64), _G_MINUS_RP)


def gaia_dr2_parallax_error(g_mag: np.ndarray) -> np.ndarray:
    """Typical Gaia DR2 parallax error (mas) at G, with the 0.1 mas systematic added.

    Log-linear in G through the DR2 release values, constant brighter than G = 15,
    extrapolated with the G = 17-20 slope fainter than 20.

    Examples
    --------
    >>> np.round(gaia_dr2_parallax_error(np.array([12.0, 17.0])), 3).tolist()
    [0.108, 0.141]
    """
    g = np.asarray(g_mag, dtype=np.float64)
    log_sigma = np.interp(g, _DR2_PLX_G, np.log(_DR2_PLX_SIGMA))
    slope = np.log(_DR2_PLX_SIGMA[2] / _DR2_PLX_SIGMA[1]) / (_DR2_PLX_G[2] - _DR2_PLX_G[1])
    log_sigma = np.where(g > 20.0, np.log(0.7) + slope * (g - 20.0), log_sigma)
    return np.hypot(np.exp(log_sigma), DR2_PARALLAX_SYSTEMATIC)


# --- ρ Oph -------------------------------------------------------------------------------

_RHO_BANDS = {
    "G": "gaia_g",
    "BP": "gaia_bp",
    "RP": "gaia_rp",
    "J": "tmass_j",
    "H": "tmass_h",
    "Ks": "tmass_ks",
    "W1": "wise_w1",
    "W2": "wise_w2",
    "W3": "wise_w3",
    "W4": "wise_w4",
}


def _read_rho_oph(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    flux_names = [f"{b}{s}" for b in _RHO_BANDS for s in ("", "_e")]
    # byte layout from readme.txt (1-based inclusive -> 0-based half-open)
    specs = [(1, 20)] + [(22 + 10 * i, 30 + 10 * i) for i in range(20)] + [(222, 233), (235, 242)]
    fluxes = pd.read_fwf(
        directory / "tab_ap_4.dat",
        colspecs=specs,
        names=["source_id", *flux_names, "sed", "status"],
        header=None,
        dtype={"source_id": np.int64},
    )
    astrometry = pd.read_fwf(
        directory / "tab_3.dat",
        colspecs=[(1, 13), (14, 26), (28, 38), (39, 51), (52, 64), (65, 84), (86, 88), (89, 93)],
        names=["ra", "dec", "plx", "pmra", "pmdec", "source_id", "control", "doh"],
        header=None,
        dtype={"source_id": np.int64},
    )
    return fluxes, astrometry


def convert_rho_oph(directory: str | Path) -> pd.DataFrame:
    """Canonical frame of the Canovas et al. (2019) ρ Oph SED sample (see module docs)."""
    from ysoscale.physics.passbands import get_bands

    directory = Path(directory)
    fluxes, astrometry = _read_rho_oph(directory)
    frame = fluxes.merge(astrometry, on="source_id", how="left", validate="one_to_one")
    if frame["ra"].isna().any():
        raise ValueError("a ρ Oph SED star has no entry in tab_3.dat")
    bands = get_bands(list(_RHO_BANDS.values()))
    out: dict[str, Any] = {
        "source_id": frame["source_id"].to_numpy(np.int64),
        "ra": frame["ra"].to_numpy(np.float64),
        "dec": frame["dec"].to_numpy(np.float64),
    }
    for (label, band_id), band in zip(_RHO_BANDS.items(), bands, strict=True):
        lam_flam = frame[label].to_numpy(np.float64) * 1e3  # W m^-2 -> erg s^-1 cm^-2
        flam = lam_flam / band.pivot_wavelength
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = -2.5 * np.log10(flam / band.zero_point_flux)
            err = MAG_PER_FLUX_RATIO * frame[f"{label}_e"].to_numpy(np.float64) / frame[label]
        if band_id.startswith("gaia_"):
            err = np.hypot(err, GAIA_DR2_SYSTEMATIC)
        out[mag_column(band_id)] = mag.astype(np.float32)
        out[err_column(band_id)] = np.asarray(err, dtype=np.float32)
    out["parallax"] = frame["plx"].to_numpy(np.float64)
    out["parallax_error"] = gaia_dr2_parallax_error(out["gaia_g_mag"]).astype(np.float32)
    out["parallax_error_assumed"] = np.ones(len(frame), dtype=bool)
    out["sed_class"] = frame["sed"].str.split().str.join(" ").to_numpy(dtype=object)
    out["literature_status"] = frame["status"].str.strip().str.lower().to_numpy(dtype=object)
    out["pmra"] = frame["pmra"].to_numpy(np.float64)
    out["pmdec"] = frame["pmdec"].to_numpy(np.float64)
    return _finish(out)


# --- Sco-Cen -------------------------------------------------------------------------------

_SCOCEN_COLUMNS = [
    "Seq",
    "source_id",
    "RAJ2000",
    "DEJ2000",
    "GLON",
    "GLAT",
    "Plx",
    "pmGLON",
    "pmGLAT",
    "Gmag",
    "BP-RP",
    "S",
    "Pop",
]


def convert_scocen(directory: str | Path) -> pd.DataFrame:
    """Canonical frame of the Damiani et al. (2019) Sco-Cen sample (see module docs)."""
    table = pd.read_fwf(
        Path(directory) / "damiani_members.txt", usecols=range(13), dtype={"source_id": np.int64}
    )
    if list(table.columns) != _SCOCEN_COLUMNS:
        raise ValueError(f"unexpected Sco-Cen columns {list(table.columns)}")
    g = table["Gmag"].to_numpy(np.float64)
    bp_rp = table["BP-RP"].to_numpy(np.float64)
    rp = g - g_minus_rp(bp_rp)
    flag = table["S"].fillna("").astype(str).str.strip()
    out: dict[str, Any] = {
        "source_id": table["source_id"].to_numpy(np.int64),
        "ra": table["RAJ2000"].to_numpy(np.float64),
        "dec": table["DEJ2000"].to_numpy(np.float64),
        "parallax": table["Plx"].to_numpy(np.float64),
        "parallax_error": gaia_dr2_parallax_error(g).astype(np.float32),
        mag_column("gaia_g"): g.astype(np.float32),
        err_column("gaia_g"): np.where(np.isfinite(g), GAIA_DR2_SYSTEMATIC, np.nan),
        mag_column("gaia_bp"): (rp + bp_rp).astype(np.float32),
        err_column("gaia_bp"): np.where(np.isfinite(rp + bp_rp), DERIVED_BP_RP_ERROR, np.nan),
        mag_column("gaia_rp"): rp.astype(np.float32),
        err_column("gaia_rp"): np.where(np.isfinite(rp), DERIVED_BP_RP_ERROR, np.nan),
        "parallax_error_assumed": np.ones(len(table), dtype=bool),
        "gaia_bp_rp_derived": np.isfinite(bp_rp),
        "gaia_dr2_bp_rp": bp_rp.astype(np.float32),
        "glon": table["GLON"].to_numpy(np.float64),
        "glat": table["GLAT"].to_numpy(np.float64),
        "pm_glon": table["pmGLON"].to_numpy(np.float32),
        "pm_glat": table["pmGLAT"].to_numpy(np.float32),
        "s_flag": flag.to_numpy(dtype=object),
        "pms_flag": flag.str.contains("p", regex=False).to_numpy(dtype=bool),
        "variable_flag": flag.str.contains("v", regex=False).to_numpy(dtype=bool),
        "population": table["Pop"].astype(object).where(table["Pop"].notna(), None).to_numpy(),
    }
    for band in ("gaia_g", "gaia_bp", "gaia_rp"):
        out[err_column(band)] = np.asarray(out[err_column(band)], dtype=np.float32)
    return _finish(out)


# --- Kepler --------------------------------------------------------------------------------

_KEPLER_MISSING = -99.0


def convert_kepler(directory: str | Path) -> pd.DataFrame:
    """Canonical frame of the Kepler asteroseismic sample (see module docs)."""
    table = pd.read_csv(
        Path(directory) / "tgas_combined_obs.txt", sep=r"\s+", dtype={"TYC": str, "src": str}
    )

    def measured(name: str) -> tuple[np.ndarray, np.ndarray]:
        value = table[name].to_numpy(np.float64)
        error = table[f"sig_{name}"].to_numpy(np.float64)
        missing = value <= _KEPLER_MISSING
        return np.where(missing, np.nan, value), np.where(missing, np.nan, error)

    out: dict[str, Any] = {
        "source_id": table["KIC"].to_numpy(np.int64),
        "ra": table["ra"].to_numpy(np.float64),
        "dec": table["dec"].to_numpy(np.float64),
        "parallax": table["plx"].to_numpy(np.float64),
        "parallax_error": table["sig_plx"].to_numpy(np.float64),
    }
    no_error = np.zeros(len(table), dtype=bool)
    for native, band in (("jmag", "tmass_j"), ("hmag", "tmass_h"), ("kmag", "tmass_ks")):
        value, error = measured(native)
        # an error of 0.000 stands for a null 2MASS error: no likelihood without one
        null = np.isfinite(value) & ~(error > 0)
        no_error |= null
        out[mag_column(band)] = np.where(null, np.nan, value).astype(np.float32)
        out[err_column(band)] = np.where(null, np.nan, error).astype(np.float32)
    out["tmass_null_error"] = no_error
    for letter in "griz":
        value, error = measured(f"{letter}mag")
        out[mag_column(f"sdss_{letter}")] = value.astype(np.float32)
        out[err_column(f"sdss_{letter}")] = np.hypot(error, KIC_SDSS_SYSTEMATIC).astype(np.float32)
    out["kic_id"] = table["KIC"].to_numpy(np.int64)
    out["tycho_id"] = table["TYC"].to_numpy(dtype=object)
    for letter in "griz":
        value, error = measured(f"{letter}mag")
        out[f"kic_{letter}"], out[f"kic_{letter}_err"] = value, error
    for native, name in (("btmag", "tycho_bt"), ("vtmag", "tycho_vt")):
        value, error = measured(native)
        out[name], out[f"{name}_err"] = value, error
    for label in ("teff", "logg", "feh", "numax", "dnu"):
        out[label] = table[label].to_numpy(np.float64)
        out[f"{label}_err"] = table[f"sig_{label}"].to_numpy(np.float64)
    out["clump"] = table["clump"].to_numpy(np.int8)
    out["label_source"] = table["src"].to_numpy(dtype=object)
    return _finish(out)


def _finish(columns: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    validate_schema(dict(frame.dtypes))
    return frame


# --- build and load ------------------------------------------------------------------------

_SOURCES: dict[str, dict[str, Any]] = {
    "rho_oph": {
        "convert": convert_rho_oph,
        "folder": "rho_oph_members",
        "files": ["tab_ap_4.dat", "tab_3.dat"],
        "reference": "Canovas et al. 2019, A&A 626, A80 (Census of ρ Oph candidate members "
        "from Gaia DR2)",
        "notes": [
            "Fluxes are band-integrated λF_λ in W m^-2; mean F_λ = λF_λ / pivot wavelength "
            "of the band's curve in ysoscale.physics.passbands; magnitude = -2.5 log10(F_λ / "
            "zero point) in the band's own system (Vega for Gaia, 2MASS, WISE).",
            "Magnitude error = 1.0857 σ_F / F as published (the authors' SED errors, larger "
            "than the 2MASS/WISE catalogue errors); Gaia DR2 bands read as DR3 with "
            f"{GAIA_DR2_SYSTEMATIC} mag added in quadrature.",
            "ra, dec (J2015.5), parallax, pmra, pmdec from tab_3.dat joined on the Gaia DR2 "
            "source id; parallax_error is the typical DR2 error at the star's G plus 0.1 mas "
            "systematic (parallax_error_assumed = True). Parallaxes not zero-point corrected "
            "(DR2 quasar offset -0.029 mas, Lindegren et al. 2018).",
            "source_id is the Gaia DR2 source id (not necessarily the DR3 one).",
            "Check: G-RP of the 7 'Photosphere' stars lies 0.03-0.07 mag above the "
            "synthetic relation g_minus_rp(BP-RP), about 1σ of the assumed errors (DR2 "
            "passbands and the pivot-wavelength choice are the likely causes).",
            "sed_class: 'Class II' (disk), 'Class III', 'Photosphere'; literature_status: "
            "control / new / other.",
        ],
    },
    "scocen": {
        "convert": convert_scocen,
        "folder": "scocen_pms",
        "files": ["damiani_members.txt"],
        "reference": "Damiani et al. 2019, A&A 623, A112 (Sco-Cen PMS stars from Gaia DR2)",
        "notes": [
            "gaia_g_mag = DR2 G; error "
            f"{GAIA_DR2_SYSTEMATIC} mag assumed (none published; DR2 -> DR3 passband and "
            "calibration differences, 0.01 mag rounding).",
            "gaia_rp_mag = G - (G-RP)(BP-RP) with the cubic g_minus_rp fitted to ysoscale's "
            "synthetic DR3 photometry (rms 0.008 mag); gaia_bp_mag = gaia_rp_mag + (BP-RP); "
            f"errors {DERIVED_BP_RP_ERROR} mag; gaia_bp_rp_derived = True. The three "
            "magnitudes carry two measured numbers: their errors are correlated, which the "
            "canonical columns cannot express.",
            "parallax = DR2 Plx (not zero-point corrected); parallax_error assumed from G "
            "(typical DR2 error + 0.1 mas systematic).",
            "s_flag: raw S column; pms_flag = 'p' in S, variable_flag = 'v' in S (README). "
            "Every row of this table carries 'p'.",
            "population: Pop column (None where blank). ra, dec: RAJ2000, DEJ2000. "
            "source_id is the Gaia DR2 source id; gaia_dr2_bp_rp the published colour.",
        ],
    },
    "kepler": {
        "convert": convert_kepler,
        "folder": "kepler_seismic",
        "files": ["tgas_combined_obs.txt"],
        "reference": "Kepler asteroseismic sample with APOGEE/SPC spectroscopy, TGAS "
        "parallaxes, KIC and 2MASS photometry (shared data README)",
        "notes": [
            "source_id = KIC id (also kic_id). parallax, parallax_error = TGAS as published.",
            "2MASS J/H/K -> tmass_j/h/ks as published, except that a magnitude whose error "
            "is 0.000 (a null 2MASS error; 7 values) becomes a non-detection, as the 2MASS "
            "adapter does; tmass_null_error marks those rows.",
            "KIC g r i z -> sdss_g..sdss_z without transformation, error = sqrt(sig^2 + "
            f"{KIC_SDSS_SYSTEMATIC}^2): KIC is tied to SDSS but offset by a few 0.01 mag "
            "(Pinsonneault et al. 2012). -99 = missing. Raw values in kic_g.. kic_z_err.",
            "Tycho BT/VT are not canonical bands: kept as tycho_bt, tycho_vt (+ _err).",
            "Labels: teff, logg, feh, numax, dnu with *_err (sig_* in the source); "
            "clump (-1/0/1 as in the source); label_source = src (apo = APOGEE, spc = SPC).",
        ],
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _licence(folder: Path) -> str:
    text = (folder / "LICENSE").read_text(encoding="utf-8").splitlines()
    holder = next((line.strip() for line in text if line.startswith("Copyright")), "")
    return f"{text[0].strip()}; {holder}" if holder else text[0].strip()


def build_samples(shared_data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Convert the shared data sets and write ``{name}.parquet`` and ``provenance.json``.

    Parameters
    ----------
    shared_data_dir : path
        The project's shared data folder (with ``rho_oph_members/`` etc.).
    out_dir : path
        Where to write; created if needed. The shipped files live in
        ``ysoscale/data/samples/``.

    Returns
    -------
    dict of str to Path
        Sample name to parquet path.
    """
    shared, out = Path(shared_data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance: dict[str, Any] = {}
    written: dict[str, Path] = {}
    for name, source in _SOURCES.items():
        folder = shared / source["folder"]
        convert: Callable[[Path], pd.DataFrame] = source["convert"]
        frame = convert(folder)
        path = out / f"{name}.parquet"
        frame.to_parquet(path, index=False, compression="zstd", compression_level=19)
        written[name] = path
        provenance[name] = {
            "file": path.name,
            "rows": len(frame),
            "sources": [
                {"path": f"{source['folder']}/{file}", "sha256": _sha256(folder / file)}
                for file in source["files"]
            ],
            "licence": _licence(folder),
            "reference": source["reference"],
            "conversion_notes": source["notes"],
            "columns": list(frame.columns),
        }
    provenance["_built_by"] = "ysoscale.catalog.samples.build_samples"
    (out / _PROVENANCE).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n")
    return written


def sample_provenance(name: str | None = None) -> dict[str, Any]:
    """Provenance record of a shipped sample (all samples when ``name`` is None)."""
    text = _data_file(_PROVENANCE).read_text(encoding="utf-8")
    records = json.loads(text)
    if name is None:
        return {key: value for key, value in records.items() if key in SAMPLES}
    _check_name(name)
    return records[name]


def _data_file(name: str) -> Any:
    return resources.files(_PACKAGE).joinpath(*_DATA_PATH, name)


def _check_name(name: str) -> None:
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; shipped samples: {SAMPLES}")


def load_sample(name: str) -> pd.DataFrame:
    """Shipped real sample ``name`` (one of :data:`SAMPLES`) as a canonical frame.

    The provenance record is attached as ``frame.attrs["provenance"]``.

    Examples
    --------
    >>> kepler = load_sample("kepler")
    >>> {"teff", "logg", "feh", "tmass_ks_mag"} <= set(kepler.columns)
    True
    """
    _check_name(name)
    with resources.as_file(_data_file(f"{name}.parquet")) as path:
        frame = pd.read_parquet(path)
    frame.attrs["provenance"] = sample_provenance(name)
    return frame

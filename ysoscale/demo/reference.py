"""First part of ``ysoscale demo``: magnitudes and SEDs of three reference stars.

The stars are the Sun at 10 pc, and a 1 Myr, 0.3 M☉, solar-metallicity young star at
140 pc behind A_V = 3 (R_V = 3.1), once bare and once with an 800 K disk carrying 10 %
of the stellar luminosity. Their magnitudes in every canonical band come from the
:class:`~ysoscale.physics.forward.ForwardModel` (grids built on first use); the plot
overlays the band points on the model spectra they were integrated from, so it doubles
as a visual check that grid interpolation, zero points and reddening agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ysoscale.physics.extinction import extinction_curve, law_wavelength_range
from ysoscale.physics.forward import PARSEC_CM, R_SUN_CM, ForwardModel, Photometry
from ysoscale.physics.passbands import Band, get_bands
from ysoscale.physics.photometry import PhotometryGridSpec, spectral_segments
from ysoscale.physics.spectra import STEFAN_BOLTZMANN_CGS, interpolate_spectrum, planck_lambda

__all__ = ["reference_stars"]

LAW = "G23"
SUN = {
    "teff": 5772.0,
    "logg": 4.438,
    "mh": 0.0,
    "av": 0.0,
    "rv": 3.1,
    "radius": 1.0,
    "distance": 10.0,
}
YSO = {"mass": 0.3, "age_yr": 1e6, "mh": 0.0, "distance": 140.0, "av": 3.0, "rv": 3.1}
DISK = {"disk_frac": 0.1, "disk_temp": 800.0}
PNG_NAME = "reference_seds.png"
JSON_NAME = "reference_magnitudes.json"
_XTICKS = (0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
_DYNAMIC_RANGE = 1e-5  # lower y-limit of each panel relative to its spectrum's peak


@dataclass
class _Star:
    """One reference star: label, inputs, forward-model result, atmospheric parameters."""

    key: str
    label: str
    inputs: dict[str, float]
    result: Photometry
    teff: float
    logg: float
    mh: float
    radius: float
    distance: float
    av: float
    rv: float
    disk_frac: float = 0.0
    disk_temp: float | None = None


def _redden(lam: np.ndarray, flux: np.ndarray, av: float, rv: float) -> np.ndarray:
    """``flux`` dimmed by A_V of the G23 law, only where the law is defined."""
    if av == 0.0:
        return flux
    lo, hi = law_wavelength_range(LAW)
    inside = (lam >= lo) & (lam <= hi)
    out = flux.copy()
    out[inside] *= 10.0 ** (-0.4 * av * extinction_curve(lam[inside], rv, LAW))
    return out


def _model_spectrum(
    star: _Star, segments: list[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Observed F_λ (erg/s/cm²/Å) of the photosphere, and of the disk (or None)."""
    segment = next(
        (s for s in segments if s.teff.values[0] <= star.teff <= s.teff.values[-1]), None
    )
    if segment is None:
        raise ValueError(f"Teff = {star.teff:.0f} K is not covered by a single spectral segment")
    lam, surface = interpolate_spectrum(segment, star.teff, star.logg, star.mh)
    dilution = (star.radius * R_SUN_CM / (star.distance * PARSEC_CM)) ** 2
    photosphere = _redden(lam, surface * dilution, star.av, star.rv)
    disk = None
    if star.disk_frac > 0 and star.disk_temp is not None:
        # πB_λ integrates to σT_disk⁴; rescale to L_disk/L_star × σT_eff⁴ (R/d)²
        bolometric = star.disk_frac * STEFAN_BOLTZMANN_CGS * star.teff**4 * dilution
        shape = planck_lambda(lam, star.disk_temp) / (STEFAN_BOLTZMANN_CGS * star.disk_temp**4)
        disk = _redden(lam, shape * bolometric, star.av, star.rv)
    return lam, photosphere, disk


def _band_fluxes(bands: tuple[Band, ...], mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pivot wavelengths (Å) and λF_λ (erg/s/cm²) of band magnitudes."""
    pivot = np.array([b.pivot_wavelength for b in bands])
    zero_point = np.array([b.zero_point_flux for b in bands])
    return pivot, pivot * zero_point * 10.0 ** (-0.4 * np.asarray(mag, dtype=float))


def _print_table(bands: tuple[Band, ...], stars: list[_Star]) -> None:
    header = f"{'band':<13} {'pivot µm':>9}" + "".join(f" {s.key:>12}" for s in stars)
    print(header)
    print("-" * len(header))
    for i, band in enumerate(bands):
        row = f"{band.id:<13} {band.pivot_wavelength / 1e4:>9.4f}"
        for star in stars:
            m = float(star.result.mag[0, i])
            row += f" {m:>12.3f}" if math.isfinite(m) else f" {'nan':>12}"
        print(row)
    validity = ", ".join(f"{s.key}={bool(s.result.valid[0])}" for s in stars)
    print(f"valid: {validity}")


def _derived(result: Photometry) -> dict[str, float]:
    return {
        "teff": float(result.teff[0]),
        "logg": float(result.logg[0]),
        "log10_lum": float(result.log10_lum[0]),
        "radius": float(result.radius[0]),
    }


def _plot(path: Path, bands: tuple[Band, ...], stars: list[_Star]) -> None:
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global backend

    segments = spectral_segments(PhotometryGridSpec())
    fig = Figure(figsize=(9.0, 11.0), layout="constrained")
    axes = fig.subplots(len(stars), 1, sharex=True)
    surveys = sorted({b.survey for b in bands}, key=[b.survey for b in bands].index)
    markers = dict(zip(surveys, "os^Dvph<>", strict=False))
    colors = dict(zip(surveys, [f"C{i}" for i in range(1, 10)], strict=False))
    spectra = {s.key: _model_spectrum(s, segments) for s in stars}
    survey_handles: dict[str, Any] = {}
    line_labels = {"model spectrum", "photosphere (reddened)"} | {
        f"disk blackbody {s.disk_temp:.0f} K (reddened)" for s in stars if s.disk_temp
    }
    for ax, star in zip(axes, stars, strict=True):
        lam, photosphere, disk = spectra[star.key]
        um = lam / 1e4
        total = photosphere if disk is None else photosphere + disk
        peak = float(np.max(lam * total))
        if disk is not None:
            bare_lam, bare, _ = spectra["yso"]
            ax.plot(
                bare_lam / 1e4,
                bare_lam * bare,
                color="0.6",
                lw=0.8,
                ls="--",
                label="photosphere (reddened)",
            )
            ax.plot(
                um,
                lam * disk,
                color="C3",
                lw=0.8,
                ls=":",
                label=f"disk blackbody {star.disk_temp:.0f} K (reddened)",
            )
        ax.plot(um, lam * total, color="k", lw=0.9, label="model spectrum")
        pivot, lam_flux = _band_fluxes(bands, star.result.mag[0])
        floor = peak * _DYNAMIC_RANGE
        off_scale = 0
        for survey in surveys:
            sel = np.array([b.survey == survey for b in bands]) & np.isfinite(lam_flux)
            shown = sel & (lam_flux >= floor)
            off_scale += int(np.sum(sel & ~shown))
            ax.plot(
                pivot[shown] / 1e4,
                lam_flux[shown],
                ls="none",
                marker=markers[survey],
                ms=6,
                mfc="none",
                mew=1.4,
                color=colors[survey],
                label=survey,
            )
            survey_handles.setdefault(survey, ax.get_lines()[-1])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.12, 30.0)
        ax.set_xticks(_XTICKS, [f"{t:g}" for t in _XTICKS])
        ax.set_ylim(floor, peak * 3.0)
        ax.set_ylabel(r"$\lambda F_\lambda$ [erg s$^{-1}$ cm$^{-2}$]")
        valid = "valid" if bool(star.result.valid[0]) else "INVALID"
        note = (
            f"{star.label}\nTeff={star.teff:.0f} K, log g={star.logg:.2f}, "
            f"R={star.radius:.2f} R☉ ({valid})"
        )
        if off_scale:
            note += f"\n{off_scale} band point(s) below the plotted range"
        ax.text(
            0.98,
            0.96,
            note,
            transform=ax.transAxes,
            fontsize=8.5,
            ha="right",
            va="top",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )
        lines = [h for h in ax.get_lines() if h.get_label() in line_labels]
        ax.legend(handles=lines, fontsize=8, loc="lower right")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel(r"wavelength [$\mu$m]")
    fig.legend(
        handles=[survey_handles[s] for s in surveys if s in survey_handles],
        loc="outside lower center",
        ncol=len(surveys),
        fontsize=8.5,
        title=r"band magnitudes as $\lambda_{\rm pivot}\,\langle F_\lambda\rangle$"
        " (broad bands on steep SEDs, e.g. Gaia G, lie above the spectrum)",
        title_fontsize=8.5,
    )
    fig.suptitle("ysoscale reference SEDs: model spectra and synthetic band magnitudes")
    fig.savefig(path, dpi=120)


def reference_stars(
    out_dir: str | Path = "ysoscale_demo", *, progress: bool = True
) -> dict[str, Any]:
    """Magnitudes, SED plot and JSON summary of three reference stars.

    Builds (or loads from the cache) the photometry and isochrone grids, computes the
    magnitudes in all canonical bands of the Sun at 10 pc and of a 1 Myr, 0.3 M☉ star
    at 140 pc behind A_V = 3 (R_V = 3.1) without and with an 800 K disk
    (L_disk / L_star = 0.1), prints them as a table, and writes
    ``reference_seds.png`` and ``reference_magnitudes.json`` to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Output directory (created if missing).
    progress : bool
        Show progress while the grids are built.

    Returns
    -------
    dict
        ``out_dir``, ``png`` and ``json`` (paths), ``bands`` (band ids),
        ``magnitudes`` ({star: {band: mag}}), ``valid`` ({star: bool}) and
        ``derived`` (Teff, log g, log10 L, R of the young star).

    Examples
    --------
    >>> result = reference_stars("/tmp/ysoscale_demo", progress=False)  # doctest: +SKIP
    >>> round(result["magnitudes"]["sun"]["gaia_g"], 1)  # doctest: +SKIP
    4.7
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = ForwardModel.default(progress=progress)
    bands = get_bands(model.bands)

    sun = model.atmospheric(**SUN)
    young_args = {
        "log10_mass": np.log10(YSO["mass"]),
        "log10_age": np.log10(YSO["age_yr"]),
        "mh": YSO["mh"],
        "distance": YSO["distance"],
        "av": YSO["av"],
        "rv": YSO["rv"],
    }
    bare = model.physical(**young_args)
    disky = model.physical(**young_args, **DISK)
    derived = _derived(bare)
    yso_common = {
        "teff": derived["teff"],
        "logg": derived["logg"],
        "mh": YSO["mh"],
        "radius": derived["radius"],
        "distance": YSO["distance"],
        "av": YSO["av"],
        "rv": YSO["rv"],
    }
    yso_inputs = {k: float(v) for k, v in YSO.items()}
    stars = [
        _Star(
            "sun",
            "Sun at 10 pc (A_V = 0)",
            dict(SUN),
            sun,
            **{k: SUN[k] for k in ("teff", "logg", "mh", "radius", "distance", "av", "rv")},
        ),
        _Star(
            "yso", "1 Myr, 0.3 M☉ star at 140 pc, A_V = 3, no disk", yso_inputs, bare, **yso_common
        ),
        _Star(
            "yso_disk",
            "same star + 800 K disk, L_disk/L_star = 0.1",
            {**yso_inputs, **DISK},
            disky,
            **yso_common,
            **DISK,
        ),
    ]

    _print_table(bands, stars)
    print(
        f"young star (1 Myr, 0.3 M☉, [M/H]=0): Teff = {derived['teff']:.0f} K, "
        f"log g = {derived['logg']:.3f}, log10 L/L☉ = {derived['log10_lum']:.3f}, "
        f"R = {derived['radius']:.3f} R☉"
    )

    png_path = out / PNG_NAME
    _plot(png_path, bands, stars)

    def _mags(result: Photometry) -> dict[str, float | None]:
        return {
            b.id: (float(m) if math.isfinite(float(m)) else None)
            for b, m in zip(bands, result.mag[0], strict=True)
        }

    magnitudes = {s.key: _mags(s.result) for s in stars}
    valid = {s.key: bool(s.result.valid[0]) for s in stars}
    summary = {
        "bands": [
            {"id": b.id, "system": b.system, "pivot_wavelength_aa": b.pivot_wavelength}
            for b in bands
        ],
        "stars": {
            s.key: {
                "label": s.label,
                "inputs": s.inputs,
                "valid": valid[s.key],
                "magnitudes": magnitudes[s.key],
                **({"derived": _derived(s.result)} if s.result.teff is not None else {}),
            }
            for s in stars
        },
    }
    json_path = out / JSON_NAME
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {png_path}\nwrote {json_path}")
    return {
        "out_dir": out,
        "png": png_path,
        "json": json_path,
        "bands": [b.id for b in bands],
        "magnitudes": magnitudes,
        "valid": valid,
        "derived": derived,
    }

"""Colour-magnitude and Kiel diagrams of a catalog, coloured by posterior age."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_cmd_kiel(frame: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Gaia CMD (absolute G from the parallax where positive) and Kiel diagram.

    Parameters
    ----------
    frame : DataFrame
        Canonical columns plus ``log10_age_median``, ``teff_median``, ``logg_median``.
    path : where the PNG goes

    Examples
    --------
    >>> plot_cmd_kiel(result_frame, "cmd_kiel.png")  # doctest: +SKIP
    """
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global backend

    path = Path(path)
    age = frame["log10_age_median"].to_numpy(dtype=float)
    colour = (frame.get("gaia_bp_mag") - frame.get("gaia_rp_mag")).to_numpy(dtype=float)
    g = frame["gaia_g_mag"].to_numpy(dtype=float)
    parallax = frame["parallax"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        abs_g = np.where(parallax > 0, g + 5.0 * np.log10(parallax / 100.0), np.nan)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    cmd, kiel = fig.subplots(1, 2)
    style = dict(c=age, cmap="viridis_r", vmin=5.7, vmax=10.1, s=9, lw=0)
    shown = np.isfinite(colour) & np.isfinite(abs_g)
    cmd.scatter(colour[shown], abs_g[shown], **{**style, "c": age[shown]})
    cmd.invert_yaxis()
    cmd.set(xlabel="BP − RP (observed)", ylabel="M_G (from parallax, no extinction correction)",
            title=f"{title}: CMD ({shown.sum():,} stars)")  # fmt: skip
    teff, logg = frame["teff_median"].to_numpy(float), frame["logg_median"].to_numpy(float)
    shown = np.isfinite(teff) & np.isfinite(logg)
    points = kiel.scatter(teff[shown], logg[shown], **{**style, "c": age[shown]})
    kiel.set_xscale("log")
    kiel.invert_xaxis()
    kiel.invert_yaxis()
    kiel.set(xlabel="posterior median Teff (K)", ylabel="posterior median log g",
             title=f"Kiel diagram ({shown.sum():,} stars)")  # fmt: skip
    fig.colorbar(points, ax=kiel, label="posterior median log10(age / yr)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path

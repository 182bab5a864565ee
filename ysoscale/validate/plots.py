"""Figures of the validation report (matplotlib ``Figure`` on the Agg canvas; no pyplot).

Each function takes arrays and returns a :class:`matplotlib.figure.Figure`; the report
saves them as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ysoscale.validate.calibration import TarpResult, coverage_tolerance

AGE_STYLE = {"cmap": "viridis_r", "vmin": 5.7, "vmax": 10.1}
"""Colour scale of log10(age / yr), as in the demo's CMD/Kiel figure."""


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.2, 2.8)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_coverage(
    levels: np.ndarray, coverage: np.ndarray, params: Sequence[str], n: Sequence[int]
) -> Figure:
    """Empirical against expected coverage, one line per parameter, with the binomial
    2-sigma band of the smallest star count.

    Examples
    --------
    >>> from ysoscale.validate.calibration import LEVELS
    >>> fig = plot_coverage(LEVELS, np.tile(LEVELS[:, None], (1, 2)), ["av", "mh"], [100, 100])
    >>> fig.savefig("/tmp/coverage.png")  # doctest: +SKIP
    """
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.subplots()
    grid = np.linspace(0, 1, 101)
    band = coverage_tolerance(grid, max(1, min(n)))
    ax.fill_between(grid, grid - band, grid + band, color="0.85",
                    label=f"±2σ binomial scatter (n = {min(n):,})")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="calibrated")
    for j, param in enumerate(params):
        ax.plot(levels, coverage[:, j], marker="o", ms=3, lw=1.3, label=param)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credible level (central interval)",
           ylabel="share of truths inside", title="Coverage: expected vs empirical")  # fmt: skip
    ax.text(0.03, 0.97, "above the diagonal: too wide\nbelow: overconfident",
            transform=ax.transAxes, va="top", fontsize=8, color="0.3")  # fmt: skip
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return fig


def plot_sbc(
    histograms: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    params: Sequence[str],
    pvalues: Sequence[dict[str, float]],
    n_samples: int,
) -> Figure:
    """SBC rank histograms (count / expected count; 1 is uniform) with 2-sigma bands.

    Examples
    --------
    >>> from ysoscale.validate.calibration import rank_histogram
    >>> h = rank_histogram(np.arange(65).repeat(3), 64)
    >>> fig = plot_sbc([h], ["av"], [{"chi2": 1.0, "ks": 1.0}], 64)
    """
    fig, axes = _grid(len(params))
    for ax, param, (counts, expected, edges), p in zip(axes, params, histograms, pvalues,
                                                        strict=True):  # fmt: skip
        share = np.diff(edges) / (n_samples + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = counts / expected
            sigma = np.sqrt(expected * (1 - share)) / expected
        ax.bar(edges[:-1], ratio, width=np.diff(edges), align="edge", color="tab:blue",
               alpha=0.75, edgecolor="white")  # fmt: skip
        ax.stairs(1 + 2 * sigma, edges, baseline=1 - 2 * sigma, fill=True, color="0.5",
                  alpha=0.25)  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xlim=(0, n_samples + 1), xlabel=f"rank of truth among {n_samples} samples",
               ylabel="count / expected")  # fmt: skip
        ax.set_title(f"{param}\nχ² p = {p['chi2']:.2g}, KS p = {p['ks']:.2g}", fontsize=9)
    fig.suptitle("SBC rank histograms (grey: ±2σ of a uniform histogram)")
    return fig


def plot_tarp(result: TarpResult, params: Sequence[str]) -> Figure:
    """TARP expected coverage probability against the credibility level.

    Examples
    --------
    >>> from ysoscale.validate.calibration import tarp
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_tarp(tarp(rng.normal(size=(50, 20, 2)), rng.normal(size=(50, 2))), ["a", "b"])
    """
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.subplots()
    band = coverage_tolerance(result.alpha, max(result.n, 1))
    ax.fill_between(result.alpha, result.alpha - band, result.alpha + band, color="0.85",
                    label=f"±2σ binomial scatter (n = {result.n:,})")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="calibrated")
    ax.plot(result.alpha, result.ecp, color="tab:red", lw=1.8, label="TARP")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credibility level α",
           ylabel="expected coverage probability")  # fmt: skip
    ax.set_title(f"TARP over {len(params)} parameters\nmax |ECP − α| = "
                 f"{result.max_deviation:.3f}, KS p = {result.ks_pvalue:.2g}",
                 fontsize=10)  # fmt: skip
    ax.text(0.03, 0.97, ", ".join(params), transform=ax.transAxes, va="top", fontsize=7,
            color="0.3", wrap=True)  # fmt: skip
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_predicted_vs_true(
    truth: np.ndarray, median: np.ndarray, params: Sequence[str], stats: Sequence[dict]
) -> Figure:
    """Posterior median against truth per parameter, with the 1:1 line, MAD and bias.

    Examples
    --------
    >>> truth = np.random.default_rng(0).normal(size=(100, 1))
    >>> fig = plot_predicted_vs_true(truth, truth + 0.1, ["av"], [{"mad": 0.0, "bias": 0.1,
    ...                              "n": 100}])
    """
    fig, axes = _grid(len(params), size=(3.3, 3.2))
    for j, (ax, param, s) in enumerate(zip(axes, params, stats, strict=True)):
        t, m = truth[:, j], median[:, j]
        ok = np.isfinite(t) & np.isfinite(m)
        t, m = t[ok], m[ok]
        if len(t) > 5000:
            ax.hexbin(t, m, gridsize=60, bins="log", mincnt=1, cmap="Blues")
        else:
            ax.scatter(t, m, s=4, lw=0, alpha=0.6, color="tab:blue")
        if len(t):
            lo, hi = np.nanpercentile(np.concatenate([t, m]), [0.5, 99.5])
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8)
            ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set(xlabel=f"true {param}", ylabel="posterior median")
        ax.set_title(f"{param}: MAD {s['mad']:.3g}, bias {s['bias']:+.3g} (n={s['n']:,})",
                     fontsize=8)  # fmt: skip
    fig.suptitle("Predicted (posterior median) vs true")
    return fig


def plot_kiel_cmd(
    teff: np.ndarray,
    logg: np.ndarray,
    age: np.ndarray,
    colour: np.ndarray | None = None,
    abs_g: np.ndarray | None = None,
) -> Figure:
    """Kiel diagram (posterior medians) and, with photometry, a Gaia CMD; colour = posterior
    median log10(age).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> teff, logg = rng.uniform(3e3, 8e3, 50), rng.uniform(3, 5, 50)
    >>> fig = plot_kiel_cmd(teff, logg, rng.uniform(6, 10, 50))
    """
    with_cmd = colour is not None and abs_g is not None
    fig = Figure(figsize=(11 if with_cmd else 6, 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 if with_cmd else 1))
    points = None
    if with_cmd:
        cmd = axes[0]
        shown = np.isfinite(colour) & np.isfinite(abs_g)
        points = cmd.scatter(colour[shown], abs_g[shown], c=age[shown], s=8, lw=0, **AGE_STYLE)
        cmd.invert_yaxis()
        cmd.set(xlabel="BP − RP (observed)", ylabel="M_G (from parallax, no extinction correction)",
                title=f"Gaia CMD ({shown.sum():,} stars)")  # fmt: skip
    kiel = axes[-1]
    shown = np.isfinite(teff) & np.isfinite(logg)
    points = kiel.scatter(teff[shown], logg[shown], c=age[shown], s=8, lw=0, **AGE_STYLE)
    kiel.set_xscale("log")
    kiel.invert_xaxis()
    kiel.invert_yaxis()
    kiel.set(xlabel="posterior median Teff (K)", ylabel="posterior median log g",
             title=f"Kiel diagram ({shown.sum():,} stars)")  # fmt: skip
    fig.colorbar(points, ax=axes, label="posterior median log10(age / yr)")
    return fig


def plot_sky(ra: np.ndarray, dec: np.ndarray, p_young: np.ndarray) -> Figure:
    """Mollweide map (equatorial, RA increasing to the left) of stars coloured by p_young.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_sky(rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50), rng.random(50))
    """
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot(projection="mollweide")
    ok = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(p_young)
    order = np.argsort(p_young[ok])  # young stars drawn last, on top
    x = -np.radians(((ra[ok] + 180.0) % 360.0) - 180.0)[order]
    y = np.radians(dec[ok])[order]
    points = ax.scatter(x, y, c=p_young[ok][order], s=6, lw=0, cmap="coolwarm", vmin=0, vmax=1)
    ax.set_xticks(np.radians([-150, -120, -90, -60, -30, 0, 30, 60, 90, 120, 150]))
    ax.set_xticklabels(["150°", "120°", "90°", "60°", "30°", "0°", "330°", "300°", "270°",
                        "240°", "210°"], fontsize=7)  # fmt: skip
    ax.grid(True, lw=0.4)
    ax.set_title(f"Sky map of p_young ({ok.sum():,} stars; equatorial, RA to the left)")
    fig.colorbar(points, ax=ax, orientation="horizontal", shrink=0.6, label="p_young")
    return fig


def plot_widths(p16: np.ndarray, p84: np.ndarray, params: Sequence[str]) -> Figure:
    """Histogram of posterior half-widths (p84 − p16) / 2 per parameter.

    Examples
    --------
    >>> fig = plot_widths(np.zeros((10, 1)), np.ones((10, 1)), ["av"])
    """
    fig, axes = _grid(len(params), size=(3.0, 2.4))
    for j, (ax, param) in enumerate(zip(axes, params, strict=True)):
        width = (p84[:, j] - p16[:, j]) / 2
        width = width[np.isfinite(width)]
        if len(width):
            ax.hist(width, bins=40, color="tab:green", alpha=0.8)
            ax.axvline(np.median(width), color="k", lw=0.8)
        ax.set(xlabel=f"{param} 1σ half-width", ylabel="stars")
        ax.set_title(f"{param}: median {np.median(width) if len(width) else np.nan:.3g}",
                     fontsize=9)  # fmt: skip
    fig.suptitle("Posterior widths, (p84 − p16) / 2")
    return fig


def plot_reliability(probability: np.ndarray, outcome: np.ndarray, label: str) -> Figure:
    """Reliability diagram: observed frequency of ``outcome`` in bins of ``probability``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.random(500)
    >>> fig = plot_reliability(p, rng.random(500) < p, "young")
    """
    fig = Figure(figsize=(5.4, 4.8), layout="constrained")
    ax = fig.subplots()
    ok = np.isfinite(probability)
    p, y = probability[ok], np.asarray(outcome, dtype=bool)[ok]
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, edges) - 1, 0, 9)
    count = np.bincount(which, minlength=10)
    hits = np.bincount(which, weights=y, minlength=10)
    mean_p = np.bincount(which, weights=p, minlength=10)
    shown = count > 0
    freq = hits[shown] / count[shown]
    err = np.sqrt(np.maximum(freq * (1 - freq), 0.25 / count[shown]) / count[shown])
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    ax.errorbar(mean_p[shown] / count[shown], freq, yerr=2 * err, fmt="o-", color="tab:purple")
    for x, f, c in zip(mean_p[shown] / count[shown], freq, count[shown], strict=True):
        ax.annotate(f"{c}", (x, f), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel=f"predicted P({label})",
           ylabel=f"true share {label}")  # fmt: skip
    ax.set_title(f"Reliability of P({label})\n{ok.sum():,} stars; numbers: stars per bin",
                 fontsize=10)  # fmt: skip
    return fig


__all__ = [
    "plot_coverage",
    "plot_kiel_cmd",
    "plot_predicted_vs_true",
    "plot_reliability",
    "plot_sbc",
    "plot_sky",
    "plot_tarp",
    "plot_widths",
]


def plot_recalibration(recalibration, max_patterns: int = 6) -> Figure:
    """The maps of a :class:`~ysoscale.nn.recalibration.QuantileRecalibration`: per
    parameter, how far the held-out PIT quantile ``R^-1(level)`` lies from the level (0: a
    calibrated estimator), one line per condition pattern (the ``max_patterns`` with most
    stars, and all stars together). Above zero the truths sat higher in the estimator's
    posteriors than they should; a line falling through the middle (truths bunched
    in the middle): posteriors too wide; rising: too narrow.

    Examples
    --------
    >>> from ysoscale.nn.recalibration import ALL_PATTERNS, QuantileRecalibration
    >>> recal = QuantileRecalibration(("av",), np.array([0.25, 0.5, 0.75]),
    ...     {ALL_PATTERNS: np.array([[0.2], [0.5], [0.8]])}, {ALL_PATTERNS: np.array([500])})
    >>> fig = plot_recalibration(recal)
    >>> fig.savefig("/tmp/recalibration.png")  # doctest: +SKIP
    """
    from ysoscale.infer.kernel import CONDITION_PATTERN_BITS
    from ysoscale.nn.recalibration import ALL_PATTERNS

    def label(pattern: int) -> str:
        if pattern == ALL_PATTERNS:
            return "all patterns"
        names = [n for i, n in enumerate(CONDITION_PATTERN_BITS) if pattern >> i & 1]
        return "+".join(names) or "none"

    by_size = sorted((k for k in recalibration.pit_quantiles if k != ALL_PATTERNS),
                     key=lambda k: -int(np.max(recalibration.n_stars[k])))  # fmt: skip
    shown = [ALL_PATTERNS, *by_size[:max_patterns]]
    params = recalibration.params
    fig, axes = _grid(len(params), ncols=3, size=(3.4, 3.2))
    grid = np.concatenate([[0.0], recalibration.levels, [1.0]])
    for j, (ax, param) in enumerate(zip(axes, params, strict=True)):
        ax.axhline(0.0, color="k", lw=1, ls="--")
        for pattern in shown:
            knots = np.asarray(recalibration.pit_quantiles[pattern])[:, j]
            if not np.all(np.isfinite(knots)):
                continue  # this pattern uses the map of all stars for the parameter
            style = {"color": "k", "lw": 2} if pattern == ALL_PATTERNS else {"lw": 1.1}
            ax.plot(grid, np.r_[0.0, knots, 1.0] - grid, label=label(pattern), **style)
        ax.set(xlim=(0, 1), title=param, xlabel="nominal level",
               ylabel="held-out PIT quantile − level")  # fmt: skip
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle("Quantile recalibration maps: R⁻¹(level) − level (0: calibrated)")
    return fig

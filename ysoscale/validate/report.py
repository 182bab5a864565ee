"""``ysoscale validate``: a self-contained HTML report on a posterior cube.

With a truth table: coverage curves, SBC rank histograms, TARP, predicted against true per
parameter and an accuracy table per survey combination. Always: Kiel diagram and Gaia CMD
coloured by posterior median age, a sky map of p_young, posterior widths, the flags and the
run's model card. The figures are PNG files in the report directory and are also embedded
(base64) in ``index.html``, so the page can be moved or mailed alone; ``report.json`` holds
the headline numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ysoscale.validate.accuracy import accuracy, accuracy_by_group, survey_combinations
from ysoscale.validate.calibration import (
    LEVELS,
    coverage,
    coverage_of_pit,
    coverage_tolerance,
    importance_pit,
    rank_histogram,
    sbc_ranks,
    tarp,
    uniformity_pvalues,
    usable,
)
from ysoscale.validate.data import YOUNG_LOG10_AGE, ValidationData, load
from ysoscale.validate.plots import (
    plot_coverage,
    plot_kiel_cmd,
    plot_predicted_vs_true,
    plot_reliability,
    plot_sbc,
    plot_sky,
    plot_tarp,
    plot_widths,
)

TARP_MIN_FINITE = 0.99
"""A parameter enters TARP when this share of truth-matched stars has all samples finite."""

DPI = 110

MIN_GROUP = 20
"""Survey combinations with fewer stars are pooled into one "other" row."""


@dataclass
class ValidationReport:
    """What :func:`validate` wrote.

    Attributes
    ----------
    out_dir : report directory
    index : ``index.html``
    figures : PNG files, in page order
    numbers : the headline numbers (also in ``report.json``)
    """

    out_dir: Path
    index: Path
    figures: list[Path] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal."""
        n = self.numbers
        lines = [f"{self.index}: {n['n_stars']:,} stars, {len(self.figures)} figure(s)"]
        if "coverage" in n:
            worst = max(n["coverage"]["max_error"].values())
            lines.append(f"  coverage: max |empirical - expected| {worst:.3f} over "
                         f"{len(n['coverage']['max_error'])} parameters")  # fmt: skip
            lines.append(f"  TARP: max |ECP - alpha| {n['tarp']['max_deviation']:.3f} "
                         f"(KS p = {n['tarp']['ks_pvalue']:.2g})")  # fmt: skip
        else:
            lines.append("  no truth table: calibration and accuracy sections absent")
        if "p_young" in n:
            lines.append(f"  p_young > 0.5: {n['p_young']['n_above_half']:,} stars")
        return "\n".join(lines)


def _png(fig, path: Path) -> str:
    """Save ``fig`` to ``path``; its base64 text for the page."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    path.write_bytes(buffer.getvalue())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if not math.isfinite(value):
                return "–"
            return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
        if isinstance(value, int | np.integer):
            return f"{int(value):,}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Page:
    """Sections of the page and the figures they show."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.parts: list[str] = []
        self.figures: list[Path] = []

    def section(self, title: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig, name: str, caption: str) -> None:
        path = self.out_dir / f"{name}.png"
        data = _png(fig, path)
        self.figures.append(path)
        self.parts.append(
            f'<figure><a href="{name}.png"><img id="fig-{name}" src="data:image/png;base64,'
            f'{data}" alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )

    def render(self, title: str) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
            "padding:0 1em;color:#222}img{max-width:100%;height:auto}"
            "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
            "td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}"
            "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
            "figure{margin:1em 0}figcaption{color:#555;font-size:0.9em}"
            ".absent{background:#fff4e5;border-left:4px solid #f0a030;padding:0.5em 1em}"
            "pre{background:#f7f7f7;padding:0.8em;overflow-x:auto;font-size:0.8em}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "\n".join(self.parts) + "</body></html>\n"
        )


def _calibration(page: _Page, data: ValidationData, numbers: dict[str, Any]) -> None:
    params = list(data.truth_params)
    samples, truth = data.samples_of(params), data.truth_of(params)
    weighted = data.log_weight is not None
    if weighted:  # the weights alone: the truth's own weight is not known here
        u = importance_pit(samples, data.log_weight, truth, np.full(len(truth), -np.inf),
                           rng=np.random.default_rng(0))  # fmt: skip
        n_used = np.isfinite(u).sum(axis=0)
        cov = coverage_of_pit(u)
    else:
        n_used = usable(samples, truth).sum(axis=0)
        cov = coverage(samples, truth)
    worst = np.nanmax(np.abs(cov - LEVELS[:, None]), axis=0)
    numbers["coverage"] = {
        "weighted": weighted,
        "levels": LEVELS.round(4).tolist(),
        "empirical": {p: cov[:, j].round(4).tolist() for j, p in enumerate(params)},
        "max_error": {p: float(worst[j]) for j, p in enumerate(params)},
        "n": {p: int(n_used[j]) for j, p in enumerate(params)},
    }
    page.section("Calibration", "calibration")
    page.text(
        f"Truths from {data.truth_path}: {len(params)} parameters with a true_<param> column "
        f"({', '.join(params)}). Coverage: share of truths inside the central credible "
        f"interval at {len(LEVELS)} levels, from the truth's rank among the samples (exact for "
        "any number of samples per star); a calibrated posterior follows the diagonal "
        "within the binomial scatter."
        + (
            " This cube's samples carry importance weights (infer --importance): the coverage "
            "is that of the weighted posterior as the cube holds it, from the truth's weighted "
            "rank: the coverage of the weighted quantiles in its summary. With few effective "
            "samples per star (see ess) those intervals are too narrow even where the weights "
            "are right; checking the weights themselves needs the weight the truth would get, "
            "which this report cannot compute (benchmarks/infer_importance.py measures both). "
            "The SBC and TARP sections below are of the unweighted samples, the proposal."
            if weighted
            else ""
        )
    )
    page.figure(plot_coverage(LEVELS, cov, params, n_used.tolist()), "calibration",
                "Coverage of central credible intervals, per parameter")  # fmt: skip
    tolerance = coverage_tolerance(0.5, n_used)
    rows = [(p, int(n_used[j]), float(worst[j]), float(tolerance[j]),
             float(cov[LEVELS.searchsorted(0.5), j]), float(cov[-1, j]))
            for j, p in enumerate(params)]  # fmt: skip
    header = ["parameter", "stars", "max |empirical − expected|", "2σ binomial scatter (p = 0.5)",
              f"coverage at {LEVELS[LEVELS.searchsorted(0.5)]:.2f}",
              f"coverage at {LEVELS[-1]:.2f}"]  # fmt: skip
    page.raw(_table(header, rows))

    n_samples = samples.shape[1]
    ranks = sbc_ranks(samples, truth, rng=np.random.default_rng(0))
    hists = [rank_histogram(ranks[:, j], n_samples) for j in range(len(params))]
    pvalues = [uniformity_pvalues(ranks[:, j], n_samples, rng=np.random.default_rng(j))
               for j in range(len(params))]  # fmt: skip
    numbers["sbc"] = {p: pvalues[j] for j, p in enumerate(params)}
    page.section("SBC rank histograms", "sbc")
    page.text(
        f"Rank of the truth among the {n_samples} samples of each star (Talts et al. 2018); "
        "uniform when calibrated. A ∪ shape means overconfident posteriors, ∩ too wide, a "
        "slope a bias. Stars with a non-finite sample (e.g. off the isochrones) are left out "
        "for that parameter."
    )
    page.figure(plot_sbc(hists, params, pvalues, n_samples), "sbc",
                "SBC rank histograms, per parameter")  # fmt: skip
    page.raw(_table(["parameter", "stars", "χ² p-value", "KS p-value"],
                    [(p, v["n"], v["chi2"], v["ks"]) for p, v in zip(params, pvalues,
                                                                     strict=True)]))  # fmt: skip

    matched = np.isfinite(truth).all(axis=1)
    finite_share = np.isfinite(samples[matched]).all(axis=1).mean(axis=0)
    tarp_params = [p for j, p in enumerate(params) if finite_share[j] >= TARP_MIN_FINITE]
    result = tarp(data.samples_of(tarp_params), data.truth_of(tarp_params), seed=0)
    numbers["tarp"] = {"params": tarp_params, "n": result.n,
                       "max_deviation": result.max_deviation, "ks_pvalue": result.ks_pvalue,
                       "alpha": result.alpha.round(4).tolist(),
                       "ecp": result.ecp.round(4).tolist()}  # fmt: skip
    page.section("TARP", "tarp")
    left_out = [p for p in params if p not in tarp_params]
    page.text(
        "Tests of Accuracy with Random Points (Lemos et al. 2023): one random reference point "
        "per star in the box spanned by the truths (each parameter scaled to [0, 1]); the "
        "share of samples closer to it than the truth has a uniform distribution, and the "
        "expected coverage probability follows the diagonal, exactly when the joint "
        f"posterior is calibrated. Parameters: {', '.join(tarp_params)}."
        + (
            f" Left out (samples not finite for {TARP_MIN_FINITE:.0%} of stars): "
            f"{', '.join(left_out)}."
            if left_out
            else ""
        )  # fmt: skip
    )
    page.figure(plot_tarp(result, tarp_params), "tarp", "TARP expected coverage probability")


def _combinations(data: ValidationData) -> tuple[np.ndarray, str]:
    from ysoscale.catalog.columns import mag_column
    from ysoscale.simulate.surveys import SURVEY_MODELS

    catalog = data.catalog
    bands = [(b, s) for s, model in SURVEY_MODELS.items() for b in model.bands
             if catalog is not None and mag_column(b) in catalog.columns]  # fmt: skip
    if not bands:
        return np.full(data.n, "all", dtype=object), (
            "No {band}_mag columns were found, so stars are not split by survey combination"
        )
    observed = np.isfinite(catalog[[mag_column(b) for b, _ in bands]].to_numpy(dtype=float))
    groups = survey_combinations(observed, [s for _, s in bands], list(SURVEY_MODELS))
    return groups, (
        "Survey combination = the surveys a star has a finite magnitude in (catalog columns "
        f"from {data.catalog_source})"
    )


def _accuracy(page: _Page, data: ValidationData, numbers: dict[str, Any]) -> None:
    params = list(data.truth_params)
    truth, median = data.truth_of(params), data.median_of(params)
    overall = [accuracy(median[:, j], truth[:, j]) for j in range(len(params))]
    page.section("Predicted vs true", "predicted")
    page.figure(plot_predicted_vs_true(truth, median, params, overall), "predicted_vs_true",
                "Posterior median against the truth, per parameter")  # fmt: skip
    groups, how = _combinations(data)
    labels, counts = np.unique(groups, return_counts=True)
    small = set(labels[counts < MIN_GROUP].tolist())
    other = f"other ({len(small)} combinations of < {MIN_GROUP} stars each)"
    if len(small) > 1:
        groups = np.where(np.isin(groups, list(small)), other, groups)
    rows = accuracy_by_group(median, truth, params, groups)
    numbers["accuracy"] = rows
    page.section("Accuracy per survey combination", "accuracy")
    page.text(
        "Posterior median − truth: MAD = median |error − median error| (not scaled to a σ), "
        "RMS, bias = median error, outliers = share with |error| above the threshold (in "
        "the parameter's units; 'robust 3σ' = |error − bias| > 3 × 1.4826 × MAD). " + how + "."
    )
    by_group: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], {})[r["param"]] = r
    wide = [(group, max(r["n"] for r in cells.values()),
             *[cells[p]["mad"] for p in params]) for group, cells in by_group.items()]  # fmt: skip
    page.raw(_table(["surveys", "stars", *[f"{p} MAD" for p in params]], wide, "accuracy"))
    table = [(r["group"], r["param"], r["n"], r["mad"], r["rms"], r["bias"],
              r["outlier_fraction"],
              "robust 3σ" if r["outlier_threshold"] is None else r["outlier_threshold"])
             for r in rows if r["n"]]  # fmt: skip
    page.raw("<details><summary>MAD, RMS, bias and outliers of every parameter and survey "
             "combination</summary>" + _table(["surveys", "parameter", "stars", "MAD", "RMS",
             "bias", "outliers", "outlier threshold"], table, "accuracy-detail")
             + "</details>")  # fmt: skip


def _posterior(page: _Page, data: ValidationData, numbers: dict[str, Any]) -> None:
    page.section("Posterior diagrams", "posterior")
    nan = np.full(data.n, np.nan)

    def median(p: str) -> np.ndarray:
        return data.median[:, data.params.index(p)] if p in data.params else nan

    teff, logg, age = median("teff"), median("logg"), median("log10_age")
    catalog = data.catalog
    colour = abs_g = None
    if catalog is not None and {"gaia_g_mag", "gaia_bp_mag", "gaia_rp_mag",
                                "parallax"} <= set(catalog.columns):  # fmt: skip
        colour = (catalog["gaia_bp_mag"] - catalog["gaia_rp_mag"]).to_numpy(float)
        parallax = catalog["parallax"].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            abs_g = np.where(parallax > 0,
                             catalog["gaia_g_mag"].to_numpy(float)
                             + 5 * np.log10(parallax / 100.0), np.nan)  # fmt: skip
    else:
        page.text("No Gaia G, BP, RP and parallax columns were found: the CMD is absent.")
    if np.isfinite(teff).any() and np.isfinite(logg).any():
        page.figure(plot_kiel_cmd(teff, logg, age, colour, abs_g), "kiel_cmd",
                    "Gaia CMD (observed) and Kiel diagram (posterior medians), coloured by "
                    "posterior median log10(age / yr)")  # fmt: skip
    else:
        page.text("The cube has no teff/logg medians: the Kiel diagram is absent.")

    if data.p_young is not None:
        p = data.p_young
        numbers["p_young"] = {
            "source": data.p_young_source,
            "n_above_half": int(np.sum(p > 0.5)),
            "mean": float(np.nanmean(p)) if np.isfinite(p).any() else None,
        }
        page.text(f"p_young: {data.p_young_source}. {int(np.sum(p > 0.5)):,} of {data.n:,} "
                  "stars have p_young > 0.5.")  # fmt: skip
        ra, dec = (catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float))
        page.figure(plot_sky(ra, dec, p), "sky_p_young",
                    f"Sky map of p_young (positions: {data.catalog_source})")  # fmt: skip
        if data.truth is not None and "log10_age" in data.truth_params:
            young = data.truth_of(["log10_age"])[:, 0]
            ok = np.isfinite(young)
            if ok.any():
                page.figure(plot_reliability(p[ok], young[ok] < YOUNG_LOG10_AGE,
                                             f"log10_age < {YOUNG_LOG10_AGE:g}"),
                            "p_young_reliability",
                            "Reliability of p_young against the true ages")  # fmt: skip
    else:
        page.text("The cube has neither a p_young variable nor log10_age samples: the sky "
                  "map of p_young is absent.")  # fmt: skip
    page.figure(plot_widths(data.p16, data.p84, data.params), "posterior_widths",
                "Posterior 1σ half-widths, per parameter")  # fmt: skip


def _flags(page: _Page, data: ValidationData, numbers: dict[str, Any]) -> None:
    page.section("Flags", "flags")
    counts = {name: int(np.sum((data.flags & np.uint32(bit)) != 0))
              for name, bit in data.flag_bits.items()}  # fmt: skip
    clean = int(np.sum(data.flags == 0))
    inferred = np.isfinite(data.samples).any(axis=(1, 2))
    numbers["flags"] = {"clean": clean, **{k: v for k, v in counts.items() if v}}
    page.text(f"{clean:,} of {data.n:,} stars are clean (flags = 0); {int(inferred.sum()):,} "
              "have posterior samples.")  # fmt: skip
    rows = [(name, bit, counts[name], data.flag_descriptions.get(name, ""))
            for name, bit in data.flag_bits.items()]  # fmt: skip
    page.raw(_table(["flag", "bit", "stars", "meaning"], rows))
    bands = np.asarray(data.n_bands)
    quantiles = np.percentile(bands, [0, 50, 100]) if len(bands) else [np.nan] * 3
    page.text("Bands per star (n_bands): min {:.0f}, median {:.0f}, max {:.0f}.".format(
        *quantiles))  # fmt: skip
    if data.ess is not None:
        ess = data.ess[np.isfinite(data.ess)]
        if len(ess):
            page.text(f"Importance-sampling ESS: median {np.median(ess):.1f}, 5th percentile "
                      f"{np.percentile(ess, 5):.1f}.")  # fmt: skip


def _model_card(page: _Page, data: ValidationData) -> None:
    page.section("Model card and run", "model")
    attrs = {}
    for key, value in data.attrs.items():
        try:
            attrs[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            attrs[key] = value
    card = attrs.get("model_card") if isinstance(attrs.get("model_card"), dict) else {}
    run = attrs.get("run_config") if isinstance(attrs.get("run_config"), dict) else {}
    rows = [(f"model: {k}", str(card[k])) for k in ("n_parameters", "epochs",
            "best_validation_nll", "training_store", "band_list_version") if k in card]  # fmt: skip
    rows += [(f"run: {k}", str(run[k])) for k in ("model", "input", "n_samples", "seed")
             if k in run]  # fmt: skip
    rows += [(k, str(attrs[k])) for k in ("ysoscale_version", "band_list_version") if k in attrs]
    if "bands_used" in run:
        rows.append(("run: bands_used", ", ".join(run["bands_used"])))
    page.raw(_table(["item", "value"], rows) if rows else "<p>The cube has no model card.</p>")
    full = json.dumps(attrs, indent=1, default=str)
    page.raw(f"<details><summary>All root attributes of the cube</summary><pre>"
             f"{html.escape(full)}</pre></details>")  # fmt: skip


def validate(
    cube: str | Path,
    out_dir: str | Path,
    *,
    truth: str | Path | None = None,
    catalog: str | Path | None = None,
    max_stars: int = 200_000,
    seed: int = 0,
) -> ValidationReport:
    """Write the validation report of ``cube`` into ``out_dir`` (``index.html``, PNGs,
    ``report.json``).

    Parameters
    ----------
    cube : posterior cube (zarr) written by ``ysoscale infer``
    out_dir : report directory (created; files in it are replaced)
    truth : table or HATS catalog with ``source_id`` and ``true_{param}`` columns; without
        one, the truth-based sections are absent and the page says so
    catalog : table or HATS catalog of canonical columns for the CMD, sky map and survey
        combinations (default: the truth table's, else the summary catalog beside the cube)
    max_stars : a random subset of at most this many stars (``seed``)

    Raises
    ------
    ValueError
        A missing or unreadable cube, table or column (named in the message).

    Examples
    --------
    >>> report = validate("demo/synthetic/posteriors.zarr", "report",
    ...                   truth="demo/synthetic/summary")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    data = load(cube, truth, catalog=catalog, max_stars=max_stars, seed=seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out)
    numbers: dict[str, Any] = {"cube": str(data.cube_path), "n_stars": data.n,
                               "n_cube": data.n_cube, "params": data.params,
                               "truth": None if truth is None else str(truth),
                               "catalog": data.catalog_source}  # fmt: skip
    subset = (f" (a random subset of {data.n:,} of its {data.n_cube:,} stars, seed {seed})"
              if data.n < data.n_cube else "")  # fmt: skip
    page.text(f"Cube: {data.cube_path}, {data.n:,} stars{subset}, {data.samples.shape[1]} "
              f"samples per star, parameters {', '.join(data.params)}.")  # fmt: skip
    page.text(f"Catalog columns: {data.catalog_source or 'none found'}.")
    if data.truth is None:
        page.raw('<p class="absent" id="truth-absent">No truth table was given (--truth): '
                 "the coverage, SBC, TARP, predicted-vs-true and accuracy sections are "
                 "absent. This page shows the posterior-only diagrams, the flags and the "
                 "model card.</p>")  # fmt: skip
    else:
        matched = int(np.isfinite(data.truth).any(axis=1).sum())
        numbers["n_truth_matched"] = matched
        page.text(f"Truth: {data.truth_path}, labels for {matched:,} of the {data.n:,} stars.")
        _calibration(page, data, numbers)
        _accuracy(page, data, numbers)
    _posterior(page, data, numbers)
    _flags(page, data, numbers)
    _model_card(page, data)
    index = out / "index.html"
    index.write_text(page.render(f"ysoscale validation: {data.cube_path.name}"),
                     encoding="utf-8")  # fmt: skip
    (out / "report.json").write_text(json.dumps(_jsonable(numbers), indent=1, default=str) + "\n")
    return ValidationReport(out, index, page.figures, numbers)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["ValidationReport", "validate"]

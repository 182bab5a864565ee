"""Calibration and accuracy of a trained posterior estimator on held-out simulated stars.

For stars of the store's validation split (never seen in training), per survey combination
(Gaia only; Gaia+2MASS; Gaia+2MASS+WISE+PS1; all): expected-versus-empirical coverage of
central credible intervals at 10 levels for every parameter, and the MAD / RMS of the
posterior median against the truth, for the parameters the model infers and for Teff and
log g derived from each sample through the isochrones; for each combination, also the
distance parameter by parallax S/N (< 5, 5-20, 20-100, > 100). With ``--importance N`` the first
N stars of one combination (``--importance-combination``, default "all") are also
importance-sampled (estimator as proposal, the forward-model likelihood, the fitted prior
density; :mod:`ysoscale.infer.importance`) and their coverage is reported before and after
(of the resampled draws, and of the weighted posterior itself from weighted ranks that
include the truth's weight), with the sampling efficiency and the share of stars flagged
out of distribution. Coverage is computed from the truth's rank among the samples
(:func:`ysoscale.validate.coverage`), exact for any number of samples. Prints a markdown
table (for the README); last line: one JSON object.

    python benchmarks/calibration.py --store HELDOUT.zarr --split all [--model MODEL_DIR]
        [--n 100000] [--importance 2000 [--importance-min-ess 64]
        [--importance-combination gaia] [--importance-prior-density DIR]
        [--importance-detection with|without|both] [--importance-variability with|without|both]
        [--importance-only]]
        [--device cpu|cuda] [--quick]

Use a store the model never saw (``ysoscale simulate --seed`` other than the training
store's, ``--split all``), or the validation split of the training store.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ysoscale.nn import PosteriorEstimator
from ysoscale.nn.default import resolve_model
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.train.loader import StoreLoader
from ysoscale.validate import LEVELS, accuracy, coverage_error, importance_coverage

COMBINATIONS = {
    "gaia": ("gaia",),
    "gaia+tmass": ("gaia", "tmass"),
    "gaia+tmass+wise+ps1": ("gaia", "tmass", "wise", "ps1"),
    "all": tuple(SURVEY_MODELS),
}


def held_out(
    model: PosteriorEstimator, store: str, n: int, split: str = "validation"
) -> dict[str, np.ndarray]:
    """The first ``n`` stars of ``split``, as stored (no dropout, no re-observation)."""
    config = model.config
    loader = StoreLoader(store, config.params, config.bands, split=split, batch_size=n,
                         band_dropout=0.0, survey_dropout=0.0, redraw_noise=False,
                         with_truth=True)  # fmt: skip
    batch = next(loader.epoch(0))
    return {f: getattr(batch, f)[:n] for f in ("theta", "mag", "mag_err", "parallax",
                                                "parallax_error", "l_deg", "b_deg")}  # fmt: skip


def restrict(data: dict[str, np.ndarray], bands: tuple[str, ...], surveys: tuple[str, ...]):
    """Keep only the surveys' bands (and the parallax with Gaia); drop stars left empty."""
    keep_bands = {b for s in surveys for b in SURVEY_MODELS[s].bands}
    mask = np.array([b in keep_bands for b in bands])
    mag = np.where(mask, data["mag"], np.nan)
    err = np.where(mask, data["mag_err"], np.nan)
    parallax = data["parallax"] if "gaia" in surveys else np.full_like(data["parallax"], np.nan)
    rows = np.isfinite(mag).any(axis=1)
    return rows, mag[rows], err[rows], parallax[rows], data["parallax_error"][rows]


def derived_teff_logg(
    forward: ForwardModel, names: list[str], samples: np.ndarray, truth: np.ndarray
):
    """Teff and log g of each sample and of the truth through the isochrones (NaN if the
    sample falls where the tracks are undefined)."""
    index = {p: i for i, p in enumerate(names)}
    needed = ("log10_mass", "log10_age", "mh")
    if not all(p in index for p in needed) or forward.isochrones is None:
        return None

    def lookup(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = values.reshape(-1, values.shape[-1])
        args = [torch.as_tensor(flat[:, index[p]], dtype=torch.float32) for p in needed]
        derived, ok = forward.isochrones(*args)
        teff = np.where(ok.numpy(), 10 ** derived["log10_teff"].numpy(), np.nan)
        logg = np.where(ok.numpy(), derived["logg"].numpy(), np.nan)
        return teff.reshape(values.shape[:-1]), logg.reshape(values.shape[:-1])

    return lookup(samples), lookup(truth)


def _point_stats(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MAD, RMS and median bias of ``estimate - truth`` (:func:`ysoscale.validate.accuracy`)."""
    stats = accuracy(estimate, truth)
    return {"mad": stats["mad"], "rms": stats["rms"], "bias": stats["bias"]}


def _stats(samples: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, dict]:
    worst = coverage_error(samples, truth)
    median = np.median(samples, axis=1)
    return {
        name: {
            **_point_stats(median[:, j], truth[:, j]),
            "max_coverage_error": float(worst[j]),
        }
        for j, name in enumerate(names)
    }


def _derived_stats(forward: ForwardModel, names, samples, truth) -> dict[str, dict]:
    derived = derived_teff_logg(forward, names, samples, truth)
    if derived is None:
        return {}
    (teff_s, logg_s), (teff_t, logg_t) = derived
    return {
        name: _point_stats(np.nanmedian(s, axis=1), t)
        for name, s, t in (("teff", teff_s, teff_t), ("logg", logg_s, logg_t))
    }


SNR_BINS = ((-np.inf, 5.0), (5.0, 20.0), (20.0, 100.0), (100.0, np.inf))
"""Parallax S/N bins of the distance check."""


def _by_parallax_snr(samples, truth, names, parallax, parallax_error) -> dict[str, dict]:
    """Accuracy and coverage of the distance parameter by parallax S/N (stars with one).

    The S/N bins separate what the parallax token must carry: at S/N > 100 the distance is
    known to 1 %, and an estimator that cannot read such parallaxes shows it here first.
    """
    name = next((p for p in ("log10_distance", "distance_modulus") if p in names), None)
    if name is None:
        return {}
    j = names.index(name)
    snr = parallax / parallax_error
    out = {}
    for lo, hi in SNR_BINS:
        rows = np.isfinite(snr) & (snr >= lo) & (snr < hi)
        if rows.sum() < 20:
            continue
        stats = _stats(samples[rows][..., j : j + 1], truth[rows][:, j : j + 1], [name])[name]
        out[f"{lo:g}-{hi:g}"] = {"n": int(rows.sum()), **stats}
    return {name: out}


def _importance(model, forward, data, n: int, n_samples: int, min_ess: float | None,
                max_proposal: int, flux_scaled: bool = False,
                combination: str = "all", detection: bool = True,
                prior_density: str | None = None,
                variability: bool = False) -> dict[str, object]:  # fmt: skip
    """Coverage of the first ``n`` stars (the surveys of ``combination``) before and after
    importance sampling
    (``4 * n_samples`` proposals; stars with an ESS below ``min_ess`` are redrawn from
    ``max_proposal``).

    "before" (the proposal) and "after" (the ``n_samples`` resampled draws) are over the
    stars not flagged out of distribution; "weighted posterior" is the weighted proposal
    of the first pass checked with the truth's own weight
    (:func:`ysoscale.validate.importance_coverage`), over all stars: it tells whether the
    weighted posterior is right, whatever its effective sample size, while "after" shows
    what intervals drawn from ``n_samples`` resampled draws of it give.

    With ``detection`` the likelihood includes the stars' detection pattern in the
    combination's surveys (:mod:`ysoscale.infer.selection`, footprints from the stored
    positions), which the estimator learned from its training set; with ``variability``
    also what the reported errors say about youth (:mod:`ysoscale.infer.variability`).
    ``prior_density`` is a
    :class:`~ysoscale.infer.prior_density.PriorDensity` folder (default: the shipped one)."""
    from ysoscale.infer.importance import importance_sample, log_importance_weight
    from ysoscale.infer.prior_density import PriorDensity, load_default_prior_density
    from ysoscale.infer.selection import DetectionSelection, survey_footprints
    from ysoscale.infer.variability import VariabilityEvidence

    device = model.lo.device
    if prior_density is None:
        prior = load_default_prior_density(map_location=device)
    else:
        prior = PriorDensity.load(prior_density, map_location=device)
    rows, mag, err, parallax, parallax_error = restrict(data, model.config.bands,
                                                        COMBINATIONS[combination])  # fmt: skip
    mag, err, parallax, parallax_error = (a[:n] for a in (mag, err, parallax, parallax_error))
    truth = data["theta"][rows][:n]
    selection = footprint = None
    if detection:
        selection = DetectionSelection.from_surveys(model.config.bands, COMBINATIONS[combination])
        footprint = survey_footprints(data["l_deg"][rows][:n], data["b_deg"][rows][:n],
                                      selection.surveys)  # fmt: skip
    evidence = VariabilityEvidence.from_surveys(model.config.bands) if variability else None
    likelihood = dict(error_floor=0.0, flux_scaled_errors=flux_scaled, selection=selection,
                      in_footprint=footprint, variability=evidence)  # fmt: skip
    start = time.perf_counter()
    result = importance_sample(model, forward, prior, mag, err, parallax, parallax_error,
                               n_proposal=4 * n_samples, n_out=n_samples, seed=0,
                               min_ess=min_ess, max_proposal=max_proposal,
                               **likelihood)  # fmt: skip
    seconds = time.perf_counter() - start
    names = list(model.config.params)
    keep = ~result.ood.cpu().numpy()
    after = _stats(result.samples.cpu().numpy()[keep], truth[keep], names)
    before = _stats(result.proposal.cpu().numpy()[keep], truth[keep], names)
    # the weighted posterior itself: weighted ranks with the truth's own weight (exact for
    # any number of proposals), over every star, flagged or not
    truth_weight = log_importance_weight(model, forward, prior, truth[:, None, :], mag, err,
                                         parallax, parallax_error, **likelihood)[:, 0]  # fmt: skip
    weighted = importance_coverage(result.proposal.cpu().numpy(),
                                   result.raw_log_weight().cpu().numpy(), truth,
                                   truth_weight.cpu().numpy())  # fmt: skip
    weighted_error = np.nanmax(np.abs(weighted - LEVELS[:, None]), axis=0)
    return {
        "combination": combination,
        "prior_density": prior_density or "shipped",
        "prior_parts": [part.name for part in prior.parts],
        "prior_exact": [
            name
            for name, factor in (("rv", prior.rv_factor), ("log10_mass", prior.mass_factor))
            if factor is not None
        ],  # fmt: skip
        "n": int(len(truth)),
        "stars_per_s": len(truth) / seconds,
        "min_ess": min_ess,
        "flux_scaled_errors": flux_scaled,
        "detection_pattern": detection,
        "variability": variability,
        "max_proposal": max_proposal,
        "refined_fraction": float((result.n_proposals > 4 * n_samples).float().mean()),
        "median_ess": float(result.ess.median()),
        "median_efficiency": float(result.efficiency.median()),
        "ood_fraction": float(result.ood.float().mean()),
        "max_coverage_error_before": {k: v["max_coverage_error"] for k, v in before.items()},
        "max_coverage_error_after": {k: v["max_coverage_error"] for k, v in after.items()},
        "max_coverage_error_weighted_posterior": dict(
            zip(names, weighted_error.tolist(), strict=True)
        ),
    }


def _importance_table(runs, names: list[str]) -> list[str]:
    """Markdown rows: max coverage error per parameter of each importance-sampling run."""
    head = ("| detection pattern | reported errors | median ESS | OOD | stage | "
            + " | ".join(names) + " | max |")  # fmt: skip
    lines = [head, "|" + "---|" * (len(names) + 6)]
    stages = (("proposal", "before"), ("resampled draws", "after"),
              ("weighted posterior", "weighted_posterior"))  # fmt: skip
    for run in runs:
        for label, stage in stages:
            errors = run[f"max_coverage_error_{stage}"]
            values = [errors[p] for p in names]
            lines.append(
                f"| {'weighed' if run['detection_pattern'] else 'left out'} "
                f"| {'weighed' if run['variability'] else 'left out'} "
                f"| {run['median_ess']:.1f} | {100 * run['ood_fraction']:.0f} % | {label} | "
                + " | ".join(f"{v:.3f}" for v in values)
                + f" | {max(values):.3f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="model directory or shipped model name (default: the shipped default)"
    )
    parser.add_argument("--store", required=True)
    parser.add_argument("--split", default="validation", choices=["validation", "all"])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--importance", type=int, default=0, help="stars to importance-sample")
    parser.add_argument("--importance-min-ess", type=float, default=None,
                        help="redraw stars below this ESS from --importance-max-proposal "
                        "proposals (default: no refinement)")  # fmt: skip
    parser.add_argument("--importance-max-proposal", type=int, default=2048)
    parser.add_argument("--importance-flux-scaled", action="store_true",
                        help="carry reported errors to each sample's magnitude")  # fmt: skip
    parser.add_argument("--importance-combination", default="all", choices=list(COMBINATIONS),
                        help="surveys of the importance-sampled stars")  # fmt: skip
    parser.add_argument("--importance-detection", default="both",
                        choices=["with", "without", "both"],
                        help="weigh the detection pattern in the likelihood; both: run "
                        "the importance sampling twice, printed side by side")  # fmt: skip
    parser.add_argument("--importance-variability", default="without",
                        choices=["with", "without", "both"],
                        help="weigh what the reported errors say about youth "
                        "(ysoscale.infer.variability); both: run with and without")  # fmt: skip
    parser.add_argument(
        "--importance-prior-density",
        default=None,
        help="PriorDensity folder for the weights (default: the shipped one)",
    )
    parser.add_argument("--importance-only", action="store_true",
                        help="skip the plain estimator's per-combination calibration")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="2000 stars")
    args = parser.parse_args()
    n = 2000 if args.quick else args.n

    model = PosteriorEstimator.load(resolve_model(args.model))
    model = model.to(args.device)
    forward = ForwardModel.default(bands=model.config.bands).to(args.device)
    data = held_out(model, args.store, n, args.split)
    names = list(model.config.params)
    summary: dict[str, object] = {"n_requested": n, "samples": args.samples}
    table = ["| surveys | stars | " + " | ".join(f"{p} MAD" for p in [*names, "teff", "logg"])
             + " | max coverage error |",
             "|---" * (len(names) + 5) + "|"]  # fmt: skip
    for label, surveys in {} if args.importance_only else COMBINATIONS.items():
        rows, mag, err, parallax, parallax_error = restrict(data, model.config.bands, surveys)
        truth = data["theta"][rows]
        start = time.perf_counter()
        samples, _ = model.sample(mag, err, parallax, parallax_error, n_samples=args.samples)
        seconds = time.perf_counter() - start
        samples = samples.cpu().numpy()
        stats = _stats(samples, truth, names)
        stats.update(_derived_stats(forward.cpu(), names, samples, truth))
        print(f"\n{label}: {rows.sum():,} stars, sampling {rows.sum() / seconds:,.0f} stars/s")
        print(f"  {'param':<15}{'MAD':>9}{'RMS':>9}{'bias':>9}{'max |cov-exp|':>15}")
        for name, s in stats.items():
            cov_text = f"{s['max_coverage_error']:>15.3f}" if "max_coverage_error" in s else ""
            print(f"  {name:<15}{s['mad']:>9.3f}{s['rms']:>9.3f}{s['bias']:>9.3f}{cov_text}")
        worst = max(stats[p]["max_coverage_error"] for p in names)
        table.append(f"| {label} | {rows.sum():,} | "
                     + " | ".join(f"{stats[p]['mad']:.3g}" for p in [*names, "teff", "logg"]
                                  if p in stats)
                     + f" | {worst:.3f} |")  # fmt: skip
        by_snr = _by_parallax_snr(samples, truth, names, parallax, parallax_error)
        for name, bins in by_snr.items():
            print(f"  {name} by parallax S/N:")
            for key, b in bins.items():
                print(
                    f"    S/N {key:<10}{b['n']:>8,} stars  MAD {b['mad']:.3f}  "
                    f"bias {b['bias']:+.3f}  max |cov-exp| {b['max_coverage_error']:.3f}"
                )
        summary[label] = {"n": int(rows.sum()), **stats, "distance_by_parallax_snr": by_snr}
    if args.importance:
        forward = forward.to(args.device)
        variants = {"with": [True], "without": [False], "both": [False, True]}
        runs = {}
        for detection in variants[args.importance_detection]:
            for variability in variants[args.importance_variability]:
                key = ("importance" + ("_detection" if detection else "")
                       + ("_variability" if variability else ""))  # fmt: skip
                runs[key] = _importance(model, forward, data, args.importance, args.samples,
                                        args.importance_min_ess, args.importance_max_proposal,
                                        args.importance_flux_scaled,
                                        args.importance_combination, detection,
                                        args.importance_prior_density, variability)  # fmt: skip
                print(f"\nimportance sampling ({args.importance} stars, "
                      f"{args.importance_combination}, detection pattern "
                      f"{'weighed' if detection else 'left out'}, reported errors "
                      f"{'weighed' if variability else 'left out'}):")  # fmt: skip
                print(json.dumps(runs[key], indent=1))
        summary.update(runs)
        print("\n" + "\n".join(_importance_table(runs.values(), names)))
    if not args.importance_only:
        print("\n" + "\n".join(table))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

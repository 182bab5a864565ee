"""Importance sampling with the simformer as proposal: is its weighted posterior calibrated?

The simformer's own samples under-cover (the CPU model's Gaia-only age by ~0.05). Built
into a proposal with a known density (below), it serves importance sampling
(:mod:`ysoscale.infer.importance`), whose weighted posterior is the exact one under the
forward model and the prior. For each of the four condition
patterns of issue 6 (Gaia only; Gaia + parallax; Gaia + 2MASS + parallax; all the model's
bands + parallax), on the first ``--n`` held-out stars with the pattern, this prints:

* the worst |coverage − nominal| at 10 levels per parameter of the **weighted posterior**,
  from weighted ranks that include the truth's own weight
  (:func:`ysoscale.validate.importance_coverage`, exact for any number of proposals);
* the same for the proposal's unweighted samples (the simformer conditioned on each
  star's favoured disk state, not clipped) and for ``--samples`` draws resampled from the
  weights;
* MAD of the weighted posterior's median (of the set-transformer's own samples' median),
  median ESS, the share of stars flagged out of
  distribution, stars/s (all in this process, on ``--device``).

The proposal (``--proposal``) is built on the simformer in one of three ways:

* ``updated`` (default): a Gaussian mixture on ``--centres`` simformer samples per star,
  each kernel updated by the star's photometry and parallax
  (:class:`ysoscale.infer.kernel_proposal.SimformerKernelProposal` with the forward model);
* ``kernel``: the same mixture without the update (a kernel density estimate);
* ``density``: the simformer's own ODE samples with their exact density
  (:class:`ysoscale.infer.simformer_proposal.SimformerProposal`), conditioned on each
  star's favoured disk state; about 6x slower.

The last line is one JSON object with every figure.

    python benchmarks/simformer_importance.py --heldout heldout_independent.zarr
        [--simformer training/simformer_cpu] [--n 1000] [--proposals 128] [--samples 32]
        [--steps 4] [--patterns gaia,gaia+plx,gaia+tmass+plx,all+plx]
        [--proposal updated|kernel|density] [--centres 64] [--bandwidth 1.0]
        [--defensive 0.1] [--update-floor 0.01] [--noise-scale 1.0]
        [--detection with|without] [--variability with|without] [--disk-draws 128]
        [--device cpu] [--quick]

``heldout_independent.zarr``: ``ysoscale simulate --config
benchmarks/heldout_independent.toml --workers 2 --out heldout_independent.zarr``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ysoscale.infer.importance import DiskMarginal, importance_sample, log_importance_weight
from ysoscale.infer.kernel_proposal import (
    DEFENSIVE_SHARE,
    KERNEL_CENTRES,
    UPDATE_ERROR_FLOOR,
    SimformerKernelProposal,
)
from ysoscale.infer.prior_density import load_default_prior_density
from ysoscale.infer.selection import DetectionSelection, survey_footprints
from ysoscale.infer.simformer_proposal import SimformerProposal
from ysoscale.infer.variability import VariabilityEvidence
from ysoscale.nn.simformer import Simformer, load_estimator
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.validate import LEVELS, coverage_of_pit, importance_pit, pit
from ysoscale.validate.heldout import store_identity

sys.path.insert(0, str(Path(__file__).parent))
from simformer import PATTERNS, held_out, restrict  # noqa: E402  (the patterns of benchmarks/simformer.py)

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")
DEFAULT_MODEL = Path(__file__).parents[1] / "training" / "simformer_cpu"
DEFAULT_NPE = Path(__file__).parents[1] / "ysoscale" / "data" / "default_model"


def star_mad(median: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """MAD of per-star medians ``(star, param)`` against the truth (NaN rows left out)."""
    good = np.isfinite(median).all(axis=1)
    return np.median(np.abs(median[good] - truth[good]), axis=0)


def weighted_median(samples: np.ndarray, log_weight: np.ndarray) -> np.ndarray:
    """Per-star weighted median ``(star, param)`` of ``samples (star, sample, param)``;
    NaN for a star without a positive weight.

    >>> weighted_median(np.array([[[1.0], [2.0], [3.0]]]), np.log([[1.0, 1.0, 5.0]]))
    array([[3.]])
    """
    finite = np.isfinite(log_weight) & np.isfinite(samples).all(axis=2)
    top = np.where(finite, log_weight, -np.inf).max(axis=1, keepdims=True)
    weight = np.where(finite, np.exp(log_weight - np.where(np.isfinite(top), top, 0.0)), 0.0)
    order = np.argsort(np.where(finite[..., None], samples, np.inf), axis=1)
    cum = np.cumsum(np.take_along_axis(np.broadcast_to(weight[..., None], samples.shape), order,
                                       axis=1), axis=1)  # fmt: skip
    total = cum[:, -1:, :]
    pick = np.argmax(cum >= 0.5 * total, axis=1)  # (star, param)
    sorted_samples = np.take_along_axis(samples, order, axis=1)
    median = np.take_along_axis(sorted_samples, pick[:, None, :], axis=1)[:, 0, :]
    return np.where(total[:, 0, :] > 0, median, np.nan)


def to_bands(values: np.ndarray, source: tuple[str, ...], target: tuple[str, ...]) -> np.ndarray:
    """Columns of ``values (n, len(source))`` in ``target``'s band order, NaN where absent."""
    out = np.full((len(values), len(target)), np.nan, dtype=np.float32)
    for j, band in enumerate(target):
        if band in source:
            out[:, j] = values[:, source.index(band)]
    return out


def pattern_stars(data: dict, bands: tuple[str, ...], pattern: str, n: int, first: int) -> dict:
    """The first ``n`` held-out stars with the pattern (rows from ``first`` on)."""
    surveys, plx = PATTERNS[pattern]
    rows, mag, err, parallax, parallax_error = restrict(data, bands, surveys, plx)
    index = first + np.flatnonzero(rows)[:n]
    used = tuple(s for s in SURVEY_MODELS
                 if set(SURVEY_MODELS[s].bands) & set(bands)
                 and (surveys is None or s in surveys))  # fmt: skip
    return {"index": index, "mag": mag[:n], "err": err[:n], "parallax": parallax[:n],
            "parallax_error": parallax_error[:n], "truth": data["theta"][rows][:n],
            "l_deg": data["l_deg"][rows][:n], "b_deg": data["b_deg"][rows][:n],
            "bands": bands, "surveys": used}  # fmt: skip


def score_stars(proposal, forward, prior, stars: dict, args) -> dict:
    """Importance-sample ``stars`` with ``proposal``: per-star PITs, medians, ESS, flags."""
    bands = proposal.config.bands
    mag, err = (to_bands(stars[k], stars["bands"], bands) for k in ("mag", "err"))
    parallax, parallax_error, truth = stars["parallax"], stars["parallax_error"], stars["truth"]
    likelihood: dict = {"error_floor": 0.0, "disk": DiskMarginal(n_draws=args.disk_draws)}
    if args.detection == "with":
        selection = DetectionSelection.from_surveys(bands, stars["surveys"])
        footprint = survey_footprints(stars["l_deg"], stars["b_deg"], selection.surveys)
        likelihood |= {"selection": selection, "in_footprint": footprint}
    if args.variability == "with":
        likelihood["variability"] = VariabilityEvidence.from_surveys(bands)
    parts: dict[str, list] = {k: [] for k in ("proposal", "weights", "resampled", "ess", "ood",
                                               "truth_weight")}  # fmt: skip
    seconds = 0.0
    for i, start in enumerate(range(0, len(truth), args.batch)):
        rows = slice(start, start + args.batch)
        data = [mag[rows], err[rows], parallax[rows], parallax_error[rows]]
        batch_likelihood = dict(likelihood)
        if "in_footprint" in likelihood:
            batch_likelihood["in_footprint"] = likelihood["in_footprint"][rows]
        clock = time.perf_counter()
        result = importance_sample(proposal, forward, prior, *data, n_proposal=args.proposals,
                                   n_out=args.samples, seed=args.seed + i,
                                   batch_size=args.batch, **batch_likelihood)  # fmt: skip
        seconds += time.perf_counter() - clock
        # the truth's own weight, right after its batch (a kernel proposal reuses its mixture)
        truth_weight = log_importance_weight(proposal, forward, prior, truth[rows, None, :],
                                             *data, **batch_likelihood)[:, 0]  # fmt: skip
        parts["proposal"].append(result.proposal.cpu().numpy())
        parts["weights"].append(result.raw_log_weight().cpu().numpy())
        parts["resampled"].append(result.samples.cpu().numpy())
        parts["ess"].append(result.ess.cpu().numpy())
        parts["ood"].append(result.ood.cpu().numpy())
        parts["truth_weight"].append(truth_weight.cpu().numpy())
    proposal_samples, weights, resampled, ess, ood, truth_weight = (
        np.concatenate(parts[k]) for k in parts
    )
    u_resampled = pit(resampled, truth)
    u_resampled[ood] = np.nan  # the flagged stars' draws are not used
    return {
        "index": stars["index"],
        "truth": truth,
        "u_weighted": importance_pit(proposal_samples, weights, truth, truth_weight),
        "u_proposal": pit(proposal_samples, truth),
        "u_resampled": u_resampled,
        "median": weighted_median(proposal_samples, weights),
        "ess": ess,
        "ood": ood,
        "truth_weight_finite": np.isfinite(truth_weight),
        "seconds": np.array([seconds]),
    }


def score_own_samples(estimator, stars: dict, args) -> dict:
    """An estimator's own samples (no weights), in the per-star form of :func:`score_stars`."""
    bands = estimator.config.bands
    mag, err = (to_bands(stars[k], stars["bands"], bands) for k in ("mag", "err"))
    arrays = [torch.as_tensor(a) for a in (mag, err, stars["parallax"], stars["parallax_error"])]
    start = time.perf_counter()
    with torch.no_grad():
        samples, _ = estimator.sample(*arrays, n_samples=args.samples)
    seconds = time.perf_counter() - start
    samples = samples.cpu().numpy()
    u = pit(samples, stars["truth"])
    n = len(samples)
    return {"index": stars["index"], "truth": stars["truth"], "u_weighted": u, "u_proposal": u,
            "u_resampled": u, "median": np.median(samples, axis=1),
            "ess": np.full(n, float(args.samples)), "ood": np.zeros(n, dtype=bool),
            "truth_weight_finite": np.ones(n, dtype=bool),
            "seconds": np.array([seconds])}  # fmt: skip


def summarise(estimator: str, pattern: str, per_star: dict) -> dict:
    """The figures of one estimator and pattern from its per-star results."""

    def worst(u: np.ndarray) -> list[float]:
        return np.nanmax(np.abs(coverage_of_pit(u) - LEVELS[:, None]), axis=0).tolist()

    n = len(per_star["index"])
    return {
        "estimator": estimator,
        "pattern": pattern,
        "stars": n,
        "stars_per_s": n / float(per_star["seconds"].sum()),
        "median_ess": float(np.median(per_star["ess"])),
        "ood_fraction": float(per_star["ood"].mean()),
        "truth_weight_finite": float(per_star["truth_weight_finite"].mean()),
        "weighted": worst(per_star["u_weighted"]),
        "proposal": worst(per_star["u_proposal"]),
        "resampled": worst(per_star["u_resampled"]),
        "mad": star_mad(per_star["median"], per_star["truth"]).tolist(),
    }


def save(path: Path, runs: dict, store: str) -> None:
    """Per-star results ``runs[(estimator, pattern)]`` of the held-out store with identity
    ``store`` (:func:`store_identity`) to ``path`` (.npz, no pickles)."""
    arrays = {f"{est}|{pattern}|{key}": value.astype(np.float32) if value.dtype == np.float64
              and key != "seconds" else value
              for (est, pattern), per_star in runs.items()
              for key, value in per_star.items()}  # fmt: skip
    arrays |= {f"{est}|{pattern}|store": np.array([store]) for est, pattern in runs}
    np.savez_compressed(path, **arrays)


def load_runs(paths: list[str]) -> dict:
    """Per-star results of several saved runs, pooled; a star in two runs is an error.

    A star is its held-out store and its row there. Runs saved before the store was
    recorded count as one unnamed store.
    """
    runs: dict = {}
    for path in paths:
        with np.load(path, allow_pickle=False) as saved:
            per_run: dict = {}
            for name in saved.files:
                est, pattern, key = name.split("|")
                per_run.setdefault((est, pattern), {})[key] = saved[name]
        for run, per_star in per_run.items():
            store = str(per_star.pop("store", np.array([""]))[0])
            per_star["store"] = np.full(len(per_star["index"]), store)
            for key, value in per_star.items():
                runs.setdefault(run, {}).setdefault(key, []).append(value)
    pooled = {run: {key: np.concatenate(parts) for key, parts in per_star.items()}
              for run, per_star in runs.items()}  # fmt: skip
    for (est, pattern), per_star in pooled.items():
        stars = np.char.add(np.char.add(per_star["store"], ":"), per_star["index"].astype(str))
        if len(np.unique(stars)) != len(stars):
            raise SystemExit(f"{est} {pattern}: the saved runs share stars; pool disjoint ones")
    return pooled


def report(results: list[dict]) -> None:
    """The tables of the benchmark."""
    print("\nworst |coverage - nominal| at 10 levels (weighted posterior, truth's own weight)")
    print(
        "| pattern | estimator | stars | " + " | ".join(PARAMS) + " | worst | proposal's worst "
        "| resampled draws' worst | median ESS | OOD | stars/s |"
    )
    print("|---" * (len(PARAMS) + 9) + "|")
    for r in results:
        print(f"| {r['pattern']} | {r['estimator']} | {r['stars']:,} | "
              + " | ".join(f"{v:.3f}" for v in r["weighted"])
              + f" | **{max(r['weighted']):.3f}** | {max(r['proposal']):.3f} | "
              f"{max(r['resampled']):.3f} | {r['median_ess']:.1f} | {r['ood_fraction']:.1%} | "
              f"{r['stars_per_s']:.2f} |")  # fmt: skip
    print(
        "\nMAD of the posterior median (weighted median of the proposals; the set-transformer: "
        "median of its own samples)"
    )
    print("| pattern | estimator | " + " | ".join(PARAMS) + " |")
    print("|---" * (len(PARAMS) + 2) + "|")
    for r in results:
        print(f"| {r['pattern']} | {r['estimator']} | "
              + " | ".join(f"{v:.3f}" for v in r["mad"]) + " |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", help="held-out simulated store")
    parser.add_argument("--simformer", default=str(DEFAULT_MODEL), help="simformer directory")
    parser.add_argument("--n", type=int, default=1000, help="stars per pattern")
    parser.add_argument("--first", type=int, default=0,
                        help="start at this row of the held-out stars with a band of the "
                             "simformer, in the loader's fixed order (disjoint runs pool: "
                             "--merge)")  # fmt: skip
    parser.add_argument("--rows", type=int, default=None,
                        help="every star with the pattern among rows [first, first + rows), "
                             "instead of the first --n")  # fmt: skip
    parser.add_argument("--npe", default=None,
                        help="score this set-transformer's own samples on the same stars "
                             "('default': the shipped model)")  # fmt: skip
    parser.add_argument("--npe-importance", action="store_true",
                        help="importance-sample with the set-transformer as well")  # fmt: skip
    parser.add_argument("--save", default=None, help="per-star results to this .npz")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="report the pooled per-star results of saved runs; stop")  # fmt: skip
    parser.add_argument("--proposals", type=int, default=128, help="proposal draws per star")
    parser.add_argument("--samples", type=int, default=32, help="resampled draws per star")
    parser.add_argument("--steps", type=int, default=None, help="ODE steps (default: model's)")
    parser.add_argument("--solver", default=None)
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="proposal from N(0, s^2) noise (wider above 1)",
    )
    parser.add_argument("--proposal", default="updated", choices=("updated", "kernel", "density"),
                        help="density: the simformer's exact ODE density; kernel: a Gaussian "
                             "mixture on its samples; updated: that mixture updated by each "
                             "star's photometry")  # fmt: skip
    parser.add_argument("--defensive", type=float, default=DEFENSIVE_SHARE,
                        help="share of un-updated kernels of --proposal updated")  # fmt: skip
    parser.add_argument("--update-floor", type=float, default=UPDATE_ERROR_FLOOR,
                        help="error (mag) added in quadrature in the kernels' update")  # fmt: skip
    parser.add_argument("--centres", type=int, default=KERNEL_CENTRES,
                        help="simformer samples per star of the kernel proposal")  # fmt: skip
    parser.add_argument("--bandwidth", type=float, default=1.0,
                        help="kernel bandwidth, in units of Silverman's factor")  # fmt: skip
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--detection", default="with", choices=("with", "without"))
    parser.add_argument("--variability", default="without", choices=("with", "without"))
    parser.add_argument("--disk-draws", type=int, default=128,
                        help="Monte Carlo disks per young sample in the likelihood")  # fmt: skip
    parser.add_argument("--batch", type=int, default=64, help="stars per importance batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="100 stars, 64 proposals")
    args = parser.parse_args(argv)
    if args.merge:
        pooled = load_runs(args.merge)
        results = [summarise(est, pattern, per_star) for (est, pattern), per_star in pooled.items()]
        report(results)
        print(json.dumps({"merged": args.merge, "params": list(PARAMS), "results": results}))
        return
    if args.heldout is None:
        parser.error("--heldout is required (unless --merge)")
    if args.quick:
        args.n, args.proposals = min(args.n, 100), min(args.proposals, 64)
    patterns = args.patterns.split(",")
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        parser.error(f"unknown pattern(s) {unknown}; choose from {list(PATTERNS)}")
    if args.n < 1 or args.proposals < 2 or args.samples < 1:
        parser.error("--n, --samples must be >= 1 and --proposals >= 2")

    model = Simformer.load(args.simformer, map_location=args.device)
    forward = ForwardModel.default(bands=model.config.bands).to(args.device)
    if args.proposal in ("kernel", "updated"):
        updated = args.proposal == "updated"
        proposal = SimformerKernelProposal(model, forward if updated else None,
                                           n_centres=args.centres, bandwidth=args.bandwidth,
                                           defensive=args.defensive, update_floor=args.update_floor,
                                           steps=args.steps,
                                           solver=args.solver)  # fmt: skip
        described = (f"kernel mixture on {args.centres} simformer samples per star, "
                     f"bandwidth {args.bandwidth} x Silverman"
                     + (f", updated by the photometry (+{args.update_floor} mag), "
                          f"{args.defensive} defensive"
                        if updated else ""))  # fmt: skip
    else:
        proposal = SimformerProposal(
            model, steps=args.steps, solver=args.solver, noise_scale=args.noise_scale
        )
        described = (f"exact ODE density, noise scale {args.noise_scale}, disk state: each "
                     "star's favoured one")  # fmt: skip
    if proposal.config.params != PARAMS:
        parser.error(f"the simformer's physical parameters {proposal.config.params} != {PARAMS}")
    prior = load_default_prior_density(map_location=args.device)
    if args.rows is not None:
        args.n = args.rows
    last = args.first + (args.rows if args.rows is not None else 4 * args.n)
    data = held_out(args.heldout, model.config.bands, PARAMS, last)
    readable = len(data["theta"])
    if readable <= args.first:
        parser.error(f"--first {args.first} is past the end: {args.heldout} has {readable} "
                     "stars with a band of the simformer")  # fmt: skip
    data = {key: value[args.first :] for key, value in data.items()}
    store = store_identity(args.heldout)
    estimators = {"simformer": lambda stars: score_stars(proposal, forward, prior, stars, args)}
    if args.npe is not None:
        npe = load_estimator(DEFAULT_NPE if args.npe == "default" else args.npe,
                             map_location=args.device)  # fmt: skip
        if tuple(npe.config.params) != PARAMS:
            parser.error(f"the set-transformer's parameters {npe.config.params} != {PARAMS}")
        estimators["npe"] = lambda stars: score_own_samples(npe, stars, args)
        if args.npe_importance:
            estimators["npe weighted"] = lambda stars: score_stars(npe, forward, prior, stars,
                                                                   args)  # fmt: skip
    print(f"simformer {args.simformer}: {model.config.default_solver} solver, "
          f"{args.steps or model.config.default_steps} steps; proposal: {described}; "
          f"set-transformer beside it: {args.npe} (own samples"
          f"{', and as proposal' if args.npe_importance else ''}); "
          f"{args.proposals} proposals, "
          f"{args.samples} resampled draws per star; {args.disk_draws} disks per young sample; "
          f"detection pattern {args.detection}, "
          f"variability {args.variability}; device {args.device} "
          f"({torch.get_num_threads()} threads); rows {args.first} to {min(last, readable)} "
          f"of the {args.heldout} stars with a band of the simformer")  # fmt: skip
    runs, results = {}, []
    for pattern in patterns:
        stars = pattern_stars(data, model.config.bands, pattern, args.n, args.first)
        if not len(stars["index"]):
            print(f"{pattern}: no stars with the pattern in these rows; skipped", flush=True)
            continue
        for name, score in estimators.items():
            runs[name, pattern] = score(stars)
            results.append(summarise(name, pattern, runs[name, pattern]))
            r = results[-1]
            print(f"{pattern} {name}: {r['stars']} stars, {r['stars_per_s']:.2f} stars/s, "
                  f"median ESS {r['median_ess']:.1f}, OOD {r['ood_fraction']:.1%}",
                  flush=True)  # fmt: skip
            if args.save:
                save(Path(args.save), runs, store)  # after every pattern: a cut run keeps its stars
    report(results)
    summary = {"simformer": args.simformer, "steps": args.steps or model.config.default_steps,
               "proposal": args.proposal, "centres": args.centres, "bandwidth": args.bandwidth,
               "defensive": args.defensive, "update_floor": args.update_floor,
               "proposals": args.proposals, "noise_scale": args.noise_scale,
               "disk_draws": args.disk_draws, "detection": args.detection,
               "variability": args.variability, "params": list(PARAMS), "npe": args.npe,
               "npe_importance": args.npe_importance, "store": store, "first": args.first,
               "last": min(last, readable),
               "results": results}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""``ysoscale infer --importance`` on simulated stars: what the weights cost and what they fix.

For the shipped set-transformer and a simformer (default: ``training/simformer_cpu``), on
the first ``--n`` stars of a held-out store, each seen in every band of the model it has
plus its parallax, this runs the inference kernel itself
(:func:`ysoscale.infer.kernel.infer_arrays`, what every ``infer`` partition runs) twice in
the same process: plain, and with the pipeline's
:class:`~ysoscale.infer.kernel.SampleWeighting` (the worker plugin's forward model and
prior). It prints, per estimator:

* stars/s of both runs and their ratio;
* the worst |coverage − nominal| at 10 levels per parameter of the plain samples (PIT), of
  the weighted posterior (weighted PIT with the truth's own weight under the same
  proposal, :func:`ysoscale.validate.importance_pit`: exact for any number of samples),
  and of the weights alone ("weights only": what ``ysoscale validate`` computes from a
  cube, which does not know the truth's weight);
* the MAD of the plain and of the weighted median (the cube's ``summary``);
* the median ESS and the share of stars flagged ``LOW_ESS``.

The detection pattern is weighed as ``infer --importance`` weighs it (every survey of the
model's bands, footprints at each star's position; ``--detection without`` leaves it out).
Last line: one JSON object.

    python benchmarks/infer_importance.py --heldout heldout_independent.zarr [--n 2000]
        [--samples 128] [--simformer training/simformer_cpu] [--detection with|without]
        [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ysoscale.infer.importance import log_importance_weight
from ysoscale.infer.kernel import infer_arrays
from ysoscale.infer.kernel_proposal import SimformerKernelProposal
from ysoscale.infer.plugin import load_models
from ysoscale.infer.selection import survey_footprints
from ysoscale.simulate.surveys import SURVEYS, galactic_to_icrs
from ysoscale.validate import LEVELS, coverage_of_pit, importance_pit, pit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simformer import held_out  # noqa: E402  (the held-out reader of benchmarks/simformer.py)

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")
DEFAULT_SIMFORMER = Path(__file__).resolve().parents[1] / "training" / "simformer_cpu"


def worst(u: np.ndarray) -> list[float]:
    """Worst |coverage - nominal| over the levels, per parameter, of PIT values ``u``."""
    return np.nanmax(np.abs(coverage_of_pit(u) - LEVELS[:, None]), axis=0).tolist()


def mad(median: np.ndarray, truth: np.ndarray) -> list[float]:
    """Median absolute deviation of per-star medians from the truth, per parameter."""
    return np.nanmedian(np.abs(median - truth), axis=0).tolist()


def score(name: str, model_dir: str | None, store: str, args) -> dict:
    """Plain and weighted kernel runs of one estimator on the same stars."""
    loaded = load_models(model_dir, "cpu", True, True)
    model, weighting = loaded.model, loaded.weighting
    if args.detection == "with":  # every survey of the model's bands (the selection keeps
        weighting = dataclasses.replace(weighting, surveys=SURVEYS)  # those), as infer does
    data = held_out(Path(store), model.config.bands, PARAMS, args.n)
    position = galactic_to_icrs(data["l_deg"], data["b_deg"])
    mag, err = data["mag"], data["mag_err"]
    plx, plx_err, truth = data["parallax"], data["parallax_error"], data["theta"]
    n = len(mag)
    source_id = np.arange(n, dtype=np.int64)
    common = dict(source_id=source_id, batch_size=args.batch, position=position)
    usable = np.ones(n, dtype=bool)
    for extra in ({}, {"weighting": weighting}):  # warm-up: first calls load and allocate
        infer_arrays(model, mag[:8], err[:8], plx[:8], plx_err[:8], usable[:8], args.samples, 0,
                     loaded.forward, source_id=source_id[:8],
                     position=(position[0][:8], position[1][:8]), **extra)  # fmt: skip
    t0 = time.perf_counter()
    plain = infer_arrays(model, mag, err, plx, plx_err, usable, args.samples, 0, loaded.forward,
                         **common)  # fmt: skip
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    weighted = infer_arrays(model, mag, err, plx, plx_err, usable, args.samples, 0,
                            loaded.forward, weighting=weighting, **common)  # fmt: skip
    weighted_s = time.perf_counter() - t0

    def columns(params: tuple[str, ...]) -> list[int]:
        return [params.index(p) for p in PARAMS]

    plain_params = tuple(model.config.params)
    is_simformer = getattr(model, "estimator", "npe") == "simformer"
    proposal = SimformerKernelProposal(model, weighting.forward) if is_simformer else model
    weighted_params = tuple(proposal.config.params)
    u_plain = pit(plain["samples"][..., columns(plain_params)], truth,
                  rng=np.random.default_rng(0))  # fmt: skip
    theta = weighted["samples"][..., columns(weighted_params)]
    raw = weighted["log_weight"] + weighted["log_evidence"][:, None] + math.log(args.samples)
    truth_in_order = np.zeros((n, len(weighted_params)), dtype=np.float32)
    truth_in_order[:, columns(weighted_params)] = truth
    selection = weighting.selection(model.config.bands)
    footprint = None
    if selection is not None:
        footprint = survey_footprints(data["l_deg"], data["b_deg"], selection.surveys)
    truth_weight = np.concatenate([
        log_importance_weight(proposal, weighting.forward, weighting.prior,
                              truth_in_order[rows, None, :], mag[rows], err[rows], plx[rows],
                              plx_err[rows], error_floor=weighting.error_floor,
                              disk=weighting.disk, seed=0, selection=selection,
                              in_footprint=None if footprint is None else footprint[rows],
                              )[:, 0].numpy()
        for rows in (slice(k, k + args.batch) for k in range(0, n, args.batch))
    ])  # fmt: skip
    u_weighted = importance_pit(theta, raw, truth, truth_weight, rng=np.random.default_rng(0))
    # what `ysoscale validate` can compute from a cube: the weights without the truth's own
    u_cube = importance_pit(theta, raw, truth, np.full(n, -np.inf), rng=np.random.default_rng(0))
    median = 0  # summary statistic index of the median (kernel.STATS)
    result = {
        "estimator": name,
        "stars": n,
        "plain_stars_per_s": n / plain_s,
        "weighted_stars_per_s": n / weighted_s,
        "slowdown": weighted_s / plain_s,
        "plain_worst": worst(u_plain),
        "weighted_worst": worst(u_weighted),
        "weights_only_worst": worst(u_cube),
        "plain_mad": mad(plain["summary"][:, median][:, columns(plain_params)], truth),
        "weighted_mad": mad(weighted["summary"][:, median][:, columns(weighted_params)], truth),
        "median_ess": float(np.nanmedian(weighted["ess"])),
        "low_ess_share": float(weighted["ood"].mean()),
        "truth_weight_finite": float(np.isfinite(truth_weight).mean()),
    }
    print(f"{name}: {n} stars, plain {result['plain_stars_per_s']:.1f} stars/s, weighted "
          f"{result['weighted_stars_per_s']:.1f} stars/s ({result['slowdown']:.2f}x the time), "
          f"median ESS {result['median_ess']:.1f} of {args.samples}, LOW_ESS "
          f"{result['low_ess_share']:.1%}", flush=True)  # fmt: skip
    return result


def report(results: list[dict], samples: int) -> None:
    """The tables of the benchmark."""
    print("\nworst |coverage - nominal| at 10 levels, and MAD of the median")
    print("| estimator | samples | stars | " + " | ".join(PARAMS) + " | worst | MAD "
          + " | MAD ".join(PARAMS) + " |")  # fmt: skip
    print("|---" * (2 * len(PARAMS) + 4) + "|")
    for r in results:
        for kind in ("plain", "weighted", "weights_only"):
            cov = r[f"{kind}_worst"]
            mads = r["plain_mad" if kind == "plain" else "weighted_mad"]
            print(f"| {r['estimator']} | {kind} | {r['stars']:,} | "
                  + " | ".join(f"{v:.3f}" for v in cov) + f" | **{max(cov):.3f}** | "
                  + " | ".join(f"{v:.3f}" for v in mads) + " |")  # fmt: skip
    print(f"\n| estimator | plain stars/s | weighted stars/s | time ratio | median ESS / "
          f"{samples} | LOW_ESS |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['estimator']} | {r['plain_stars_per_s']:.1f} | "
              f"{r['weighted_stars_per_s']:.1f} | {r['slowdown']:.2f} | {r['median_ess']:.1f} "
              f"| {r['low_ess_share']:.1%} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", help="held-out simulated store")
    parser.add_argument("--n", type=int, default=2000, help="held-out stars")
    parser.add_argument("--samples", type=int, default=128, help="samples per star")
    parser.add_argument("--batch", type=int, default=256, help="stars per model call")
    parser.add_argument("--simformer", default=str(DEFAULT_SIMFORMER),
                        help="simformer directory ('none': the set-transformer only)")  # fmt: skip
    parser.add_argument("--detection", choices=("with", "without"), default="with",
                        help="weigh the detection pattern, as infer --importance")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a small simulated store")
    args = parser.parse_args(argv)
    if args.n < 1 or args.samples < 2:
        parser.error("--n must be positive and --samples at least 2")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        store = args.heldout
        if args.quick:
            from ysoscale.simulate.config import SimulationConfig
            from ysoscale.simulate.run import simulate

            store = str(Path(tmp) / "heldout.zarr")
            simulate(SimulationConfig(n=200, seed=99, chunk_size=200, require_detection=True),
                     store, workers=0, progress=False)  # fmt: skip
            args.n, args.samples = min(args.n, 60), min(args.samples, 32)
        if store is None:
            parser.error("--heldout is required (or --quick)")
        models = {"npe": None}
        if args.simformer != "none":
            models["simformer"] = args.simformer
        print(f"{args.samples} samples per star, first {args.n} stars of {store}, each in all "
              f"its bands of the model + parallax; detection pattern {args.detection}; device "
              f"cpu ({torch.get_num_threads()} threads)", flush=True)  # fmt: skip
        results = [score(name, path, store, args) for name, path in models.items()]
    report(results, args.samples)
    print(json.dumps({"n": args.n, "samples": args.samples, "detection": args.detection,
                      "params": list(PARAMS),
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()

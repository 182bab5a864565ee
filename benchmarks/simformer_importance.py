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
* MAD of the resampled draws' median, median ESS, the share of stars flagged out of
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
from ysoscale.nn.simformer import Simformer
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.validate import LEVELS, coverage_error, importance_coverage

sys.path.insert(0, str(Path(__file__).parent))
from simformer import PATTERNS, held_out, restrict  # noqa: E402  (the patterns of benchmarks/simformer.py)

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")
DEFAULT_MODEL = Path(__file__).parents[1] / "training" / "simformer_cpu"


def weighted_mad(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """MAD of the sample median against the truth, per parameter (NaN rows left out)."""
    good = np.isfinite(samples).all(axis=(1, 2))
    return np.median(np.abs(np.median(samples[good], axis=1) - truth[good]), axis=0)


def score_pattern(proposal, forward, prior, data, pattern: str, args) -> dict:
    """Importance-sample the first ``args.n`` stars of the pattern and score them."""
    surveys, plx = PATTERNS[pattern]
    bands = proposal.config.bands
    rows, mag, err, parallax, parallax_error = restrict(data, bands, surveys, plx)
    mag, err, parallax, parallax_error = (a[: args.n] for a in (mag, err, parallax,
                                                                 parallax_error))  # fmt: skip
    truth = data["theta"][rows][: args.n]
    used = tuple(s for s in SURVEY_MODELS
                 if set(SURVEY_MODELS[s].bands) & set(bands)
                 and (surveys is None or s in surveys))  # fmt: skip
    likelihood: dict = {"error_floor": 0.0, "disk": DiskMarginal(n_draws=args.disk_draws)}
    if args.detection == "with":
        selection = DetectionSelection.from_surveys(bands, used)
        footprint = survey_footprints(data["l_deg"][rows][: args.n],
                                      data["b_deg"][rows][: args.n], selection.surveys)  # fmt: skip
        likelihood |= {"selection": selection, "in_footprint": footprint}
    if args.variability == "with":
        likelihood["variability"] = VariabilityEvidence.from_surveys(bands)
    start = time.perf_counter()
    result = importance_sample(proposal, forward, prior, mag, err, parallax, parallax_error,
                               n_proposal=args.proposals, n_out=args.samples, seed=args.seed,
                               batch_size=args.batch, **likelihood)  # fmt: skip
    seconds = time.perf_counter() - start
    truth_weight = log_importance_weight(proposal, forward, prior, truth[:, None, :], mag, err,
                                         parallax, parallax_error, **likelihood)[:, 0]  # fmt: skip
    proposal_samples = result.proposal.cpu().numpy()
    weighted = importance_coverage(proposal_samples, result.raw_log_weight().cpu().numpy(),
                                   truth, truth_weight.cpu().numpy())  # fmt: skip
    resampled = result.samples.cpu().numpy()
    keep = ~result.ood.cpu().numpy()
    return {
        "pattern": pattern,
        "stars": int(len(truth)),
        "stars_per_s": len(truth) / seconds,
        "median_ess": float(result.ess.median()),
        "ood_fraction": float(result.ood.float().mean()),
        "truth_weight_finite": float(np.isfinite(truth_weight.cpu().numpy()).mean()),
        "weighted": np.nanmax(np.abs(weighted - LEVELS[:, None]), axis=0).tolist(),
        "proposal": coverage_error(proposal_samples, truth).tolist(),
        "resampled": coverage_error(resampled[keep], truth[keep]).tolist(),
        "mad": weighted_mad(resampled, truth).tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", required=True, help="held-out simulated store")
    parser.add_argument("--simformer", default=str(DEFAULT_MODEL), help="simformer directory")
    parser.add_argument("--n", type=int, default=1000, help="stars per pattern")
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
    data = held_out(args.heldout, model.config.bands, PARAMS, 4 * args.n)
    print(f"simformer {args.simformer}: {model.config.default_solver} solver, "
          f"{args.steps or model.config.default_steps} steps; proposal: {described}; "
          f"{args.proposals} proposals, "
          f"{args.samples} resampled draws per star; {args.disk_draws} disks per young sample; "
          f"detection pattern {args.detection}, "
          f"variability {args.variability}; device {args.device} "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    results = []
    for pattern in patterns:
        results.append(score_pattern(proposal, forward, prior, data, pattern, args))
        r = results[-1]
        print(f"{pattern}: {r['stars']} stars, {r['stars_per_s']:.2f} stars/s, median ESS "
              f"{r['median_ess']:.1f}, OOD {r['ood_fraction']:.1%}", flush=True)  # fmt: skip
    print("\nworst |coverage - nominal| at 10 levels (weighted posterior, truth's own weight)")
    print(
        "| pattern | stars | " + " | ".join(PARAMS) + " | worst | proposal's worst "
        "| resampled draws' worst | median ESS | OOD | stars/s |"
    )
    print("|---" * (len(PARAMS) + 8) + "|")
    for r in results:
        print(f"| {r['pattern']} | {r['stars']:,} | "
              + " | ".join(f"{v:.3f}" for v in r["weighted"])
              + f" | **{max(r['weighted']):.3f}** | {max(r['proposal']):.3f} | "
              f"{max(r['resampled']):.3f} | {r['median_ess']:.1f} | {r['ood_fraction']:.1%} | "
              f"{r['stars_per_s']:.2f} |")  # fmt: skip
    print("\nMAD of the median of the resampled draws")
    print("| pattern | " + " | ".join(PARAMS) + " |")
    print("|---" * (len(PARAMS) + 1) + "|")
    for r in results:
        print(f"| {r['pattern']} | " + " | ".join(f"{v:.3f}" for v in r["mad"]) + " |")
    summary = {"simformer": args.simformer, "steps": args.steps or model.config.default_steps,
               "proposal": args.proposal, "centres": args.centres, "bandwidth": args.bandwidth,
               "defensive": args.defensive, "update_floor": args.update_floor,
               "proposals": args.proposals, "noise_scale": args.noise_scale,
               "disk_draws": args.disk_draws, "detection": args.detection,
               "variability": args.variability, "params": list(PARAMS),
               "results": results}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

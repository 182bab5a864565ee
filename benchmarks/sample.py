"""Posterior sampling throughput of the estimators: stars/s and samples/s at 64 samples/star.

Runs, in one process and on the same synthetic stars, the shipped default model (or the
``--npe`` one), the same architecture with coupling transforms (``passes=2``), and the
IrisML-size configuration (256 wide, 10 layers, 10 MAF transforms; random weights:
throughput does not depend on the weights). On CUDA each model is also timed with TF32
matrix products and with bf16 autocast, and the bf16 posterior medians are compared with
fp32 ones (shift in units of the fp32 posterior standard deviation).

The stars carry realistic band patterns: Gaia for all, and each other survey with the
detection fraction of the 1e6-star training store. A model with fewer bands sees its own
bands of the same stars.

With ``--simformer DIR`` the flow-matching :class:`~ysoscale.nn.simformer.Simformer` is
timed as well, on the same stars and in the same precisions, at each number of ODE steps
of ``--steps`` (solver ``--solver``, by default the model's own). With ``--heldout STORE``
(a simulated store with truth, read like ``benchmarks/calibration.py`` does, split "all")
the trained set-transformer (``--npe``, the "default" model) and the simformer at each
step count are scored on the first ``--heldout-stars`` stars, for the parameters both
models infer: the largest |empirical - nominal| coverage of central credible intervals
over 10 levels and every parameter (:func:`ysoscale.validate.coverage_error`), and the MAD
and the bias of the posterior median per parameter (:func:`ysoscale.validate.accuracy`;
MAD = median |e - median(e)|, e = posterior median - truth). A table lists model, steps,
stars/s and samples/s (fp32) beside these.

    python benchmarks/sample.py [--device cpu|cuda] [--stars 20000] [--quick]
        [--npe DIR] [--simformer DIR [--steps 2,4,8,16,32] [--solver heun]]
        [--heldout STORE [--heldout-stars 2000]]

Last line: one JSON object with every figure, the ratios against the IrisML-size
configuration and (``--simformer``) the simformer's samples/s at each step count over the
default set-transformer's (``simformer_{k}steps_{precision}_vs_default``), all measured
in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

import numpy as np
import torch
from calibration import held_out  # benchmarks/ is on sys.path when run as a script

from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.batching import stars_per_call
from ysoscale.nn.default import resolve_model
from ysoscale.nn.simformer import Simformer, load_estimator
from ysoscale.nn.simformer_config import SOLVERS
from ysoscale.simulate.surveys import SURVEY_MODELS
from ysoscale.validate import accuracy, coverage_error

# share of stars each survey adds to a Gaia star (read off the training store's plots)
SURVEY_FRACTION = {"tmass": 0.55, "wise": 0.9, "ps1": 0.6, "sdss": 0.05, "galex": 0.02,
                   "skymapper": 0.5}  # fmt: skip


def synthetic_stars(bands: tuple[str, ...], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Magnitudes of plausible stars with the band coverage of a real cross-match."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(10.0, 19.0, n)
    colour = rng.uniform(0.3, 3.0, n)
    mag = np.full((n, len(bands)), np.nan, np.float32)
    index = {b: i for i, b in enumerate(bands)}
    present = {"gaia": np.ones(n, bool)}
    for survey, fraction in SURVEY_FRACTION.items():
        present[survey] = rng.random(n) < fraction
    for survey, model in SURVEY_MODELS.items():
        for k, band in enumerate(model.bands):
            if band in index:
                value = g - colour * (k - 1) * 0.4 + rng.normal(0, 0.05, n)
                mag[present[survey], index[band]] = value[present[survey]]
    err = np.where(np.isfinite(mag), 0.01 + 0.002 * np.exp(np.clip(mag - 14.0, 0, 8)), np.nan)
    parallax = 1000.0 / rng.uniform(50.0, 5000.0, n)
    return {
        "mag": mag,
        "mag_err": err.astype(np.float32),
        "parallax": parallax.astype(np.float32),
        "parallax_error": np.full(n, 0.05, np.float32),
    }


def model_stars(
    stars: dict[str, np.ndarray], bands: tuple[str, ...], model_bands: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """``stars`` (columns ``bands``) with the magnitude columns of ``model_bands``."""
    index = [bands.index(b) for b in model_bands]
    return {**stars, "mag": stars["mag"][:, index], "mag_err": stars["mag_err"][:, index]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    """``fp32`` (no TF32), ``tf32`` (TF32 matmuls) or ``bf16`` (autocast) on ``device``."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        if mode == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def time_sampling(
    model: PosteriorEstimator | Simformer,
    stars: dict[str, np.ndarray],
    n_samples: int,
    batch_size: int,
    repeats: int,
    warmup: bool = True,
    **options: object,
) -> tuple[float, torch.Tensor]:
    """Best stars/s over ``repeats`` runs (after one warm-up), and the last samples.

    ``options`` go to ``model.sample`` (the simformer's ``steps`` and ``solver``).
    """
    device = model.lo.device
    tensors = {k: torch.as_tensor(v, device=device) for k, v in stars.items()}
    if warmup:
        warm = {k: v[: min(len(v), batch_size)] for k, v in tensors.items()}
        model.sample(**warm, n_samples=n_samples, batch_size=batch_size, **options)
    best = np.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        samples, _ = model.sample(**tensors, n_samples=n_samples, batch_size=batch_size,
                                  **options)  # fmt: skip
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return len(stars["mag"]) / best, samples


def heldout_scores(
    model: PosteriorEstimator | Simformer,
    data: dict[str, np.ndarray],
    params: list[str],
    n_samples: int,
    batch_size: int,
    **options: object,
) -> dict[str, float]:
    """Largest coverage error over 10 levels and ``params``, and per parameter the MAD and
    bias of the posterior median, on held-out stars ``data`` (:func:`held_out`)."""
    columns = [model.config.params.index(p) for p in params]
    torch.manual_seed(0)
    samples, _ = model.sample(data["mag"], data["mag_err"], data["parallax"],
                              data["parallax_error"], n_samples=n_samples,
                              batch_size=batch_size, **options)  # fmt: skip
    samples = samples.cpu().numpy()[..., columns]
    truth = data["theta"][:, columns]
    median = np.median(samples, axis=1)
    scores = {"max_coverage_error": float(np.nanmax(coverage_error(samples, truth)))}
    for j, param in enumerate(params):
        stats = accuracy(median[:, j], truth[:, j])
        scores[f"mad_{param}"], scores[f"bias_{param}"] = stats["mad"], stats["bias"]
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stars", type=int, help="stars per timed run")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--model", "--npe", dest="model",
                        help="set-transformer model directory, timed as 'default' and scored "
                             "on --heldout (default: the shipped model)")  # fmt: skip
    parser.add_argument("--simformer", help="simformer model directory to time beside it")
    parser.add_argument("--steps", default="2,4,8,16,32", help="simformer ODE step counts")
    parser.add_argument("--solver", choices=SOLVERS, help="simformer solver (default: its own)")
    parser.add_argument("--heldout", help="simulated store with truth: score accuracy on it")
    parser.add_argument("--heldout-stars", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a few hundred stars")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n = args.stars or (500 if args.quick else (200_000 if gpu else 4000))
    batch_size = 16384 if gpu else stars_per_call(device, args.samples)  # as `infer` uses
    repeats = 1 if args.quick else 3

    default = PosteriorEstimator.load(resolve_model(args.model)).to(device)
    models = {
        "default": default,
        "default_coupling": PosteriorEstimator(
            EstimatorConfig.from_dict({**default.config.to_dict(), "passes": 2})
        ).to(device),
        "irisml": PosteriorEstimator(EstimatorConfig.irisml()).to(device),
    }
    simformer = load_estimator(args.simformer, device).eval() if args.simformer else None
    if args.simformer and not isinstance(simformer, Simformer):
        parser.error(f"--simformer {args.simformer} holds a set-transformer model")
    steps = [int(k) for k in args.steps.split(",")]
    timed = [*models.values(), *([simformer] if simformer is not None else [])]
    bands = tuple(dict.fromkeys(b for model in timed for b in model.config.bands))
    stars = synthetic_stars(bands, n)
    modes = ("fp32", "tf32", "bf16") if gpu else ("fp32",)
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    result: dict[str, object] = {"device": name, "stars": n, "samples_per_star": args.samples}
    print(f"device: {name}; {n:,} stars, {args.samples} samples per star")

    def record(key: str, stars_per_s: float) -> str:
        result[f"{key}_stars_per_s"] = round(stars_per_s, 1)
        result[f"{key}_samples_per_s"] = round(stars_per_s * args.samples, 1)
        per_s = stars_per_s * args.samples
        return f"{key:<24}{stars_per_s:>12,.0f} stars/s{per_s:>14,.0f} samples/s"

    for label, model in models.items():
        torch.manual_seed(0)
        reference = None
        for mode in modes:
            with precision(mode, device):
                torch.manual_seed(0)
                stars_per_s, samples = time_sampling(
                    model, model_stars(stars, bands, model.config.bands), args.samples,
                    batch_size, repeats,
                )  # fmt: skip
            key = f"{label}_{mode}"
            line = record(key, stars_per_s)
            if mode == "fp32":
                reference = samples.float()
            elif mode == "bf16" and label == "default" and reference is not None:
                shift = (samples.float().median(1).values - reference.median(1).values).abs()
                scale = reference.std(1).clamp_min(1e-6)
                result["default_bf16_median_shift_in_sigma"] = round(
                    float((shift / scale).mean()), 4
                )
                line += f"   median shift {result['default_bf16_median_shift_in_sigma']} sigma"
            print(line)
    solver = None
    if simformer is not None:
        solver = args.solver or simformer.config.default_solver
        result |= {"simformer_solver": solver, "simformer_steps": steps}
        print(f"simformer: {solver} solver")
        sf_stars = model_stars(stars, bands, simformer.config.bands)
        for i, k in enumerate(steps):
            for mode in modes:
                with precision(mode, device):
                    torch.manual_seed(0)
                    stars_per_s, _ = time_sampling(simformer, sf_stars, args.samples, batch_size,
                                                   repeats, warmup=i == 0, steps=k,
                                                   solver=solver)  # fmt: skip
                print(record(f"simformer_{k}steps_{mode}", stars_per_s))
    for mode in modes:
        base = result[f"irisml_{mode}_stars_per_s"]
        for label in ("default", "default_coupling"):
            result[f"{label}_{mode}_vs_irisml"] = round(
                result[f"{label}_{mode}_stars_per_s"] / base, 2
            )
        for k in steps if simformer is not None else ():
            result[f"simformer_{k}steps_{mode}_vs_default"] = round(
                result[f"simformer_{k}steps_{mode}_samples_per_s"]
                / result[f"default_{mode}_samples_per_s"], 4
            )  # fmt: skip
    if args.heldout:
        _heldout(args, default, simformer, steps, solver, batch_size, result)
    if simformer is not None or args.heldout:
        _table(result, steps if simformer is not None else [], args.samples)
    print(json.dumps(result))


def _heldout(args, npe, simformer, steps, solver, batch_size: int, result: dict) -> None:
    """Score the set-transformer and the simformer at each step count on held-out stars."""
    params = [p for p in npe.config.params
              if simformer is None or p in simformer.config.params]  # fmt: skip
    data = held_out(npe, args.heldout, args.heldout_stars, split="all")
    scores = {"default": heldout_scores(npe, data, params, args.samples, batch_size)}
    result |= {"heldout_stars": len(data["theta"]), "heldout_params": params}
    if simformer is not None:
        sf_data = held_out(simformer, args.heldout, args.heldout_stars, split="all")
        mine = data["theta"][:, [npe.config.params.index(p) for p in params]]
        theirs = sf_data["theta"][:, [simformer.config.params.index(p) for p in params]]
        # models with other bands drop other band-less stars, so the rows may differ
        result["heldout_same_stars"] = mine.shape == theirs.shape and bool(
            np.array_equal(mine, theirs)
        )
        for k in steps:
            scores[f"simformer_{k}steps"] = heldout_scores(
                simformer, sf_data, params, args.samples, batch_size, steps=k, solver=solver
            )
    for label, entry in scores.items():
        for key, value in entry.items():
            result[f"{label}_{key}"] = round(value, 4)


def _table(result: dict, steps: list[int], n_samples: int) -> None:
    """Markdown table: model, steps, fp32 throughput and (with held-out stars) accuracy."""
    params = result.get("heldout_params", [])
    if params:
        same = result.get("heldout_same_stars")
        rows = "" if same is None else f" ({'the' if same else 'not the'} same rows for both)"
        print(f"\nheld-out: {result['heldout_stars']:,} stars{rows}, {n_samples} samples per "
              "star; MAD of the posterior median")  # fmt: skip
    header = ["model", "steps", "stars/s", "samples/s", "max cov. err",
              *(f"MAD {p}" for p in params)]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    models = [("npe", "-", "default"), *(("simformer", k, f"simformer_{k}steps") for k in steps)]
    for model, k, label in models:
        scored = f"{label}_max_coverage_error" in result
        cells = [model, str(k), f"{result[f'{label}_fp32_stars_per_s']:,.0f}",
                 f"{result[f'{label}_fp32_samples_per_s']:,.0f}",
                 f"{result[f'{label}_max_coverage_error']:.3f}" if scored else "-",
                 *(f"{result[f'{label}_mad_{p}']:.3f}" for p in params)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

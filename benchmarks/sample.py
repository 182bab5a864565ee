"""Posterior sampling throughput of the estimator: stars/s and samples/s at 64 samples/star.

Runs, in one process and on the same synthetic stars, the shipped default model, the
same architecture with coupling transforms (``passes=2``), and the IrisML-size
configuration (256 wide, 10 layers, 10 MAF transforms; random weights: throughput does
not depend on the weights). On CUDA each model is also timed with TF32 matrix products
and with bf16 autocast, and the bf16 posterior medians are compared with fp32 ones
(shift in units of the fp32 posterior standard deviation).

The stars carry realistic band patterns: Gaia for all, and each other survey with the
detection fraction of the 1e6-star training store.

    python benchmarks/sample.py [--device cpu|cuda] [--stars 20000] [--quick]

Last line: one JSON object with every figure and the ratios against the IrisML-size
configuration measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

import numpy as np
import torch

from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.default import load_default_model
from ysoscale.simulate.surveys import SURVEY_MODELS

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
    model: PosteriorEstimator,
    stars: dict[str, np.ndarray],
    n_samples: int,
    batch_size: int,
    repeats: int,
) -> tuple[float, torch.Tensor]:
    """Best stars/s over ``repeats`` runs (after one warm-up), and the last samples."""
    device = model.lo.device
    tensors = {k: torch.as_tensor(v, device=device) for k, v in stars.items()}
    warm = {k: v[: min(len(v), batch_size)] for k, v in tensors.items()}
    model.sample(**warm, n_samples=n_samples, batch_size=batch_size)
    best = np.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        samples, _ = model.sample(**tensors, n_samples=n_samples, batch_size=batch_size)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return len(stars["mag"]) / best, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stars", type=int, help="stars per timed run")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--model", help="model directory (default: the shipped model)")
    parser.add_argument("--quick", action="store_true", help="a few hundred stars")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n = args.stars or (500 if args.quick else (200_000 if gpu else 4000))
    batch_size = 16384 if gpu else 1024
    repeats = 1 if args.quick else 3

    default = (PosteriorEstimator.load(args.model) if args.model else load_default_model()).to(
        device
    )
    models = {
        "default": default,
        "default_coupling": PosteriorEstimator(
            EstimatorConfig.from_dict({**default.config.to_dict(), "passes": 2})
        ).to(device),
        "irisml": PosteriorEstimator(EstimatorConfig.irisml()).to(device),
    }
    stars = synthetic_stars(default.config.bands, n)
    modes = ("fp32", "tf32", "bf16") if gpu else ("fp32",)
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    result: dict[str, object] = {"device": name, "stars": n, "samples_per_star": args.samples}
    print(f"device: {name}; {n:,} stars, {args.samples} samples per star")
    for label, model in models.items():
        torch.manual_seed(0)
        reference = None
        for mode in modes:
            with precision(mode, device):
                torch.manual_seed(0)
                stars_per_s, samples = time_sampling(model, stars, args.samples, batch_size,
                                                     repeats)  # fmt: skip
            key = f"{label}_{mode}"
            result[f"{key}_stars_per_s"] = round(stars_per_s, 1)
            result[f"{key}_samples_per_s"] = round(stars_per_s * args.samples, 1)
            per_s = stars_per_s * args.samples
            line = f"{key:<24}{stars_per_s:>12,.0f} stars/s{per_s:>14,.0f} samples/s"
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
    for mode in modes:
        base = result[f"irisml_{mode}_stars_per_s"]
        for label in ("default", "default_coupling"):
            result[f"{label}_{mode}_vs_irisml"] = round(
                result[f"{label}_{mode}_stars_per_s"] / base, 2
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

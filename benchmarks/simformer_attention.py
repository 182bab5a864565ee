"""Simformer sampling throughput: full attention against cached conditioning tokens.

Times, in one process and on the same synthetic stars, the same Simformer architecture in
its two attention modes (``SimformerConfig.attention``): ``full`` sends every token of
every sample through the transformer at every ODE evaluation; ``cached_context``
(:mod:`ysoscale.nn.context_cache`) encodes the conditioning tokens once per star and sends
only the unobserved ones. Throughput does not depend on the weights, so both use random
ones. Band patterns: Gaia + parallax only; Gaia + 2MASS + WISE + parallax; and a
cross-match with all 28 bands at realistic survey fractions (``benchmarks/sample.py``).
Sizes: the default configuration (64 wide, 4 layers) and the GPU one of
``training/gpu_simformer.toml`` (128 wide, 6 layers, 8 heads).

    python benchmarks/simformer_attention.py [--stars 1000] [--samples 64] [--steps 4]
        [--threads 1] [--sizes default,gpu] [--quick]

Prints stars/s per size, pattern and mode and the ratio cached / full measured in the same
run; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sample import model_stars, synthetic_stars, time_sampling  # benchmarks/ on sys.path

from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.physics.passbands import BAND_IDS
from ysoscale.simulate.surveys import SURVEY_MODELS

SIZES = {
    "default": {"width": 64, "depth": 4, "heads": 4, "ff": 192},
    "gpu": {"width": 128, "depth": 6, "heads": 8, "ff": 512},
}


def pattern_stars(stars: dict[str, np.ndarray], surveys: tuple[str, ...] | None):
    """``stars`` with only the bands of ``surveys`` observed (None: all)."""
    if surveys is None:
        return stars
    keep = {b for s in surveys for b in SURVEY_MODELS[s].bands}
    mask = np.array([b in keep for b in BAND_IDS])
    out = dict(stars)
    out["mag"] = np.where(mask, stars["mag"], np.nan).astype(np.float32)
    out["mag_err"] = np.where(mask, stars["mag_err"], np.nan).astype(np.float32)
    return out


PATTERNS = {
    "gaia+plx": ("gaia",),
    "gaia+tmass+wise+plx": ("gaia", "tmass", "wise"),
    "cross-match (28 bands)+plx": None,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="Heun steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: "
                        + ",".join(SIZES))  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="100 stars, 16 samples, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.stars, args.samples, args.repeats = 100, 16, 1
    torch.set_num_threads(args.threads)
    stars = model_stars(synthetic_stars(BAND_IDS, args.stars), BAND_IDS, BAND_IDS)
    result: dict[str, object] = {"stars": args.stars, "samples": args.samples,
                                 "steps": args.steps, "threads": args.threads}  # fmt: skip
    print(f"{args.stars} stars x {args.samples} samples, Heun x {args.steps} steps, "
          f"{args.threads} CPU thread(s)\n")  # fmt: skip
    print("| size | pattern | full (stars/s) | cached_context (stars/s) | cached / full |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {list(SIZES)}")
        shape = SIZES[size]
        rates = {}
        for mode in ("full", "cached_context"):
            torch.manual_seed(0)
            model = Simformer(SimformerConfig(**shape, attention=mode)).eval()
            for pattern, surveys in PATTERNS.items():
                observed = pattern_stars(stars, surveys)
                rate, _ = time_sampling(model, observed, args.samples, 256, args.repeats,
                                        steps=args.steps, solver="heun")  # fmt: skip
                rates[mode, pattern] = rate
                result[f"{size}/{pattern}/{mode}_stars_per_s"] = round(rate, 2)
        for pattern in PATTERNS:
            ratio = rates["cached_context", pattern] / rates["full", pattern]
            result[f"{size}/{pattern}/cached_vs_full"] = round(ratio, 3)
            print(f"| {size} | {pattern} | {rates['full', pattern]:.1f} | "
                  f"{rates['cached_context', pattern]:.1f} | {ratio:.2f} |")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

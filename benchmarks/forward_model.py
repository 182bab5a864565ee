"""Throughput of the ForwardModel against direct spectral integration.

Prints stars/s of ``ForwardModel.atmospheric`` for a batch of random stars in all 28 bands
with 1 and 2 torch threads, the stars/s of direct spectral integration
(:class:`ysoscale.physics.photometry.DirectIntegrator`: interpolate the spectrum, redden
it with the exact G23 curve, integrate through every band) on a subset of the same
stars, and the speedup, all measured in this run. Last line: one JSON object.

    python benchmarks/forward_model.py [--quick] [--batch N] [--direct N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ysoscale.physics.forward import ForwardModel
from ysoscale.physics.photometry import DirectIntegrator, PhotometryGridSpec, load_photometry_grid


def random_stars(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Stars spread over the grid: 3000-30000 K (log-uniform), dwarfs to subgiants."""
    rng = np.random.default_rng(seed)
    teff = 10 ** rng.uniform(np.log10(3000), np.log10(30000), n)
    teff = np.where((teff > 12000) & (teff < 13000), 11000.0, teff)  # no library seam cell
    return {
        "teff": teff,
        "logg": rng.uniform(3.5, 5.0, n),
        "mh": rng.uniform(-2.0, 0.5, n),
        "av": rng.uniform(0.0, 10.0, n),
        "rv": rng.uniform(2.5, 5.0, n),
        "radius": 10 ** rng.uniform(-0.5, 1.0, n),
        "distance": 10 ** rng.uniform(1.0, 4.0, n),
    }


def best_of(repeats: int, func) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and direct stars")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--direct", type=int, default=400, help="stars integrated directly")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    n_direct = min(args.direct, 100) if args.quick else args.direct

    grid, _ = load_photometry_grid(progress=True)
    model = ForwardModel(grid)
    stars = random_stars(args.batch)
    inputs = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in stars.items()}

    rates = {}
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model.atmospheric(**inputs)  # warm-up
            seconds = best_of(repeats, lambda: model.atmospheric(**inputs))
            rates[threads] = args.batch / seconds
            print(f"ForwardModel, {len(model.bands)} bands, batch {args.batch:,}, "
                  f"{threads} thread(s): {rates[threads]:,.0f} stars/s")  # fmt: skip

    direct = DirectIntegrator(PhotometryGridSpec())
    subset = [{k: float(v[i]) for k, v in stars.items()} for i in range(n_direct)]
    direct(**subset[0])  # warm-up
    seconds = best_of(1, lambda: [direct(**star) for star in subset])
    direct_rate = n_direct / seconds
    print(f"direct spectral integration, 1 thread, {n_direct} stars: {direct_rate:,.1f} stars/s")

    summary = {
        "bands": len(model.bands),
        "batch": args.batch,
        "stars_per_s_1_thread": round(rates[1]),
        "stars_per_s_2_threads": round(rates[2]),
        "thread_scaling": round(rates[2] / rates[1], 2),
        "baseline_direct_stars_per_s": round(direct_rate, 1),
        "speedup_vs_direct_1_thread": round(rates[1] / direct_rate),
        "speedup_vs_direct_2_threads": round(rates[2] / direct_rate),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

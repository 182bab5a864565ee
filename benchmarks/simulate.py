"""End-to-end simulator throughput (priors → isochrones → photometry → surveys → zarr).

Runs the same configuration on a LocalCluster with 1 and with 2 single-threaded worker
processes, writing a real zarr store each time, and prints stars/s and the scaling ratio.
Workers are started and have loaded the ForwardModel before the clock starts (model
loading is a one-off per worker, independent of the run's size); everything else —
sampling, photometry, noise, zarr writes, scheduling — is inside the timing.

    python benchmarks/simulate.py [--quick] [--n N] [--chunk-size C]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from ysoscale.cluster import connect
from ysoscale.physics.isochrones import load_isochrone_grid
from ysoscale.physics.photometry import load_photometry_grid
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate, worker_forward_model


def timed_run(config: SimulationConfig, workers: int, scratch: Path) -> float:
    """Stars/s of one run on a fresh LocalCluster with ``workers`` processes."""
    out = scratch / f"bench_{workers}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with connect(workers=workers) as client:
        client.run(worker_forward_model)  # warm: load the model once per worker
        start = time.perf_counter()
        report = simulate(config, out, scheduler=client.scheduler.address, progress=False)
        seconds = time.perf_counter() - start
    print(report.summary())
    return config.n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4e5 stars instead of 2e6")
    parser.add_argument("--n", type=int)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    args = parser.parse_args()
    n = args.n or (400_000 if args.quick else 2_000_000)
    config = SimulationConfig(n=n, seed=1, chunk_size=args.chunk_size)
    load_photometry_grid(progress=False)
    load_isochrone_grid(progress=False)
    with tempfile.TemporaryDirectory() as scratch:
        rates = {w: timed_run(config, w, Path(scratch)) for w in (1, 2)}
    for workers, rate in rates.items():
        print(
            f"simulate, {n:,} stars, {workers} worker(s): {rate:,.0f} stars/s (incl. zarr writes)"
        )
    print(
        json.dumps(
            {
                "n": n,
                "chunk_size": args.chunk_size,
                "stars_per_s_1_worker": round(rates[1]),
                "stars_per_s_2_workers": round(rates[2]),
                "scaling_2_vs_1": round(rates[2] / rates[1], 2),
            }
        )
    )


if __name__ == "__main__":
    main()

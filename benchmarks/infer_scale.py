"""Scaling of ``ysoscale infer`` with catalog size on a 2-worker LocalCluster (or one GPU).

Synthetic canonical HATS catalogs (Gaia for every star; 2MASS, WISE and PS1 for a share
of them) of two sizes go through :func:`ysoscale.infer.infer` end to end (cube and summary
catalog written) on the same cluster, after a warm-up run that loads the models on the
workers. Reported per size: stars/s and the peak resident memory of the workers; and the
ratio of per-star time at the large size to that at the small one (1.0 = linear), plus
the kernel alone in this process on one core as the baseline of the parallel efficiency.

    python benchmarks/infer_scale.py [--quick] [--model default|tiny|DIR] [--samples 64]
                                     [--sizes 100000 1000000] [--gpu]

``--quick`` runs 1e4 and 5e4 stars with a tiny random estimator and 16 samples per star:
it measures the pipeline (partitions, zarr writes, summary catalog), not the shipped
network, whose CPU cost (~50 stars/s per core at 64 samples) would dominate. Last line:
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ysoscale.cluster import connect
from ysoscale.infer import infer, infer_arrays, load_models
from ysoscale.nn import EstimatorConfig, PosteriorEstimator

COVERAGE = {  # survey bands and the share of stars that have them (Gaia: all)
    ("gaia_g", "gaia_bp", "gaia_rp"): 1.0,
    ("tmass_j", "tmass_h", "tmass_ks"): 0.55,
    ("wise_w1", "wise_w2"): 0.9,
    ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"): 0.6,
}


def synthetic_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` canonical rows over the whole sky with a realistic band coverage."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(10.0, 19.0, n)
    colour = rng.uniform(0.3, 3.0, n)
    columns = {
        "source_id": rng.choice(2**50, size=n, replace=False).astype(np.int64),
        "ra": rng.uniform(0.0, 360.0, n),
        "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
        "parallax": 1000.0 / rng.uniform(50.0, 5000.0, n),
        "parallax_error": np.full(n, 0.05),
    }
    k = 0
    for bands, share in COVERAGE.items():
        seen = rng.random(n) < share
        for band in bands:
            mag = g - 0.4 * colour * (k - 1) + rng.normal(0.0, 0.05, n)
            err = 0.01 + 0.002 * np.exp(np.clip(mag - 14.0, 0.0, 8.0))
            columns[f"{band}_mag"] = np.where(seen, mag, np.nan).astype(np.float32)
            columns[f"{band}_mag_err"] = np.where(seen, err, np.nan).astype(np.float32)
            k += 1
    return pd.DataFrame(columns)


def write_hats(frame: pd.DataFrame, path: Path, partition_rows: int) -> Path:
    import lsdb

    catalog = lsdb.from_dataframe(
        frame, ra_column="ra", dec_column="dec", partition_rows=partition_rows,
        margin_threshold=None,
    )  # fmt: skip
    catalog.write_catalog(path, as_collection=False, progress_bar=False)
    return path


def tiny_model(path: Path) -> Path:
    torch.manual_seed(0)
    config = EstimatorConfig(width=16, heads=2, depth=1, ff=32, transforms=1, flow_hidden=(16,))
    return PosteriorEstimator(config).save(path, {"trained_on": "nothing (benchmark)"})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def kernel_baseline(model_dir: str | None, frame: pd.DataFrame, samples: int) -> float:
    """Stars/s of check_rows + kernel alone, in this process on one core (CPU)."""
    from ysoscale.catalog.quality import check_rows

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = load_models(model_dir, "cpu", isochrones=True)
        start = time.perf_counter()
        check = check_rows(frame, loaded.model.config.bands)
        infer_arrays(
            loaded.model, check.mag, check.mag_err, check.parallax, check.parallax_error,
            check.usable, samples, 0, loaded.forward,
            source_id=frame["source_id"].to_numpy(),
        )  # fmt: skip
        return len(frame) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e4 and 5e4 stars, tiny model")
    parser.add_argument("--sizes", type=int, nargs=2, help="small and large catalog sizes")
    parser.add_argument("--model", help="'default' (shipped), 'tiny' (random) or a directory")
    parser.add_argument("--samples", type=int, help="samples per star (default 64; quick 16)")
    parser.add_argument("--partition-rows", type=int, default=None,
                        help="HATS partition size (default 25000; quick 5000)")  # fmt: skip
    parser.add_argument("--gpu", action="store_true", help="LocalCUDACluster, models on CUDA")
    parser.add_argument("--workdir", help="where catalogs and outputs go (default: a temp dir)")
    args = parser.parse_args()
    # the temporary directory is removed at the end: pass --workdir to keep catalogs and outputs
    with tempfile.TemporaryDirectory(prefix="infer_scale_") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        _run(args, workdir)


def _run(args: argparse.Namespace, workdir: Path) -> None:
    """Build the catalogs under ``workdir``, time the runs, print the figures."""
    small, large = args.sizes or ((10_000, 50_000) if args.quick else (100_000, 1_000_000))
    samples = args.samples or (16 if args.quick else 64)
    partition_rows = args.partition_rows or (5_000 if args.quick else 25_000)
    choice = args.model or ("tiny" if args.quick else "default")
    model_dir = None if choice == "default" else str(
        tiny_model(workdir / "model") if choice == "tiny" else Path(choice).resolve()
    )  # fmt: skip

    print(f"building synthetic HATS catalogs in {workdir} ...", file=sys.stderr)
    catalogs = {
        n: write_hats(synthetic_catalog(n, seed=i), workdir / f"catalog_{n}", partition_rows)
        for i, n in enumerate((1_000, small, large))
    }
    baseline_frame = synthetic_catalog(min(small, 4_000), seed=9)
    kernel_stars_per_s = kernel_baseline(model_dir, baseline_frame, samples)

    options = dict(model=model_dir, n_samples=samples, gpu=args.gpu, progress=False)
    results: dict[int, dict[str, float]] = {}
    with connect(workers=None if args.gpu else 2, gpu=args.gpu) as client:
        n_workers = len(client.scheduler_info()["workers"])
        device = "cpu"
        if args.gpu:
            names = client.run(lambda: torch.cuda.get_device_name(0))
            device = sorted(set(names.values()))[0]
        # warm-up: the models are loaded on every worker before anything is timed
        infer(catalogs[1_000], workdir / "out_warmup", scheduler=client.scheduler.address,
              **options)  # fmt: skip
        for n in (small, large):
            start = time.perf_counter()
            report = infer(catalogs[n], workdir / f"out_{n}",
                           scheduler=client.scheduler.address, **options)  # fmt: skip
            seconds = time.perf_counter() - start
            peak = max(client.run(_peak_rss_mb).values())
            results[n] = {"seconds": seconds, "stars_per_s": n / seconds, "peak_worker_mb": peak,
                          "partitions": report.n_partitions}  # fmt: skip
            print(f"{n:>9,} stars: {seconds:8.1f} s  {n / seconds:10,.0f} stars/s  "
                  f"{report.n_partitions:4d} partitions  peak worker RSS {peak:,.0f} MB",
                  file=sys.stderr)  # fmt: skip
    per_star = {n: r["seconds"] / n for n, r in results.items()}
    ratio = per_star[large] / per_star[small]
    summary = {
        "device": device,
        "workers": n_workers,
        "model": choice,
        "samples": samples,
        "partition_rows": partition_rows,
        "small": small,
        "large": large,
        "stars_per_s_small": results[small]["stars_per_s"],
        "stars_per_s_large": results[large]["stars_per_s"],
        "peak_worker_mb_small": results[small]["peak_worker_mb"],
        "peak_worker_mb_large": results[large]["peak_worker_mb"],
        "per_star_time_ratio_large_vs_small": ratio,
        "baseline_kernel_stars_per_s_one_core": kernel_stars_per_s,
        "parallel_efficiency_large": results[large]["stars_per_s"]
        / (n_workers * kernel_stars_per_s),
        "cpu_count": os.cpu_count(),
    }
    print(f"per-star time at {large:,} vs {small:,} stars: {ratio:.2f} (1.0 = linear)",
          file=sys.stderr)  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

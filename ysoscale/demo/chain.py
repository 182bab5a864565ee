"""Second part of ``ysoscale demo``: the production chain on a synthetic and a real catalog.

1. Simulate a small catalog of stars whose parameters are known (the training prior,
   conditioned on detection), as canonical columns (:mod:`ysoscale.simulate.catalog`).
2. Take the shipped real sample of ρ Oph members (Canovas et al. 2019; Gaia, 2MASS and
   WISE; 1-3 Myr, with disks).
3. For each: ``ingest`` (a canonical HATS catalog via lsdb), ``infer`` on a Dask
   LocalCluster with the shipped default model (posterior cube + summary HATS catalog),
   and a colour-magnitude and a Kiel diagram coloured by posterior age.
4. For the synthetic catalog, compare the posterior medians with the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ysoscale.catalog import load_sample
from ysoscale.catalog.ingest import ingest_canonical
from ysoscale.demo.plots import plot_cmd_kiel
from ysoscale.infer.cube import open_cube
from ysoscale.infer.run import infer
from ysoscale.simulate.catalog import TRUE_PREFIX, store_to_catalog
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate

__all__ = ["run_chain"]


def _medians(cube_path: Path) -> pd.DataFrame:
    cube = open_cube(cube_path)
    summary = cube.summary.sel(stat="median").values
    table = {"source_id": cube.source_id.values, "flags": cube.flags.values}
    for j, param in enumerate(str(p) for p in cube.param.values):
        table[f"{param}_median"] = summary[:, j]
    return pd.DataFrame(table)


def _truth_check(result: pd.DataFrame) -> dict[str, float]:
    """MAD of posterior median minus truth for the parameters both sides have."""
    out = {}
    for param in ("teff", "logg", "mh", "log10_age", "av"):
        truth, median = f"{TRUE_PREFIX}{param}", f"{param}_median"
        if truth in result and median in result:
            error = (result[median] - result[truth]).to_numpy()
            error = error[np.isfinite(error)]
            if len(error):
                out[param] = float(np.median(np.abs(error - np.median(error))))
    return out


def run_chain(
    out_dir: str | Path,
    *,
    n_synthetic: int = 2000,
    workers: int = 2,
    n_samples: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Simulate, ingest and infer a synthetic catalog and the ρ Oph sample; plot both.

    Returns
    -------
    dict
        Per catalog: ``cube``, ``summary`` (paths), ``png`` (CMD + Kiel diagram),
        ``n_stars``, ``stars_per_s``; for the synthetic catalog ``truth_mad``
        (posterior median minus truth, by parameter).

    Examples
    --------
    >>> result = run_chain("/tmp/ysoscale_demo", n_synthetic=500, workers=0)  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['rho_oph', 'synthetic']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "synthetic_store.zarr"
    config = SimulationConfig(n=n_synthetic, seed=seed, chunk_size=max(1, n_synthetic),
                              require_detection=True)  # fmt: skip
    simulate(config, store, workers=0, progress=progress)
    catalogs = {
        "synthetic": (store_to_catalog(store), "simulated catalog (truth known)"),
        "rho_oph": (load_sample("rho_oph"), "ρ Oph members (Canovas et al. 2019)"),
    }
    results: dict[str, Any] = {}
    for name, (frame, title) in catalogs.items():
        run_dir = out / name
        hats = run_dir / "input_catalog"
        ingest_canonical(frame, hats, overwrite=True, progress=progress)
        report = infer(hats, run_dir, n_samples=n_samples, seed=seed, workers=workers,
                       progress=progress)  # fmt: skip
        print(report.summary())
        merged = frame.merge(_medians(report.cube), on="source_id", how="left")
        png = plot_cmd_kiel(merged, run_dir / "cmd_kiel.png", title=title)
        results[name] = {
            "cube": str(report.cube),
            "summary": str(report.summary_catalog),
            "png": str(png),
            "n_stars": report.n_stars,
            "stars_per_s": report.stars_per_s,
        }
        if name == "synthetic":
            mad = _truth_check(merged)
            results[name]["truth_mad"] = mad
            print("posterior median − truth, MAD:", {k: round(v, 3) for k, v in mad.items()})
    return results

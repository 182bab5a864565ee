"""Orchestration of a simulation run: one Dask task per chunk, each writing its own region.

The model grids are built (or found current) in the cache before any task starts; each
worker process loads the ForwardModel once and keeps it (:func:`worker_forward_model`).
Tasks return only small summaries (detection counts), never the arrays.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ysoscale.physics.forward import ForwardModel
from ysoscale.physics.grids import ensure_default_grids
from ysoscale.simulate import store
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.kernel import simulate_chunk
from ysoscale.simulate.surveys import SURVEYS


@functools.cache
def worker_forward_model() -> ForwardModel:
    """The ForwardModel of this process (loaded from the cache once per worker).

    Also keeps the process to one core: torch, zarr's codec threads and blosc would
    otherwise spread onto the other workers' cores.
    """
    import numcodecs.blosc
    import torch

    torch.set_num_threads(1)  # one Dask worker thread = one core
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.set_nthreads(1)
    return ForwardModel.default(progress=False)


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of chunk ``index``: independent of how chunks are scheduled."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def run_chunk(path: str, config: SimulationConfig, index: int) -> dict[str, object]:
    """Simulate chunk ``index`` and write it; the adapter that Dask runs.

    Errors are re-raised with the chunk attached, so a failure names where it happened.
    """
    start, stop = config.chunk_bounds(index)
    try:
        arrays = simulate_chunk(
            stop - start, chunk_rng(config.seed, index), config, worker_forward_model()
        )
        store.write_chunk(Path(path), index, start, arrays)
    except Exception as error:
        raise RuntimeError(
            f"simulation chunk {index} (stars {start}-{stop}) failed: {error}"
        ) from error
    return {"index": index, "n": stop - start, "detected": arrays["detected"].sum(axis=0)}


@dataclass
class SimulationReport:
    """What one invocation of :func:`simulate` did."""

    path: Path
    n_stars: int
    n_simulated: int
    chunks_run: int
    chunks_skipped: int
    seconds: float
    detected: dict[str, int] = field(default_factory=dict)

    @property
    def stars_per_s(self) -> float:
        """Stars simulated and written per second (end to end) in this invocation."""
        return self.n_simulated / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """Human-readable summary, with the detected fraction by survey."""
        lines = [
            f"{self.path}: {self.n_stars:,} stars; {self.chunks_run} chunk(s) simulated now, "
            f"{self.chunks_skipped} already done; {self.seconds:.1f} s, "
            f"{self.stars_per_s:,.0f} stars/s"
        ]
        if self.n_simulated:
            lines.append("fraction detected by survey (stars simulated now):")
            for name, count in self.detected.items():
                lines.append(f"  {name:<10} {count / self.n_simulated:6.1%}")
        return "\n".join(lines)


def simulate(
    config: SimulationConfig,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> SimulationReport:
    """Simulate ``config`` into the zarr store ``out``, resuming a partial run.

    Parameters
    ----------
    config : SimulationConfig
    out : path of the store (created, or resumed if it holds the same configuration)
    workers : int, optional
        Worker processes of a LocalCluster; ``0`` runs in this process without Dask.
    scheduler : str, optional
        Address of a running Dask scheduler (its workers must see the same cache
        directory, ``YSOSCALE_CACHE_DIR``, and the output path).

    Examples
    --------
    >>> report = simulate(SimulationConfig(n=10_000, chunk_size=5_000), "train.zarr",
    ...                   workers=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from ysoscale.cluster import connect

    path = Path(out)
    provenance = ensure_default_grids(progress)  # build here once, never inside the workers
    store.create_or_check(path, config, provenance)
    done = set(store.done_chunks(path).tolist())
    todo = [i for i in range(config.n_chunks) if i not in done]
    n_todo = sum(config.chunk_bounds(i)[1] - config.chunk_bounds(i)[0] for i in todo)
    detected = np.zeros(len(SURVEYS), dtype=np.int64)
    started = time.perf_counter()
    bar = tqdm(
        total=config.n,
        initial=config.n - n_todo,
        unit="star",
        unit_scale=True,
        desc="simulate",
        disable=not progress,
    )
    if todo and workers == 0 and scheduler is None:
        for index in todo:
            result = run_chunk(str(path), config, index)
            detected += result["detected"]
            bar.update(result["n"])
    elif todo:
        from distributed import as_completed

        with connect(workers=workers, scheduler=scheduler) as client:
            futures = [client.submit(run_chunk, str(path), config, i, pure=False) for i in todo]
            for future in as_completed(futures):
                result = future.result()
                detected += result["detected"]
                bar.update(result["n"])
    bar.close()
    zarr.consolidate_metadata(str(path))
    return SimulationReport(
        path=path,
        n_stars=config.n,
        n_simulated=n_todo,
        chunks_run=len(todo),
        chunks_skipped=len(done),
        seconds=time.perf_counter() - started,
        detected={
            name: int(c)
            for name, c in zip(SURVEYS, detected, strict=True)
            if name in config.surveys
        },
    )

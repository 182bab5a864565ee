"""The XP pass over a posterior cube: latent, chi2/dof, anomaly and population per star.

:func:`xp_infer` runs after ``ysoscale infer`` has completed a cube. It adds, in the same
zarr store and chunked exactly like the cube along ``star``::

    xp_latent      (star, latent)  float32  posterior-mean sVAE latent; NaN without XP
    xp_chi2_dof    (star)          float32  reconstruction chi2 per coefficient (errors
                                            and, where known, correlations); NaN without XP
    xp_anomaly     (star)          float32  the same against errors + model scatter; NaN
                                            without XP
    xp_population  (star)          int16    HDBSCAN population; -1 noise, -2 no XP
    xp_chunk_done  (xp_chunk)      uint8    1 once a star chunk is written (resume)
    latent         (latent)  coordinate     z0, z1, ...

"Without XP" means the star's source_id is not in the XP store, or its coefficients are
unusable (see :mod:`ysoscale.xp.normalise`); padding rows of the cube are treated alike.

One task per star chunk (the adapter :func:`run_chunk`): it reads the chunk's source_ids
from the cube, fetches their coefficients from the XP store, calls the kernel
(:func:`~ysoscale.xp.kernel.encode_arrays`, populations by
:meth:`~ysoscale.xp.populations.Populations.assign`) on the model its worker loaded once
from the model directory, writes its own chunk of every variable and marks the chunk done.
No two tasks share a zarr chunk; a re-run skips done chunks; a different model or XP
store replaces the XP variables.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ysoscale.tasks import TaskTally

XP_VARIABLES = ("xp_latent", "xp_chi2_dof", "xp_anomaly", "xp_population")
DONE = "xp_chunk_done"
CUBE_NAME = "posteriors.zarr"


@dataclass(frozen=True)
class ChunkSpec:
    """What every chunk task needs (small; sent with each task)."""

    cube: str
    xp_store: str
    model_dir: str
    star_chunk: int
    n_star: int


@dataclass
class XPPassReport:
    """What one call of :func:`xp_infer` did."""

    cube: Path
    n_chunks: int
    chunks_run: int
    chunks_skipped: int
    n_with_xp: int
    n_without_xp: int
    seconds: float
    populations: dict[str, int]

    def summary(self) -> str:
        """Human-readable account of the pass."""
        lines = [
            f"{self.cube}: XP latent written for {self.chunks_run} star chunk(s) now, "
            f"{self.chunks_skipped} already done, in {self.seconds:.1f} s",
            f"stars with a usable XP spectrum now: {self.n_with_xp:,}; without: "
            f"{self.n_without_xp:,} (NaN)",
        ]
        if self.populations:
            lines.append(f"populations assigned now: {self.populations}")
        return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def worker_state(model_dir: str, xp_store: str):
    """Model, populations and XP lookup, loaded once per process from their paths."""
    import torch

    from ysoscale.nn.svae import ScatterVAE
    from ysoscale.xp.data import XPLookup
    from ysoscale.xp.populations import Populations

    try:
        from distributed import get_worker

        get_worker()
        torch.set_num_threads(1)  # a Dask worker runs one task per thread
    except ValueError:  # not in a worker (workers=0): leave this process's setting alone
        pass
    model = ScatterVAE.load(model_dir, map_location="cpu").eval()
    return model, Populations.load(model_dir), XPLookup(xp_store)


def chunk_arrays(spec: ChunkSpec, source_id: np.ndarray) -> dict[str, np.ndarray]:
    """XP outputs of one chunk's stars (``source_id`` -1 marks padding rows)."""
    from ysoscale.xp.kernel import encode_arrays
    from ysoscale.xp.populations import NO_XP

    model, populations, lookup = worker_state(spec.model_dir, spec.xp_store)
    n = len(source_id)
    out = {
        "xp_latent": np.full((n, model.config.latent), np.nan, dtype=np.float32),
        "xp_chi2_dof": np.full(n, np.nan, dtype=np.float32),
        "xp_anomaly": np.full(n, np.nan, dtype=np.float32),
        "xp_population": np.full(n, NO_XP, dtype=np.int16),
    }
    real = np.flatnonzero(source_id >= 0)
    found, arrays = lookup.fetch(source_id[real])
    if len(arrays):
        result = encode_arrays(model, arrays)
        rows = real[found]
        out["xp_latent"][rows] = result["latent"]
        out["xp_chi2_dof"][rows] = result["chi2_dof"]
        out["xp_anomaly"][rows] = result["anomaly"]
        out["xp_population"][rows] = populations.assign(result["latent"])
    return out


def run_chunk(spec: ChunkSpec, index: int) -> dict[str, Any]:
    """Compute and write star chunk ``index``; the adapter Dask runs.

    Errors are re-raised with the chunk attached.
    """
    import zarr

    start = index * spec.star_chunk
    stop = min(start + spec.star_chunk, spec.n_star)
    try:
        group = zarr.open_group(spec.cube, mode="r+")
        source_id = np.asarray(group["source_id"][start:stop], dtype=np.int64)
        out = chunk_arrays(spec, source_id)
        for name in XP_VARIABLES:
            group[name][start:stop] = out[name]
        group[DONE][index] = 1
    except Exception as error:
        raise RuntimeError(
            f"XP pass of star chunk {index} (stars {start}-{stop}) failed: {error}"
        ) from error
    values, counts = np.unique(out["xp_population"], return_counts=True)
    with_xp = int(np.isfinite(out["xp_chi2_dof"]).sum())
    return {
        "with_xp": with_xp,
        "without_xp": int((source_id >= 0).sum()) - with_xp,
        "populations": {int(v): int(c) for v, c in zip(values, counts, strict=True) if v >= -1},
    }


def _identity(model_dir: Path, xp_store: Path) -> dict[str, str]:
    from ysoscale.nn.model_files import read_card

    card = read_card(model_dir)
    return {
        "model_card": json.dumps(card, sort_keys=True),
        "model_dir": str(model_dir),
        "xp_store": str(xp_store),
    }


def prepare(cube: Path, model_dir: Path, xp_store: Path) -> tuple[int, int, int]:
    """Create the XP variables (or keep those of the same model and store).

    Returns ``(n_star, star_chunk, latent)``.

    Raises
    ------
    ValueError
        If the cube is not complete (``ysoscale infer`` must finish first).
    """
    import dask.array as da
    import xarray as xr
    import zarr

    from ysoscale.nn.model_files import read_card
    from ysoscale.xp.populations import NO_XP

    group = zarr.open_group(str(cube), mode="r+")
    if "star_chunk" not in group.attrs or "partition_done" not in group.array_keys():
        raise ValueError(f"{cube} is not a posterior cube of `ysoscale infer`")
    if not (np.asarray(group["partition_done"][:]) == 1).all():
        raise ValueError(f"{cube} is incomplete: run `ysoscale infer` to the end first")
    chunk, n_star = int(group.attrs["star_chunk"]), int(group["source_id"].shape[0])
    latent = int(read_card(model_dir)["config"]["latent"])
    identity = _identity(model_dir, xp_store)
    if DONE in group.array_keys():
        same = all(group["xp_latent"].attrs.get(k) == v for k, v in identity.items())
        if same and group["xp_latent"].shape == (n_star, latent):
            return n_star, chunk, latent
        for name in (*XP_VARIABLES, DONE, "latent"):
            if name in group:
                del group[name]
    n_chunks = -(-n_star // chunk)

    def lazy(shape, fill, dtype, chunks):
        return da.full(shape, fill, dtype=dtype, chunks=chunks)

    star = (chunk,)
    data = {
        "xp_latent": (
            ("star", "latent"),
            lazy((n_star, latent), np.nan, "float32", (chunk, latent)),
            {
                "description": "posterior mean of the sVAE latent of the star's Gaia XP "
                "spectrum; NaN without a usable spectrum",
                **identity,
            },
        ),
        "xp_chi2_dof": (
            ("star",),
            lazy((n_star,), np.nan, "float32", star),
            {
                "description": "sVAE reconstruction chi2 per coefficient (110) against the "
                "XP errors and, where known, correlations; NaN without XP"
            },
        ),
        "xp_anomaly": (
            ("star",),
            lazy((n_star,), np.nan, "float32", star),
            {
                "description": "reconstruction chi2 per coefficient against errors plus "
                "the model's scatter: ~1 for spectra like the training sample, large "
                "for anomalous ones; NaN without XP"
            },
        ),
        "xp_population": (
            ("star",),
            lazy((n_star,), NO_XP, "int16", star),
            {
                "description": "HDBSCAN population in the latent (ysoscale.xp.populations)",
                "flag_values": [-2, -1],
                "flag_meanings": "no_xp noise",
            },
        ),
        DONE: (
            ("xp_chunk",),
            lazy((n_chunks,), 0, "uint8", (1,)),
            {"description": "1 once the star chunk's XP variables are written"},
        ),
    }
    coords = {"latent": ("latent", [f"z{i}" for i in range(latent)])}
    fills = {"xp_latent": np.nan, "xp_chi2_dof": np.nan, "xp_anomaly": np.nan}
    fills |= {"xp_population": NO_XP, DONE: 0}
    encoding = {name: {"fill_value": fill} for name, fill in fills.items()}
    # appending rewrites the root attributes from the dataset's: carry the cube's over
    root = dict(group.attrs)
    xr.Dataset(data, coords=coords, attrs=root).to_zarr(
        cube, mode="a", compute=False, consolidated=True, encoding=encoding
    )
    return n_star, chunk, latent


def _cube_path(path: str | Path) -> Path:
    path = Path(path)
    if (path / CUBE_NAME).exists():
        return path / CUBE_NAME
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no posterior cube at {path}")
    return path


def xp_infer(
    cube: str | Path,
    xp_store: str | Path,
    model_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
) -> XPPassReport:
    """Write the XP variables of every star of a complete posterior cube.

    Parameters
    ----------
    cube : path
        The cube (``posteriors.zarr``) or the ``ysoscale infer`` output directory.
    xp_store : path
        An ``ysoscale ingest-xp`` store; stars not in it get NaN.
    model_dir : path
        An sVAE model directory (``ysoscale train --model svae``), visible to workers.
    workers : int, optional
        LocalCluster workers; ``0`` runs in this process without Dask.
    scheduler : str, optional
        Address of a running Dask scheduler.
    client : distributed.Client, optional
        An existing client (takes precedence over ``workers`` and ``scheduler``).

    Returns
    -------
    XPPassReport

    Raises
    ------
    ValueError
        If the cube is incomplete or not a cube.
    RuntimeError
        If some chunks failed (the others are saved; a re-run resumes).

    Examples
    --------
    >>> report = xp_infer("out", "xp.zarr", "svae_model", workers=2)  # doctest: +SKIP
    >>> print(report.summary())                                     # doctest: +SKIP
    """
    import zarr

    from ysoscale.nn.model_files import read_card

    started = time.perf_counter()
    cube_path = _cube_path(cube)
    model_dir, xp_store = Path(model_dir).resolve(), Path(xp_store).resolve()
    read_card(model_dir)  # a clear error before anything is written
    if not (xp_store / "zarr.json").exists():
        raise FileNotFoundError(f"no XP store at {xp_store} (make one with `ysoscale ingest-xp`)")
    n_star, chunk, _ = prepare(cube_path, model_dir, xp_store)
    spec = ChunkSpec(str(cube_path), str(xp_store), str(model_dir), chunk, n_star)
    done = np.asarray(zarr.open_array(str(cube_path / DONE), mode="r")[:])
    todo = np.flatnonzero(done == 0).tolist()
    tally = _Tally(len(todo), progress)
    if client is not None:
        _run_on_cluster(client, spec, todo, tally)
    elif workers == 0 and scheduler is None:
        for index in todo:
            tally.collect(lambda i=index: run_chunk(spec, i))
    else:
        from ysoscale.cluster import connect

        with connect(workers=workers, scheduler=scheduler) as own:
            _run_on_cluster(own, spec, todo, tally)
    tally.finish()
    return XPPassReport(
        cube=cube_path,
        n_chunks=len(done),
        chunks_run=len(todo),
        chunks_skipped=len(done) - len(todo),
        n_with_xp=tally.with_xp,
        n_without_xp=tally.without_xp,
        seconds=time.perf_counter() - started,
        populations={("noise" if k == -1 else str(k)): v for k, v in sorted(tally.pops.items())},
    )


class _Tally(TaskTally):
    """Progress over chunks and the sum of their results and failures."""

    def __init__(self, total: int, show: bool) -> None:
        from tqdm.auto import tqdm

        super().__init__("star chunk", tqdm(total=total, unit="chunk", desc="xp", disable=not show))
        self.with_xp = self.without_xp = 0
        self.pops: dict[int, int] = {}

    def tally(self, result: dict[str, Any]) -> int:
        self.with_xp += result["with_xp"]
        self.without_xp += result["without_xp"]
        for key, count in result["populations"].items():
            self.pops[key] = self.pops.get(key, 0) + count
        return 1


def _run_on_cluster(client, spec: ChunkSpec, todo: list[int], tally: _Tally) -> None:
    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(run_chunk, spec, index, key=f"xp-chunk-{index}-{token}", pure=False)
        for index in todo
    ]
    if futures:
        print(
            f"xp: {len(futures)} chunk task(s); dashboard {client.dashboard_link}", file=sys.stderr
        )
    tally.gather(futures)


__all__ = ["DONE", "XP_VARIABLES", "ChunkSpec", "XPPassReport", "prepare", "run_chunk", "xp_infer"]

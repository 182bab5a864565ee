"""The cache: rebuild only on changed inputs; use built stores where sources are absent."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from ysoscale.cache import cached_zarr


def _dataset(value: float) -> xr.Dataset:
    return xr.Dataset({"x": ("i", np.full(3, value))})


def test_rebuilds_only_when_the_hash_changes(tmp_path) -> None:
    path = tmp_path / "grid.zarr"
    first, built = cached_zarr(path, "a", lambda: _dataset(1.0))
    assert built
    again, built = cached_zarr(path, "a", lambda: _dataset(2.0))
    assert not built and float(again.x[0]) == 1.0
    changed, built = cached_zarr(path, "b", lambda: _dataset(3.0))
    assert built and float(changed.x[0]) == 3.0


def test_missing_sources_use_the_built_store_with_a_warning(tmp_path) -> None:
    path = tmp_path / "grid.zarr"
    cached_zarr(path, "abc123", lambda: _dataset(1.0))

    def sources_not_installed() -> str:
        raise ImportError("No module named 'pyphot'")

    with pytest.warns(UserWarning, match="abc123"):
        ds, built = cached_zarr(path, sources_not_installed, lambda: _dataset(2.0))
    assert not built and float(ds.x[0]) == 1.0


def test_missing_sources_without_a_store_raise(tmp_path) -> None:
    def sources_not_installed() -> str:
        raise FileNotFoundError("parsec table")

    with pytest.raises(FileNotFoundError, match="parsec"):
        cached_zarr(tmp_path / "none.zarr", sources_not_installed, lambda: _dataset(1.0))


def _build_in_a_process(path: str, queue) -> None:
    """Build the store at ``path`` slowly, reporting whether this process built it."""
    import time

    def slow_build() -> xr.Dataset:
        time.sleep(1.0)  # long enough that the two processes overlap
        return _dataset(1.0)

    _, built = cached_zarr(__import__("pathlib").Path(path), "same", slow_build)
    queue.put(built)


def test_two_processes_sharing_the_cache_build_the_store_once(tmp_path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    path = str(tmp_path / "grid.zarr")
    workers = [context.Process(target=_build_in_a_process, args=(path, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sorted(queue.get(timeout=5) for _ in workers) == [False, True]
    ds, built = cached_zarr(tmp_path / "grid.zarr", "same", lambda: _dataset(2.0))
    assert not built and float(ds.x[0]) == 1.0

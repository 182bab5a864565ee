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

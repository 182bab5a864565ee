"""Shared test set-up: one cache of built grids per checkout, seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ysoscale.cache import CACHE_ENV

# Built grids (spectra, photometry, isochrones) take ~1 minute on 2 cores; keep them in
# the checkout so repeated test runs reuse them, unless the caller chose a cache.
os.environ.setdefault(
    CACHE_ENV, str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "grids")
)


@pytest.fixture(autouse=True, scope="session")
def _torch_on_one_thread():
    """Tests train and sample small models: one torch thread is as fast on 2 cores and
    does not thrash when a Dask worker or another process holds the other core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def photometry_grid():
    from ysoscale.physics.photometry import load_photometry_grid

    grid, _ = load_photometry_grid(progress=False)
    return grid


@pytest.fixture(scope="session")
def isochrone_grid():
    from ysoscale.physics.isochrones import load_isochrone_grid

    return load_isochrone_grid(progress=False)


@pytest.fixture(scope="session")
def forward_model(photometry_grid, isochrone_grid):
    from ysoscale.physics.forward import ForwardModel

    return ForwardModel(photometry_grid, isochrone_grid)


@pytest.fixture(autouse=True)
def _dask_scheduler_left_as_found():
    """A test that leaves dask's default scheduler changed (a Client never closed, or one
    whose connection failed: distributed sets the default before connecting) breaks every
    later test on its xdist worker with 'no Client active'. Fail the test that did it and
    put the setting back, so the report names the culprit and nothing else fails."""
    import dask

    unset = object()
    before = dask.config.config.get("scheduler", unset)
    yield
    after = dask.config.config.get("scheduler", unset)
    if after is before or after == before:
        return
    if before is unset:
        dask.config.config.pop("scheduler", None)
    else:
        dask.config.config["scheduler"] = before
    pytest.fail(f"the test left dask's default scheduler set to {after!r}", pytrace=False)

"""A worker process killed mid-run: Dask replaces it and the cube is unaffected."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from distributed import WorkerPlugin

from tests.infer import cube_arrays, synthetic_catalog, tiny_model, write_hats
from ysoscale.cluster import connect
from ysoscale.infer import infer


class KillOnce(WorkerPlugin):
    """Kill the worker process shortly after it starts the first inference task of the
    run (one worker, once: the marker file is created atomically)."""

    name = "kill-once"

    def __init__(self, marker: str, delay: float) -> None:
        self.marker = marker
        self.delay = delay

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing" or not str(key).startswith("infer-partition"):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        threading.Timer(self.delay, os._exit, (1,)).start()


@pytest.mark.slow
def test_killed_worker_gives_the_reference_cube(tmp_path, one_thread):
    model = tiny_model(tmp_path / "model")
    catalog = write_hats(synthetic_catalog(1200, seed=4), tmp_path / "catalog", 300)
    options = dict(model=model, n_samples=32, progress=False, star_chunk=64)
    reference = infer(catalog, tmp_path / "reference", workers=0, **options)

    marker = tmp_path / "killed"
    with connect(workers=2) as client:
        client.register_plugin(KillOnce(str(marker), delay=0.2))
        pids = set(client.run(os.getpid).values())
        report = infer(catalog, tmp_path / "faulty", scheduler=client.scheduler.address, **options)
        assert marker.exists(), "no worker was killed"
        assert set(client.run(os.getpid).values()) != pids, "the dead worker was not replaced"
    assert report.partitions_run == reference.n_partitions
    expected = cube_arrays(reference.cube)
    for name, values in cube_arrays(report.cube).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)


def _open_worker_client() -> bool:
    """A task that leaves a Client on its worker, as lsdb and hats-import tasks do."""
    from distributed import get_client

    return get_client() is not None


@pytest.mark.slow
def test_infer_on_a_cluster_whose_workers_already_have_a_client(tmp_path, one_thread):
    """Regression: the model plugin's setup runs in the worker's event loop; loading the
    grids there once went through the worker's Client and raised 'Attempting to use an
    asynchronous Client in a synchronous context' (seen in notebooks/03_cluster.ipynb)."""
    model = tiny_model(tmp_path / "model")
    catalog = write_hats(synthetic_catalog(200, seed=5), tmp_path / "catalog", 200)
    options = dict(model=model, n_samples=8, progress=False, star_chunk=64)
    reference = infer(catalog, tmp_path / "reference", workers=0, **options)
    with connect(workers=1) as client:
        assert client.submit(_open_worker_client, pure=False).result()
        report = infer(catalog, tmp_path / "run", scheduler=client.scheduler.address, **options)
    expected = cube_arrays(reference.cube)
    for name, values in cube_arrays(report.cube).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)

"""Resume: an interrupted run, run again, equals an uninterrupted one exactly."""

from __future__ import annotations

import lsdb
import numpy as np
import pandas as pd
import pytest

from tests.infer import cube_arrays, synthetic_catalog, tiny_model, write_hats
from ysoscale.infer import NOT_WRITTEN, infer
from ysoscale.infer import cube as cube_module
from ysoscale.infer.cube import done_partitions

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model = tiny_model(root / "model")
    catalog = write_hats(synthetic_catalog(500, seed=2), root / "catalog", partition_rows=120)
    options = dict(model=model, n_samples=8, workers=0, progress=False, star_chunk=32)
    reference = infer(catalog, root / "reference", **options)
    return root, catalog, options, reference


def test_interrupted_run_resumes_to_the_reference(setup, monkeypatch):
    root, catalog, options, reference = setup
    assert reference.n_partitions >= 3
    out = root / "interrupted"

    # partition 1 dies in the middle of writing its region (first chunk written);
    # partition 2 after writing all its chunks, before it is marked done
    original_write, original_done = cube_module.CubeWriter.write, cube_module.CubeWriter.mark_done

    def failing_write(self, start, block):
        index = int(np.searchsorted(self.group["partition_start"][:], start, side="right") - 1)
        if index == 1:
            original_write(self, start, {k: v[: self.chunk] for k, v in block.items()})
            raise OSError("disk went away")
        original_write(self, start, block)

    def failing_done(self, index):
        if index == 2:
            raise OSError("killed before marking done")
        original_done(self, index)

    monkeypatch.setattr(cube_module.CubeWriter, "write", failing_write)
    monkeypatch.setattr(cube_module.CubeWriter, "mark_done", failing_done)
    with pytest.raises(RuntimeError, match=r"2 partition\(s\) failed.*resume"):
        infer(catalog, out, **options)
    monkeypatch.undo()

    done = set(done_partitions(out / "posteriors.zarr").tolist())
    assert done == set(range(reference.n_partitions)) - {1, 2}
    assert not (out / "summary").exists()  # written only once every partition is done
    partial = cube_arrays(out / "posteriors.zarr")
    assert (partial["flags"] == NOT_WRITTEN).any()  # partition 1's unwritten chunks

    resumed = infer(catalog, out, **options)
    assert resumed.partitions_run == 2
    assert resumed.partitions_skipped == reference.n_partitions - 2
    expected = cube_arrays(reference.cube)
    for name, values in cube_arrays(resumed.cube).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)
    a = lsdb.open_catalog(resumed.summary_catalog).compute()
    b = lsdb.open_catalog(reference.summary_catalog).compute()
    pd.testing.assert_frame_equal(a, b)

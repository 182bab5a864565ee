"""A small calibrated cube with its truth table, and its report, shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validate import toy_posteriors, truth_table, write_cube

N_STARS, N_SAMPLES = 600, 63


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """(cube path, truth parquet path, truth array) of a calibrated toy cube."""
    root = tmp_path_factory.mktemp("toy_run")
    samples, truth = toy_posteriors(N_STARS, N_SAMPLES, seed=5)
    source_id = np.arange(1000, 1000 + N_STARS, dtype=np.int64)
    cube = write_cube(root / "posteriors.zarr", samples, source_id)
    table = root / "truth.parquet"
    truth_table(source_id, truth).to_parquet(table)
    return cube, table, truth


@pytest.fixture(scope="session")
def toy_report(toy_run, tmp_path_factory):
    """``ysoscale validate`` of the toy cube with its truth, run once: (report directory,
    what the command printed)."""
    import contextlib
    import io

    from ysoscale.cli import main

    cube, table, _ = toy_run
    out = tmp_path_factory.mktemp("report") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["validate", "--cube", str(cube), "--truth", str(table), "--out", str(out)])
    assert code == 0, "ysoscale validate failed on the toy cube"
    return out, printed.getvalue()

"""The notebooks in ``notebooks/`` run end to end (small settings) and are stored clean.

Each notebook has one cell tagged ``parameters``; the test inserts a cell after it that
overrides those values with small ones (as papermill does) and executes the notebook with
nbclient in a fresh kernel, in a temporary directory. The kernel inherits this process's
environment, so it uses the test grid cache set in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

SMALL_SETTINGS = {
    # 01 and 02 run in-process (WORKERS=0) in CI; 03 is the one that exercises a cluster
    "01_quickstart.ipynb": {
        "N_TRAIN": 3000,
        "EPOCHS": 1,
        "N_CATALOG": 200,
        "N_SAMPLES": 16,
        "WORKERS": 0,
    },
    "02_real_data.ipynb": {"N_SCOCEN": 300, "N_SAMPLES": 16, "WORKERS": 0},
    "03_cluster.ipynb": {"N_STARS": 300, "N_SAMPLES": 16, "LOCAL_WORKERS": 1},
}


def _parameters_cell(book) -> int:
    tagged = [i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "each notebook has exactly one cell tagged 'parameters'"
    return tagged[0]


def test_every_notebook_has_small_settings() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALL_SETTINGS)


@pytest.mark.parametrize("name", sorted(SMALL_SETTINGS))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code, name
    assert all(not c.outputs and c.execution_count is None for c in code), (
        f"{name} is stored with outputs; clear them before committing"
    )
    _parameters_cell(book)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL_SETTINGS))
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YSOSCALE_SCHEDULER", raising=False)  # 03 starts its LocalCluster
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    overrides = "\n".join(f"{key} = {value!r}" for key, value in SMALL_SETTINGS[name].items())
    book.cells.insert(_parameters_cell(book) + 1, nbformat.v4.new_code_cell(overrides))
    client = nbclient.NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        output
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    images = [
        output
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{name} drew no figure"

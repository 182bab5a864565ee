"""ysoscale's tests; :func:`load_script` imports a repository script (benchmarks/, training/)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """The script at ``REPO/relative_path`` imported as a fresh module (scripts are not a
    package); each call executes it anew, so a test may change its globals."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

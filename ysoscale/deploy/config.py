"""Where the deployment templates live, and how their YAML is read.

The files users edit (``deploy/slurm/cluster.yaml``, ``deploy/kubernetes/cluster.yaml``,
``deploy/tls/dask-tls.yaml``) sit in the repository's ``deploy/`` folder. A source
checkout (``pip install -e .``) finds it next to the package; an installed image points
``YSOSCALE_DEPLOY_DIR`` at its copy. PyYAML, dask-jobqueue and dask-kubernetes come with
the ``deploy`` extra and are imported only here, when asked for.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

DEPLOY_ENV = "YSOSCALE_DEPLOY_DIR"


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` or say which extra provides it.

    Examples
    --------
    >>> require("json", "python").dumps([1])
    '[1]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is needed here; install it with: pip install 'ysoscale[deploy]' "
            f"(it provides {package})"
        ) from error


def deploy_dir() -> Path:
    """The ``deploy/`` folder: ``$YSOSCALE_DEPLOY_DIR``, else the checkout's ``deploy/``.

    Raises
    ------
    FileNotFoundError
        If neither exists (a wheel install without the repository): pass the file path
        explicitly instead.

    Examples
    --------
    >>> (deploy_dir() / "slurm" / "cluster.yaml").exists()  # doctest: +SKIP
    True
    """
    candidates = []
    if os.environ.get(DEPLOY_ENV):
        candidates.append(Path(os.environ[DEPLOY_ENV]).expanduser())
    candidates.append(Path(__file__).resolve().parents[2] / "deploy")
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"no deploy/ folder at {', '.join(map(str, candidates))}; set {DEPLOY_ENV} to the "
        "repository's deploy/ folder or pass the configuration file's path"
    )


def load_yaml(path: str | Path) -> Any:
    """The single YAML document in ``path``.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.yaml"
    >>> _ = path.write_text("cpu: {partition: short}")
    >>> load_yaml(path)
    {'cpu': {'partition': 'short'}}
    """
    yaml = require("yaml", "PyYAML")
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def load_yaml_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every non-empty document of a multi-document YAML file (a Kubernetes manifest).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "m.yaml"
    >>> _ = path.write_text("kind: A\\n---\\nkind: B\\n")
    >>> [doc["kind"] for doc in load_yaml_documents(path)]
    ['A', 'B']
    """
    yaml = require("yaml", "PyYAML")
    with open(path, encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def dump_yaml_documents(docs: list[dict[str, Any]], header: str = "") -> str:
    """YAML text of ``docs`` separated by ``---``, keys in the order given.

    Examples
    --------
    >>> print(dump_yaml_documents([{"kind": "A"}, {"kind": "B"}]), end="")
    kind: A
    ---
    kind: B
    """
    yaml = require("yaml", "PyYAML")

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:  # shell scripts stay readable: block style
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = "---\n".join(yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100) for doc in docs)
    return header + body

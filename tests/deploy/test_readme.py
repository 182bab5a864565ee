"""deploy/README.md: its commands parse, its files exist, its names match the manifests."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.conftest import DEPLOY, ROOT
from ysoscale.deploy import kubernetes_settings
from ysoscale.deploy.__main__ import build_parser as deploy_parser
from ysoscale.deploy.kubernetes import tls_volume

README = (DEPLOY / "README.md").read_text()
SETTINGS = kubernetes_settings(DEPLOY / "kubernetes" / "cluster.yaml")


def command_lines() -> list[str]:
    """Every line of the README's ```bash blocks, comments stripped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(re.sub(r"\s+#\s.*$", "", line))
    return lines


def commands(prefix: str) -> list[list[str]]:
    found = [shlex.split(line) for line in command_lines() if line.startswith(prefix)]
    assert found, prefix
    return found


def test_deploy_commands_parse():
    for argv in commands("python -m ysoscale.deploy"):
        args = deploy_parser().parse_args(argv[3:])
        assert callable(args.func), argv


def test_infer_commands_parse():
    from ysoscale.cli import build_parser

    for argv in commands("ysoscale infer") + [
        c[c.index("infer") - 1 :] for c in commands("kubectl -n ysoscale exec -it") if "infer" in c
    ]:
        args = build_parser().parse_args(argv[1:])
        assert args.scheduler and args.out.startswith("/"), argv


def test_every_file_named_exists():
    names = set(re.findall(r"\bdeploy/[\w./*-]+[\w*]", README))
    assert len(names) > 10
    for name in names:
        assert list(ROOT.glob(name)), name


def test_helm_chart_matches_the_python_package():
    import dask_kubernetes

    (helm,) = commands("helm install")
    assert helm[helm.index("--version") + 1] == dask_kubernetes.__version__
    assert helm[helm.index("-n") + 1] == "dask-operator"


def test_image_replacement_reaches_every_file():
    (sed,) = commands("sed -i")
    old = sed[2].split("#")[1]
    assert old == SETTINGS.image
    files = {p for pattern in sed[3:] for p in ROOT.glob(pattern)}
    holding = {p for p in (DEPLOY / "kubernetes").rglob("*.yaml") if old in p.read_text()}
    assert holding and holding <= files


def test_check_command_covers_every_manifest():
    (check,) = [c for c in commands("python -m ysoscale.deploy check")]
    named = {ROOT / p for p in check[4:]}
    expected = {
        *(DEPLOY / "kubernetes" / "manifests").glob("*.yaml"),
        DEPLOY / "kubernetes" / "toolbox.yaml",
    }
    assert named == expected


def test_tls_secret_holds_what_the_pods_mount():
    (create,) = commands("kubectl -n ysoscale create secret generic")
    assert create[6] == "ysoscale-dask-tls"
    files = {arg.split("=", 1)[1] for arg in create if arg.startswith("--from-file=")}
    mounted = {
        item["key"]
        for role in ("scheduler", "worker", "client")
        for item in tls_volume("x", role)[0]["secret"]["items"]
    }
    assert files == mounted and "ca-key.pem" not in files


@pytest.mark.parametrize(
    "needle",
    [
        "cronjob/ysoscale-infer",
        "svc/ysoscale-scheduler",
        "pod/ysoscale-toolbox",
        "daskcluster ysoscale",
        "pvc ysoscale-data",
    ],
)
def test_object_names_match_the_manifests(needle):
    assert needle in README
    kind, _, name = needle.replace(" ", "/").partition("/")
    text = "\n".join(p.read_text() for p in (DEPLOY / "kubernetes").rglob("*.yaml"))
    if kind == "svc":
        assert name == f"{SETTINGS.name}-scheduler"
    else:
        assert f"name: {name}\n" in text, needle

"""Kubernetes manifests: parsed, validated against the CRDs and Kubernetes models, consistent."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from ysoscale.deploy import (
    ManifestError,
    kubernetes_cluster_spec,
    kubernetes_settings,
    render_kubernetes,
    validate_file,
    validate_manifest,
)
from ysoscale.deploy.kubernetes import tls_env
from ysoscale.deploy.tls import flatten

KUBE = DEPLOY / "kubernetes"
MANIFESTS = sorted((KUBE / "manifests").glob("*.yaml"))
ALL_MANIFESTS = [*MANIFESTS, KUBE / "toolbox.yaml", KUBE / "cronjob-tls.yaml"]
SETTINGS = kubernetes_settings(KUBE / "cluster.yaml")
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def docs_of(path: Path) -> dict[str, dict]:
    """The documents of a manifest file by kind (the first of each kind)."""
    docs: dict[str, dict] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs.setdefault(doc["kind"], doc)
    return docs


def containers(doc: dict) -> list[dict]:
    """Every container of a Pod, CronJob, or DaskCluster."""
    if doc["kind"] == "Pod":
        return doc["spec"]["containers"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "DaskCluster":
        return [
            *doc["spec"]["scheduler"]["spec"]["containers"],
            *doc["spec"]["worker"]["spec"]["containers"],
        ]
    return []


@pytest.mark.parametrize("path", ALL_MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates(path):
    docs = validate_file(path)
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace", SETTINGS.namespace) == SETTINGS.namespace
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == SETTINGS.namespace


def test_daskcluster_manifest_is_the_rendered_settings():
    # edit deploy/kubernetes/cluster.yaml, then: python -m ysoscale.deploy kubernetes render
    #   --out deploy/kubernetes/manifests/10-daskcluster.yaml
    assert (KUBE / "manifests" / "10-daskcluster.yaml").read_text() == render_kubernetes(
        KUBE / "cluster.yaml"
    )


def test_daskcluster_runs_dask_cuda_workers():
    docs = docs_of(KUBE / "manifests" / "10-daskcluster.yaml")
    cluster = docs["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert cluster["metadata"]["name"] == SETTINGS.name
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert worker["args"][:3] == ["dask", "cuda", "worker"]
    # distributed installs only the `dask` entry point (no dask-scheduler / dask-worker)
    assert shutil.which("dask", path=str(Path(sys.executable).parent))
    assert not any(
        a in ("dask-scheduler", "dask-worker") for c in containers(cluster) for a in c["args"]
    )
    gpus = SETTINGS.gpus_per_worker
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert "nvidia.com/gpu" not in scheduler["resources"]["limits"]
    args = worker["args"]
    assert args[args.index("--dashboard-address") + 1].startswith("127.0.0.1:")
    assert cluster["spec"]["scheduler"]["service"]["type"] == "ClusterIP"
    assert {"name": "data", "mountPath": SETTINGS.data_path} in worker["volumeMounts"]
    (volume,) = cluster["spec"]["worker"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == SETTINGS.data_claim
    autoscaler = docs["DaskAutoscaler"]
    assert autoscaler["spec"] == {
        "cluster": SETTINGS.name,
        "minimum": SETTINGS.min_workers,
        "maximum": SETTINGS.max_workers,
    }


def test_cronjob_runs_infer_against_the_scheduler():
    docs = docs_of(KUBE / "manifests" / "20-cronjob.yaml")
    cron = docs["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields)
    (container,) = containers(cron)
    script = container["args"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    assert (
        'ysoscale infer "$INPUT" --out "$OUT" --scheduler "$DASK_SCHEDULER_ADDRESS" --gpu' in script
    )
    config = docs["ConfigMap"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert config["data"]["DASK_SCHEDULER_ADDRESS"] == SETTINGS.scheduler_address
    for key in ("INPUT", "OUT"):
        assert config["data"][key].startswith(SETTINGS.data_path + "/")
    assert {"name": "data", "mountPath": SETTINGS.data_path} in container["volumeMounts"]


def test_cronjob_command_line_is_a_real_infer_command():
    from ysoscale.cli import build_parser

    args = build_parser().parse_args(
        ["infer", "/data/in", "--out", "/data/out", "--scheduler", "tcp://s:8786", "--gpu"]
    )
    assert (args.input, args.out, args.scheduler, args.gpu) == (
        "/data/in",
        "/data/out",
        "tcp://s:8786",
        True,
    )


def fake_ysoscale(directory: Path, exit_code: int) -> Path:
    """A `ysoscale` that records its arguments and exits with ``exit_code``."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / "ysoscale"
    program.write_text(f'#!/bin/sh\necho "$@" >> "{directory}/calls"\nexit {exit_code}\n')
    program.chmod(0o755)
    return directory / "calls"


def run_cron_script(
    tmp_path: Path, exit_code: int
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    (container,) = containers(docs_of(KUBE / "manifests" / "20-cronjob.yaml")["CronJob"])
    calls = fake_ysoscale(tmp_path / "bin", exit_code)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "INPUT": "/data/in",
        "OUT": str(out),
        "DASK_SCHEDULER_ADDRESS": "tcp://ysoscale-scheduler:8786",
    }
    done = subprocess.run(
        [*container["command"], container["args"][0]], env=env, capture_output=True, text=True
    )
    return done, calls, out


def test_cronjob_script_runs_once_then_skips(tmp_path):
    done, calls, out = run_cron_script(tmp_path, exit_code=0)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().split() == [
        "infer",
        "/data/in",
        "--out",
        str(out),
        "--scheduler",
        "tcp://ysoscale-scheduler:8786",
        "--gpu",
    ]
    assert (out / ".ysoscale-complete").read_text().startswith("finished ")
    done, calls, _ = run_cron_script(tmp_path, exit_code=0)
    assert done.returncode == 0 and "nothing to do" in done.stdout
    assert len(calls.read_text().splitlines()) == 1  # not run again


def test_cronjob_script_failure_is_not_marked_complete(tmp_path):
    done, calls, out = run_cron_script(tmp_path, exit_code=3)
    assert done.returncode == 3
    assert calls.exists() and not (out / ".ysoscale-complete").exists()


def test_image_claim_and_labels_agree_across_files():
    images = {
        c["image"]
        for path in ALL_MANIFESTS
        for doc in docs_of(path).values()
        for c in containers(doc)
    }
    assert images == {SETTINGS.image}
    pvc = docs_of(KUBE / "manifests" / "00-storage.yaml")["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == SETTINGS.data_claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # the NetworkPolicies admit the Pods that need the scheduler
    policies = [
        d for d in yaml.safe_load_all((KUBE / "manifests" / "30-networkpolicy.yaml").read_text())
    ]
    scheduler_policy = next(
        p
        for p in policies
        if p["spec"]["podSelector"]["matchLabels"].get("dask.org/component") == "scheduler"
    )
    allowed = [
        peer.get("podSelector", {}).get("matchLabels")
        for rule in scheduler_policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    cron = docs_of(KUBE / "manifests" / "20-cronjob.yaml")["CronJob"]
    pod_labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    toolbox_labels = docs_of(KUBE / "toolbox.yaml")["Pod"]["metadata"]["labels"]
    for labels in (pod_labels, toolbox_labels):
        assert any(sel and sel.items() <= labels.items() for sel in allowed), labels
    assert {"dask.org/cluster-name": SETTINGS.name} in allowed
    operator = [
        peer["namespaceSelector"]["matchLabels"]
        for rule in scheduler_policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    ]
    assert operator == [{"kubernetes.io/metadata.name": "dask-operator"}]
    assert "-n dask-operator" in (DEPLOY / "README.md").read_text()


def test_tls_cronjob_is_the_plain_one_plus_tls():
    plain = docs_of(KUBE / "manifests" / "20-cronjob.yaml")
    tls = docs_of(KUBE / "cronjob-tls.yaml")
    assert tls["ConfigMap"]["data"]["DASK_SCHEDULER_ADDRESS"] == SETTINGS.scheduler_address.replace(
        "tcp://", "tls://"
    )
    stripped = copy.deepcopy(tls)
    stripped["ConfigMap"]["data"]["DASK_SCHEDULER_ADDRESS"] = SETTINGS.scheduler_address
    pod = stripped["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {e["name"]: e["value"] for e in container.pop("env")} == tls_env("client")
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "dask-tls"]
    (secret,) = [v for v in pod["volumes"] if v["name"] == "dask-tls"]
    assert {i["key"] for i in secret["secret"]["items"]} == {
        "ca.pem",
        "client.pem",
        "client-key.pem",
    }
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "dask-tls"]
    assert stripped == plain


def test_tls_cluster_spec():
    spec = kubernetes_cluster_spec(KUBE / "cluster.yaml", tls_secret="ysoscale-dask-tls")
    validate_manifest(spec)
    (scheduler,) = spec["spec"]["scheduler"]["spec"]["containers"]
    (worker,) = spec["spec"]["worker"]["spec"]["containers"]
    assert scheduler["args"][-2:] == ["--protocol", "tls"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"].startswith("tls://")
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == "/etc/dask-tls/worker-key.pem"
    secret = next(v for v in spec["spec"]["worker"]["spec"]["volumes"] if v["name"] == "dask-tls")
    assert "scheduler-key.pem" not in {i["key"] for i in secret["secret"]["items"]}


def test_cpu_workers():
    spec = kubernetes_cluster_spec(KUBE / "cluster.yaml", kind="cpu")
    validate_manifest(spec)
    (worker,) = spec["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][:2] == ["dask", "worker"]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]


@pytest.mark.parametrize(
    ("path", "change", "message"),
    [
        (
            "10-daskcluster.yaml",
            lambda d: d["DaskCluster"]["spec"]["worker"].update(replica=2),
            "replica",
        ),
        (
            "10-daskcluster.yaml",
            lambda d: d["DaskCluster"]["spec"]["worker"].update(replicas="two"),
            "not of type 'integer'",
        ),
        ("10-daskcluster.yaml", lambda d: d["DaskAutoscaler"]["spec"].pop("maximum"), "maximum"),
        (
            "20-cronjob.yaml",
            lambda d: d["CronJob"]["spec"].update(concurrencypolicy="Forbid"),
            "concurrencypolicy",
        ),
        ("20-cronjob.yaml", lambda d: containers(d["CronJob"])[0].pop("name"), "name"),
        (
            "20-cronjob.yaml",
            lambda d: containers(d["CronJob"])[0]["resources"].update(limit={}),
            "limit",
        ),
        (
            "00-storage.yaml",
            lambda d: d["PersistentVolumeClaim"]["metadata"].update(name="Data_Volume"),
            "Kubernetes name",
        ),
        (
            "30-networkpolicy.yaml",
            lambda d: d["NetworkPolicy"].update(apiVersion="networking.k8s.io/v9"),
            "no Kubernetes model",
        ),
    ],
)
def test_validator_refuses_broken_manifests(path, change, message):
    docs = docs_of(KUBE / "manifests" / path)
    change(docs)
    with pytest.raises(ManifestError, match=message):
        for doc in docs.values():
            validate_manifest(doc)


def test_settings_refuse_misspelled_keys():
    with pytest.raises(ValueError, match="did you mean 'max_workers'"):
        kubernetes_settings(KUBE / "cluster.yaml", max_worker=3)
    with pytest.raises(ValueError, match="Kubernetes name"):
        kubernetes_settings(KUBE / "cluster.yaml", name="YSO")


def test_scheduler_serves_the_api_the_operator_scales_with():
    """The operator asks the scheduler's HTTP API for the adaptive target and to retire
    workers; the DaskCluster's environment turns that API on."""
    import json
    import urllib.request

    import dask
    from distributed import LocalCluster

    (scheduler,) = kubernetes_cluster_spec(KUBE / "cluster.yaml")["spec"]["scheduler"]["spec"][
        "containers"
    ]
    env = {e["name"]: e["value"] for e in scheduler["env"]}
    with dask.config.set(flatten(dask.config.collect_env(env))):
        with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
            port = cluster.scheduler.http_server.port
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/v1/adaptive_target", timeout=10
            ) as reply:
                assert reply.status == 200
                assert json.loads(reply.read())["workers"] == 0

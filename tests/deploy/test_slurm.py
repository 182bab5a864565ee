"""SLURM worker jobs: settings from deploy/slurm/cluster.yaml rendered by dask-jobqueue."""

from __future__ import annotations

import re
import shlex
import sys

import pytest
from dask.utils import parse_bytes

from tests.deploy.conftest import DEPLOY
from ysoscale.deploy import slurm_cluster, slurm_settings
from ysoscale.deploy.__main__ import main


def listening_hosts(port: int) -> set[str]:
    """Addresses this process listens on at TCP ``port``."""
    import psutil

    sockets = psutil.Process().net_connections(kind="tcp")
    return {s.laddr.ip for s in sockets if s.status == "LISTEN" and s.laddr.port == port}


def render(kind: str, config, **overrides) -> tuple[str, set[str]]:
    """(job script, addresses the scheduler dashboard listens on) of a cluster built and
    closed at once. (The dashboard link names the scheduler's host whatever the bind.)"""
    with slurm_cluster(kind, config, **overrides) as cluster:
        port = int(cluster.dashboard_link.split(":")[2].split("/")[0])
        return cluster.job_script(), listening_hosts(port)


def directives(script: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH")]


def worker_command(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if " -m " in line]
    return shlex.split(line)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_gpu_job_script(slurm_table):
    script, dashboard = render("gpu", slurm_table)
    lines = directives(script)
    for expected in ("-p gpu-a100", "-A astro", "-t 02:30:00", "--cpus-per-task=6", "--mem=48G",
                     "--gres=gpu:1", "-J ysoscale-gpu"):  # fmt: skip
        assert expected in lines, (expected, lines)
    command = worker_command(script)
    assert command[:3] == [sys.executable, "-m", "dask_cuda.cli"]  # dask-cuda's worker
    assert command[3].startswith("tcp://")
    assert option(command, "--nthreads") == "1"
    assert parse_bytes(option(command, "--memory-limit")) == pytest.approx(
        parse_bytes("48GiB"), rel=1e-3
    )
    assert option(command, "--dashboard-address") == "127.0.0.1:0"
    assert option(command, "--local-directory") == "${TMPDIR:-/tmp}"
    assert "--nworkers" not in command  # dask-cuda starts one worker per GPU itself
    # the environment is set up before the worker starts
    body = script.splitlines()
    start = next(i for i, line in enumerate(body) if " -m " in line)
    before = body[:start]
    assert "module load python/3.11" in before
    assert "source /proj/ys/.venv/bin/activate" in before
    assert "export YSOSCALE_CACHE_DIR=/proj/ys/cache" in before
    assert dashboard == {"127.0.0.1"}


def test_cpu_job_script(slurm_table):
    script, _ = render("cpu", slurm_table)
    lines = directives(script)
    assert "-p short" in lines and "--cpus-per-task=8" in lines and "--mem=32G" in lines
    assert not any(line.startswith("--gres") for line in lines)
    command = worker_command(script)
    assert command[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]
    assert option(command, "--nworkers") == "8"
    assert option(command, "--nthreads") == "1"
    assert parse_bytes(option(command, "--memory-limit")) == pytest.approx(
        parse_bytes("4GiB"), rel=1e-3
    )
    assert "export OMP_NUM_THREADS=1" in script


def test_two_gpus_share_the_job_memory(slurm_table):
    script, _ = render("gpu", slurm_table, gpus=2, gres="gpu:a100:2")
    assert "--gres=gpu:a100:2" in directives(script)
    assert "--mem=48G" in directives(script)  # SLURM is asked for the whole job
    per_worker = parse_bytes(option(worker_command(script), "--memory-limit"))
    assert per_worker == pytest.approx(parse_bytes("24GiB"), rel=1e-3)


def test_account_null_is_left_out(slurm_table):
    slurm_table["common"]["account"] = None
    script, _ = render("cpu", slurm_table, job_extra=["--qos=long"])
    assert not any(line.startswith("-A") for line in directives(script))
    assert "--qos=long" in directives(script)


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_shipped_template_renders(kind):
    script, dashboard = render(
        kind, DEPLOY / "slurm" / "cluster.yaml", dashboard_address="127.0.0.1:0"
    )
    assert f"-J ysoscale-{kind}" in directives(script)
    assert re.search(r"^source .+/bin/activate$", script, re.M)
    assert "export YSOSCALE_CACHE_DIR=" in script
    assert dashboard == {"127.0.0.1"}


def test_dashboard_elsewhere_when_told(slurm_table):
    _, dashboard = render("cpu", slurm_table, dashboard_address=":0")
    assert dashboard - {"127.0.0.1"}  # all interfaces: the test can tell the difference


def test_shipped_dashboard_default_is_loopback():
    for kind in ("cpu", "gpu"):
        settings = slurm_settings(kind, DEPLOY / "slurm" / "cluster.yaml")
        assert settings.dashboard_address.startswith("127.0.0.1:")
        assert settings.worker_dashboard_address.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("gpu", {"gpu": 1}, "did you mean 'gpus'"),
        ("gpu", {"gpus": 0}, "gpus must be at least 1"),
        ("gpu", {"worker_processes": 2}, "worker_processes must be 1"),
        ("cpu", {"gres": "gpu:1"}, "use the gpu kind"),
        ("cpu", {"walltime": "2 hours"}, "walltime"),
        ("cpu", {"memory": "lots"}, "lots"),
        ("tpu", {}, "kind must be one of"),
    ],
)
def test_bad_settings_are_refused(slurm_table, kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        slurm_settings(kind, slurm_table, **overrides)


def test_unknown_table_is_refused(slurm_table):
    slurm_table["gpus"] = {"partition": "x"}
    with pytest.raises(ValueError, match=r"unknown table"):
        slurm_settings("cpu", slurm_table)


def test_tls_workers_get_certificates(slurm_table, tmp_path):
    from ysoscale.deploy import make_certificates

    paths = make_certificates(tmp_path / "tls")
    with slurm_cluster("gpu", slurm_table, tls_config=str(paths["config"])) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        command = worker_command(cluster.job_script())
    assert command[3].startswith("tls://")
    assert option(command, "--tls-ca-file") == str(paths["ca"].resolve())
    assert option(command, "--tls-cert") == str(paths["worker-cert"].resolve())
    assert option(command, "--tls-key") == str(paths["worker-key"].resolve())


def test_cli_prints_the_job_script(tmp_path, capsys, slurm_table):
    import yaml

    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(slurm_table))
    argv = [
        "slurm",
        "script",
        "--kind",
        "gpu",
        "--config",
        str(config),
        "--set",
        "walltime=08:00:00",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -t 08:00:00" in out and "#SBATCH --gres=gpu:1" in out
    assert main(["slurm", "script", "--config", str(config), "--set", "partiton=x"]) == 2
    assert "did you mean 'partition'" in capsys.readouterr().err

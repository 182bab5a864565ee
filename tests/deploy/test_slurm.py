"""SLURM worker jobs: settings from deploy/slurm/cluster.yaml rendered by dask-jobqueue."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

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


def fake_slurm(directory: Path) -> Path:
    """``sbatch``/``scancel`` stand-ins: a submitted job script runs here, in its own
    process group; ``scancel`` ends that group. Returns the folder of their records."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f'd={directory}; n=$(ls "$d"/*.sh 2>/dev/null | wc -l); n=$((n + 1))\n'
        'cp "$1" "$d/$n.sh"\n'
        'setsid bash "$d/$n.sh" > "$d/$n.log" 2>&1 < /dev/null &\n'
        'echo $! > "$d/$n.pid"\n'
        'echo "Submitted batch job $n"\n'
    )
    (directory / "scancel").write_text(
        "#!/usr/bin/env bash\n"
        f"d={directory}\n"
        'for id in "$@"; do echo "$id" >> "$d/cancelled"; '
        'kill -TERM -- -"$(cat "$d/$id.pid")" 2>/dev/null || true; done\n'
    )
    for name in ("sbatch", "scancel"):
        (directory / name).chmod(0o755)
    return directory


def test_cli_starts_a_cluster_whose_jobs_run_workers(tmp_path, slurm_table):
    """`slurm start` submits the rendered job script (to a stand-in sbatch that runs it
    here); the worker it starts joins the scheduler and computes; Ctrl-C cancels it."""
    import os
    import signal
    import subprocess
    import time

    import yaml
    from distributed import Client

    jobs = fake_slurm(tmp_path / "slurm")
    slurm_table["common"]["activate"] = [f"source {sys.prefix}/bin/activate"]
    slurm_table["common"]["cache_dir"] = str(tmp_path / "cache")
    slurm_table["cpu"].update(worker_processes=1, memory="2GiB")
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(slurm_table))
    address_file = tmp_path / "scheduler.txt"
    argv = [
        *(sys.executable, "-m", "ysoscale.deploy", "slurm", "start", "--kind", "cpu"),
        *("--jobs", "1", "--config", str(config), "--address-file", str(address_file)),
    ]
    env = {**os.environ, "PATH": f"{jobs}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert address_file.exists(), (
            process.communicate(timeout=5)[0] if process.poll() is not None else "no address"
        )
        address = address_file.read_text().strip()
        assert address.startswith("tcp://")
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=120)
            assert client.submit(
                lambda: os.environ["YSOSCALE_CACHE_DIR"], pure=False
            ).result() == str(tmp_path / "cache")
        script = (jobs / "1.sh").read_text()
        assert "#SBATCH -p short" in script and address in script
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert f"scheduler: {address}" in output and "ssh -N -L" in output
    assert (jobs / "cancelled").read_text().split() == ["1"]

"""The scheduled SLURM run: infer.sbatch's directives and behaviour, the scrontab's syntax."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

SBATCH = DEPLOY / "slurm" / "infer.sbatch"
SCRONTAB = DEPLOY / "slurm" / "ysoscale.scrontab"
# sbatch long options the templates may use (sbatch(1))
SBATCH_OPTIONS = {
    "account", "chdir", "constraint", "cpus-per-task", "error", "gres", "gpus", "job-name",
    "mail-type", "mail-user", "mem", "mem-per-cpu", "nodes", "ntasks", "ntasks-per-node",
    "output", "partition", "qos", "time", "exclusive",
}  # fmt: skip
TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def long_options(lines: list[str], prefix: str) -> dict[str, str]:
    """``--name=value`` directives after ``prefix`` (``#SBATCH``/``#SCRON``), checked."""
    options = {}
    for line in lines:
        if not line.startswith(prefix + " "):
            continue
        text = line[len(prefix) + 1 :].strip()
        match = re.fullmatch(r"--([a-z-]+)(?:=(\S+))?", text)
        assert match, f"{prefix}: one --option=value per line, got {line!r}"
        name, value = match.groups()
        assert name in SBATCH_OPTIONS, f"{prefix}: unknown option --{name}"
        options[name] = value
    return options


def cron_field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not step.isdigit():
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(b.isdigit() and low <= int(b) <= high for b in bounds):
            return False
    return True


def sbatch_directives() -> dict[str, str]:
    lines = SBATCH.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    # sbatch stops reading #SBATCH at the first command
    first_command = next(
        i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")
    )
    assert not any(line.startswith("#SBATCH") for line in lines[first_command:])
    return long_options(lines[:first_command], "#SBATCH")


def test_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    assert os.access(SBATCH, os.X_OK)


def test_sbatch_directives():
    options = sbatch_directives()
    assert {"partition", "nodes", "gres", "time", "cpus-per-task", "mem", "job-name"} <= set(
        options
    )
    assert TIME.match(options["time"])
    assert re.fullmatch(r"gpu(:[\w-]+)?:\d+", options["gres"])


def test_sbatch_runs_the_infer_command():
    from ysoscale.cli import build_parser

    text = SBATCH.read_text()
    line = next(line for line in text.splitlines() if line.startswith("ysoscale infer "))
    assert line.startswith('ysoscale infer "$INPUT" --out "$OUT" --scheduler "$ADDRESS"')
    args = build_parser().parse_args(
        ["infer", "/in", "--out", "/out", "--scheduler", "tcp://h:1", "--gpu"]
    )
    assert args.scheduler == "tcp://h:1" and args.gpu
    assert "dask cuda worker" in text and '--dashboard-address "127.0.0.1:' in text


def test_scrontab_syntax_and_resources():
    lines = [line for line in SCRONTAB.read_text().splitlines() if line.strip()]
    entries = [line for line in lines if not line.startswith("#")]
    assert len(entries) == 1, entries
    options = long_options(lines, "#SCRON")
    for line in lines:
        assert not line.startswith("#SCRON") or line.startswith("#SCRON --"), line
    fields = entries[0].split()
    assert len(fields) >= 6
    for field, (low, high) in zip(fields[:5], CRON_RANGES, strict=True):
        assert cron_field_ok(field, low, high), field
    command = shlex.split(" ".join(fields[5:]))
    assert command[0].startswith("/") and command[0].endswith("/deploy/slurm/infer.sbatch")
    assert len(command) == 3 and all(arg.startswith("/") for arg in command[1:])
    # the #SCRON resources are those of the #SBATCH lines (scrontab does not read those)
    sbatch = sbatch_directives()
    for name in ("partition", "nodes", "gres", "cpus-per-task", "mem", "time"):
        assert options[name] == sbatch[name], name


@pytest.mark.parametrize(
    ("field", "ok"), [("15", True), ("*/5", True), ("1-5,7", True), ("61", False), ("a", False)]
)
def test_cron_field_check_can_fail(field, ok):
    assert cron_field_ok(field, 0, 59) is ok


def fake_srun(directory: Path) -> None:
    """A stand-in for srun on a machine without SLURM: drop its options, run the command."""
    directory.mkdir(parents=True, exist_ok=True)
    srun = directory / "srun"
    srun.write_text(
        "#!/usr/bin/env bash\n"
        'while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done\n'
        'exec "$@"\n'
    )
    srun.chmod(0o755)


@pytest.mark.slow
def test_sbatch_script_runs_infer_and_then_skips(tmp_path):
    """The whole job on this machine: scheduler, a CPU worker via (fake) srun, ysoscale
    infer --scheduler; then a second run finds OUT complete and does nothing."""
    from tests.infer import synthetic_catalog, tiny_model

    model = tiny_model(tmp_path / "model")
    catalog = tmp_path / "catalog.parquet"
    synthetic_catalog(60, seed=5).to_parquet(catalog)
    fake_srun(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "1",
        "SLURM_CPUS_PER_TASK": "1",
        "YSOSCALE_WORKER": "cpu",
        "YSOSCALE_VENV": sys.prefix,
        "YSOSCALE_DASHBOARD_PORT": "0",
        "YSOSCALE_INFER_ARGS": f"--model {model} --samples 4",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(SBATCH), str(catalog), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 inferred now, 0 already done" in run.stdout
    assert (out / ".ysoscale-complete").read_text().startswith("finished ")
    assert (out / "posteriors.zarr").is_dir() and (out / "summary").is_dir()
    assert not list(out.glob(".dask-scheduler-*.json"))  # cleaned up
    again = subprocess.run(
        ["bash", str(SBATCH), str(catalog), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_sbatch_script_needs_input_and_out(tmp_path):
    run = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True)
    assert run.returncode == 2 and "usage" in run.stderr
    run = subprocess.run(
        ["bash", str(SBATCH), str(tmp_path / "missing"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and not (tmp_path / "out").exists()

"""Paths of the deploy/ templates and a SLURM settings table for the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture
def slurm_table() -> dict:
    """A SLURM configuration like deploy/slurm/cluster.yaml, with recognisable values."""
    return {
        "common": {
            "account": "astro",
            "walltime": "02:30:00",
            "activate": ["module load python/3.11", "source /proj/ys/.venv/bin/activate"],
            "cache_dir": "/proj/ys/cache",
            "local_directory": "${TMPDIR:-/tmp}",
            "dashboard_address": "127.0.0.1:0",  # tests share the machine: any free port
        },
        "cpu": {"partition": "short", "worker_processes": 8, "memory": "32GiB"},
        "gpu": {"partition": "gpu-a100", "gpus": 1, "cpus_per_job": 6, "memory": "48GiB"},
    }

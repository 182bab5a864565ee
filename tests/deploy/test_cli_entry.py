"""``ysoscale deploy ...`` is ``python -m ysoscale.deploy ...`` under the main command."""

from __future__ import annotations

import pytest

from ysoscale.cli import main


def test_ysoscale_deploy_forwards_to_the_deploy_parser(capsys) -> None:
    assert main(["deploy", "slurm", "script", "--kind", "gpu"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/usr/bin/env bash")
    assert "#SBATCH" in script


def test_ysoscale_deploy_help_names_its_program(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["deploy", "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ysoscale deploy")

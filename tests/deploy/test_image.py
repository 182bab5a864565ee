"""deploy/Dockerfile installs what the README's install command installs, as pinned."""

from __future__ import annotations

import re
import shlex
import tomllib

from tests.deploy.conftest import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def no_deps_pins(text: str) -> set[str]:
    """Every NAME==VERSION installed with ``pip install --no-deps`` in ``text``."""
    pins = set()
    text = re.sub(r"\\\n\s*", " ", text)  # Dockerfile continuation lines
    for match in re.finditer(r"pip install (?:-q )?--no-deps ([^&\n`]+)", text):
        pins |= {word for word in shlex.split(match.group(1)) if "==" in word}
    return pins


def test_torch_pin_matches_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    runs = [args for word, args in instructions() if word == "RUN"]
    assert any("torch==2.13.0" in run for run in runs)
    assert any("torch.__version__" in run and "2.13.0" in run for run in runs)


def test_data_packages_installed_without_dependencies_as_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    expected = {
        "SEDFit==0.6.1",
        "ysoisochrone==1.2.0",
        "astroARIADNE==1.5.2",
        "astroLACHESIS==1.0.9",
    }
    assert expected <= no_deps_pins(readme)  # the README's full install command
    assert no_deps_pins(DOCKERFILE) == expected


def test_image_layout():
    steps = instructions()
    assert steps[0][0] == "FROM" and "python:3.11" in steps[0][1]
    copies = [args.split() for word, args in steps if word == "COPY"]
    for *sources, _ in copies:
        assert all((ROOT / source).exists() for source in sources), sources
    assert ["deploy", "/opt/ysoscale/deploy"] in copies
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "YSOSCALE_DEPLOY_DIR=/opt/ysoscale/deploy" in env
    assert "YSOSCALE_CACHE_DIR=/opt/ysoscale/cache" in env
    assert ("ARG", "EXTRAS=gpu,deploy") in steps
    users = [args for word, args in steps if word == "USER"]
    assert users == ["ysoscale"]  # the Pods' runAsUser 1000 (useradd --uid 1000)
    assert "--uid 1000" in DOCKERFILE
    last_runs = [args for word, args in steps[steps.index(("USER", "ysoscale")) :] if word == "RUN"]
    assert any("ysoscale grid build" in run for run in last_runs)  # grids built into the image


def test_build_context_keeps_what_the_image_copies():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]
    for path in ("pyproject.toml", "README.md", "ysoscale/", "deploy/"):
        assert f"!{path}" in ignore

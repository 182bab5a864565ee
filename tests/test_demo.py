"""End-to-end test of ``ysoscale demo``: the reference stars, their plot and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ysoscale.cache import CACHE_ENV
from ysoscale.demo import run_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get(CACHE_ENV):  # tests/conftest.py normally sets it
        cache = Path(__file__).resolve().parents[1] / ".pytest_cache" / "grids"
        monkeypatch.setenv(CACHE_ENV, str(cache))

    result = run_demo(tmp_path, n_synthetic=300, workers=0, progress=False)

    png = Path(result["png"])
    assert png == tmp_path / "reference_seds.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 10_000

    summary = json.loads(Path(result["json"]).read_text())
    assert set(summary["stars"]) == {"sun", "yso", "yso_disk"}
    assert len(summary["bands"]) == len(result["bands"]) == 28

    mags = result["magnitudes"]
    assert summary["stars"]["sun"]["magnitudes"] == pytest.approx(mags["sun"])
    assert abs(mags["sun"]["gaia_g"] - 4.67) < 0.05

    bare, disk = mags["yso"], mags["yso_disk"]
    assert bare["wise_w3"] - disk["wise_w3"] > 0.5
    assert abs(bare["gaia_g"] - disk["gaia_g"]) < 0.01
    assert result["valid"]["yso"] and result["valid"]["yso_disk"]
    assert summary["stars"]["yso"]["valid"] and summary["stars"]["yso_disk"]["valid"]

    derived = result["derived"]
    assert 3000 < derived["teff"] < 4000
    assert derived["radius"] > 1.0  # a 1 Myr, 0.3 M☉ star is still contracting

    # the chain: a synthetic catalog and the shipped rho Oph sample through ingest + infer
    chain = result["chain"]
    assert set(chain) == {"synthetic", "rho_oph"}
    for run in chain.values():
        assert Path(run["png"]).read_bytes()[:8] == PNG_SIGNATURE
        assert Path(run["cube"]).is_dir() and Path(run["summary"]).is_dir()
    assert chain["rho_oph"]["n_stars"] == 48
    # a generous bound: the default model's Teff MAD is ~270 K on simulated stars
    assert chain["synthetic"]["truth_mad"]["teff"] < 600

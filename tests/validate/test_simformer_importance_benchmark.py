"""``benchmarks/simformer_importance.py`` on a tiny simulated store with an untrained
simformer, in-process: every pattern gets every figure (the wiring, not the accuracy, is
under test). Most of the time goes to simulating the store: marked slow."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.validate import load_benchmark
from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1", "wise_w2",
         "wise_w3", "wise_w4")  # fmt: skip


def mad_is_finite(result: dict) -> bool:
    """The MAD is finite unless every star's weights collapsed (an untrained model can put
    all of a few proposals outside the prior: the stars are flagged, their median is NaN)."""
    return all(math.isfinite(v) for v in result["mad"]) or result["ood_fraction"] == 1.0


@pytest.mark.slow
def test_every_pattern_is_importance_sampled_and_scored(
    tmp_path, monkeypatch, capsys, photometry_grid, isochrone_grid
) -> None:
    torch.manual_seed(0)  # the untrained models' weights
    benchmark = load_benchmark("simformer_importance", monkeypatch)
    store = tmp_path / "heldout.zarr"
    simulate(SimulationConfig(n=300, seed=7, chunk_size=150, require_detection=True), store,
             workers=0, progress=False)  # fmt: skip
    model = tmp_path / "simformer"
    Simformer(SimformerConfig(bands=BANDS, width=16, depth=1, heads=2, ff=32)).save(model)
    benchmark.main(["--heldout", str(store), "--simformer", str(model), "--n", "12",
                    "--proposals", "8", "--samples", "4", "--steps", "2",
                    "--disk-draws", "2"])  # fmt: skip
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert [r["pattern"] for r in summary["results"]] == list(benchmark.PATTERNS)
    for result in summary["results"]:
        assert 0 < result["stars"] <= 12
        for key in ("weighted", "proposal", "mad"):
            assert len(result[key]) == 6
        for key in ("weighted", "proposal"):
            assert all(math.isfinite(v) for v in result[key]), (result["pattern"], key)
        assert mad_is_finite(result), result
        assert all(0.0 <= v <= 1.0 for v in result["weighted"] + result["proposal"])
    assert "| all+plx |" in out
    assert summary["proposal"] == "updated"
    # the exact-density proposal of the simformer's own samples, on one pattern
    benchmark.main(["--heldout", str(store), "--simformer", str(model), "--n", "6",
                    "--proposals", "8", "--samples", "4", "--steps", "2", "--disk-draws", "2",
                    "--proposal", "density", "--patterns", "gaia"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["proposal"] == "density" and summary["results"][0]["stars"] == 6

    # a set-transformer beside it, per-star results saved, two disjoint runs pooled
    npe = tmp_path / "npe"
    PosteriorEstimator(EstimatorConfig(bands=BANDS, width=16, depth=1, heads=2, ff=32,
                                       transforms=1, flow_hidden=(16,))).save(npe)  # fmt: skip
    common = ["--heldout", str(store), "--simformer", str(model), "--n", "5", "--proposals",
              "8", "--samples", "4", "--steps", "2", "--disk-draws", "2", "--npe", str(npe),
              "--patterns", "gaia,all+plx", "--npe-importance"]  # fmt: skip
    benchmark.main([*common, "--save", str(tmp_path / "a.npz")])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["pattern"], r["estimator"]) for r in first["results"]] == [
        (pattern, estimator)
        for pattern in ("gaia", "all+plx")
        for estimator in ("simformer", "npe", "npe weighted")
    ]
    for result in first["results"]:
        assert all(math.isfinite(v) for v in result["weighted"]) and mad_is_finite(result), result
    benchmark.main([*common, "--first", "100", "--save", str(tmp_path / "b.npz")])
    capsys.readouterr()
    benchmark.main(["--merge", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    merged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["stars"] for r in merged["results"]] == [10] * 6
    benchmark.main([*common, "--first", "200", "--rows", "40"])
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["last"] == 240 and 0 < rows["results"][0]["stars"] <= 40
    with pytest.raises(SystemExit, match="share stars"):
        benchmark.main(["--merge", str(tmp_path / "a.npz"), str(tmp_path / "a.npz")])
    # the same rows of another store (another seed) are other stars: they pool
    other = tmp_path / "other.zarr"
    simulate(SimulationConfig(n=100, seed=8, chunk_size=100, require_detection=True), other,
             workers=0, progress=False)  # fmt: skip
    benchmark.main([*common, "--heldout", str(other), "--save", str(tmp_path / "c.npz")])
    capsys.readouterr()
    benchmark.main(["--merge", *(str(tmp_path / f"{k}.npz") for k in "abc")])
    merged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["stars"] for r in merged["results"]] == [15] * 6
    with pytest.raises(SystemExit):  # past the last star: a clear stop, not a crash
        benchmark.main([*common, "--first", "100000"])


def test_bad_arguments_stop_before_any_work(tmp_path, monkeypatch) -> None:
    benchmark = load_benchmark("simformer_importance", monkeypatch)
    with pytest.raises(SystemExit):
        benchmark.main(["--heldout", str(tmp_path / "none.zarr"), "--patterns", "gaia,ps1"])
    with pytest.raises(SystemExit):
        benchmark.main(["--heldout", str(tmp_path / "none.zarr"), "--proposals", "1"])

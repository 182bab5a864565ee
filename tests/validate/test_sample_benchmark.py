"""``benchmarks/sample.py`` with a simformer and held-out stars, in-process, on a tiny store
and tiny randomly initialised models: every per-step figure is there, finite and
consistent (the wiring, not the speed or the accuracy, is under test). About 12 s, most of
it simulating the store: marked slow."""

from __future__ import annotations

import json
import math

import pytest

from tests.validate import load_benchmark
from ysoscale.nn import EstimatorConfig, PosteriorEstimator
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate

GAIA_TMASS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks")
STEPS = (1, 3)


@pytest.fixture
def benchmark(monkeypatch):
    """benchmarks/sample.py as a module (it imports calibration.py as a script would)."""
    return load_benchmark("sample", monkeypatch)


@pytest.fixture
def models_and_store(tmp_path, photometry_grid, isochrone_grid):
    store = tmp_path / "heldout.zarr"
    config = SimulationConfig(n=400, seed=7, chunk_size=200, require_detection=True)
    simulate(config, store, workers=0, progress=False)
    npe = tmp_path / "npe"
    PosteriorEstimator(EstimatorConfig(bands=GAIA_TMASS, width=16, depth=1, heads=2, ff=32,
                                       transforms=2, flow_hidden=(32,))).save(npe)  # fmt: skip
    simformer = tmp_path / "simformer"
    sf_bands = (*GAIA_TMASS, "wise_w1", "wise_w2")  # other bands than the NPE's
    Simformer(SimformerConfig(bands=sf_bands, width=16, depth=1, heads=2, ff=32,
                              default_steps=2)).save(simformer)  # fmt: skip
    return npe, simformer, store


@pytest.mark.slow
def test_simformer_steps_beside_the_npe(benchmark, models_and_store, capsys) -> None:
    npe, simformer, store = models_and_store
    benchmark.main(["--device", "cpu", "--quick", "--stars", "40", "--samples", "8",
                    "--npe", str(npe), "--simformer", str(simformer),
                    "--steps", ",".join(map(str, STEPS)), "--solver", "euler",
                    "--heldout", str(store), "--heldout-stars", "150"])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])

    params = ["log10_mass", "log10_age", "mh", "log10_distance", "av", "rv"]
    assert result["heldout_params"] == params  # the simformer's has_disk is not shared
    assert 100 <= result["heldout_stars"] <= 150
    assert result["simformer_solver"] == "euler" and result["simformer_steps"] == list(STEPS)
    assert isinstance(result["heldout_same_stars"], bool)
    for label in ("default", *(f"simformer_{k}steps" for k in STEPS)):
        assert result[f"{label}_fp32_stars_per_s"] > 0
        assert result[f"{label}_fp32_samples_per_s"] == pytest.approx(
            8 * result[f"{label}_fp32_stars_per_s"], rel=1e-3
        )
        assert 0.0 <= result[f"{label}_max_coverage_error"] <= 1.0
        for p in params:
            assert math.isfinite(result[f"{label}_mad_{p}"]) and result[f"{label}_mad_{p}"] >= 0
            assert math.isfinite(result[f"{label}_bias_{p}"])
        assert f"{label}_mad_has_disk" not in result
    for k in STEPS:
        ratio = result[f"simformer_{k}steps_fp32_vs_default"]
        expected = (
            result[f"simformer_{k}steps_fp32_samples_per_s"] / result["default_fp32_samples_per_s"]
        )
        assert ratio > 0 and ratio == pytest.approx(expected, rel=1e-2)
        assert f"| simformer | {k} |" in printed
    assert "| npe | - |" in printed
    assert "default_coupling_fp32_vs_irisml" in result  # the models timed before stay


def test_steps_are_passed_to_the_simformer(benchmark) -> None:
    """The step count reaches the ODE solver: one step and many differ, the same agree."""
    import numpy as np
    import torch

    model = Simformer(SimformerConfig(bands=GAIA_TMASS, width=16, depth=1, heads=2, ff=32))
    stars = benchmark.synthetic_stars(GAIA_TMASS, 6)
    runs = {}
    for steps in (1, 1, 8):
        torch.manual_seed(0)
        _, samples = benchmark.time_sampling(model, stars, 4, 16, 1, warmup=False,
                                             steps=steps, solver="euler")  # fmt: skip
        runs.setdefault(steps, []).append(samples.numpy())
    np.testing.assert_array_equal(runs[1][0], runs[1][1])
    assert not np.allclose(runs[1][0], runs[8][0])

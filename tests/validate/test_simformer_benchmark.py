"""``benchmarks/simformer.py`` scoring given models (``--simformer``, no training) on a tiny
simulated store, in-process: every pattern has every figure, and the set-transformer with
fewer bands than the simformer sees its own (the wiring, not the accuracy, is under test).
About 10 s, most of it simulating the store: marked slow."""

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
from ysoscale.validate.recalibrate import fit_recalibration

GAIA_TMASS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks")


@pytest.mark.slow
def test_given_models_are_scored_on_every_pattern(
    tmp_path, monkeypatch, capsys, photometry_grid, isochrone_grid
) -> None:
    benchmark = load_benchmark("simformer", monkeypatch)
    store = tmp_path / "heldout.zarr"
    config = SimulationConfig(n=300, seed=7, chunk_size=150, require_detection=True)
    simulate(config, store, workers=0, progress=False)
    npe = tmp_path / "npe"
    PosteriorEstimator(EstimatorConfig(bands=tuple(reversed(GAIA_TMASS)), width=16, depth=1,
                                       heads=2, ff=32, transforms=2,
                                       flow_hidden=(32,))).save(npe)  # fmt: skip
    simformer = tmp_path / "simformer"
    bands = (*GAIA_TMASS, "wise_w1", "wise_w2", "wise_w3", "wise_w4")
    Simformer(SimformerConfig(bands=bands, width=16, depth=1, heads=2, ff=32,
                              attention="cached_context")).save(simformer)  # fmt: skip
    # a recalibration fitted on the same stars: the wiring of NAME+recal, not its accuracy
    fit_recalibration(simformer, store, n_stars=120, n_samples=8, min_stars=30, progress=False)
    native = tmp_path / "native"
    Simformer(SimformerConfig(bands=bands, width=16, depth=1, heads=2, ff=32,
                              distance_frame="native")).save(native)  # fmt: skip
    benchmark.main(["--simformer", str(simformer), "--npe", str(npe), "--heldout", str(store),
                    "--also", f"native={native}", "--n-test", "120", "--samples", "8",
                    "--steps", "1", "--joint-stars", "10"])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    assert 0 < result["n_test_stars"] <= 120
    assert result["n_train"] is None and result["simformer"] == str(simformer)
    for pattern, (_, plx) in benchmark.PATTERNS.items():
        for model in ("npe", "simformer", "simformer+recal", "native"):
            assert 0.0 <= result[f"{pattern}/{model}/max_coverage_error"] <= 1.0
            assert math.isfinite(result[f"{pattern}/{model}/mad_log10_age"])
            by_snr = [k for k in result if k.startswith(f"{pattern}/{model}/distance_coverage")]
            assert len(by_snr) == (len(benchmark.SNR_BINS) if plx else 0)
        assert f"| {pattern} |" in printed
        assert f"{pattern}/simformer_guided/max_coverage_error" not in result
    assert math.isfinite(result["residual_observed/npe"])
    assert "residual_observed_ratio_guided_vs_unguided" not in result
    assert "models: npe" in printed and "training:" not in printed
    assert "log10_distance coverage error" in printed and "| all+plx | native |" in printed
    assert "native+recal" not in printed  # native has no recalibration
    assert math.isfinite(result["residual_observed/simformer+recal"])
    # a second store's stars follow the first's; one pattern scored, no residuals
    benchmark.main(["--simformer", str(simformer), "--npe", str(npe), "--heldout", str(store),
                    "--heldout", str(store), "--n-test", "450", "--patterns", "gaia",
                    "--samples", "4", "--steps", "1", "--conditional"])  # fmt: skip
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pooled["n_test_stars"] > result["n_test_stars"]
    assert "gaia/simformer+recal/max_coverage_error" in pooled
    assert pooled["gaia/simformer+recal/time_ratio_vs_sampling"] > 0
    assert "gaia/simformer+recal/coverage_error_p_young_<0.1" in pooled
    assert "gaia/npe/coverage_error_p_young_<0.1" not in result  # without --conditional
    assert not any(k.startswith("all+plx") or "residual" in k for k in pooled)
    with pytest.raises(SystemExit):
        benchmark.main(["--simformer", str(simformer), "--patterns", "gaia,nope"])
    with pytest.raises(SystemExit):
        benchmark.main(["--simformer-guided", str(simformer), "--heldout", str(store)])
    with pytest.raises(SystemExit):
        benchmark.main(["--simformer", str(simformer), "--also", "npe=" + str(native)])

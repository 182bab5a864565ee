"""``benchmarks/infer_importance.py --quick``: both estimators, plain and weighted, scored."""

from __future__ import annotations

import json
import math

import pytest

from tests.validate import load_benchmark


@pytest.mark.slow
def test_quick_run_scores_both_estimators_plain_and_weighted(monkeypatch, capsys) -> None:
    benchmark = load_benchmark("infer_importance", monkeypatch)
    benchmark.main(["--quick", "--n", "40", "--samples", "16"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert [r["estimator"] for r in summary["results"]] == ["npe", "simformer"]
    for result in summary["results"]:
        assert result["stars"] == 40
        for key in (
            "plain_worst",
            "weighted_worst",
            "weights_only_worst",
            "plain_mad",
            "weighted_mad",
        ):
            assert len(result[key]) == 6 and all(math.isfinite(v) for v in result[key]), key
        assert 0.0 < result["median_ess"] <= 16.0
        assert 0.0 <= result["low_ess_share"] <= 1.0 and result["truth_weight_finite"] > 0.9
        assert result["plain_stars_per_s"] > 0 and result["weighted_stars_per_s"] > 0
    assert "| simformer | weighted | 40 |" in out


def test_no_store_and_bad_sizes_stop_before_any_work(monkeypatch) -> None:
    benchmark = load_benchmark("infer_importance", monkeypatch)
    with pytest.raises(SystemExit):
        benchmark.main([])
    with pytest.raises(SystemExit):
        benchmark.main(["--quick", "--samples", "1"])

"""``benchmarks/simformer_attention.py`` in-process on a few stars: every figure is there and
finite, and the ratios are the quotients of the rates (the wiring, not the speed)."""

from __future__ import annotations

import json
import math

import pytest

from tests.validate import load_benchmark


@pytest.fixture
def benchmark(monkeypatch):
    return load_benchmark("simformer_attention", monkeypatch)


def test_both_modes_timed_on_every_pattern(benchmark, capsys) -> None:
    benchmark.main(["--stars", "6", "--samples", "3", "--steps", "1", "--repeats", "1",
                    "--sizes", "default"])  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for pattern in benchmark.PATTERNS:
        full = result[f"default/{pattern}/full_stars_per_s"]
        cached = result[f"default/{pattern}/cached_context_stars_per_s"]
        assert math.isfinite(full) and full > 0 and math.isfinite(cached) and cached > 0
        assert result[f"default/{pattern}/cached_vs_full"] == pytest.approx(cached / full, rel=0.02)
    assert not any(key.startswith("gpu/") for key in result)
    with pytest.raises(SystemExit):
        benchmark.main(["--sizes", "huge"])

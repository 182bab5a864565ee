"""Work per estimator call by device (ysoscale.nn.batching)."""

from __future__ import annotations

import torch

from ysoscale.nn.batching import ROWS_PER_CALL, rows_per_call, stars_per_call, tokens_per_call


def test_cpu_calls_are_small_and_gpu_calls_large() -> None:
    assert stars_per_call("cpu", 64) == ROWS_PER_CALL["cpu"] // 64 == 256
    assert stars_per_call(torch.device("cuda"), 64) == 32_768
    assert tokens_per_call("cpu") < tokens_per_call("cuda")
    assert rows_per_call("cpu") < rows_per_call("cuda")


def test_at_least_one_star_per_call() -> None:
    assert stars_per_call("cpu", 10**9) == 1
    assert stars_per_call("cpu", 0) == ROWS_PER_CALL["cpu"]

"""How much work one call of an estimator gets, by device.

A CPU wants small calls: with 4096 stars × 64 samples per call each layer's activations
are hundreds of MB, which the allocator maps and unmaps at every call, and the first call
of a worker spent as long in page faults as in arithmetic (2,048 stars, one thread:
85 stars/s at 4096 stars per call against 162 at 256). A GPU wants large calls to fill
its cores.

Examples
--------
>>> import torch
>>> stars_per_call(torch.device("cpu"), n_samples=64)
256
"""

from __future__ import annotations

import torch

ROWS_PER_CALL = {"cpu": 1 << 14, "cuda": 1 << 21}
"""Star-samples (rows of the flow) per call, by device type."""

TOKENS_PER_CALL = {"cpu": 1 << 14, "cuda": 1 << 18}
"""Tokens (star-samples × sequence length) per call of a token-level model (the
Simformer), by device type. On the CPU, 2**18 tokens per call were 2.4x slower than 2**14
(page faults again)."""


def _for_device(sizes: dict[str, int], device: torch.device | str) -> int:
    """The CPU entry of ``sizes`` on a CPU, the CUDA entry on any accelerator."""
    return sizes["cpu"] if torch.device(device).type == "cpu" else sizes["cuda"]


def rows_per_call(device: torch.device | str) -> int:
    """:data:`ROWS_PER_CALL` of ``device`` (the CUDA value for any accelerator)."""
    return _for_device(ROWS_PER_CALL, device)


def tokens_per_call(device: torch.device | str) -> int:
    """:data:`TOKENS_PER_CALL` of ``device`` (the CUDA value for any accelerator)."""
    return _for_device(TOKENS_PER_CALL, device)


def stars_per_call(device: torch.device | str, n_samples: int) -> int:
    """Stars per call so that stars × ``n_samples`` stays within :func:`rows_per_call`."""
    return max(1, rows_per_call(device) // max(1, int(n_samples)))

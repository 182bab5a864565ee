"""Fixtures shared by the inference tests (helpers are in ``tests/infer/__init__.py``)."""

from __future__ import annotations

import pytest
import torch

from tests.infer import tiny_model


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (workers and kernels are single-threaded too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random estimator saved once per module."""
    return tiny_model(tmp_path_factory.mktemp("model"))

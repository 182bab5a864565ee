"""Fixtures of the XP tests: a synthetic XP store and a small sVAE trained on it, once."""

from __future__ import annotations

import pytest
import torch

from tests.xp import synthetic_store
from ysoscale.nn.svae import SVAEConfig
from ysoscale.xp.train import XPTrainingConfig, train_svae

SMALL = SVAEConfig(latent=2, hidden=(32,))


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread (the machine is shared; workers are single-threaded too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def xp_store(tmp_path_factory):
    """400 synthetic stars in an ingest-xp store (source_id 1000, 1007, ...)."""
    return synthetic_store(tmp_path_factory.mktemp("xp") / "xp.zarr", 400, seed=0)


@pytest.fixture(scope="session")
def svae_dir(tmp_path_factory, xp_store):
    """A small sVAE (2-d latent) trained briefly on ``xp_store``, with populations."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("svae") / "model"
    config = XPTrainingConfig(epochs=15, batch_size=64, min_cluster_size=10)
    train_svae(xp_store, out, SMALL, config, progress=False)
    torch.set_num_threads(threads)
    return out

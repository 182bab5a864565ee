"""``ysoscale recalibrate``: fitting a model's recalibration on a small simulated store
through the inference kernel, in every survey view, and writing it beside the weights.
The maps of an untrained model are not under test, only the wiring; about 10 s, most of it
simulating the store: marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ysoscale.cli import main
from ysoscale.nn.recalibration import ALL_PATTERNS, RECALIBRATION_FILE, QuantileRecalibration
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.run import simulate
from ysoscale.validate.heldout import held_out_stars, store_identity
from ysoscale.validate.recalibrate import RECALIBRATION_VIEWS, recalibration_pits

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("recalibration") / "store.zarr"
    config = SimulationConfig(n=300, seed=13, chunk_size=300, require_detection=True)
    simulate(config, path, workers=0, progress=False)
    return path


@pytest.fixture(scope="module")
def simformer(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, width=16, depth=1, heads=2, ff=32, default_steps=1,
                             attention="cached_context")  # fmt: skip
    return Simformer(config).save(tmp_path_factory.mktemp("simformer") / "model")


@pytest.mark.slow
def test_the_command_writes_maps_of_the_store_into_the_model_directory(
    store, simformer, capsys, photometry_grid, isochrone_grid
) -> None:
    code = main(["recalibrate", "--model", str(simformer), "--data", str(store), "--stars",
                 "150", "--samples", "8", "--min-stars", "40"])  # fmt: skip
    assert code == 0
    assert "recalibration of" in capsys.readouterr().out
    content = json.loads((simformer / RECALIBRATION_FILE).read_text())
    assert (simformer / "recalibration.png").stat().st_size > 10_000
    recalibration = QuantileRecalibration.load(simformer)
    assert recalibration.params == tuple(p for p in Simformer.load(simformer).config.params
                                         if p != "has_disk")  # fmt: skip
    fitted = content["fitted_on"]
    assert fitted["store_identity"] == store_identity(store) and fitted["samples"] == 8
    assert fitted["views"] == list(RECALIBRATION_VIEWS)
    # Gaia-only stars (pattern 1) are in two views of every star with a Gaia band
    assert 1 in recalibration.pit_quantiles and ALL_PATTERNS in recalibration.pit_quantiles
    assert fitted["pits"] > fitted["stars"]
    assert set(recalibration.bounds) == set(recalibration.params)


@pytest.mark.slow
def test_pits_cover_every_view_and_are_pits(store, simformer, photometry_grid,
                                             isochrone_grid) -> None:  # fmt: skip
    model = Simformer.load(simformer)
    data = held_out_stars(store, model.config.bands, model.config.params, 60)
    pit, pattern = recalibration_pits(model, data, n_samples=8, progress=False)
    assert pit.shape[1] == len(model.config.params) - 1 and len(pit) == len(pattern)
    finite = pit[np.isfinite(pit)]
    assert finite.size > 0 and np.all((finite >= 0) & (finite <= 1))
    parallax_bit = 1 << 7
    assert np.any(pattern & parallax_bit) and np.any(~pattern & parallax_bit)
    with pytest.raises(ValueError, match="is not a simulated store"):
        store_identity(simformer.parent)  # not a store

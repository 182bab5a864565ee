"""training/pack_grids.py: grids sent quantised to a GPU machine come back within the step."""

from __future__ import annotations

import json

import numpy as np
import zarr

from tests import load_script


def test_pack_unpack_round_trip_keeps_metadata_nans_and_the_quantisation_step(tmp_path):
    pack_grids = load_script("training/pack_grids.py")
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 0.1, (12, 5, 7)), axis=0).astype(np.float32) + 10.0
    smooth[3, 2, :] = np.nan
    cache, packed, out = tmp_path / "cache", tmp_path / "packed", tmp_path / "out"
    group = zarr.open_group(cache / "grid.zarr", mode="w")
    group.attrs["content_hash"] = "abc"
    group.create_array("mag", data=smooth, chunks=(12, 5, 1))
    group.create_array("axis", data=np.arange(12.0))
    zarr.consolidate_metadata(cache / "grid.zarr")
    pack_grids.QUANTISED = {"grid.zarr": {"mag": 10}}
    pack_grids.SMOOTH_AXES = {"grid.zarr": (0, 2)}

    pack_grids.pack(cache, packed)
    assert not (packed / "grid.zarr" / "mag" / "c").exists()  # the chunks travel packed
    assert json.loads((packed / "grid.zarr" / "mag.json").read_text())["axes"] == [0, 2]
    pack_grids.unpack(packed, out)

    back = zarr.open_group(out / "grid.zarr", mode="r")
    assert dict(back.attrs) == {"content_hash": "abc"}
    np.testing.assert_array_equal(back["axis"][...], np.arange(12.0))
    values = back["mag"][...]
    assert values.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(values), np.isnan(smooth))
    error = np.nanmax(np.abs(values.astype(float) - smooth))
    assert 0 < error <= 2.0**-11 * 1.0001  # half the 2^-10 step
    assert not any(p.suffix in {".q", ".nan"} for p in (out / "grid.zarr").iterdir())
    assert not (out / "grid.zarr" / "mag.json").exists()

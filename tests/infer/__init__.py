"""Inference tests; :func:`tiny_model` and :func:`synthetic_catalog` are their shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ysoscale.nn import EstimatorConfig, PosteriorEstimator

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks")


def tiny_model(path: Path, seed: int = 0) -> Path:
    """A small randomly initialised estimator saved to ``path`` (weights are seeded)."""
    torch.manual_seed(seed)
    config = EstimatorConfig(
        bands=BANDS, width=16, heads=2, depth=1, ff=32, transforms=1, flow_hidden=(16,)
    )
    return PosteriorEstimator(config).save(path, {"trained_on": "nothing (test model)"})


def synthetic_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` clean canonical rows over the whole sky, with some bands not observed."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "source_id": rng.choice(2**40, size=n, replace=False).astype(np.int64),
            "ra": rng.uniform(0.0, 360.0, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
            "parallax": rng.uniform(0.2, 5.0, n),
            "parallax_error": rng.uniform(0.02, 0.2, n),
        }
    )
    g = rng.uniform(10.0, 18.0, n)
    offsets = dict(zip(BANDS, (0.0, 0.4, -0.5, -1.2, -1.7, -1.9), strict=True))
    for band, offset in offsets.items():
        mag = (g + offset + rng.normal(0.0, 0.05, n)).astype(np.float32)
        err = rng.uniform(0.005, 0.05, n).astype(np.float32)
        missing = rng.random(n) < (0.0 if band == "gaia_g" else 0.2)
        frame[f"{band}_mag"] = np.where(missing, np.nan, mag).astype(np.float32)
        frame[f"{band}_mag_err"] = np.where(missing, np.nan, err).astype(np.float32)
    return frame


def write_hats(frame: pd.DataFrame, path: Path, partition_rows: int = 150) -> Path:
    """``frame`` as a HATS catalog of several HEALPix partitions."""
    import lsdb

    catalog = lsdb.from_dataframe(
        frame, ra_column="ra", dec_column="dec", partition_rows=partition_rows,
        margin_threshold=None,
    )  # fmt: skip
    catalog.write_catalog(path, as_collection=False, progress_bar=False)
    return path


def cube_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every star variable of a cube (padding included), for exact comparisons."""
    import xarray as xr

    from ysoscale.infer.cube import STAR_VARIABLES

    with xr.open_zarr(path) as cube:
        return {name: cube[name].values for name in STAR_VARIABLES}

"""Validation tests; :func:`write_cube` builds small posterior cubes through the cube API."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from tests import REPO, load_script
from ysoscale.infer.cube import CubeWriter, Layout, create_or_check, padded_block
from ysoscale.infer.kernel import P16, P84

BENCHMARKS = REPO / "benchmarks"


def load_benchmark(name: str, monkeypatch) -> ModuleType:
    """``benchmarks/NAME.py`` as a module, with ``benchmarks/`` on ``sys.path`` for the
    test's duration (the scripts import each other as scripts do)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return load_script(f"benchmarks/{name}.py", f"{name}_benchmark")


PARAMS = ("log10_mass", "log10_age", "mh", "av", "teff", "logg")
WIDTH = np.array([0.1, 0.4, 0.15, 0.3, 250.0, 0.15])
"""Posterior standard deviation of each parameter of the toy cubes."""


def toy_posteriors(
    n: int, n_samples: int, seed: int = 0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Samples (star, sample, param) and truths (star, param) of a Gaussian toy problem.

    The truth is drawn from N(mu, WIDTH²) around each star's posterior mean ``mu``; samples
    from N(mu, (scale·WIDTH)²). ``scale`` 1 is calibrated, below 1 overconfident.
    """
    rng = np.random.default_rng(seed)
    centre = np.array([0.0, 7.5, -0.1, 1.0, 5000.0, 4.3])
    spread = np.array([0.3, 1.2, 0.3, 0.8, 1200.0, 0.4])
    mu = centre + spread * rng.standard_normal((n, len(PARAMS)))
    truth = mu + WIDTH * rng.standard_normal((n, len(PARAMS)))
    samples = mu[:, None, :] + scale * WIDTH * rng.standard_normal((n, n_samples, len(PARAMS)))
    return samples, truth


def write_cube(
    path: Path,
    samples: np.ndarray,
    source_id: np.ndarray,
    *,
    chunk: int = 64,
    flags=None,
    log_weight: np.ndarray | None = None,
) -> Path:
    """A posterior cube of ``samples`` (one partition, padded to whole chunks); with
    ``log_weight`` (star, sample) a weighted one (``infer --importance``), whose summary is
    still that of the unweighted samples here."""
    n, n_samples, n_param = samples.shape
    layout = Layout(rows=(n,), order=(-1,), pixel=(0,), star_chunk=chunk)
    attrs = {
        "model_card": json.dumps({"n_parameters": 1234, "epochs": 3, "trained_on": "toy"}),
        "run_config": json.dumps({"model": "toy", "n_samples": n_samples, "seed": 0}),
    }
    create_or_check(path, layout, PARAMS[:n_param], n_samples, attrs,
                    weighted=log_weight is not None)  # fmt: skip
    weights = {}
    if log_weight is not None:
        weight = np.exp(log_weight)
        ess = weight.sum(axis=1) ** 2 / (weight**2).sum(axis=1)
        weights = {"log_weight": log_weight.astype(np.float32), "ess": ess.astype(np.float32)}
    summary = np.stack(
        [
            np.median(samples, axis=1),
            np.quantile(samples, P16, axis=1),
            np.quantile(samples, P84, axis=1),
            samples.mean(axis=1),
            samples.std(axis=1),
        ],
        axis=1,
    )
    rng = np.random.default_rng(1)
    block = padded_block(
        n, chunk, n_samples, n_param,
        samples=samples.astype(np.float32), summary=summary.astype(np.float32),
        flags=np.zeros(n, np.uint32) if flags is None else flags,
        n_bands=np.full(n, 6, np.int16), source_id=source_id,
        healpix29=rng.integers(0, 12 * 4**29, n), **weights,
    )  # fmt: skip
    writer = CubeWriter(path)
    writer.write(0, block)
    writer.mark_done(0)
    return path


def truth_table(source_id: np.ndarray, truth: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """``source_id``, ``true_{param}`` and canonical catalog columns: every star has Gaia,
    about half 2MASS, a quarter WISE too."""
    rng = np.random.default_rng(seed)
    n = len(source_id)
    frame = pd.DataFrame({"source_id": source_id})
    for j, param in enumerate(PARAMS[: truth.shape[1]]):
        frame[f"true_{param}"] = truth[:, j]
    frame["ra"] = rng.uniform(0, 360, n)
    frame["dec"] = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    frame["parallax"] = rng.uniform(0.2, 5.0, n)
    g = rng.uniform(10, 18, n)
    frame["gaia_g_mag"], frame["gaia_bp_mag"], frame["gaia_rp_mag"] = g, g + 0.4, g - 0.5
    tmass = rng.random(n) < 0.5
    wise = tmass & (rng.random(n) < 0.5)
    for band, offset, seen in (("tmass_j", -1.2, tmass), ("wise_w1", -2.0, wise)):
        frame[f"{band}_mag"] = np.where(seen, g + offset, np.nan)
    return frame

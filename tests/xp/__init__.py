"""XP-branch tests; :func:`synthetic_xp_table` makes their data (a small, seeded stand-in for
Gaia XP coefficients with two populations and known structure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from ysoscale.catalog.xp import N_BASES, N_CORRELATIONS, ingest_xp

REAL_DIR = Path(__file__).resolve().parents[3] / "shared/data/xp_gaia_dr3"
REAL_CHUNK = REAL_DIR / "xp_continuous_chunk0.fits"
REAL_EXAMPLES = REAL_DIR / "xp_continuous_examples_with_correlations.vot"


def random_correlations(rng: np.random.Generator, n: int, strength: float = 0.3) -> np.ndarray:
    """``(n, 1485)`` packed correlations of random positive-definite matrices."""
    out = np.empty((n, N_CORRELATIONS), dtype=np.float64)
    rows = np.tril_indices(N_BASES, -1)
    for i in range(n):
        a = rng.normal(size=(N_BASES, 3 * N_BASES))
        a[:, :4] *= strength * 10  # a few shared modes: real correlations
        cov = a @ a.T
        d = np.sqrt(np.diag(cov))
        out[i] = (cov / np.outer(d, d))[rows]
    return out


def synthetic_xp_table(
    n: int,
    seed: int = 0,
    *,
    correlations: bool = False,
    first_id: int = 1000,
) -> Table:
    """``n`` stars in the archive array layout: two populations along a 'temperature'.

    The normalised spectrum is a smooth nonlinear function of a temperature-like ``t``
    plus a population offset; fluxes span two decades and errors follow photon noise,
    so faint stars are noise-dominated at high order, as in Gaia DR3.
    """
    rng = np.random.default_rng(seed)
    decay = np.exp(-(np.arange(2 * N_BASES) % N_BASES) / 6.0)
    basis = rng.normal(size=(4, 2 * N_BASES)) * decay
    t = rng.uniform(0.0, 1.0, n)
    population = rng.random(n) < 0.3
    shape = (
        np.outer(t, basis[0]) + np.outer(t**2, basis[1]) + np.outer(np.sin(3 * t), basis[2])
    ) * 0.1 + np.outer(population, basis[3]) * 0.05
    shape[:, 0] = 0.6 - 0.3 * t  # BP and RP zeroth coefficients carry the flux
    shape[:, N_BASES] = 0.4 + 0.3 * t
    flux = 10 ** rng.uniform(2.5, 4.5, n)
    sigma = np.sqrt(flux)[:, None] * rng.uniform(0.05, 0.2, (n, 2 * N_BASES))
    noise = rng.normal(size=(n, 2 * N_BASES)) * sigma
    table = Table({"source_id": first_id + np.arange(n, dtype=np.int64) * 7})
    corr = {}
    if correlations:
        for band, block in (("bp", slice(0, N_BASES)), ("rp", slice(N_BASES, None))):
            corr[band] = random_correlations(rng, n)
            for i in range(n):
                matrix = np.eye(N_BASES)
                matrix[np.tril_indices(N_BASES, -1)] = corr[band][i]
                matrix = matrix + np.tril(matrix, -1).T
                cholesky = np.linalg.cholesky(matrix)
                noise[i, block] = (cholesky @ rng.normal(size=N_BASES)) * sigma[i, block]
    values = flux[:, None] * shape + noise
    for band, block in (("bp", slice(0, N_BASES)), ("rp", slice(N_BASES, None))):
        table[f"{band}_coefficients"] = values[:, block]
        table[f"{band}_coefficient_errors"] = sigma[:, block]
        if correlations:
            table[f"{band}_coefficient_correlations"] = corr[band].astype(np.float32)
    table["population"] = population.astype(np.int8)
    return table


def synthetic_store(path: Path, n: int, seed: int = 0, **options) -> Path:
    """A synthetic XP table ingested into a zarr store at ``path``."""
    table = synthetic_xp_table(n, seed, **options)
    fits = path.with_suffix(".fits")
    table.write(fits, overwrite=True)
    ingest_xp([fits], path)
    return path

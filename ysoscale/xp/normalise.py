"""Normalisation of Gaia XP coefficients: flux-free spectral shape and its errors.

The coefficients of a star scale with its brightness; the shape is what carries Teff,
gravity, metallicity, extinction and peculiarities. Each star's coefficients and errors
are divided by a G-band flux proxy,

    F = bp_coefficients[0] + rp_coefficients[0],

the sum of the first Hermite coefficients of both photometers (the zeroth basis function
carries most of each photometer's flux; the sum is positive for every real source, even
very red or very blue ones where one photometer alone is faint). Correlations are
scale-free and kept as they are. The error of ``F`` itself is neglected (0.3 % median on
the real 2,000-star sample, below the errors of the higher coefficients it divides).

The measurement covariance of a photometer is ``C = D R D`` with ``D`` the published
coefficient errors and ``R`` the published correlations. (GaiaXPy divides the errors by
``*_standard_deviation`` before building ``C``, recovering the formal covariance of the
fit; here the published, inflated errors are kept, so that the diagonal of ``C`` is
exactly what the diagonal-error path uses.)

A star is *usable* when all 110 coefficients and errors are finite, every error is
positive and ``F > 0``; the others get no XP results (NaN downstream).

Pure numpy; no Dask, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BASES = 55
N_COEFFICIENTS = 2 * N_BASES
NORMALISATION = "bp_coefficients[0] + rp_coefficients[0] (G-band flux proxy)"
"""Recorded in model cards: what the coefficients of a model were divided by."""


@dataclass(frozen=True)
class XPArrays:
    """Normalised XP coefficients of ``n`` stars (BP 0..54 then RP 0..54).

    Attributes
    ----------
    source_id : ndarray, (n,) int64
    coefficients, errors : ndarray, (n, 110) float32
        Divided by ``flux``; NaN on unusable rows.
    correlations : ndarray or None, (n, 2, 1485) float32
        Packed BP and RP correlations (Gaia archive order); NaN where unknown.
    flux : ndarray, (n,) float64
        The flux proxy ``F`` (e-/s, Gaia units).
    usable : ndarray, (n,) bool
    """

    source_id: np.ndarray
    coefficients: np.ndarray
    errors: np.ndarray
    correlations: np.ndarray | None
    flux: np.ndarray
    usable: np.ndarray

    def __len__(self) -> int:
        return len(self.source_id)

    def subset(self, rows: np.ndarray) -> XPArrays:
        """The stars at ``rows`` (indices or a boolean mask)."""
        corr = None if self.correlations is None else self.correlations[rows]
        return XPArrays(
            self.source_id[rows],
            self.coefficients[rows],
            self.errors[rows],
            corr,
            self.flux[rows],
            self.usable[rows],
        )


def normalise(
    source_id: np.ndarray,
    bp: np.ndarray,
    bp_error: np.ndarray,
    rp: np.ndarray,
    rp_error: np.ndarray,
    bp_correlations: np.ndarray | None = None,
    rp_correlations: np.ndarray | None = None,
) -> XPArrays:
    """Divide coefficients and errors by the flux proxy; mark usable stars.

    Parameters
    ----------
    source_id : ndarray, (n,)
    bp, bp_error, rp, rp_error : ndarray, (n, 55)
        Coefficients and errors as published (e-/s).
    bp_correlations, rp_correlations : ndarray, (n, 1485), optional
        Packed correlations; both or neither.

    Returns
    -------
    XPArrays

    Raises
    ------
    ValueError
        Naming the array whose shape is wrong.

    Examples
    --------
    >>> bp = np.zeros((2, 55)); rp = np.zeros((2, 55))
    >>> bp[:, 0], rp[:, 0] = [300.0, -5.0], [100.0, 1.0]
    >>> out = normalise(np.arange(2), bp, bp + 1.0, rp, rp + 1.0)
    >>> out.usable.tolist(), float(out.coefficients[0, 0])
    ([True, False], 0.75)
    """
    source_id = np.asarray(source_id, dtype=np.int64)
    n = len(source_id)
    arrays = {"bp": bp, "bp_error": bp_error, "rp": rp, "rp_error": rp_error}
    for name, values in arrays.items():
        if np.shape(values) != (n, N_BASES):
            raise ValueError(f"{name} has shape {np.shape(values)}, expected ({n}, {N_BASES})")
    coefficients = np.concatenate([bp, rp], axis=1).astype(np.float64)
    errors = np.concatenate([bp_error, rp_error], axis=1).astype(np.float64)
    flux = coefficients[:, 0] + coefficients[:, N_BASES]
    with np.errstate(invalid="ignore"):
        usable = (
            np.isfinite(coefficients).all(axis=1)
            & np.isfinite(errors).all(axis=1)
            & (errors > 0).all(axis=1)
            & (flux > 0)
        )
    safe = np.where(usable, flux, np.nan)[:, None]
    correlations = None
    if (bp_correlations is None) != (rp_correlations is None):
        raise ValueError("give both bp_correlations and rp_correlations, or neither")
    if bp_correlations is not None:
        pairs = N_BASES * (N_BASES - 1) // 2
        given = {"bp_correlations": bp_correlations, "rp_correlations": rp_correlations}
        for name, values in given.items():
            if np.shape(values) != (n, pairs):
                raise ValueError(f"{name} has shape {np.shape(values)}, expected ({n}, {pairs})")
        correlations = np.stack([bp_correlations, rp_correlations], axis=1).astype(np.float32)
    return XPArrays(
        source_id,
        (coefficients / safe).astype(np.float32),
        (errors / safe).astype(np.float32),
        correlations,
        flux,
        usable,
    )


def robust_standardisation(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient median and scaled MAD (a Gaussian sigma), for the encoder input.

    Examples
    --------
    >>> center, scale = robust_standardisation(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]))
    >>> center.tolist(), bool(scale[1] > 0)
    ([2.0, 1.0], True)
    """
    center = np.nanmedian(coefficients, axis=0)
    scale = 1.4826 * np.nanmedian(np.abs(coefficients - center), axis=0)
    floor = 1e-6 * max(float(np.nanmax(np.abs(center))), 1e-12)
    return center.astype(np.float32), np.maximum(scale, floor).astype(np.float32)


__all__ = [
    "NORMALISATION",
    "N_BASES",
    "N_COEFFICIENTS",
    "XPArrays",
    "normalise",
    "robust_standardisation",
]

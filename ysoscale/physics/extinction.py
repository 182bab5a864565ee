"""Interstellar extinction curves A(λ)/A(V) from the dust-extinction package.

``G23`` (Gordon et al. 2023) is the default: it is defined from 912 Å to 32 µm, so it
covers every band from GALEX FUV to WISE W4, for R(V) between 2.3 and 5.6. ``F99``
(Fitzpatrick 1999) and ``CCM89`` (Cardelli, Clayton & Mathis 1989) are offered for
comparison with work that used them; both stop at 3.3 µm, so they cannot redden the WISE
bands and a request that needs them there fails with a message naming the range.
"""

from __future__ import annotations

import functools

import numpy as np

EXTINCTION_LAWS = ("G23", "F99", "CCM89")
DEFAULT_LAW = "G23"


@functools.cache
def _law_class(law: str):  # noqa: ANN202 - an astropy model class
    from dust_extinction import parameter_averages

    if law not in EXTINCTION_LAWS:
        raise ValueError(f"unknown extinction law {law!r}; choose one of {EXTINCTION_LAWS}")
    return getattr(parameter_averages, law)


def law_wavelength_range(law: str = DEFAULT_LAW) -> tuple[float, float]:
    """Wavelength range (Å) where ``law`` is defined."""
    x_lo, x_hi = _law_class(law).x_range
    return 1e4 / x_hi, 1e4 / x_lo


def law_rv_range(law: str = DEFAULT_LAW) -> tuple[float, float]:
    """R(V) range where ``law`` is defined."""
    lo, hi = _law_class(law).Rv_range
    return float(lo), float(hi)


def extinction_curve(
    wavelength_aa: np.ndarray, rv: float = 3.1, law: str = DEFAULT_LAW
) -> np.ndarray:
    """A(λ)/A(V) at ``wavelength_aa`` for one R(V).

    Parameters
    ----------
    wavelength_aa : array_like
        Wavelengths in Å, inside the law's range (:func:`law_wavelength_range`).
    rv : float
        Total-to-selective extinction ratio R(V), inside :func:`law_rv_range`.
    law : {"G23", "F99", "CCM89"}

    Raises
    ------
    ValueError
        Naming the offending wavelengths or R(V) when they fall outside the law.

    Examples
    --------
    >>> round(float(extinction_curve(np.array([5500.0]))[0]), 2)
    1.0
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    lo, hi = law_wavelength_range(law)
    # 1e-9 relative slack: the range itself is computed from 1/x in floating point
    outside = (lam < lo * (1 - 1e-9)) | (lam > hi * (1 + 1e-9))
    if np.any(outside):
        bad = lam[outside]
        raise ValueError(
            f"extinction law {law} is defined for {lo:.0f}-{hi:.0f} Å; got wavelengths "
            f"{bad.min():.0f}-{bad.max():.0f} Å"
        )
    rv_lo, rv_hi = law_rv_range(law)
    if not rv_lo <= rv <= rv_hi:
        raise ValueError(f"R(V) = {rv} outside the range {rv_lo}-{rv_hi} of law {law}")
    model = _law_class(law)(Rv=rv)
    x = np.clip(1e4 / lam, *_law_class(law).x_range)
    return np.asarray(model.evaluate(x, rv), dtype=float)

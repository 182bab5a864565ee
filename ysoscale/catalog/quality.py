"""Row-level checks of a canonical catalog: a flag per row, never a crash or a dropped row.

Schema problems stop a run before any compute (:func:`~ysoscale.catalog.columns.validate_schema`);
row problems do not. :func:`check_rows` turns a partition into the arrays an estimator
reads, and for every row records in a :class:`RowFlag` bit mask which values it could
not use and why:

========================  =====================================================================
bit                       reason
========================  =====================================================================
``NONFINITE_VALUE``       a magnitude is ±inf or not a number, or an error is given without
                          its magnitude
``BAD_MAG_ERROR``         a magnitude's error is missing, non-finite, ≤ 0 (also after the cast
                          to float32) or larger than :data:`MAX_MAG_ERROR`
``MAG_OUT_OF_RANGE``      a magnitude outside [:data:`MAG_MIN`, :data:`MAG_MAX`] (sentinels
                          such as -999 or 99 that an adapter did not catch)
``DUPLICATE_SOURCE_ID``   the row's ``source_id`` occurs more than once (every copy is flagged:
                          no copy is more right than the others)
``BAD_PARALLAX``          a parallax that is ±inf, not a number or beyond ±:data:`MAX_PARALLAX`,
                          a parallax error without a parallax, or a parallax whose error is
                          missing, non-finite, ≤ 0 or above :data:`MAX_PARALLAX_ERROR`
``BAD_POSITION``          ``ra``/``dec`` missing, non-finite or outside [0, 360] × [-90, 90]
``NO_USABLE_BAND``        no band is left to infer from
``MISSING_SOURCE_ID``     the row's ``source_id`` is null
========================  =====================================================================

A value that is merely missing (magnitude *and* error NaN; parallax *and* its error NaN)
is a non-detection, not a problem, and sets no bit. A bad value makes only that band (or
the parallax) unusable in that row: it becomes NaN in the output arrays, the bit is set,
and the row is still inferred from its other bands. Usable values are passed through
unchanged (cast to float32). Rows with ``NO_USABLE_BAND`` are not inferred; the posterior
cube holds NaN samples for them. Position and id bits do not stop a row from being
inferred: they are reported so the user can act on them.

Examples
--------
>>> import numpy as np, pandas as pd
>>> frame = pd.DataFrame({"source_id": [1, 2, 2], "ra": [10.0, 20.0, 30.0],
...                       "dec": [0.0, 1.0, 2.0], "gaia_g_mag": [15.0, np.inf, 16.0],
...                       "gaia_g_mag_err": [0.01, 0.01, -1.0]})
>>> check = check_rows(frame, ["gaia_g", "tmass_j"])
>>> check.usable.tolist()
[True, False, False]
>>> [describe_flags(f) for f in check.flags]  # doctest: +NORMALIZE_WHITESPACE
[[], ['NONFINITE_VALUE: a magnitude is infinite or not a number, or an error has no magnitude',
      'DUPLICATE_SOURCE_ID: the source_id occurs more than once',
      'NO_USABLE_BAND: no band is left to infer from'],
     ['BAD_MAG_ERROR: a magnitude error is missing, non-finite, not positive or absurdly large',
      'DUPLICATE_SOURCE_ID: the source_id occurs more than once',
      'NO_USABLE_BAND: no band is left to infer from']]
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ysoscale.catalog.columns import err_column, mag_column

__all__ = [
    "MAG_MAX",
    "MAG_MIN",
    "MAX_MAG_ERROR",
    "MAX_PARALLAX",
    "MAX_PARALLAX_ERROR",
    "RowCheck",
    "RowFlag",
    "check_arrays",
    "check_rows",
    "describe_flags",
]

MAG_MIN = -10.0
"""Brightest plausible catalog magnitude: Sirius and the brightest infrared giants stay
above about -5 in every canonical band; anything below -10 is a sentinel or an error."""
MAG_MAX = 30.0
"""Faintest plausible catalog magnitude: deeper than any survey ysoscale reads (SDSS
asinh magnitudes of non-detections stay below ~28); 99, 99.99, 999 are sentinels."""
MAX_MAG_ERROR = 5.0
"""Largest usable magnitude error (S/N ≈ 0.2); larger ones are sentinels or blunders."""
MAX_PARALLAX = 1000.0
"""Largest plausible |parallax| in mas (Proxima Centauri: 768 mas)."""
MAX_PARALLAX_ERROR = 1000.0
"""Largest usable parallax error in mas; anything larger carries no information."""


class RowFlag(enum.IntFlag):
    """Reasons a row's values were (partly) unusable; 0 means clean. See module docs."""

    NONFINITE_VALUE = 1 << 0
    BAD_MAG_ERROR = 1 << 1
    MAG_OUT_OF_RANGE = 1 << 2
    DUPLICATE_SOURCE_ID = 1 << 3
    BAD_PARALLAX = 1 << 4
    BAD_POSITION = 1 << 5
    NO_USABLE_BAND = 1 << 6
    MISSING_SOURCE_ID = 1 << 7


FLAG_DESCRIPTIONS: dict[RowFlag, str] = {
    RowFlag.NONFINITE_VALUE: (
        "a magnitude is infinite or not a number, or an error has no magnitude"
    ),
    RowFlag.BAD_MAG_ERROR: (
        "a magnitude error is missing, non-finite, not positive or absurdly large"
    ),
    RowFlag.MAG_OUT_OF_RANGE: f"a magnitude is outside [{MAG_MIN:g}, {MAG_MAX:g}]",
    RowFlag.DUPLICATE_SOURCE_ID: "the source_id occurs more than once",
    RowFlag.BAD_PARALLAX: "the parallax or its error is unusable",
    RowFlag.BAD_POSITION: "ra/dec missing, non-finite or out of range",
    RowFlag.NO_USABLE_BAND: "no band is left to infer from",
    RowFlag.MISSING_SOURCE_ID: "the source_id is null",
}


@dataclass(frozen=True)
class RowCheck:
    """Arrays an estimator reads, with the flags that say what was set aside.

    Attributes
    ----------
    mag, mag_err : numpy.ndarray
        ``(n, n_band)`` float32 in the order of the ``bands`` checked; NaN where the band
        was not observed or its value was unusable.
    parallax, parallax_error : numpy.ndarray
        ``(n,)`` float32, mas; NaN where there is no usable parallax.
    flags : numpy.ndarray
        ``(n,)`` uint32 :class:`RowFlag` bits.
    n_bands : numpy.ndarray
        ``(n,)`` int16 number of usable bands.
    """

    mag: np.ndarray
    mag_err: np.ndarray
    parallax: np.ndarray
    parallax_error: np.ndarray
    flags: np.ndarray
    n_bands: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Rows that can be inferred (at least one usable band)."""
        return self.n_bands > 0


def _float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def check_arrays(
    mag: np.ndarray,
    mag_err: np.ndarray,
    parallax: np.ndarray | None = None,
    parallax_error: np.ndarray | None = None,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
) -> RowCheck:
    """Numeric core of :func:`check_rows`: flag bad values in plain arrays.

    Parameters
    ----------
    mag, mag_err : numpy.ndarray
        ``(n, n_band)`` magnitudes and errors, NaN where not observed.
    parallax, parallax_error, ra, dec : numpy.ndarray, optional
        ``(n,)`` each; a missing array counts as all-NaN (parallax) or as not checked
        (position).

    Returns
    -------
    RowCheck
        With the id bits (duplicate, missing) left clear: ids are checked by
        :func:`check_rows`.

    Examples
    --------
    >>> check = check_arrays(np.array([[15.0, np.nan]]), np.array([[0.01, np.nan]]))
    >>> int(check.flags[0]), int(check.n_bands[0])
    (0, 1)
    """
    m = _float(mag)
    e = _float(mag_err)
    if m.ndim != 2 or m.shape != e.shape:
        raise ValueError(f"mag {m.shape} and mag_err {e.shape} must be equal (n, n_band)")
    n = m.shape[0]
    flags = np.zeros(n, dtype=np.uint32)

    with np.errstate(invalid="ignore", over="ignore"):
        e32 = e.astype(np.float32)
        m_nan, e_nan = np.isnan(m), np.isnan(e)
        nonfinite = np.isinf(m) | (m_nan & ~e_nan)
        has_mag = np.isfinite(m)
        bad_err = has_mag & ~((e32 > 0) & (e <= MAX_MAG_ERROR))  # NaN fails both
        out_of_range = has_mag & ((m < MAG_MIN) | (m > MAG_MAX))
    _set(flags, nonfinite.any(axis=1), RowFlag.NONFINITE_VALUE)
    _set(flags, bad_err.any(axis=1), RowFlag.BAD_MAG_ERROR)
    _set(flags, out_of_range.any(axis=1), RowFlag.MAG_OUT_OF_RANGE)
    good = has_mag & ~bad_err & ~out_of_range
    mag_out = np.where(good, m, np.nan).astype(np.float32)
    err_out = np.where(good, e32, np.nan).astype(np.float32)
    n_bands = good.sum(axis=1).astype(np.int16)
    _set(flags, n_bands == 0, RowFlag.NO_USABLE_BAND)

    plx = np.full(n, np.nan) if parallax is None else _float(parallax)
    plx_err = np.full(n, np.nan) if parallax_error is None else _float(parallax_error)
    with np.errstate(invalid="ignore", over="ignore"):
        plx_ok = (
            np.isfinite(plx)
            & (np.abs(plx) <= MAX_PARALLAX)
            & (plx_err.astype(np.float32) > 0)
            & (plx_err <= MAX_PARALLAX_ERROR)
        )
    missing_plx = np.isnan(plx) & np.isnan(plx_err)
    _set(flags, ~plx_ok & ~missing_plx, RowFlag.BAD_PARALLAX)

    if ra is not None and dec is not None:
        r, d = _float(ra), _float(dec)
        with np.errstate(invalid="ignore"):
            pos_ok = (r >= 0) & (r <= 360) & (d >= -90) & (d <= 90)  # NaN/inf fail
        _set(flags, ~pos_ok, RowFlag.BAD_POSITION)

    return RowCheck(
        mag=mag_out,
        mag_err=err_out,
        parallax=np.where(plx_ok, plx, np.nan).astype(np.float32),
        parallax_error=np.where(plx_ok, plx_err, np.nan).astype(np.float32),
        flags=flags,
        n_bands=n_bands,
    )


def _set(flags: np.ndarray, where: np.ndarray, bit: RowFlag) -> None:
    flags[where] |= np.uint32(bit)


def _column_as_float(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, garbage)``: float64 values (NaN if absent) and non-numeric entries."""
    n = len(frame)
    if name not in frame.columns:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    column = frame[name]
    if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        return values, np.zeros(n, dtype=bool)
    values = pd.to_numeric(column, errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan, copy=True
    )
    garbage = column.notna().to_numpy() & np.isnan(values)
    return values, garbage


def check_rows(frame: pd.DataFrame, bands: Sequence[str]) -> RowCheck:
    """Arrays and row flags of a canonical frame, for the model's band order ``bands``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Canonical columns (see :mod:`ysoscale.catalog.columns`); bands of ``bands`` that
        the frame lacks are all NaN, other columns are ignored.
    bands : sequence of str
        Band ids in the order the estimator expects.

    Returns
    -------
    RowCheck
        One entry per input row, in input order; nothing is dropped.

    Examples
    --------
    >>> frame = pd.DataFrame({"source_id": [7], "ra": [1.0], "dec": [2.0],
    ...                       "tmass_j_mag": [12.0], "tmass_j_mag_err": [0.02]})
    >>> check = check_rows(frame, ["gaia_g", "tmass_j"])
    >>> check.mag.tolist(), int(check.flags[0])
    ([[nan, 12.0]], 0)
    """
    n = len(frame)
    mag = np.full((n, len(bands)), np.nan)
    err = np.full((n, len(bands)), np.nan)
    garbage = np.zeros((n, len(bands)), dtype=bool)
    for i, band in enumerate(bands):
        mag[:, i], bad_m = _column_as_float(frame, mag_column(band))
        err[:, i], bad_e = _column_as_float(frame, err_column(band))
        garbage[:, i] = bad_m | bad_e
    # a non-numeric entry is a non-finite value: make it unusable and say so
    mag[garbage] = np.inf

    plx, bad_plx = _column_as_float(frame, "parallax")
    plx_err, bad_plx_err = _column_as_float(frame, "parallax_error")
    plx[bad_plx | bad_plx_err] = np.inf
    ra, bad_ra = _column_as_float(frame, "ra")
    dec, bad_dec = _column_as_float(frame, "dec")
    ra[bad_ra | bad_dec] = np.nan

    check = check_arrays(mag, err, plx, plx_err, ra, dec)
    if "source_id" in frame.columns:
        ids = frame["source_id"]
        _set(check.flags, ids.isna().to_numpy(), RowFlag.MISSING_SOURCE_ID)
        duplicated = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
        _set(check.flags, duplicated, RowFlag.DUPLICATE_SOURCE_ID)
    return check


def describe_flags(flags: int) -> list[str]:
    """Human-readable reasons for the bits set in ``flags`` (empty for a clean row).

    Examples
    --------
    >>> for reason in describe_flags(RowFlag.BAD_POSITION | RowFlag.MISSING_SOURCE_ID):
    ...     print(reason)
    BAD_POSITION: ra/dec missing, non-finite or out of range
    MISSING_SOURCE_ID: the source_id is null
    """
    value = int(flags)
    reasons = [f"{bit.name}: {text}" for bit, text in FLAG_DESCRIPTIONS.items() if value & bit]
    unknown = value & ~sum(FLAG_DESCRIPTIONS)
    reasons += [f"unknown bit {k}" for k in range(32) if unknown >> k & 1]
    return reasons

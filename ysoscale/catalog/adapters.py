"""Survey adapters: native catalog columns in, canonical columns out, under a written policy.

One :class:`SurveyAdapter` per survey (:data:`ADAPTERS`) reads the columns a survey
publishes and returns a frame with the canonical columns of
:mod:`ysoscale.catalog.columns`: ``source_id`` (the survey's own id, also kept as
``{survey}_id``), ``ra``, ``dec``, ``{band}_mag``/``{band}_mag_err`` for the survey's
bands (float32, the survey's published magnitude system), Gaia's ``parallax`` and
``parallax_error`` (mas), and a uint32 column ``{survey}_quality`` that records what the
quality policy did to each row. The output has the input's rows, in the input's order,
with the input's index: a measurement the policy cannot use becomes NaN (a
non-detection) and leaves a bit behind; nothing is dropped silently.

Native column names are matched exactly, then case-insensitively (archives and VizieR
spell them differently); a missing one raises
:class:`~ysoscale.catalog.columns.SchemaError` naming the column and the survey.

Quality column
--------------
Bits ``4k .. 4k+3`` describe band ``k`` of the adapter's ``bands`` (:class:`BandAction`):

==============  ====  ==============================================================
action          bit   meaning
==============  ====  ==============================================================
``SENTINEL``    +1    the magnitude was the survey's "no value" sentinel; now NaN
``UPPER_LIMIT`` +2    the magnitude was an upper limit; now NaN (non-detection)
``REJECTED``    +4    a quality flag (or a missing error) rejected it; now NaN
``INFLATED``    +8    kept, with extra error added in quadrature (see the policy)
==============  ====  ==============================================================

Bits 24 and up are survey-wide (:class:`SurveyFlag`). :func:`describe_quality` spells a
value out.

Policy per survey
-----------------
Gaia DR3 ``gaia_source``
    ``phot_{g,bp,rp}_mean_mag``; error ``1.0857 / phot_*_mean_flux_over_error`` added in
    quadrature to the DR3 zero-point uncertainty (Riello et al. 2021: G 0.0027553202,
    BP 0.0027901700, RP 0.0037793818 mag). ``parallax``/``parallax_error`` as published.
    With ``parallax_zero_point=True`` the Lindegren et al. (2021) zero point from the
    ``gaiadr3-zeropoint`` package is subtracted from five- and six-parameter solutions
    inside its calibrated range (6 < G < 21, 1.1 < nu_eff < 1.9 resp. 1.24 < pseudocolour
    < 1.72); elsewhere the parallax is left as published and
    ``PARALLAX_ZERO_POINT_UNAVAILABLE`` is set. The zero point subtracted is written to
    ``gaia_parallax_zero_point`` (mas, NaN where none).
2MASS PSC
    ``{j,h,k}_m`` / ``{j,h,k}_msigcom``, ``ph_qual`` (one letter per band, J H Ks) and
    ``cc_flg``. ph_qual A, B, C: kept. D: kept, +0.10 mag in quadrature; E (poor PSF fit):
    kept, +0.20 mag. U (the magnitude is a 95 % upper limit): non-detection. F (no
    reliable error) and X (no valid brightness): rejected. cc_flg ``0``: clean; any of
    ``p c d s b`` (persistence, confusion, diffraction spike, stripe, band-merge
    confusion): kept, +0.10 mag in quadrature.
AllWISE
    ``w{1..4}mpro`` / ``w{1..4}sigmpro``, ``ph_qual`` and ``cc_flags`` (one character per
    band). ph_qual A, B, C: kept. U, or a magnitude without ``sigmpro``: upper limit,
    non-detection. X (no profile-fit measurement) and Z (no flux uncertainty): rejected.
    cc_flags ``0``: clean; upper-case ``D P H O`` (the detection is believed to be a
    diffraction spike, persistence, halo or ghost artefact): rejected; lower-case
    ``d p h o`` (a real source whose flux may be contaminated): kept, +0.10 mag.
Pan-STARRS1 DR2 ``MeanObject``
    ``{g,r,i,z,y}MeanPSFMag`` / ``...MagErr``; -999 is the sentinel.
SDSS ``PhotoObj``
    ``psfMag_{u,g,r,i,z}`` / ``psfMagErr_*``; -9999 is the sentinel. With ``ab_offsets``
    (default) the documented offsets to AB are applied: u_AB = u - 0.04, z_AB = z + 0.02.
GALEX (GR6/7, GUVcat)
    ``{fuv,nuv}_mag`` / ``{fuv,nuv}_magerr``; -999 is the sentinel.
SkyMapper DR4 ``master``
    ``{u,v,g,r,i,z}_psf`` / ``e_{u,v,g,r,i,z}_psf``; missing values are null.

In every survey a magnitude that survives its policy without a usable error (missing,
or the error sentinel) is rejected, since a measurement without an error cannot enter a
likelihood. A missing quality string on a row that has a magnitude sets
``MALFORMED_QUALITY`` and the magnitude is kept as published.

Examples
--------
>>> import pandas as pd
>>> native = pd.DataFrame({"designation": ["16262138-2424398"], "ra": [246.589],
...     "dec": [-24.411], "j_m": [10.2], "j_msigcom": [0.02], "h_m": [9.1],
...     "h_msigcom": [0.05], "k_m": [15.1], "k_msigcom": [float("nan")],
...     "ph_qual": ["ADU"], "cc_flg": ["000"]})
>>> out = to_canonical(native, "tmass")
>>> out[["tmass_j_mag", "tmass_ks_mag"]].astype(float).round(2).values.tolist()
[[10.2, nan]]
>>> describe_quality("tmass", out["tmass_quality"].iloc[0])
['tmass_h: INFLATED', 'tmass_ks: UPPER_LIMIT']
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ysoscale.catalog.columns import SchemaError, err_column, mag_column
from ysoscale.physics.passbands import validate_band_ids

__all__ = [
    "ADAPTERS",
    "BITS_PER_BAND",
    "BandAction",
    "GAIA_ZERO_POINT_ERRORS",
    "LetterRule",
    "SurveyAdapter",
    "SurveyFlag",
    "band_bit",
    "describe_quality",
    "to_canonical",
]

MAG_PER_FLUX_RATIO = 2.5 / math.log(10.0)  # 1.0857 mag of error per unit relative flux error
BITS_PER_BAND = 4
_SURVEY_BITS_START = 24


class BandAction(enum.IntFlag):
    """What the quality policy did to one band of one row (shifted by ``4 * band``)."""

    SENTINEL = 1
    UPPER_LIMIT = 2
    REJECTED = 4
    INFLATED = 8


class SurveyFlag(enum.IntFlag):
    """Survey-wide quality bits (bits 24 and up of ``{survey}_quality``)."""

    MALFORMED_QUALITY = 1 << 24
    PARALLAX_ZERO_POINT_APPLIED = 1 << 25
    PARALLAX_ZERO_POINT_UNAVAILABLE = 1 << 26


def band_bit(position: int, action: BandAction) -> int:
    """Quality bit of ``action`` on the band at ``position`` in the adapter's bands.

    Examples
    --------
    >>> band_bit(2, BandAction.UPPER_LIMIT)
    512
    """
    if not 0 <= position < _SURVEY_BITS_START // BITS_PER_BAND:
        raise ValueError(f"band position {position} has no quality bits")
    return int(action) << (BITS_PER_BAND * position)


@dataclass(frozen=True)
class LetterRule:
    """Policy for one quality letter: ``keep``, ``inflate``, ``upper_limit`` or ``reject``."""

    action: str
    add_error: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ("keep", "inflate", "upper_limit", "reject"):
            raise ValueError(f"unknown quality action {self.action!r}")
        if (self.action == "inflate") != (self.add_error > 0):
            raise ValueError("an 'inflate' rule needs add_error > 0, other rules none")


KEEP = LetterRule("keep")
UPPER_LIMIT = LetterRule("upper_limit")
REJECT = LetterRule("reject")

GAIA_ZERO_POINT_ERRORS: dict[str, float] = {
    "gaia_g": 0.0027553202,
    "gaia_bp": 0.0027901700,
    "gaia_rp": 0.0037793818,
}
"""DR3 photometric zero-point uncertainties (mag), Riello et al. (2021)."""

TMASS_PH_QUAL: dict[str, LetterRule] = {
    "A": KEEP,
    "B": KEEP,
    "C": KEEP,
    "D": LetterRule("inflate", 0.10),
    "E": LetterRule("inflate", 0.20),
    "F": REJECT,
    "X": REJECT,
    "U": UPPER_LIMIT,
}
TMASS_CC_FLG: dict[str, LetterRule] = {
    "0": KEEP,
    **{letter: LetterRule("inflate", 0.10) for letter in "pcdsbPCDSB"},
}
WISE_PH_QUAL: dict[str, LetterRule] = {
    "A": KEEP,
    "B": KEEP,
    "C": KEEP,
    "U": UPPER_LIMIT,
    "X": REJECT,
    "Z": REJECT,
}
WISE_CC_FLAGS: dict[str, LetterRule] = {
    "0": KEEP,
    **{letter: REJECT for letter in "DPHO"},
    **{letter: LetterRule("inflate", 0.10) for letter in "dpho"},
}
SDSS_AB_OFFSETS: dict[str, float] = {"sdss_u": -0.04, "sdss_z": 0.02}
"""Offsets added to SDSS magnitudes to put them on AB (SDSS DR documentation)."""


# --- working arrays ---------------------------------------------------------------------------


@dataclass
class _Photometry:
    """Magnitudes, errors and quality bits of one survey while its policy runs."""

    mag: np.ndarray  # (n, n_band) float64
    err: np.ndarray  # (n, n_band) float64
    quality: np.ndarray  # (n,) uint32

    def drop(self, band: int, rows: np.ndarray, action: BandAction) -> None:
        rows = rows & np.isfinite(self.mag[:, band])
        self.mag[rows, band] = np.nan
        self.err[rows, band] = np.nan
        self.quality[rows] |= np.uint32(band_bit(band, action))

    def inflate(self, band: int, rows: np.ndarray, add_error: float) -> None:
        rows = rows & np.isfinite(self.mag[:, band]) & np.isfinite(self.err[:, band])
        self.err[rows, band] = np.hypot(self.err[rows, band], add_error)
        self.quality[rows] |= np.uint32(band_bit(band, BandAction.INFLATED))

    def flag(self, rows: np.ndarray, bit: SurveyFlag) -> None:
        self.quality[rows] |= np.uint32(bit)

    def apply_rules(self, band: int, letters: np.ndarray, rules: Mapping[str, LetterRule]) -> None:
        """Apply a letter policy to one band; unknown or missing letters keep the value."""
        detected = np.isfinite(self.mag[:, band])
        known = np.isin(letters, list(rules))
        self.flag(detected & ~known, SurveyFlag.MALFORMED_QUALITY)
        for letter, rule in rules.items():
            rows = letters == letter
            if rule.action == "upper_limit":
                self.drop(band, rows, BandAction.UPPER_LIMIT)
            elif rule.action == "reject":
                self.drop(band, rows, BandAction.REJECTED)
            elif rule.action == "inflate":
                self.inflate(band, rows, rule.add_error)


# --- column access ----------------------------------------------------------------------------


def _resolve(frame: pd.DataFrame, names: Iterable[str], survey: str) -> dict[str, str]:
    """Map each native name to the frame's column (exact, then case-insensitive match)."""
    lower: dict[str, list[str]] = {}
    for column in frame.columns:
        if isinstance(column, str):
            lower.setdefault(column.lower(), []).append(column)
    resolved, missing = {}, []
    for name in dict.fromkeys(names):
        if name in frame.columns:
            resolved[name] = name
        elif len(lower.get(name.lower(), [])) == 1:
            resolved[name] = lower[name.lower()][0]
        else:
            missing.append(name)
    if missing:
        raise SchemaError(
            f"{survey}: native column(s) {', '.join(map(repr, missing))} missing from the "
            f"input (it has {len(frame.columns)} columns: {list(frame.columns)[:20]})",
            missing,
        )
    return resolved


def _numeric(frame: pd.DataFrame, column: str, survey: str) -> np.ndarray:
    """Column as float64 (NaN for nulls); SchemaError if it holds text."""
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan, copy=True
        )
    except (TypeError, ValueError) as exc:
        raise SchemaError(
            f"{survey}: column {column!r} has dtype {series.dtype}, not numeric", [column]
        ) from exc


def _flag_text(value: Any, width: int) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{int(value):0{width}d}"
    return value.strip() if isinstance(value, str) else ""


def _letters(series: pd.Series, width: int) -> np.ndarray:
    """``(n, width)`` array of single characters of a per-band flag string ('' if absent).

    Flag strings of digits read from CSV arrive as integers (``cc_flg`` "000" -> 0); they
    are zero-padded back to ``width`` characters.
    """
    if pd.api.types.is_numeric_dtype(series.dtype):
        text = series.astype("Int64").astype("string").str.zfill(width).fillna("")
    else:
        text = series.map(lambda value: _flag_text(value, width))
    fixed = text.to_numpy(dtype=object).astype(f"<U{width}")
    return fixed.view("<U1").reshape(len(series), width)


# --- adapters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyAdapter:
    """Maps one survey's native columns to canonical columns.

    Attributes
    ----------
    name : str
        Survey key (``ADAPTERS[name]``), also the prefix of ``{name}_id`` and
        ``{name}_quality``.
    bands : tuple of str
        Canonical band ids, in the order of ``mag_columns``/``err_columns`` and of the
        per-band quality bits.
    id_column, ra_column, dec_column : str
        Native id and position columns.
    mag_columns, err_columns : tuple of str
        Native magnitude and error columns, one per band.
    sentinels : tuple of float
        Values that mean "no measurement" in a magnitude or error column.
    reference : str
        Where the column names and the policy come from.

    Examples
    --------
    >>> ADAPTERS["ps1"].native_columns()[:4]
    ('objID', 'raMean', 'decMean', 'gMeanPSFMag')
    """

    name: str
    bands: tuple[str, ...]
    id_column: str
    ra_column: str
    dec_column: str
    mag_columns: tuple[str, ...]
    err_columns: tuple[str, ...]
    sentinels: tuple[float, ...] = ()
    reference: str = ""
    options: ClassVar[dict[str, Any]] = {"id_column": None, "keep": ()}

    def __post_init__(self) -> None:
        validate_band_ids(self.bands)
        if not len(self.bands) == len(self.mag_columns) == len(self.err_columns):
            raise ValueError(f"{self.name}: bands, mag_columns and err_columns differ in length")
        if len(self.bands) * BITS_PER_BAND > _SURVEY_BITS_START:
            raise ValueError(f"{self.name}: too many bands for the quality bits")

    # hooks for survey-specific policy -----------------------------------------------------
    def _policy_columns(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def _read_errors(self, frame: pd.DataFrame, cols: Mapping[str, str]) -> np.ndarray:
        return np.column_stack([_numeric(frame, cols[c], self.name) for c in self.err_columns])

    def _apply_policy(
        self,
        frame: pd.DataFrame,
        cols: Mapping[str, str],
        phot: _Photometry,
        options: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        return {}

    # public API -------------------------------------------------------------------------------
    def native_columns(self, **options: Any) -> tuple[str, ...]:
        """Native columns :meth:`to_canonical` reads with these options."""
        opts = self._options(options)
        names = (
            opts["id_column"] or self.id_column,
            self.ra_column,
            self.dec_column,
            *self.mag_columns,
            *self.err_columns,
            *self._policy_columns(opts),
            *opts["keep"],
        )
        return tuple(dict.fromkeys(names))

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(
                f"{self.name} adapter: unknown option(s) {unknown}; known: {sorted(self.options)}"
            )
        opts = {**self.options, **options}
        if isinstance(opts["keep"], str):
            opts["keep"] = (opts["keep"],)
        return opts

    def to_canonical(self, frame: pd.DataFrame, **options: Any) -> pd.DataFrame:
        """Canonical frame for ``frame`` (same rows, order and index); see module docs.

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows in the survey's native schema.
        id_column : str, optional
            Native id column to use instead of :attr:`id_column`.
        keep : sequence of str, optional
            Further native columns to copy through unchanged.
        **options
            Survey-specific options (Gaia: ``parallax_zero_point``; SDSS:
            ``ab_offsets``). Unknown options raise TypeError.

        Raises
        ------
        SchemaError
            A native column is missing or holds text where numbers belong.
        """
        opts = self._options(options)
        cols = _resolve(frame, self.native_columns(**options), self.name)
        id_native = cols[opts["id_column"] or self.id_column]
        n = len(frame)

        mag = np.column_stack(
            [_numeric(frame, cols[c], self.name) for c in self.mag_columns]
        ).reshape(n, len(self.bands))
        err = self._read_errors(frame, cols).reshape(n, len(self.bands))
        phot = _Photometry(mag, err, np.zeros(n, dtype=np.uint32))
        if self.sentinels:
            sentinel = np.isin(phot.mag, self.sentinels)
            for k in range(len(self.bands)):
                phot.drop(k, sentinel[:, k], BandAction.SENTINEL)
            phot.err[np.isin(phot.err, self.sentinels)] = np.nan
        extra = self._apply_policy(frame, cols, phot, opts)
        for k in range(len(self.bands)):
            no_error = ~(np.isfinite(phot.err[:, k]))
            phot.drop(k, no_error, BandAction.REJECTED)

        ids = frame[id_native].array
        out: dict[str, Any] = {
            "source_id": ids,
            f"{self.name}_id": ids.copy(),
            "ra": _numeric(frame, cols[self.ra_column], self.name),
            "dec": _numeric(frame, cols[self.dec_column], self.name),
        }
        for k, band in enumerate(self.bands):
            out[mag_column(band)] = phot.mag[:, k].astype(np.float32)
            out[err_column(band)] = phot.err[:, k].astype(np.float32)
        out.update(extra)
        out[f"{self.name}_quality"] = phot.quality
        for name in opts["keep"]:
            if name in out:
                raise ValueError(f"keep={name!r} would overwrite a canonical column")
            out[name] = frame[cols[name]].array
        return pd.DataFrame(out, index=frame.index)


@dataclass(frozen=True)
class GaiaAdapter(SurveyAdapter):
    """Gaia DR3 ``gaia_source``: errors from flux-over-error, parallax and its zero point."""

    options: ClassVar[dict[str, Any]] = {**SurveyAdapter.options, "parallax_zero_point": False}
    zero_point_columns: ClassVar[tuple[str, ...]] = (
        "nu_eff_used_in_astrometry",
        "pseudocolour",
        "ecl_lat",
        "astrometric_params_solved",
    )

    def _policy_columns(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        names = ("parallax", "parallax_error")
        if options["parallax_zero_point"]:
            names += self.zero_point_columns
        return names

    def _read_errors(self, frame: pd.DataFrame, cols: Mapping[str, str]) -> np.ndarray:
        errors = []
        for band, column in zip(self.bands, self.err_columns, strict=True):
            over = _numeric(frame, cols[column], self.name)
            with np.errstate(divide="ignore", invalid="ignore"):
                relative = np.where(over > 0, MAG_PER_FLUX_RATIO / over, np.nan)
            errors.append(np.hypot(relative, GAIA_ZERO_POINT_ERRORS[band]))
        return np.column_stack(errors)

    def _apply_policy(
        self,
        frame: pd.DataFrame,
        cols: Mapping[str, str],
        phot: _Photometry,
        options: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        parallax = _numeric(frame, cols["parallax"], self.name)
        out = {
            "parallax": parallax,
            "parallax_error": _numeric(frame, cols["parallax_error"], self.name),
        }
        if options["parallax_zero_point"]:
            g = _numeric(frame, cols[self.mag_columns[0]], self.name)
            inputs = [_numeric(frame, cols[c], self.name) for c in self.zero_point_columns]
            zpt = lindegren_zero_point(g, *inputs)
            has = np.isfinite(parallax)
            applied = has & np.isfinite(zpt)
            phot.flag(applied, SurveyFlag.PARALLAX_ZERO_POINT_APPLIED)
            phot.flag(has & ~applied, SurveyFlag.PARALLAX_ZERO_POINT_UNAVAILABLE)
            out["parallax"] = np.where(applied, parallax - zpt, parallax)
            out["gaia_parallax_zero_point"] = np.where(applied, zpt, np.nan)
        return out


@functools.cache
def _zero_point_module() -> Any:
    try:
        from zero_point import zpt
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "parallax_zero_point=True needs the gaiadr3-zeropoint package "
            "(pip install gaiadr3-zeropoint)"
        ) from exc
    zpt.load_tables()
    return zpt


def lindegren_zero_point(
    phot_g_mean_mag: np.ndarray,
    nu_eff_used_in_astrometry: np.ndarray,
    pseudocolour: np.ndarray,
    ecl_lat: np.ndarray,
    astrometric_params_solved: np.ndarray,
) -> np.ndarray:
    """Lindegren et al. (2021) parallax zero point (mas); NaN where it is not defined.

    Computed by the ``gaiadr3-zeropoint`` package for five- (31) and six-parameter (95)
    solutions inside its calibrated range; NaN for two-parameter solutions, missing
    inputs or inputs outside the range. Subtract it: ``parallax - zero_point``.

    Examples
    --------
    >>> zp = lindegren_zero_point(np.array([15.0]), np.array([1.5]), np.array([np.nan]),
    ...                           np.array([30.0]), np.array([31]))
    >>> bool(-0.05 < zp[0] < 0.0)
    True
    """
    arrays = [
        np.asarray(a, dtype=np.float64)
        for a in (
            phot_g_mean_mag,
            nu_eff_used_in_astrometry,
            pseudocolour,
            ecl_lat,
            astrometric_params_solved,
        )
    ]
    g, nu_eff, pseudo, lat, solved = arrays
    result = np.full(g.shape, np.nan)
    five, six = solved == 31, solved == 95
    rows = (five & np.isfinite(nu_eff) | six & np.isfinite(pseudo)) & np.isfinite(g + lat)
    if rows.any():
        zpt = _zero_point_module()
        result[rows] = zpt.get_zpt(
            g[rows],
            np.where(five[rows], nu_eff[rows], 1.5),  # the unused colour must be a number
            np.where(six[rows], pseudo[rows], 1.5),
            lat[rows],
            solved[rows],
            _warnings=False,
        )
    return result


@dataclass(frozen=True)
class LetterFlagAdapter(SurveyAdapter):
    """A survey whose quality is one letter per band in one or more flag strings."""

    flag_rules: tuple[tuple[str, Mapping[str, LetterRule], bool], ...] = field(default=())
    """(native column, letter -> rule, case-insensitive) in the order they apply."""
    missing_error_is_upper_limit: bool = False

    def _policy_columns(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(column for column, _, _ in self.flag_rules)

    def _apply_policy(
        self,
        frame: pd.DataFrame,
        cols: Mapping[str, str],
        phot: _Photometry,
        options: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        if self.missing_error_is_upper_limit:
            for k in range(len(self.bands)):
                phot.drop(k, np.isnan(phot.err[:, k]), BandAction.UPPER_LIMIT)
        for column, rules, fold_case in self.flag_rules:
            letters = _letters(frame[cols[column]], len(self.bands))
            if fold_case:
                letters = np.char.upper(letters)
                rules = {key.upper(): rule for key, rule in rules.items()}
            for k in range(len(self.bands)):
                phot.apply_rules(k, letters[:, k], rules)
        return {}


@dataclass(frozen=True)
class SdssAdapter(SurveyAdapter):
    """SDSS PSF magnitudes, optionally moved onto AB."""

    options: ClassVar[dict[str, Any]] = {**SurveyAdapter.options, "ab_offsets": True}

    def _apply_policy(
        self,
        frame: pd.DataFrame,
        cols: Mapping[str, str],
        phot: _Photometry,
        options: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        if options["ab_offsets"]:
            for k, band in enumerate(self.bands):
                phot.mag[:, k] += SDSS_AB_OFFSETS.get(band, 0.0)
        return {}


def _per_band(template: str, letters: Sequence[str]) -> tuple[str, ...]:
    return tuple(template.format(b) for b in letters)


ADAPTERS: dict[str, SurveyAdapter] = {
    "gaia": GaiaAdapter(
        name="gaia",
        bands=("gaia_g", "gaia_bp", "gaia_rp"),
        id_column="source_id",
        ra_column="ra",
        dec_column="dec",
        mag_columns=_per_band("phot_{}_mean_mag", ("g", "bp", "rp")),
        err_columns=_per_band("phot_{}_mean_flux_over_error", ("g", "bp", "rp")),
        reference="Gaia DR3 gaia_source data model; Riello et al. 2021; Lindegren et al. 2021",
    ),
    "tmass": LetterFlagAdapter(
        name="tmass",
        bands=("tmass_j", "tmass_h", "tmass_ks"),
        id_column="designation",
        ra_column="ra",
        dec_column="dec",
        mag_columns=_per_band("{}_m", "jhk"),
        err_columns=_per_band("{}_msigcom", "jhk"),
        flag_rules=(("ph_qual", TMASS_PH_QUAL, True), ("cc_flg", TMASS_CC_FLG, False)),
        reference="2MASS All-Sky Release Explanatory Supplement (Cutri et al. 2003), PSC",
    ),
    "wise": LetterFlagAdapter(
        name="wise",
        bands=("wise_w1", "wise_w2", "wise_w3", "wise_w4"),
        id_column="designation",
        ra_column="ra",
        dec_column="dec",
        mag_columns=_per_band("w{}mpro", "1234"),
        err_columns=_per_band("w{}sigmpro", "1234"),
        flag_rules=(("ph_qual", WISE_PH_QUAL, True), ("cc_flags", WISE_CC_FLAGS, False)),
        missing_error_is_upper_limit=True,
        reference="AllWISE Explanatory Supplement (Cutri et al. 2013), Source Catalog",
    ),
    "ps1": SurveyAdapter(
        name="ps1",
        bands=tuple(f"ps1_{b}" for b in "grizy"),
        id_column="objID",
        ra_column="raMean",
        dec_column="decMean",
        mag_columns=_per_band("{}MeanPSFMag", "grizy"),
        err_columns=_per_band("{}MeanPSFMagErr", "grizy"),
        sentinels=(-999.0,),
        reference="Pan-STARRS1 DR2 MeanObject (Flewelling et al. 2020)",
    ),
    "sdss": SdssAdapter(
        name="sdss",
        bands=tuple(f"sdss_{b}" for b in "ugriz"),
        id_column="objID",
        ra_column="ra",
        dec_column="dec",
        mag_columns=_per_band("psfMag_{}", "ugriz"),
        err_columns=_per_band("psfMagErr_{}", "ugriz"),
        sentinels=(-9999.0,),
        reference="SDSS PhotoObj schema; AB offsets from the SDSS flux-calibration notes",
    ),
    "galex": SurveyAdapter(
        name="galex",
        bands=("galex_fuv", "galex_nuv"),
        id_column="objid",
        ra_column="ra",
        dec_column="dec",
        mag_columns=("fuv_mag", "nuv_mag"),
        err_columns=("fuv_magerr", "nuv_magerr"),
        sentinels=(-999.0,),
        reference="GALEX GR6/7 photoobjall; GUVcat (Bianchi et al. 2017)",
    ),
    "skymapper": SurveyAdapter(
        name="skymapper",
        bands=tuple(f"skymapper_{b}" for b in "uvgriz"),
        id_column="object_id",
        ra_column="raj2000",
        dec_column="dej2000",
        mag_columns=_per_band("{}_psf", "uvgriz"),
        err_columns=_per_band("e_{}_psf", "uvgriz"),
        reference="SkyMapper DR4 master table (Onken et al. 2024)",
    ),
}
"""The shipped adapters, keyed by survey name (the names of ``simulate.surveys.SURVEYS``)."""


def to_canonical(frame: pd.DataFrame, survey: str, **options: Any) -> pd.DataFrame:
    """Canonical columns of ``frame``, read in ``survey``'s native schema.

    See :meth:`SurveyAdapter.to_canonical` and the module docs for the policy.

    Examples
    --------
    >>> native = pd.DataFrame({"objid": [1], "ra": [1.0], "dec": [2.0],
    ...     "fuv_mag": [-999.0], "fuv_magerr": [-999.0], "nuv_mag": [19.5],
    ...     "nuv_magerr": [0.1]})
    >>> out = to_canonical(native, "galex")
    >>> float(out["galex_nuv_mag"].iloc[0]), describe_quality("galex", out["galex_quality"][0])
    (19.5, ['galex_fuv: SENTINEL'])
    """
    if survey not in ADAPTERS:
        raise ValueError(f"unknown survey {survey!r}; known: {sorted(ADAPTERS)}")
    return ADAPTERS[survey].to_canonical(frame, **options)


def describe_quality(survey: str, value: int) -> list[str]:
    """Spell out a ``{survey}_quality`` value, one ``"band: ACTION"`` entry per bit.

    Examples
    --------
    >>> describe_quality("wise", band_bit(3, BandAction.REJECTED) | SurveyFlag.MALFORMED_QUALITY)
    ['wise_w4: REJECTED', 'MALFORMED_QUALITY']
    """
    bands = ADAPTERS[survey].bands
    value = int(value)
    reasons = []
    for k, band in enumerate(bands):
        for action in BandAction:
            if value & band_bit(k, action):
                reasons.append(f"{band}: {action.name}")
    for flag in SurveyFlag:
        if value & flag:
            reasons.append(str(flag.name))
    known = sum(band_bit(k, a) for k in range(len(bands)) for a in BandAction) | sum(SurveyFlag)
    reasons += [f"unknown bit {k}" for k in range(32) if (value & ~known) >> k & 1]
    return reasons

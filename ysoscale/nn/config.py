"""Configuration of the amortised posterior estimator (set transformer + normalizing flow)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ysoscale.physics.passbands import BAND_IDS, validate_band_ids
from ysoscale.settings import reject_unknown_keys

PHYSICAL_PARAMS: tuple[str, ...] = (
    "log10_mass",
    "log10_age",
    "mh",
    "log10_distance",
    "av",
    "rv",
)
"""Default inferred parameters: initial mass, age, [M/H], log10(distance/pc), A_V, R_V."""

ATMOSPHERIC_PARAMS: tuple[str, ...] = ("teff", "logg", "mh", "av", "rv", "distance_modulus")
"""Atmospheric parametrisation (IrisML-like, plus a distance modulus for absolute scale)."""

DEFAULT_PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "log10_mass": (-1.1, 1.6),
    "log10_age": (5.7, 10.13),
    "mh": (-2.0, 0.5),
    "log10_distance": (0.5, 4.5),
    "av": (0.0, 30.0),
    "rv": (2.3, 5.6),
    "teff": (2300.0, 50000.0),
    "logg": (-0.5, 6.0),
    "distance_modulus": (-2.5, 17.5),
}
"""Support of every known parameter; the estimator's posterior lives inside these bounds."""

KNOWN_PARAMS: tuple[str, ...] = tuple(DEFAULT_PARAM_BOUNDS)

FLOWS: tuple[str, ...] = ("NSF", "MAF")


PARALLAX_ENCODINGS = ("asinh", "snr_clip")
"""Features of the parallax token; see ``EstimatorConfig.parallax_encoding``."""

DISTANCE_COORDINATES = ("parallax", "box")
"""Flow coordinate of the distance parameter; see ``EstimatorConfig.distance_coordinate``."""

LOGIT_TAILS = ("compressed", "raw")
"""What the flow sees beyond the splines' domain; see ``EstimatorConfig.logit_tails``."""


@dataclass(frozen=True)
class EstimatorConfig:
    """Architecture of a :class:`~ysoscale.nn.npe.PosteriorEstimator`.

    Parameters
    ----------
    bands : tuple of str
        Band ids the model accepts, in token-index order (column ``i`` of the magnitude
        array is ``bands[i]``). Defaults to the full, versioned :data:`BAND_IDS`.
    params : tuple of str
        Inferred parameters, in the order of the last axis of ``theta``.
    param_bounds : dict
        ``{param: (lo, hi)}``; entries given here override :data:`DEFAULT_PARAM_BOUNDS`.
        The posterior has support exactly on the box ``[lo, hi]`` of ``params``.
    width, depth, heads, ff, dropout : int, int, int, int, float
        Token width, transformer layers, attention heads, feed-forward width, dropout.
        The default (64, 3, 4, 192) is sized to train on a 2-core CPU (0.65 s per batch
        of 2048 stars, 3.4e5 parameters); :meth:`irisml` gives the paper's configuration.
    flow : {"NSF", "MAF"}
        zuko flow family over the unconstrained (logit) parameter space.
    transforms : int
        Number of autoregressive transforms of the flow.
    flow_hidden : tuple of int
        Hidden layer widths of each transform's hyper-network.
    passes : int or None
        Passes of each autoregressive transform (zuko's ``passes``): ``None`` is fully
        autoregressive (one network pass per parameter to sample); ``2`` is a coupling
        transform that samples in two passes, about three times faster for six parameters.
    use_parallax : bool
        Whether a parallax token is built (missing parallaxes are masked).
    parallax_encoding : {"asinh", "snr_clip"}
        Features of the parallax token (:mod:`ysoscale.nn.tokenizer`). ``"asinh"``
        (default): ``asinh(parallax / error)``, which for a significant parallax is
        ``ln(2 parallax / error)``, so ``log parallax`` is a linear function of the two
        features at any S/N. ``"snr_clip"``: the S/N clipped at ±100, which erased the
        distance of every star with S/N > 100 (distance modulus biased by +0.6 to +0.8 mag
        for such stars); kept to load models trained with it (cards without the key).
    distance_coordinate : {"parallax", "box"}
        Coordinate in which the flow models the distance parameter. ``"parallax"``
        (default): the logit-box coordinate re-centred and re-scaled per star on the
        parallax's distance and precision (:mod:`ysoscale.nn.parallax_centring`), so a
        distance fixed to 0.004 dex by a Gaia parallax is a unit-width peak for the flow.
        ``"box"``: the plain logit-box coordinate, in which such peaks came out too wide;
        kept to load models trained with it (cards without the key).
    logit_tails : {"compressed", "raw"}
        ``"compressed"`` (default): the flow's coordinates beyond ±4 are compressed into
        the splines' domain ±5 (:mod:`ysoscale.nn.tail_compression`), so posterior mass can
        reach every part of the box. ``"raw"``: the plain logit, beyond ±5 of which (A_V
        below 0.2 mag, for one) a trained flow puts no mass; kept to load models trained
        with it (cards without the key).

    Examples
    --------
    >>> config = EstimatorConfig(bands=("gaia_g", "tmass_ks"), width=32, heads=4)
    >>> config.n_param, config.n_band
    (6, 2)
    >>> EstimatorConfig.from_dict(config.to_dict()) == config
    True
    """

    bands: tuple[str, ...] = BAND_IDS
    params: tuple[str, ...] = PHYSICAL_PARAMS
    param_bounds: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_PARAM_BOUNDS)
    )
    width: int = 64
    depth: int = 3
    heads: int = 4
    ff: int = 192
    dropout: float = 0.05
    flow: str = "NSF"
    transforms: int = 5
    flow_hidden: tuple[int, ...] = (128, 128)
    passes: int | None = None
    use_parallax: bool = True
    parallax_encoding: str = "asinh"
    distance_coordinate: str = "parallax"
    logit_tails: str = "compressed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", validate_band_ids(self.bands))
        if isinstance(self.params, str):
            object.__setattr__(self, "params", (self.params,))
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "flow_hidden", tuple(int(h) for h in self.flow_hidden))

        unknown = sorted(set(self.params) - set(KNOWN_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {list(KNOWN_PARAMS)}")
        if not self.params:
            raise ValueError("no parameters given")
        if len(set(self.params)) != len(self.params):
            raise ValueError(f"duplicate parameters in {list(self.params)}")

        unknown = sorted(set(self.param_bounds) - set(KNOWN_PARAMS))
        if unknown:
            raise ValueError(f"bounds for unknown parameter(s) {unknown}")
        bounds = {**DEFAULT_PARAM_BOUNDS, **self.param_bounds}
        bounds = {name: (float(lo), float(hi)) for name, (lo, hi) in bounds.items()}
        bad = [name for name, (lo, hi) in bounds.items() if not lo < hi]
        if bad:
            raise ValueError(f"bounds must satisfy lo < hi; violated for {bad}")
        object.__setattr__(self, "param_bounds", bounds)

        for name in ("width", "depth", "heads", "ff", "transforms"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.flow not in FLOWS:
            raise ValueError(f"unknown flow {self.flow!r}; choose one of {FLOWS}")
        if self.parallax_encoding not in PARALLAX_ENCODINGS:
            raise ValueError(
                f"parallax_encoding must be one of {PARALLAX_ENCODINGS}, "
                f"got {self.parallax_encoding!r}"
            )
        if self.distance_coordinate not in DISTANCE_COORDINATES:
            raise ValueError(
                f"distance_coordinate must be one of {DISTANCE_COORDINATES}, "
                f"got {self.distance_coordinate!r}"
            )
        if self.logit_tails not in LOGIT_TAILS:
            raise ValueError(f"logit_tails must be one of {LOGIT_TAILS}, got {self.logit_tails!r}")
        if self.passes is not None and not 1 <= int(self.passes) <= len(self.params):
            raise ValueError(f"passes must be None or in [1, n_param], got {self.passes}")
        if not self.flow_hidden or min(self.flow_hidden) < 1:
            raise ValueError(f"flow_hidden must be positive widths, got {self.flow_hidden}")

    @classmethod
    def irisml(cls, **overrides: Any) -> EstimatorConfig:
        """The configuration reported for IrisML (Kapusta 2025): 256 wide, 10 layers, MAF.

        Examples
        --------
        >>> EstimatorConfig.irisml().depth
        10
        """
        values: dict[str, Any] = dict(
            width=256, depth=10, heads=8, ff=768, dropout=0.05, flow="MAF", transforms=10
        )
        values.update(overrides)
        return cls(**values)

    @property
    def n_band(self) -> int:
        return len(self.bands)

    @property
    def n_param(self) -> int:
        return len(self.params)

    @property
    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(lo, hi)`` of ``params``, in parameter order."""
        lo = tuple(self.param_bounds[p][0] for p in self.params)
        hi = tuple(self.param_bounds[p][1] for p in self.params)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable), stored in the model card."""
        values = dataclasses.asdict(self)
        values["bands"] = list(self.bands)
        values["params"] = list(self.params)
        values["flow_hidden"] = list(self.flow_hidden)
        values["param_bounds"] = {k: list(v) for k, v in self.param_bounds.items()}
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EstimatorConfig:
        """Build from a dict (model card, TOML), rejecting misspelled keys by name."""
        reject_unknown_keys(cls, values, "estimator")
        values = dict(values)
        for key in ("bands", "params", "flow_hidden"):
            if key in values and not isinstance(values[key], str):
                values[key] = tuple(values[key])
        if "param_bounds" in values:
            values["param_bounds"] = {k: tuple(v) for k, v in values["param_bounds"].items()}
        return cls(**values)

    @classmethod
    def from_card(cls, values: Mapping[str, Any]) -> EstimatorConfig:
        """Build from a model card's ``config``: as :meth:`from_dict`, with the settings of
        models saved before a key existed (no ``parallax_encoding``: ``"snr_clip"``; no
        ``distance_coordinate``: ``"box"``; no ``logit_tails``: ``"raw"``)."""
        older = {
            "parallax_encoding": "snr_clip",
            "distance_coordinate": "box",
            "logit_tails": "raw",
        }
        return cls.from_dict(older | dict(values))

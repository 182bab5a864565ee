"""Configuration of the arbitrary-conditional flow-matching estimator (``nn.simformer``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ysoscale.nn.config import DEFAULT_PARAM_BOUNDS, PHYSICAL_PARAMS
from ysoscale.nn.context_cache import ATTENTION_MODES
from ysoscale.physics.passbands import BAND_IDS, validate_band_ids
from ysoscale.settings import reject_unknown_keys

SIMFORMER_PARAMS: tuple[str, ...] = (*PHYSICAL_PARAMS, "has_disk")
"""Default parameter tokens: the physical parameters plus a disk indicator (1 = disk),
whose posterior mean is the disk probability."""

SIMFORMER_PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    **DEFAULT_PARAM_BOUNDS,
    "has_disk": (0.0, 1.0),
}
"""Support of every parameter a simformer knows; samples are clipped onto it."""

PARALLAX = "parallax"
"""Variable name of the parallax token (mas)."""

SOLVERS: tuple[str, ...] = ("euler", "heun", "rk4")

DISTANCE_FRAMES: tuple[str, ...] = ("parallax", "native")
"""Values of ``SimformerConfig.distance_frame``."""

GUIDANCE_PARAMS: tuple[str, ...] = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv")
"""Parameters the physics guidance needs (the forward model's physical path)."""


def _default_standardization(
    name: str, bounds: dict[str, tuple[float, float]]
) -> tuple[float, float]:
    """Centre and scale of a variable before any store statistics are known."""
    if name == PARALLAX:
        return 1.0, 2.0
    if name in bounds:
        lo, hi = bounds[name]
        return 0.5 * (lo + hi), 0.25 * (hi - lo)
    return 18.0, 4.0  # a magnitude


@dataclass(frozen=True)
class SimformerConfig:
    """Architecture, loss and training-mask settings of a :class:`~ysoscale.nn.simformer.Simformer`.

    Every variable is a token: the parameters (``params``, in this order), then the bands
    (``bands``, in this order), then the parallax (``use_parallax``). Values are
    standardised by ``standardization[name] = (loc, scale)``; the trainer fits them on the
    training store, variables without an entry use a default from the bounds.

    Parameters
    ----------
    bands, params, param_bounds, use_parallax
        As in :class:`~ysoscale.nn.config.EstimatorConfig`; ``params`` may also hold
        ``has_disk`` (0/1 indicator, derived from the store's ``disk_frac > 0``).
    width, depth, heads, ff, dropout : int, int, int, int, float
        Transformer token width, layers, heads, feed-forward width, dropout.
    time_frequencies : int
        Sinusoidal frequencies of the flow time ``t`` fed to every token.
    standardization : dict
        ``{variable: (loc, scale)}`` of the values in token space.
    w_fm, w_r : float
        Weights of the flow-matching loss and of the physics-guidance loss
        ``L = w_FM L_FM + w_R L_R`` (``w_r = 0`` trains without guidance).
    guidance_floor : float
        Magnitude scale (mag) of the guidance residual; observed bands add their error in
        quadrature.
    subset_prob : float
        Share of training stars whose observed tokens are thinned to a random subset (each
        kept as a condition with probability 1/2, the rest become targets).
    param_condition_prob : float
        Share of training stars that condition on a random subset of their parameters
        (each with probability 0.3), so that any parameter can be fixed at inference.
    disk_condition_prob : float
        Extra share of stars that condition on ``has_disk`` (used by the photospheric
        prediction of the infrared-excess score).
    marginal_prob : float
        Share of training stars whose unobserved observables are left out of the sequence
        altogether (parameter-only sampling); the same share again keeps a random half.
    default_solver, default_steps : str, int
        ODE solver and steps used when a sampling call does not name them.
    attention : str
        ``"cached_context"`` (default: conditioning tokens attend only to each other and
        carry no flow time, so sampling encodes them once per star and sends only the
        unobserved tokens through the layers at each step; :mod:`ysoscale.nn.context_cache`)
        or ``"full"`` (every token attends to every present token). On held-out stars both
        are equally accurate, and cached sampling is 1.2-3.4x faster (README). Model cards
        written before the key existed are ``"full"`` (:meth:`from_card`).
    distance_frame : str
        ``"parallax"`` (default): for a star whose parallax is a conditioning token, the
        distance token is centred on the distance the parallax implies and scaled by its
        width (:func:`ysoscale.nn.parallax_centring.token_frame`), so a Gaia parallax at
        S/N 100 (a 0.004 dex peak) is a unit-width target, not one a hundredth as wide as
        the noise the flow starts from. ``"native"``: the plain standardised distance.
        Model cards written before the key existed are ``"native"``.

    Examples
    --------
    >>> config = SimformerConfig(bands=("gaia_g", "gaia_rp"), width=16, heads=2)
    >>> config.n_param, config.n_band, config.n_var
    (7, 2, 10)
    >>> config.variables[-3:]
    ('gaia_g', 'gaia_rp', 'parallax')
    >>> SimformerConfig.from_dict(config.to_dict()) == config
    True
    """

    bands: tuple[str, ...] = BAND_IDS
    params: tuple[str, ...] = SIMFORMER_PARAMS
    param_bounds: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(SIMFORMER_PARAM_BOUNDS)
    )
    use_parallax: bool = True
    width: int = 64
    depth: int = 4
    heads: int = 4
    ff: int = 192
    dropout: float = 0.0
    time_frequencies: int = 8
    standardization: dict[str, tuple[float, float]] = field(default_factory=dict)
    w_fm: float = 1.0
    w_r: float = 0.0
    guidance_floor: float = 0.1
    subset_prob: float = 0.3
    param_condition_prob: float = 0.15
    disk_condition_prob: float = 0.1
    marginal_prob: float = 0.4
    default_solver: str = "heun"
    default_steps: int = 16
    attention: str = "cached_context"
    distance_frame: str = "parallax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", validate_band_ids(self.bands))
        if isinstance(self.params, str):
            object.__setattr__(self, "params", (self.params,))
        object.__setattr__(self, "params", tuple(self.params))
        unknown = sorted(set(self.params) - set(SIMFORMER_PARAM_BOUNDS))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown}; known: {list(SIMFORMER_PARAM_BOUNDS)}"
            )
        if not self.params:
            raise ValueError("no parameters given")
        if len(set(self.params)) != len(self.params):
            raise ValueError(f"duplicate parameters in {list(self.params)}")
        unknown = sorted(set(self.param_bounds) - set(SIMFORMER_PARAM_BOUNDS))
        if unknown:
            raise ValueError(f"bounds for unknown parameter(s) {unknown}")
        bounds = {**SIMFORMER_PARAM_BOUNDS, **self.param_bounds}
        bounds = {name: (float(lo), float(hi)) for name, (lo, hi) in bounds.items()}
        bad = [name for name, (lo, hi) in bounds.items() if not lo < hi]
        if bad:
            raise ValueError(f"bounds must satisfy lo < hi; violated for {bad}")
        object.__setattr__(self, "param_bounds", bounds)

        unknown = sorted(set(self.standardization) - set(self.variables))
        if unknown:
            raise ValueError(f"standardization for unknown variable(s) {unknown}")
        standard = {name: _default_standardization(name, bounds) for name in self.variables}
        standard.update(
            {
                name: (float(loc), float(scale))
                for name, (loc, scale) in self.standardization.items()
            }
        )
        bad = [name for name, (_, scale) in standard.items() if not scale > 0]
        if bad:
            raise ValueError(f"standardization scales must be positive; violated for {bad}")
        object.__setattr__(self, "standardization", standard)

        for name in ("width", "depth", "heads", "ff", "time_frequencies", "default_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("w_fm", "w_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.w_fm == 0 and self.w_r == 0:
            raise ValueError("w_fm and w_r cannot both be 0")
        if not self.guidance_floor > 0:
            raise ValueError(f"guidance_floor must be positive, got {self.guidance_floor}")
        for name in ("subset_prob", "param_condition_prob", "disk_condition_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.marginal_prob <= 0.5:
            raise ValueError(f"marginal_prob must be in [0, 0.5], got {self.marginal_prob}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(
                f"unknown attention {self.attention!r}; choose one of {ATTENTION_MODES}"
            )
        if self.distance_frame not in DISTANCE_FRAMES:
            raise ValueError(
                f"unknown distance_frame {self.distance_frame!r}; choose one of {DISTANCE_FRAMES}"
            )
        if self.default_solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.default_solver!r}; choose one of {SOLVERS}")
        if self.w_r > 0:
            missing = [p for p in GUIDANCE_PARAMS if p not in self.params]
            if missing:
                raise ValueError(f"physics guidance (w_r > 0) needs the parameters {missing}")

    @property
    def variables(self) -> tuple[str, ...]:
        """Token names in sequence order: parameters, bands, then parallax."""
        return (*self.params, *self.bands, *((PARALLAX,) if self.use_parallax else ()))

    @property
    def n_param(self) -> int:
        return len(self.params)

    @property
    def n_band(self) -> int:
        return len(self.bands)

    @property
    def n_var(self) -> int:
        return len(self.variables)

    @property
    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(lo, hi)`` of ``params``, in parameter order."""
        lo = tuple(self.param_bounds[p][0] for p in self.params)
        hi = tuple(self.param_bounds[p][1] for p in self.params)
        return lo, hi

    def with_standardization(self, values: Mapping[str, tuple[float, float]]) -> SimformerConfig:
        """The same configuration with ``values`` replacing the standardization entries."""
        return dataclasses.replace(self, standardization={**self.standardization, **values})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable), stored in the model card."""
        values = dataclasses.asdict(self)
        values["bands"] = list(self.bands)
        values["params"] = list(self.params)
        values["param_bounds"] = {k: list(v) for k, v in self.param_bounds.items()}
        values["standardization"] = {k: list(v) for k, v in self.standardization.items()}
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_card(cls, values: Mapping[str, Any]) -> SimformerConfig:
        """Build from a model card's ``config``: as :meth:`from_dict`, with the settings of
        models saved before a key existed (no ``attention``: ``"full"``; no
        ``distance_frame``: ``"native"``).

        Examples
        --------
        >>> SimformerConfig.from_card({}).attention, SimformerConfig.from_dict({}).attention
        ('full', 'cached_context')
        >>> SimformerConfig.from_card({}).distance_frame
        'native'
        """
        return cls.from_dict({"attention": "full", "distance_frame": "native"} | dict(values))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimformerConfig:
        """Build from a dict (model card, TOML), rejecting misspelled keys by name."""
        reject_unknown_keys(cls, values, "simformer")
        values = dict(values)
        for key in ("bands", "params"):
            if key in values and not isinstance(values[key], str):
                values[key] = tuple(values[key])
        for key in ("param_bounds", "standardization"):
            if key in values:
                values[key] = {k: tuple(v) for k, v in values[key].items()}
        return cls(**values)


__all__ = [
    "DISTANCE_FRAMES",
    "GUIDANCE_PARAMS",
    "PARALLAX",
    "SIMFORMER_PARAMS",
    "SIMFORMER_PARAM_BOUNDS",
    "SOLVERS",
    "SimformerConfig",
]

"""Density of the training prior, for importance sampling: an unconditional flow fitted to draws.

The Milky Way prior of :func:`ysoscale.simulate.priors.sample_prior` (four Galactic
components, young regions, dust along each sight line) can be sampled but has no closed
form. Importance sampling needs ``log p(theta)``, so :func:`fit_prior_density` fits zuko
NSFs to many prior draws, in the estimator's parameter space (``log10_distance`` rather than
``distance_pc``, ...), once, at build time; the result ships with the package
(:func:`load_default_prior_density`).

Which prior
-----------
The physical prior, not the prior conditioned on detection. The default estimator was
trained on a store made with ``require_detection=True``, i.e. on ``p(theta | detected)``, but
detection is a property of the data: for a catalog star, ``p(theta | x) ∝ p(theta) p(x |
theta)`` where ``x`` includes the fact that it was detected, and conditioning on that
already happens through ``x``. (Strictly the data likelihood then carries the detection
probability of the observed bands; :mod:`ysoscale.infer.importance` leaves that term out,
see its docstring.) The store also drops draws the forward model cannot compute (off the
isochrones, A_V beyond the photometry grid): that truncation is applied exactly by
importance sampling, which gives zero weight to invalid forward-model samples, so the
density here is fitted to raw prior draws and only has to be right up to a constant.

Support
-------
The flow lives in the logit space of a box, as the estimator's does
(:class:`~ysoscale.nn.npe.BoxToRealTransform`), but the box is the *prior's own* support
intersected with the estimator's bounds (:func:`prior_support`): the Kroupa IMF stops at
``min_mass``/``max_mass``, ages at 13 Gyr, distances at ``max_distance_pc``. Those sharp
edges are mapped to infinity instead of being smoothed over by the flow, and
:meth:`PriorDensity.log_prob` is ``-inf`` outside the support. A per-parameter affine
standardisation of the logits (fixed at fit time, stored with the weights) precedes each
flow. Draws that fall on or outside the support (R_V clipped at 2.3, A_V > 30: about 10 %)
are dropped; the kept fraction is recorded in the card.

Exact factors
-------------
Two parameters are drawn from closed forms given the population, and a flow only blurs a
closed form (the first shipped fit gave R_V in (5.3, 5.5) no density at all, though 1.3 %
of young stars lie there, so importance weights cut off the tail and R_V lost its
calibration after weighting):

- R_V, independently of everything else given the population: a core N(3.1, 0.2) with,
  for a share ``rv_tail_field`` of field stars and ``rv_tail_young`` of young stars, a
  uniform tail on (3.3, 5.5) instead (:class:`RvGivenPopulation`);
- the initial mass, the Kroupa IMF independent of everything else, or truncated at the
  turn-off mass of the star's age with ``main_sequence_only`` (:class:`MassGivenAge`).

A young star is one younger than the young regions' oldest age (``young_age_myr[1]``,
50 Myr), where the thin disk starts, so the population is a function of ``log10_age``.
:func:`fit_prior_density` writes both factors down whenever their parameters and
``log10_age`` are fitted (``exact_rv``, ``exact_mass``), and the flows model the rest.

Populations
-----------
Young regions (ages log-uniform in 1-50 Myr with a truncated-normal spread, embedded dust,
positions clustered near the disk plane) and the field (ages from 50 Myr up) meet at a cliff
in ``log10_age`` which one flow smooths over, misplacing young stars' density (the first
exact-R_V fit's conditionals of distance and A_V were off by 0.06 and 0.04 for young
stars, ``benchmarks/results/prior_density_check.log``). :func:`fit_prior_density` therefore
fits one flow per population (:class:`PopulationPart`) to draws of that population alone,
each in its own age box, and weighs it by the population's share:
``p(theta) = w_pop p_flow,pop(age, [M/H], distance, A_V) p(R_V | pop) p(mass | age)``.
Young stars are a tenth of the prior but, being near and bright, 58 % of the detected
held-out stars; their flow gets as many draws as the field's.

Shipped density
---------------
``ysoscale/data/prior_density``: per population an NSF over (log10_age, [M/H],
log10_distance, A_V), times the exact R_V and mass factors; 5 transforms, hidden (192, 192),
10 bins (2 × 3.0e5 weights, 3.0 MB), each fitted to 1.2e6 draws of its population on this
project's 2-core CPU, 23 minutes in all (``fitted_with`` in the card). Held-out NLL 2.828
nats (physical units, 1.2e5 draws of the whole prior; this now counts the draws outside the
support, which the one-flow density's 2.717 left out: log 0.90 = -0.105). On 1e5 other
draws, against that one-flow density (5-D flow × exact R_V, 2e6 mixed draws), the young
stars score 0.031 ± 0.006 nats better and the field stars 0.006 ± 0.002 worse (the field
flow saw 1.2e6 draws instead of ~1.8e6); the conditionals of ``benchmarks/
prior_density_check.py`` on 6,000 young-only draws agree between the two within their
scatter (``benchmarks/results/prior_density_check_parts.log``). Before the exact R_V
factor, an all-flow fit (3e6 draws, 30 H100 epochs) scored 2.785 against the one-flow
density's 2.718, a Gaussian KDE 2.97 and independent 1-D histograms 3.42 (same constant
left out).

Examples
--------
>>> density = fit_prior_density(n=4000, epochs=1, seed=0)  # doctest: +SKIP
>>> theta = density.sample((3,))  # doctest: +SKIP
>>> density.log_prob(theta).shape  # doctest: +SKIP
torch.Size([3])
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zuko
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributions import AffineTransform, Distribution
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from ysoscale.nn.config import DEFAULT_PARAM_BOUNDS, PHYSICAL_PARAMS
from ysoscale.nn.npe import BoxToRealTransform
from ysoscale.simulate.priors import (
    MAX_LOG10_AGE,
    MH_RANGE,
    RV_CORE,
    RV_RANGE,
    RV_TAIL,
    PriorConfig,
    kroupa_log10_ppf,
    kroupa_segments,
    sample_prior,
    turn_off_mass,
)

WEIGHTS_FILE = "prior_density.safetensors"
CARD_FILE = "prior_density.json"
FORMAT_VERSION = 2
"""Card ``format`` this module writes and reads (2: population parts and exact factors)."""
DEFAULT_DIR = "prior_density"
"""Folder of the shipped density inside ``ysoscale/data``."""

_DRAW_CHUNK = 1 << 18

MARGINAL_STARS_PER_REGION = 0.1
"""``young_stars_per_region`` used for fitting draws. Young stars share their region's age,
[M/H] and position, so a finite set of draws is clustered and a flexible flow memorises the
clusters (held-out NLL rises after a few epochs). The marginal of one star does not depend
on how many stars a region holds, so drawing ~one star per region gives independent draws
from the same marginal density."""


def prior_support(
    params: Sequence[str],
    config: PriorConfig | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(lo, hi)`` of the prior's support in ``params``, intersected with ``bounds``.

    Parameters
    ----------
    params : sequence of str
        Estimator parameters (:data:`~ysoscale.nn.config.KNOWN_PARAMS` that the prior
        determines: mass, age, [M/H], distance, A_V, R_V).
    config : PriorConfig, optional
        The prior (default ``PriorConfig()``); its mass and distance limits set the support.
    bounds : dict, optional
        The estimator's box; default :data:`~ysoscale.nn.config.DEFAULT_PARAM_BOUNDS`.

    Examples
    --------
    >>> lo, hi = prior_support(("log10_mass", "log10_distance"))
    >>> [round(v, 3) for v in lo + hi]
    [-1.097, 0.5, 1.301, 4.176]
    """
    config = PriorConfig() if config is None else config
    bounds = {**DEFAULT_PARAM_BOUNDS, **dict(bounds or {})}
    young_age_lo = math.log10(config.young_age_myr[0] * 1e6)
    log10_dmax = math.log10(config.max_distance_pc)
    own = {
        "log10_mass": (math.log10(config.min_mass), math.log10(config.max_mass)),
        "log10_age": (young_age_lo, MAX_LOG10_AGE),
        "mh": MH_RANGE,
        "log10_distance": (-math.inf, log10_dmax),
        "distance_modulus": (-math.inf, 5.0 * (log10_dmax - 1.0)),
        "av": (0.0, math.inf),
        "rv": RV_RANGE,
    }
    unknown = [p for p in params if p not in own]
    if unknown:
        raise ValueError(
            f"the prior does not determine parameter(s) {unknown}; supported: {list(own)}"
        )
    lo = tuple(max(own[p][0], bounds[p][0]) for p in params)
    hi = tuple(min(own[p][1], bounds[p][1]) for p in params)
    bad = [p for p, a, b in zip(params, lo, hi, strict=True) if not a < b]
    if bad:
        raise ValueError(f"the prior's support and the bounds do not overlap for {bad}")
    return lo, hi


def _columns(draws: Mapping[str, np.ndarray], params: Sequence[str]) -> np.ndarray:
    out = []
    for name in params:
        if name == "log10_distance":
            out.append(np.log10(draws["distance_pc"]))
        elif name == "distance_modulus":
            out.append(5.0 * np.log10(draws["distance_pc"] / 10.0))
        else:
            out.append(draws[name])
    return np.column_stack(out)


def prior_draws(
    n: int,
    params: Sequence[str],
    rng: np.random.Generator,
    config: PriorConfig | None = None,
    support: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    decorrelate: bool = True,
) -> tuple[np.ndarray, float]:
    """``n`` prior draws strictly inside ``support``, and the fraction of raw draws kept.

    With ``decorrelate`` the young regions hold :data:`MARGINAL_STARS_PER_REGION` stars on
    average: the same marginal density, without the clustering of a finite sample.

    Examples
    --------
    >>> theta, kept = prior_draws(1000, PHYSICAL_PARAMS, np.random.default_rng(0))
    >>> theta.shape, 0.8 < kept < 0.95
    ((1000, 6), True)
    """
    config = PriorConfig() if config is None else config
    lo, hi = support if support is not None else prior_support(params, config)
    if decorrelate:
        config = dataclasses.replace(config, young_stars_per_region=MARGINAL_STARS_PER_REGION)
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    parts, kept, drawn = [], 0, 0
    while kept < n:
        size = min(_DRAW_CHUNK, int((n - kept) * 1.2) + 64)
        theta = _columns(sample_prior(size, rng, config), params)
        inside = np.all((theta > lo_a) & (theta < hi_a), axis=1)
        parts.append(theta[inside])
        kept += int(inside.sum())
        drawn += size
    return np.concatenate(parts)[:n], kept / drawn


@dataclasses.dataclass(frozen=True)
class RvGivenPopulation:
    """The prior's exact ``p(R_V | population)``, the population read from ``log10_age``.

    ``(1 - p) N(R_V; core_mean, core_sigma) + p U(R_V; tail_lo, tail_hi)``, with ``p``
    ``tail_prob_young`` below ``young_below_log10_age`` and ``tail_prob_field`` above it,
    renormalised to the support ``(lo, hi)`` (the prior clips R_V there; draws on the clip
    are dropped from the fit, a 3e-5 share of the core).

    Examples
    --------
    >>> factor = RvGivenPopulation.from_prior(PriorConfig())
    >>> young, old = torch.tensor([6.5, 9.5]), torch.tensor([5.4, 5.4])
    >>> [round(v, 3) for v in factor.log_prob(old, young).exp().tolist()]  # R_V = 5.4
    [0.136, 0.023]
    """

    tail_prob_field: float
    tail_prob_young: float
    young_below_log10_age: float
    core_mean: float = RV_CORE[0]
    core_sigma: float = RV_CORE[1]
    tail_lo: float = RV_TAIL[0]
    tail_hi: float = RV_TAIL[1]
    lo: float = RV_RANGE[0]
    hi: float = RV_RANGE[1]

    @classmethod
    def from_prior(
        cls, config: PriorConfig, support: tuple[float, float] = RV_RANGE
    ) -> RvGivenPopulation:
        """The factor of a prior configuration on the R_V support ``support``."""
        return cls(
            tail_prob_field=float(config.rv_tail_field),
            tail_prob_young=float(config.rv_tail_young),
            young_below_log10_age=config.young_below_log10_age,
            lo=float(support[0]),
            hi=float(support[1]),
        )

    def _tail_prob(self, log10_age: Tensor) -> Tensor:
        young = log10_age < self.young_below_log10_age
        return torch.where(
            young,
            torch.full_like(log10_age, self.tail_prob_young),
            torch.full_like(log10_age, self.tail_prob_field),
        )

    def _core_mass(self) -> float:
        """Share of the core inside ``(lo, hi)``."""
        cdf = [
            0.5 * math.erfc(-(x - self.core_mean) / (self.core_sigma * math.sqrt(2.0)))
            for x in (self.lo, self.hi)
        ]
        return cdf[1] - cdf[0]

    def log_prob(self, rv: Tensor, log10_age: Tensor) -> Tensor:
        """``log p(R_V | population)``; ``-inf`` outside ``(lo, hi)``."""
        p = self._tail_prob(log10_age)
        z = (rv - self.core_mean) / self.core_sigma
        log_core = -0.5 * z * z - math.log(self.core_sigma * math.sqrt(2.0 * math.pi))
        in_tail = (rv >= self.tail_lo) & (rv <= self.tail_hi)
        log_tail = torch.where(
            in_tail,
            torch.full_like(rv, -math.log(self.tail_hi - self.tail_lo)),
            torch.full_like(rv, -math.inf),
        )
        mixed = torch.logaddexp(torch.log1p(-p) + log_core, torch.log(p) + log_tail)
        norm = torch.log((1.0 - p) * self._core_mass() + p)
        inside = (rv > self.lo) & (rv < self.hi)
        return torch.where(inside, mixed - norm, torch.full_like(rv, -math.inf))

    def sample(self, log10_age: Tensor) -> Tensor:
        """One R_V per entry of ``log10_age`` (torch's global RNG), inside ``(lo, hi)``."""
        out = torch.empty_like(log10_age)
        todo = torch.arange(log10_age.numel(), device=log10_age.device)
        flat_age, flat = log10_age.reshape(-1), out.view(-1)
        while todo.numel():
            p = self._tail_prob(flat_age[todo])
            core = self.core_mean + self.core_sigma * torch.randn_like(p)
            tail = self.tail_lo + (self.tail_hi - self.tail_lo) * torch.rand_like(p)
            draw = torch.where(torch.rand_like(p) < p, tail, core)
            flat[todo] = draw
            todo = todo[(draw <= self.lo) | (draw >= self.hi)]
        return out

    def to_dict(self) -> dict[str, float]:
        """Plain numbers, for the density's card."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MassGivenAge:
    """The prior's exact ``p(log10_mass | log10_age)``: the Kroupa (2001) IMF.

    Between ``min_mass`` and ``max_mass`` (Msun) and independent of every other parameter;
    with ``main_sequence_only``, truncated per star at the turn-off mass
    (:func:`~ysoscale.simulate.priors.turn_off_mass`) and renormalised, as
    :func:`~ysoscale.simulate.priors.sample_prior` draws it. A density in ``log10_mass``:
    ``ln(10) m dN/dm``.

    Examples
    --------
    >>> factor = MassGivenAge.from_prior(PriorConfig())
    >>> m = torch.linspace(math.log10(0.08), math.log10(20.0), 200_001, dtype=torch.float64)
    >>> p = factor.log_prob(m[1:-1], torch.full_like(m[1:-1], 9.0)).exp()
    >>> round(float(torch.trapezoid(p, m[1:-1])), 4)
    1.0
    """

    min_mass: float = 0.08
    max_mass: float = 20.0
    main_sequence_only: bool = False

    @classmethod
    def from_prior(cls, config: PriorConfig) -> MassGivenAge:
        """The factor of a prior configuration."""
        return cls(float(config.min_mass), float(config.max_mass), bool(config.main_sequence_only))

    def _segments(self, like: Tensor) -> tuple[Tensor, ...]:
        return tuple(
            torch.as_tensor(a, dtype=like.dtype, device=like.device)
            for a in kroupa_segments(self.min_mass, self.max_mass)
        )

    def _segment_of(self, m: Tensor) -> tuple[Tensor, ...]:
        """Per mass, its IMF segment's lower edge, 1 - slope, normalisation and CDF start."""
        lower, one, norm, cum = self._segments(m)
        seg = (torch.searchsorted(lower, m.contiguous(), right=True) - 1).clamp(0, len(one) - 1)
        return lower[seg], one[seg], norm[seg], cum[seg]

    def _cdf(self, m: Tensor) -> Tensor:
        e, p, norm, cum = self._segment_of(m)
        return torch.clamp(cum + norm * (m**p - e**p) / p, max=1.0)

    def _turn_off(self, log10_age: Tensor) -> Tensor:
        m_up = turn_off_mass(log10_age.double())
        return m_up.clamp(self.min_mass * (1 + 1e-9), self.max_mass).to(log10_age.dtype)

    def log_prob(self, log10_mass: Tensor, log10_age: Tensor) -> Tensor:
        """``log p(log10_mass | log10_age)``; ``-inf`` outside the IMF's range."""
        m = 10.0**log10_mass
        _, one, norm, _ = self._segment_of(m)
        log_p = torch.log(norm) + one * torch.log(m) + math.log(math.log(10.0))
        inside = (m > self.min_mass) & (m < self.max_mass)
        if self.main_sequence_only:
            m_up = self._turn_off(log10_age)
            log_p = log_p - torch.log(self._cdf(m_up))
            inside = inside & (m <= m_up)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def sample(self, log10_age: Tensor) -> Tensor:
        """One ``log10_mass`` per entry of ``log10_age`` (torch's global RNG); exact inverse CDF."""
        u = torch.rand(log10_age.shape, dtype=torch.float64)
        if self.main_sequence_only:
            u = u * self._cdf(self._turn_off(log10_age.detach().cpu().double()))
        log10_m = kroupa_log10_ppf(u.numpy(), self.min_mass, self.max_mass)
        return torch.as_tensor(log10_m, dtype=log10_age.dtype, device=log10_age.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the density's card."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PopulationPart:
    """One population's share of a :class:`PriorDensity`.

    The part covers ``log10_age`` in ``[age_lo, age_hi)`` (young regions and the field do
    not overlap in age, so the age says which part a point belongs to) and carries
    ``weight`` = P(population) × P(its flow parameters fall inside the support |
    population): the flow is fitted to, and normalised over, the draws inside the support,
    and the weight restores each part's share of the untruncated prior.
    """

    name: str
    age_lo: float
    age_hi: float
    weight: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the density's card."""
        return dataclasses.asdict(self)


_WHOLE = PopulationPart("all", -math.inf, math.inf, 1.0)


class PriorDensity(nn.Module):
    """Density ``p(theta)`` of the prior over ``params`` with support ``[lo, hi]``.

    ``p(theta) = weight_k p_flow_k(theta_flow) × p(R_V | age) × p(log10_mass | age)``,
    with ``k`` the population part whose age range holds ``theta``'s age, the last two
    factors exact (where given) and ``theta_flow`` the other parameters. Each part's flow:
    ``theta_flow -> logit((theta_flow - lo_k) / (hi_k - lo_k)) -> (u - shift_k) / scale_k
    -> NSF -> N(0, I)``, with ``[lo_k, hi_k]`` the support narrowed to the part's ages.

    Parameters
    ----------
    params : sequence of str
        Parameter names, in the order of the last axis of ``theta``.
    lo, hi : sequence of float
        Support (see :func:`prior_support`).
    parts : sequence of PopulationPart, optional
        Population parts, in increasing age; default one part for everything. More than
        one needs ``log10_age`` among the flow's parameters.
    shift, scale : sequence of sequences of float, optional
        Per part, the standardisation of its flow's logits (default 0 and 1).
    transforms, hidden, bins : int, tuple of int, int
        NSF transforms, hidden widths of each hyper-network, spline bins (every part).
    card : dict, optional
        Free-form metadata written next to the weights (fit settings, held-out NLL).
    rv_factor : RvGivenPopulation, optional
        Model R_V exactly by this factor (``params`` must hold ``rv`` and ``log10_age``).
    mass_factor : MassGivenAge, optional
        Model ``log10_mass`` exactly by this factor (``params`` must hold ``log10_mass``
        and ``log10_age``).

    Examples
    --------
    >>> density = PriorDensity(("mh", "rv"), (-2.0, 2.3), (0.5, 5.6), transforms=1,
    ...                        hidden=(8,))
    >>> density.log_prob(torch.tensor([[0.0, 3.1], [0.0, 9.0]])).isinf().tolist()
    [False, True]
    >>> exact = PriorDensity(("log10_mass", "log10_age", "rv"), (-1.09, 5.7, 2.3),
    ...                      (1.3, 10.1, 5.6), transforms=1, hidden=(8,),
    ...                      rv_factor=RvGivenPopulation.from_prior(PriorConfig()),
    ...                      mass_factor=MassGivenAge.from_prior(PriorConfig()))
    >>> exact.flow_params
    ('log10_age',)
    """

    def __init__(
        self,
        params: Sequence[str],
        lo: Sequence[float],
        hi: Sequence[float],
        parts: Sequence[PopulationPart] | None = None,
        shift: Sequence[Sequence[float]] | None = None,
        scale: Sequence[Sequence[float]] | None = None,
        *,
        transforms: int = 4,
        hidden: Sequence[int] = (128, 128),
        bins: int = 8,
        card: Mapping[str, Any] | None = None,
        rv_factor: RvGivenPopulation | None = None,
        mass_factor: MassGivenAge | None = None,
    ) -> None:
        super().__init__()
        self.params = tuple(params)
        n = len(self.params)
        assert len(lo) == len(hi) == n, "lo and hi need one value per parameter"
        for factor, name in ((rv_factor, "rv"), (mass_factor, "log10_mass")):
            if factor is not None and not {name, "log10_age"} <= set(self.params):
                raise ValueError(
                    f"an exact {name} factor needs {name!r} and 'log10_age' among the "
                    f"parameters; got {self.params}"
                )
        self.rv_factor = rv_factor
        self.mass_factor = mass_factor
        exact = {"rv"} if rv_factor is not None else set()
        exact |= {"log10_mass"} if mass_factor is not None else set()
        self.flow_params = tuple(p for p in self.params if p not in exact)
        self.parts = tuple(parts) if parts else (_WHOLE,)
        if len(self.parts) > 1 and "log10_age" not in self.flow_params:
            raise ValueError("population parts need 'log10_age' among the flow's parameters")
        if any(a.age_hi > b.age_lo for a, b in zip(self.parts, self.parts[1:], strict=False)):
            raise ValueError(f"population parts must be in increasing, disjoint ages: {parts}")
        m, k = len(self.flow_params), len(self.parts)
        self.architecture = {
            "transforms": int(transforms),
            "hidden": [int(h) for h in hidden],
            "bins": int(bins),
        }
        self.card: dict[str, Any] = dict(card or {})
        self.flows = nn.ModuleList(
            zuko.flows.NSF(
                features=m, context=0, transforms=transforms, hidden_features=tuple(hidden),
                bins=bins,
            )
            for _ in range(k)
        )  # fmt: skip
        flow_index = [self.params.index(p) for p in self.flow_params]
        part_lo = torch.tensor([list(lo)] * k, dtype=torch.float32)[:, flow_index]
        part_hi = torch.tensor([list(hi)] * k, dtype=torch.float32)[:, flow_index]
        if "log10_age" in self.flow_params:
            j = self.flow_params.index("log10_age")
            for i, part in enumerate(self.parts):
                part_lo[i, j] = max(float(part_lo[i, j]), part.age_lo)
                part_hi[i, j] = min(float(part_hi[i, j]), part.age_hi)
        shift = [[0.0] * m] * k if shift is None else [list(s) for s in shift]
        scale = [[1.0] * m] * k if scale is None else [list(s) for s in scale]
        assert len(shift) == len(scale) == k and all(len(s) == m for s in shift + scale), (
            "shift and scale need, per part, one value per flow parameter"
        )
        weights = torch.tensor([part.weight for part in self.parts], dtype=torch.float64)
        self.register_buffer("lo", torch.tensor(list(lo), dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(list(hi), dtype=torch.float32))
        self.register_buffer("part_lo", part_lo)
        self.register_buffer("part_hi", part_hi)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("log_weight", weights.log().float())
        self.register_buffer("flow_index", torch.tensor(flow_index), persistent=False)
        edges = [part.age_lo for part in self.parts[1:]]
        self.register_buffer("age_edges", torch.tensor(edges), persistent=False)

    def distribution(self, part: int = 0) -> Distribution:
        """Part ``part``'s flow as a distribution over the ``flow_params`` columns of theta.

        Normalised over the part's box; without exact factors and with one part that is
        the whole density (event shape ``(n_param,)``).
        """
        flow = self.flows[part]()
        shift, scale = self.shift[part], self.scale[part]
        standardise = AffineTransform(-shift / scale, 1.0 / scale)
        box = BoxToRealTransform(self.part_lo[part], self.part_hi[part])
        return NormalizingFlow(ComposedTransform(box, standardise, flow.transform), flow.base)

    def _part_of(self, theta: Tensor) -> Tensor:
        """Index of the population part of each row (by ``log10_age``)."""
        if len(self.parts) == 1:
            return torch.zeros(theta.shape[:-1], dtype=torch.long, device=theta.device)
        age = theta[..., self.params.index("log10_age")].contiguous()
        return torch.bucketize(age, self.age_edges.to(age), right=True)

    def _exact_log_prob(self, theta: Tensor) -> Tensor:
        """The exact factors' log density (0 without any)."""
        log_p = theta.new_zeros(theta.shape[:-1])
        age = theta[..., self.params.index("log10_age")] if "log10_age" in self.params else None
        if self.rv_factor is not None:
            log_p = log_p + self.rv_factor.log_prob(theta[..., self.params.index("rv")], age)
        if self.mass_factor is not None:
            mass = theta[..., self.params.index("log10_mass")]
            log_p = log_p + self.mass_factor.log_prob(mass, age)
        return log_p

    def _joint_log_prob(self, theta: Tensor) -> Tensor:
        """Log density of points inside the support (parts' flows, then exact factors)."""
        flat = theta.reshape(-1, len(self.params))
        part = self._part_of(flat)
        log_p = flat.new_empty(len(flat))
        for k in range(len(self.parts)):
            if len(self.parts) == 1:
                rows = slice(None)
            else:
                rows = torch.nonzero(part == k).squeeze(-1)
                if rows.numel() == 0:
                    continue
            x = flat[rows][:, self.flow_index]
            log_p[rows] = self.distribution(k).log_prob(x) + self.log_weight[k]
        return log_p.reshape(theta.shape[:-1]) + self._exact_log_prob(theta)

    def log_prob(self, theta: Tensor) -> Tensor:
        """``log p(theta)``, shape ``theta.shape[:-1]``; ``-inf`` outside the support.

        Physical units: the Jacobian of the logit map is included.
        """
        theta = torch.as_tensor(theta, dtype=self.lo.dtype, device=self.lo.device)
        assert theta.shape[-1] == len(self.params), (
            f"theta must end in {len(self.params)} parameters {self.params}, "
            f"got shape {tuple(theta.shape)}"
        )
        inside = torch.all((theta >= self.lo) & (theta <= self.hi), dim=-1)
        safe = torch.where(inside[..., None], theta, 0.5 * (self.lo + self.hi))
        log_p = self._joint_log_prob(safe)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    @torch.no_grad()
    def sample(self, shape: Sequence[int] = ()) -> Tensor:
        """Draws from the density, shape ``(*shape, n_param)`` (torch's global RNG)."""
        shape = tuple(shape)
        total = math.prod(shape)
        share = self.log_weight.double().softmax(0)
        counts = torch.bincount(
            torch.multinomial(share, total, replacement=True), minlength=len(self.parts)
        ) if total else torch.zeros(len(self.parts), dtype=torch.long)  # fmt: skip
        pieces = [self.distribution(k).sample((int(c),)) for k, c in enumerate(counts) if c]
        part = torch.cat(pieces) if pieces else self.lo.new_empty(0, len(self.flow_params))
        part = part[torch.randperm(len(part))]
        out = part.new_empty(total, len(self.params))
        out[:, self.flow_index] = part
        age = out[:, self.params.index("log10_age")] if "log10_age" in self.params else None
        if self.rv_factor is not None:
            out[:, self.params.index("rv")] = self.rv_factor.sample(age)
        if self.mass_factor is not None:
            out[:, self.params.index("log10_mass")] = self.mass_factor.sample(age)
        return out.reshape(*shape, len(self.params))

    def save(self, path_dir: str | Path) -> Path:
        """Write the weights (safetensors) and a JSON card; never pickle."""
        path = Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        own = {
            "format": FORMAT_VERSION,
            "params": list(self.params),
            "architecture": self.architecture,
            "parts": [part.to_dict() for part in self.parts],
            "rv_factor": None if self.rv_factor is None else self.rv_factor.to_dict(),
            "mass_factor": None if self.mass_factor is None else self.mass_factor.to_dict(),
            "zuko_version": zuko.__version__,
        }
        content = {**own, **{k: v for k, v in self.card.items() if k not in own}}
        (path / CARD_FILE).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path_dir: str | Path, map_location: str | torch.device = "cpu") -> PriorDensity:
        """Rebuild a density written by :meth:`save`.

        Examples
        --------
        >>> import tempfile
        >>> density = PriorDensity(("mh",), (-2.0,), (0.5,), transforms=1, hidden=(8,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     again = PriorDensity.load(density.save(tmp))
        >>> x = torch.tensor([[-0.3]])
        >>> bool(again.log_prob(x) == density.log_prob(x))
        True
        """
        path = Path(path_dir)
        card = json.loads((path / CARD_FILE).read_text())
        state = load_file(str(path / WEIGHTS_FILE), device="cpu")
        if card.get("format", 1) == 1:
            card, state = _from_format_1(card, state)
        if card["format"] != FORMAT_VERSION:
            raise ValueError(
                f"{path} holds a prior density of format {card['format']}; this ysoscale "
                f"reads formats 1 to {FORMAT_VERSION}"
            )
        arch = card["architecture"]
        factors = {
            key: None if card.get(key) is None else kind(**card[key])
            for key, kind in (("rv_factor", RvGivenPopulation), ("mass_factor", MassGivenAge))
        }
        model = cls(
            card["params"],
            state["lo"].tolist(),
            state["hi"].tolist(),
            [PopulationPart(**part) for part in card["parts"]],
            transforms=arch["transforms"],
            hidden=arch["hidden"],
            bins=arch["bins"],
            card=card,
            **factors,
        )
        model.load_state_dict(state, strict=True)
        return model.to(torch.device(map_location)).eval()


def _from_format_1(
    card: dict[str, Any], state: dict[str, Tensor]
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A format-1 density (one flow, no parts, no mass factor) as format 2: same log p."""
    state = {
        ("flows.0." + k[len("flow.") :] if k.startswith("flow.") else k): v
        for k, v in state.items()
    }
    params = card["params"]
    exact = {"rv"} if card.get("rv_factor") else set()
    index = [params.index(p) for p in params if p not in exact]
    state["shift"], state["scale"] = state["shift"][None], state["scale"][None]
    state["part_lo"], state["part_hi"] = state["lo"][index][None], state["hi"][index][None]
    state["log_weight"] = torch.zeros(1)
    return {**card, "format": FORMAT_VERSION, "parts": [_WHOLE.to_dict()]}, state


def _population_parts(
    prior: PriorConfig, age_range: tuple[float, float] | None, split: bool
) -> list[tuple[str, PriorConfig, float, tuple[float, float]]]:
    """(name, prior of that population, its share, its age range) for each part to fit."""
    whole = age_range or (-math.inf, math.inf)
    if not split or age_range is None or prior.population != "all":
        return [("all", prior, 1.0, whole)]
    young_hi = prior.young_below_log10_age
    return [
        ("young", dataclasses.replace(prior, population="young"), prior.young_fraction,
         (whole[0], young_hi)),
        ("field", dataclasses.replace(prior, population="field"), 1.0 - prior.young_fraction,
         (young_hi, whole[1])),
    ]  # fmt: skip


def _fit_flow(
    model: PriorDensity,
    k: int,
    train: Tensor,
    held_out: Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int | None,
    max_seconds: float | None,
    seed: int,
    progress: bool,
) -> list[dict[str, float]]:
    """Maximum-likelihood fit of part ``k``'s flow to its draws (flow columns); keeps the best.

    Adam with a cosine decay; returns the per-epoch history.
    """
    start = time.perf_counter()
    flow = model.flows[k]
    with torch.no_grad():  # standardise the flow's logits on the training draws
        logits = BoxToRealTransform(model.part_lo[k], model.part_hi[k])(train)
        model.shift[k].copy_(logits.mean(0))
        model.scale[k].copy_(logits.std(0))
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    steps_per_epoch = max(1, len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)

    def held_out_nll() -> float:
        with torch.no_grad():
            parts = [model.distribution(k).log_prob(b) for b in held_out.split(65536)]
            return float(-torch.cat(parts).mean())

    best, best_state, history = math.inf, None, []
    for epoch in range(epochs):
        flow.train()
        order = torch.randperm(len(train), generator=gen).to(train.device)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = train[order[step * batch_size : (step + 1) * batch_size]]
            loss = -model.distribution(k).log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        flow.eval()
        nll = held_out_nll()
        history.append(
            {"epoch": epoch + 1, "train_nll": total / steps_per_epoch, "validation_nll": nll}
        )
        if progress:
            print(
                f"prior density [{model.parts[k].name}] epoch {epoch + 1}: train "
                f"{total / steps_per_epoch:.4f} held-out {nll:.4f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        if nll < best:
            best = nll
            best_state = {n: v.detach().clone() for n, v in flow.state_dict().items()}
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        best_epoch = min(range(len(history)), key=lambda i: history[i]["validation_nll"])
        if patience is not None and len(history) - 1 - best_epoch >= patience:
            break
    if best_state is not None:
        flow.load_state_dict(best_state)
    return history


def fit_prior_density(
    n: int = 1_000_000,
    params: Sequence[str] = PHYSICAL_PARAMS,
    seed: int = 0,
    *,
    prior: PriorConfig | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    n_validation: int | None = None,
    epochs: int = 12,
    batch_size: int = 4096,
    learning_rate: float = 2e-3,
    transforms: int = 4,
    hidden: Sequence[int] = (128, 128),
    bins: int = 8,
    patience: int | None = None,
    max_minutes: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    exact_rv: bool = True,
    exact_mass: bool = True,
    split_populations: bool = True,
) -> PriorDensity:
    """Fit a :class:`PriorDensity` to draws of the prior by maximum likelihood.

    Each population part's flow is fitted to ``n`` draws of that population alone (Adam,
    cosine learning-rate decay; the weights with the best held-out NLL of the part are
    kept), and its weight is the population's share times the fraction of its draws inside
    the support. The card's ``validation_nll`` is the whole density's mean ``-log p`` (in
    physical units; lower is better) on ``n_validation`` fresh draws of the full prior,
    against which :func:`load_default_prior_density`'s users can check it on new draws.

    Parameters
    ----------
    n : int
        Training draws (inside the support) per population part.
    params : sequence of str
        Parameters, in the estimator's order.
    seed : int
        Seeds the prior draws (``SeedSequence([seed, 0, k])`` part ``k``'s training draws,
        ``[seed, 1, k]`` its held-out ones, ``[seed, 1]`` the full prior's) and the flows'
        initialisation.
    prior : PriorConfig, optional
        Must be the prior of the training store; default ``PriorConfig()``, the prior of
        ``SimulationConfig()`` and of the default model's store.
    bounds : dict, optional
        The estimator's box (default :data:`~ysoscale.nn.config.DEFAULT_PARAM_BOUNDS`).
    n_validation : int, optional
        Held-out draws, per part and for the whole density (default ``n // 10``).
    epochs, batch_size, learning_rate : int, int, float
        Optimisation, per part.
    transforms, hidden, bins
        Flow size (see :class:`PriorDensity`).
    patience : int, optional
        Stop a part after this many epochs without a better held-out NLL.
    max_minutes : float, optional
        Wall time for the whole fit, shared evenly by the parts (each keeps its best
        weights so far).
    device : str or torch.device
        Where to fit (a GPU fits 1e6 draws in a minute); the result is returned on the CPU.
    progress : bool
        Print one line per epoch.
    exact_rv, exact_mass : bool
        Where ``params`` hold ``rv`` (``log10_mass``) and ``log10_age``, model it by the
        prior's exact :class:`RvGivenPopulation` (:class:`MassGivenAge`) rather than in
        the flow (see the module docstring).
    split_populations : bool
        Where ``params`` hold ``log10_age`` and the prior mixes young regions and field,
        fit one flow per population (:class:`PopulationPart`); otherwise one flow.

    Examples
    --------
    >>> density = fit_prior_density(n=2000, epochs=1, transforms=1, hidden=(16,))
    >>> [part.name for part in density.parts], density.flow_params
    (['young', 'field'], ('log10_age', 'mh', 'log10_distance', 'av'))
    """
    start = time.perf_counter()
    prior = PriorConfig() if prior is None else prior
    params = tuple(params)
    lo, hi = prior_support(params, prior, bounds)
    n_validation = max(1, n // 10) if n_validation is None else int(n_validation)
    device = torch.device(device)
    has_age = "log10_age" in params
    rv_factor = mass_factor = None
    if exact_rv and has_age and "rv" in params:
        j = params.index("rv")
        rv_factor = RvGivenPopulation.from_prior(prior, (lo[j], hi[j]))
    if exact_mass and has_age and "log10_mass" in params:
        mass_factor = MassGivenAge.from_prior(prior)
    age_range = (lo[params.index("log10_age")], hi[params.index("log10_age")]) if has_age else None
    specs = _population_parts(prior, age_range, split_populations)
    placeholder = [PopulationPart(name, *ages, 1.0) for name, _, _, ages in specs]
    torch.manual_seed(seed)
    model = PriorDensity(
        params, lo, hi, placeholder, transforms=transforms, hidden=hidden, bins=bins,
        rv_factor=rv_factor, mass_factor=mass_factor,
    ).to(device)  # fmt: skip
    flow_params = model.flow_params
    parts, histories, part_nll = [], {}, {}
    for k, (name, part_prior, share, _) in enumerate(specs):
        box = (model.part_lo[k].tolist(), model.part_hi[k].tolist())
        train_np, kept = prior_draws(
            n, flow_params, np.random.default_rng([seed, 0, k]), part_prior, box
        )
        valid_np, _ = prior_draws(
            n_validation, flow_params, np.random.default_rng([seed, 1, k]), part_prior, box
        )
        as_tensor = functools.partial(torch.as_tensor, dtype=torch.float32, device=device)
        histories[name] = _fit_flow(
            model, k, as_tensor(train_np), as_tensor(valid_np), epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, patience=patience,
            max_seconds=None if max_minutes is None else 60.0 * max_minutes / len(specs),
            seed=seed + k, progress=progress,
        )  # fmt: skip
        part_nll[name] = min(h["validation_nll"] for h in histories[name])
        own = placeholder[k]
        parts.append(PopulationPart(name, own.age_lo, own.age_hi, share * kept))
    weights = torch.tensor([p.weight for p in parts], dtype=torch.float64)
    model.parts = tuple(parts)
    model.log_weight.copy_(weights.log().float())
    model.eval()
    whole_np, kept_whole = prior_draws(
        n_validation, params, np.random.default_rng([seed, 1]), prior, (lo, hi)
    )
    with torch.no_grad():
        whole = torch.as_tensor(whole_np, dtype=torch.float32, device=device)
        nll = float(-torch.cat([model.log_prob(b) for b in whole.split(65536)]).double().mean())
    exact = [f for f, on in (("rv", rv_factor), ("log10_mass", mass_factor)) if on is not None]
    model.card = {
        "n_train_per_part": n,
        "n_validation": n_validation,
        "kept_fraction": kept_whole,
        "validation_nll": nll,
        "part_validation_nll": part_nll,
        "history": histories,
        "epochs_run": {name: len(h) for name, h in histories.items()},
        "fit_seconds": time.perf_counter() - start,
        "seed": seed,
        "prior": prior.to_dict(),
        "draws": f"young_stars_per_region={MARGINAL_STARS_PER_REGION} (same marginal)",
        "units": "log_prob in the physical units of params (logit Jacobian included)",
        "exact_factors": exact,
        "fit": {
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "epochs": epochs,
            "device": device.type,
        },
    }
    return model.cpu().eval()


def default_prior_density_path() -> Path:
    """Folder of the shipped prior density (``ysoscale/data/prior_density``)."""
    return Path(str(resources.files("ysoscale") / "data" / DEFAULT_DIR))


def load_default_prior_density(map_location: str | torch.device = "cpu") -> PriorDensity:
    """The shipped density of the default training prior (physical parameters).

    Examples
    --------
    >>> density = load_default_prior_density()
    >>> density.params == PHYSICAL_PARAMS
    True
    """
    path = default_prior_density_path()
    if not (path / WEIGHTS_FILE).exists():
        raise FileNotFoundError(
            f"no shipped prior density in {path}; fit one with "
            "ysoscale.infer.prior_density.fit_prior_density(...).save(path)"
        )
    return PriorDensity.load(path, map_location)

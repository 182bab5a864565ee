"""Quantile recalibration of posterior samples, per condition pattern.

An estimator is calibrated when the probability integral transform (PIT) ``u = F(theta |
x)`` of the true parameter under each star's posterior ``F`` is uniform over stars drawn
from the prior. Where it is not, let ``R`` be the distribution function of ``u`` over
held-out simulated stars: the recalibrated posterior ``F' = R(F)`` has ``u' = R(u)``
uniform (Kuleshov, Fenner & Ermon 2018, "Accurate uncertainties for deep learning using
calibrated regression"). Samples of ``F'`` follow from those of ``F`` by a monotone map per
star and parameter: the sample of rank ``k`` among ``L`` sits at level ``k / (L + 1)``
(where the rank-based PIT of :func:`ysoscale.validate.calibration.pit` puts it) and moves
to the star's own quantile at level ``R^-1(k / (L + 1))``, interpolated between its order
statistics and beyond them along a normal tail.

What it does and does not promise:

* Every sample keeps its rank in every parameter, so the dependence between parameters
  (the samples' copula) is the estimator's; only the marginals change.
* The calibration is marginal: on average over the stars of a pattern drawn from the
  prior, not for every ``x`` (no map of ``R`` alone can promise that).
* ``R`` depends on what the estimator saw, so it is fitted per condition pattern (the bit
  mask of surveys and parallax of :func:`ysoscale.infer.kernel.condition_pattern`); a
  pattern with fewer than ``min_stars`` held-out stars uses the map fitted on all of them.

The map is stored beside the weights as ``recalibration.json`` (plain numbers, no
pickle) and applied by the inference kernel to the estimator's own samples.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> u = rng.random((4000, 1)) ** 1.5          # PITs piled at low levels: too-high posteriors
>>> recal = QuantileRecalibration.fit(u, np.ones(4000, dtype=int), ("av",), min_stars=1000)
>>> samples = rng.normal(size=(2, 32, 1))
>>> moved = recal.apply(samples, np.array([1, 1]), ("av",))
>>> bool(np.all(np.diff(np.sort(moved, axis=1), axis=1) >= 0))  # ranks kept, values moved
True
>>> bool(np.median(moved) < np.median(samples))   # the truths sat low: samples move down
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erfc, ndtri

RECALIBRATION_FILE = "recalibration.json"
"""File of a model directory that holds its recalibration map."""

ALL_PATTERNS = -1
"""Key of the map fitted on the stars of every pattern, used where a pattern has no map."""

DEFAULT_LEVELS = np.linspace(0.025, 0.975, 39)
"""Levels at which the PIT quantiles are stored (steps of 0.025)."""

FORMAT_VERSION = 1


@dataclass(frozen=True)
class QuantileRecalibration:
    """Per-pattern maps from nominal to recalibrated posterior levels.

    Attributes
    ----------
    params : names of the parameters the maps cover
    levels : (K,) ascending levels in (0, 1)
    pit_quantiles : {pattern: (K, n_param) array}
        The quantiles of the held-out PITs at ``levels``, i.e. ``R^-1(levels)``. Key
        :data:`ALL_PATTERNS` is the map of all stars, always present. A column of NaN
        (too few stars of the pattern had that parameter) falls back to it.
    n_stars : {pattern: (n_param,) int array} of the PITs each map was fitted on
    bounds : {param: (lo, hi)} values a moved sample is clipped to (the prior's range)
    fitted_on : free-form record of the stars and the model the maps were fitted with
    """

    params: tuple[str, ...]
    levels: np.ndarray
    pit_quantiles: Mapping[int, np.ndarray]
    n_stars: Mapping[int, np.ndarray]
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        levels = np.asarray(self.levels, dtype=float)
        if levels.ndim != 1 or not (np.all(np.diff(levels) > 0) and 0 < levels[0]
                                    and levels[-1] < 1):  # fmt: skip
            raise ValueError("levels must be ascending and inside (0, 1)")
        if ALL_PATTERNS not in self.pit_quantiles:
            raise ValueError("a recalibration needs the map of all patterns (ALL_PATTERNS)")
        for pattern, table in self.pit_quantiles.items():
            if np.shape(table) != (len(levels), len(self.params)):
                raise ValueError(
                    f"pattern {pattern}: PIT quantiles of shape {np.shape(table)}, expected "
                    f"({len(levels)}, {len(self.params)})"
                )
        if not np.all(np.isfinite(self.pit_quantiles[ALL_PATTERNS])):
            raise ValueError("the map of all patterns must be finite for every parameter")

    @classmethod
    def fit(
        cls,
        pit: np.ndarray,
        pattern: np.ndarray,
        params: Sequence[str],
        *,
        min_stars: int = 2000,
        levels: np.ndarray = DEFAULT_LEVELS,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        fitted_on: Mapping[str, Any] | None = None,
    ) -> QuantileRecalibration:
        """The maps of held-out PITs ``pit`` (star, param) of stars of condition ``pattern``
        (star,); NaN PITs (no truth, too few samples) are left out per parameter.

        A pattern gets its own map for a parameter when it has at least ``min_stars``
        finite PITs of it; its quantiles then scatter by about
        ``sqrt(level (1 - level) / min_stars)`` (0.011 at the median for 2,000 stars).
        """
        pit = np.asarray(pit, dtype=float)
        pattern = np.asarray(pattern).astype(np.int64)
        if pit.ndim != 2 or pit.shape[1] != len(params) or pattern.shape != pit.shape[:1]:
            raise ValueError(
                f"pit must be (star, {len(params)}) and pattern (star,), got {pit.shape} "
                f"and {pattern.shape}"
            )
        levels = np.asarray(levels, dtype=float)
        if np.any(np.isfinite(pit) & ((pit < 0) | (pit > 1))):
            raise ValueError("PIT values must lie in [0, 1]")
        counts = np.isfinite(pit).sum(axis=0)
        if np.any(counts < min_stars):
            short = [p for p, c in zip(params, counts, strict=True) if c < min_stars]
            raise ValueError(
                f"fewer than {min_stars} finite PITs of {short} in all: too few stars to "
                "fit a recalibration"
            )
        tables = {ALL_PATTERNS: _pit_quantiles(pit, levels)}
        n_stars = {ALL_PATTERNS: counts}
        for key in np.unique(pattern):
            rows = pit[pattern == key]
            n = np.isfinite(rows).sum(axis=0)
            if np.any(n >= min_stars):
                table = _pit_quantiles(rows, levels)
                table[:, n < min_stars] = np.nan
                tables[int(key)], n_stars[int(key)] = table, n
        return cls(tuple(params), levels, tables, n_stars, dict(bounds or {}),
                   dict(fitted_on or {}))  # fmt: skip

    def level_knots(self, pattern: int) -> np.ndarray:
        """``(K + 2, n_param)``: ``R^-1`` at ``[0, *levels, 1]`` for ``pattern``."""
        pooled = self.pit_quantiles[ALL_PATTERNS]
        table = np.asarray(self.pit_quantiles.get(int(pattern), pooled), dtype=float)
        table = np.where(np.isfinite(table), table, pooled)
        edge = np.ones((1, len(self.params)))
        return np.concatenate([0.0 * edge, table, edge])

    def apply(
        self, samples: np.ndarray, pattern: np.ndarray, sample_params: Sequence[str]
    ) -> np.ndarray:
        """Recalibrated copy of ``samples`` (star, sample, n) of parameters
        ``sample_params`` for stars of condition ``pattern`` (star,).

        Parameters not in :attr:`params` are returned as they are, and so are a star's
        samples of a parameter with fewer than two finite values. NaN samples stay NaN.
        """
        samples = np.asarray(samples)
        pattern = np.asarray(pattern).astype(np.int64)
        assert samples.ndim == 3 and samples.shape[2] == len(sample_params), (
            f"samples {samples.shape} do not match {len(sample_params)} parameters"
        )
        assert pattern.shape == samples.shape[:1], f"pattern {pattern.shape} vs {samples.shape}"
        out = samples.copy()
        level_grid = np.concatenate([[0.0], self.levels, [1.0]])
        for key in np.unique(pattern):
            rows = np.flatnonzero(pattern == key)
            knots = self.level_knots(int(key))
            for j, name in enumerate(self.params):
                if name not in sample_params:
                    continue
                column = sample_params.index(name)
                lo, hi = self.bounds.get(name, (-np.inf, np.inf))
                out[rows, :, column] = _move_to_levels(
                    samples[rows, :, column], level_grid, knots[:, j], lo, hi
                ).astype(samples.dtype)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able content (:meth:`from_dict` reads it back)."""

        def listed(table: np.ndarray) -> list:
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in table]

        return {
            "format": FORMAT_VERSION,
            "params": list(self.params),
            "levels": [float(v) for v in self.levels],
            "patterns": {
                str(key): {
                    "pit_quantiles": listed(np.asarray(table)),
                    "n_stars": [int(v) for v in self.n_stars[key]],
                }
                for key, table in self.pit_quantiles.items()
            },  # fmt: skip
            "bounds": {k: [float(lo), float(hi)] for k, (lo, hi) in self.bounds.items()},
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, content: Mapping[str, Any]) -> QuantileRecalibration:
        """The recalibration of :meth:`to_dict` output."""
        if content.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"recalibration format {content.get('format')!r} is not {FORMAT_VERSION}"
            )
        tables, n_stars = {}, {}
        for key, entry in content["patterns"].items():
            table = np.array([[np.nan if v is None else v for v in row]
                              for row in entry["pit_quantiles"]], dtype=float)  # fmt: skip
            tables[int(key)] = table
            n_stars[int(key)] = np.asarray(entry["n_stars"], dtype=np.int64)
        return cls(tuple(content["params"]), np.asarray(content["levels"], dtype=float),
                   tables, n_stars, {k: (float(lo), float(hi))
                                     for k, (lo, hi) in content.get("bounds", {}).items()},
                   dict(content.get("fitted_on", {})))  # fmt: skip

    def save(self, path_dir: str | Path) -> Path:
        """Write :data:`RECALIBRATION_FILE` into the model directory ``path_dir``."""
        path = Path(path_dir) / RECALIBRATION_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path_dir: str | Path) -> QuantileRecalibration | None:
        """The recalibration saved in the model directory ``path_dir``; None if it has none."""
        path = Path(path_dir) / RECALIBRATION_FILE
        if not path.exists():
            return None
        return cls.from_dict(json.loads(path.read_text()))

    def worst_shift(self) -> float:
        """Largest ``|R^-1(level) - level|`` over patterns, levels and parameters: how far
        from the identity (calibrated) the maps are."""
        return float(max(np.nanmax(np.abs(np.asarray(t) - self.levels[:, None]))
                         for t in self.pit_quantiles.values()))  # fmt: skip


def _pit_quantiles(pit: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(K, n_param) quantiles of the finite PITs of each column (NaN: none)."""
    table = np.full((len(levels), pit.shape[1]), np.nan)
    for j in range(pit.shape[1]):
        finite = pit[:, j][np.isfinite(pit[:, j])]
        if len(finite):
            table[:, j] = np.quantile(finite, levels)
    return np.maximum.accumulate(np.clip(table, 0.0, 1.0), axis=0)


class _SampleQuantiles:
    """Each row's quantile function from its finite samples: the sample of rank ``k`` (of
    ``m``) at level ``k / (m + 1)``, linear in between, and beyond the extreme samples a
    normal tail through the extreme and the median sample. Rows with fewer than two finite
    samples are not :attr:`usable`."""

    def __init__(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=float)
        self.finite = np.isfinite(x)
        m = self.finite.sum(axis=1)
        self.usable = m >= 2
        self.order = np.argsort(np.where(self.finite, x, np.inf), axis=1, kind="stable")
        xs = np.take_along_axis(x, self.order, axis=1)  # finite first, ascending
        self.sorted_finite = np.isfinite(xs)
        self.xs = np.where(self.sorted_finite, xs, 0.0)
        self.m = np.maximum(m, 2)[:, None].astype(float)
        self.last = (self.m - 1).astype(np.int64)
        low_anchor = np.maximum(self.last // 2, 1)  # never the extreme itself
        high_anchor = np.minimum(self.last // 2, self.last - 1)
        self.z_edge = ndtri(1 / (self.m + 1))  # level of the lowest sample
        z_low = ndtri((low_anchor + 1) / (self.m + 1))
        z_high = ndtri((high_anchor + 1) / (self.m + 1))
        self.first = self.xs[:, :1]
        self.top = np.take_along_axis(self.xs, self.last, axis=1)
        self.scale_low = (np.take_along_axis(self.xs, low_anchor, axis=1) - self.first) / (
            z_low - self.z_edge
        )
        self.scale_high = (self.top - np.take_along_axis(self.xs, high_anchor, axis=1)) / (
            -self.z_edge - z_high
        )

    def sample_levels(self) -> np.ndarray:
        """(rows, samples): the level ``k / (m + 1)`` of each sample of rank ``k``."""
        n_rows, n_samples = self.order.shape
        rank = np.empty_like(self.order)
        every = np.broadcast_to(np.arange(n_samples), (n_rows, n_samples))
        np.put_along_axis(rank, self.order, every, axis=1)
        return (rank + 1) / (self.m + 1)

    def value(self, level: np.ndarray) -> np.ndarray:
        """(rows, k): the row's quantile at each ``level`` (rows, k) in (0, 1)."""
        position = level * (self.m + 1) - 1  # fractional 0-based index among the sorted
        i0 = np.clip(np.floor(position).astype(np.int64), 0, self.last - 1)
        left = np.take_along_axis(self.xs, i0, axis=1)
        right = np.take_along_axis(self.xs, i0 + 1, axis=1)
        inside = left + (position - i0) * (right - left)
        z = ndtri(level)
        below = self.first + self.scale_low * (z - self.z_edge)
        above = self.top + self.scale_high * (z + self.z_edge)
        return np.where(position < 0, below, np.where(position > self.m - 1, above, inside))

    def level(self, value: np.ndarray) -> np.ndarray:
        """(rows,): the level of ``value`` (rows,) under the row's quantile function, the
        inverse of :meth:`value` (NaN for rows not usable or a non-finite value)."""
        v = np.asarray(value, dtype=float)[:, None]
        n_below = (self.sorted_finite & (self.xs < v)).sum(axis=1)
        i0 = np.clip(n_below[:, None] - 1, 0, self.last - 1)
        left = np.take_along_axis(self.xs, i0, axis=1)
        right = np.take_along_axis(self.xs, i0 + 1, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(right > left, (v - left) / (right - left), 0.5)
            inside = (i0 + 1 + np.clip(frac, 0.0, 1.0)) / (self.m + 1)
            below = _normal_cdf(self.z_edge + (v - self.first) / self.scale_low)
            above = _normal_cdf(-self.z_edge + (v - self.top) / self.scale_high)
        below = np.where(self.scale_low > 0, below, 0.0)
        above = np.where(self.scale_high > 0, above, 1.0)
        level = np.where(v < self.first, below, np.where(v > self.top, above, inside))[:, 0]
        return np.where(self.usable & np.isfinite(v[:, 0]), level, np.nan)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * erfc(-np.asarray(z) / np.sqrt(2.0))


def smooth_pit(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PIT (star, param) of ``truth`` (star, param) under each star's quantile function of
    ``samples`` (star, sample, param): the function :meth:`QuantileRecalibration.apply`
    moves samples along, so that maps fitted on these PITs recalibrate exactly that
    function (the rank-based PIT of the coverage check spreads every truth beyond the
    extreme samples uniformly over the outermost ``1 / (L + 1)``, losing how far beyond it
    lies). NaN where a star has fewer than two finite samples or no finite truth.

    >>> samples = np.arange(1.0, 4.0)[None, :, None]        # 1, 2, 3 at levels 1/4 .. 3/4
    >>> smooth_pit(samples, np.array([[2.5]])).round(3).tolist()
    [[0.625]]
    """
    samples, truth = np.asarray(samples, dtype=float), np.asarray(truth, dtype=float)
    assert samples.ndim == 3 and truth.shape == (samples.shape[0], samples.shape[2]), (
        f"samples {samples.shape} and truth {truth.shape} do not match"
    )
    return np.stack([_SampleQuantiles(samples[:, :, j]).level(truth[:, j])
                     for j in range(truth.shape[1])], axis=1)  # fmt: skip


def _move_to_levels(
    x: np.ndarray, level_grid: np.ndarray, target_grid: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Each row's samples moved from their level (:class:`_SampleQuantiles`) to the row's
    quantile at the level ``target_grid`` maps it to, clipped to ``[lo, hi]``."""
    x = np.asarray(x, dtype=float)
    quantiles = _SampleQuantiles(x)
    target = np.interp(quantiles.sample_levels(), level_grid, target_grid)
    moved = np.clip(quantiles.value(np.clip(target, 1e-6, 1 - 1e-6)), lo, hi)
    return np.where(quantiles.finite & quantiles.usable[:, None], moved, x)


__all__ = [
    "ALL_PATTERNS",
    "DEFAULT_LEVELS",
    "RECALIBRATION_FILE",
    "QuantileRecalibration",
    "smooth_pit",
]

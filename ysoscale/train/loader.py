"""Streaming batches from a training store, with noise and band dropout redrawn each epoch.

The store (:mod:`ysoscale.simulate.store`) may be larger than memory: the loader reads one
zarr chunk of stars at a time, in a shuffled chunk order, and shuffles within the chunk.
For every batch it observes the noise-free magnitudes again through the survey models
(:func:`ysoscale.simulate.surveys.observe`), so each epoch sees new noise and new
detections, then drops observed bands at random (whole surveys and single bands) so the
estimator learns every subset of bands. Stars left with no band are skipped, never
padded with fake values.

A held-out split is made of whole chunks (the last ``validation_fraction`` of them), so
training and validation never share a star.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.kernel import young_variability
from ysoscale.simulate.surveys import SURVEY_MODELS, SURVEYS, observe

SURVEY_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("gaia",),
    ("gaia", "tmass"),
    ("gaia", "tmass", "wise", "ps1"),
)
"""The cross-matches catalogs most often come with (and ``benchmarks/calibration.py``
tests): a star given only these surveys' bands was not *looked for* elsewhere, which is not
the same as not *detected* elsewhere (see ``StoreLoader``'s ``survey_subset_rate``)."""


@dataclass(frozen=True)
class Batch:
    """One training batch (numpy, float32).

    ``theta (B, n_param)`` in the estimator's parameter order; ``mag``, ``mag_err``
    ``(B, n_band)`` in the estimator's band order (NaN = not observed); ``parallax``,
    ``parallax_error (B,)`` in mas (NaN = none). With ``StoreLoader(..., with_truth=True)``
    also the noise-free ``mag_true (B, n_band)`` and ``parallax_true (B,)``, and the
    Galactic position ``l_deg``, ``b_deg (B,)`` (which survey footprints hold the star),
    else None.
    """

    theta: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    parallax: np.ndarray
    parallax_error: np.ndarray
    mag_true: np.ndarray | None = None
    parallax_true: np.ndarray | None = None
    l_deg: np.ndarray | None = None
    b_deg: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.theta)


def derive_params(
    theta: np.ndarray, store_params: Sequence[str], wanted: Sequence[str]
) -> np.ndarray:
    """Columns ``wanted`` from a store's ``theta``, deriving distances where asked.

    ``log10_distance`` = log10(distance_pc); ``distance_modulus`` = 5 log10(d / 10 pc);
    ``has_disk`` = 1 where ``disk_frac > 0``, else 0.
    """
    index = {name: i for i, name in enumerate(store_params)}
    columns = []
    for name in wanted:
        if name in index:
            columns.append(theta[:, index[name]])
        elif name == "log10_distance":
            columns.append(np.log10(theta[:, index["distance_pc"]]))
        elif name == "distance_modulus":
            columns.append(5.0 * np.log10(theta[:, index["distance_pc"]] / 10.0))
        elif name == "has_disk" and "disk_frac" in index:
            columns.append((theta[:, index["disk_frac"]] > 0).astype(np.float32))
        else:
            raise ValueError(f"parameter {name!r} is not in the store ({list(store_params)})")
    return np.column_stack(columns).astype(np.float32)


class StoreLoader:
    """Iterates over batches of a training store.

    Parameters
    ----------
    store : path of a zarr training store
    params, bands : the estimator's parameter and band order
    batch_size : stars per batch
    split : "train", "validation" or "all" (every completed chunk: a store kept for testing)
    validation_fraction : share of the store's chunks held out
    band_dropout : probability of dropping each observed band
    survey_dropout : probability of dropping each observed survey as a whole
    survey_subset_rate : share of stars restricted to one of ``survey_subsets`` (chosen at
        random; the stars with no band in it are left as they are). A star is missing a
        survey either because the survey did not detect it, which says it is faint there,
        or because nobody cross-matched that survey, which says nothing. Natural non-
        detections and the independent ``survey_dropout`` make a Gaia-only training star
        mostly one too faint for 2MASS; a user with a Gaia-only table has stars of every
        brightness. Restricting a share of the training stars to common cross-matches
        teaches the estimator the second meaning
    survey_subsets : the survey combinations of ``survey_subset_rate``
    redraw_noise : observe the noise-free magnitudes again (True for training)
    seed : base seed; epoch ``e`` uses ``SeedSequence([seed, e])`` for the chunk order and
        ``SeedSequence([seed, e, chunk])`` for the noise and dropout of each chunk
    error_inflation : share of stars whose magnitude errors, and (independently) whose
        parallax error, are inflated by a log-uniform factor up to ``max_error_factor`` /
        ``max_parallax_error_factor``, with matching extra noise added. The survey models
        tie each error to the magnitude, so without this a network can ignore the error
        tokens and is lost on catalogs with other errors (TGAS parallaxes, old photometry)
    saturation_release : share of stars observed as if no survey saturated (bright-star
        catalogs on a survey's system, e.g. the KIC's griz or APASS on SDSS): without it
        the network never sees an SDSS or PS1 magnitude brighter than ~13-14 mag
        (:func:`ysoscale.simulate.surveys.observe`, ``unsaturated``)
    threads : chunks prepared concurrently (reading, re-observing, dropout release the
        GIL in numpy); the batches are the same for any number of threads
    with_truth : also return the noise-free magnitudes and parallaxes (``Batch.mag_true``,
        ``Batch.parallax_true``), the targets of an estimator that predicts observables,
        and each star's Galactic ``l_deg``, ``b_deg``

    Examples
    --------
    >>> loader = StoreLoader("train.zarr", ("log10_mass",), ("gaia_g",))  # doctest: +SKIP
    >>> batch = next(iter(loader.epoch(0)))  # doctest: +SKIP
    """

    def __init__(
        self,
        store: str | Path,
        params: Sequence[str],
        bands: Sequence[str],
        *,
        batch_size: int = 2048,
        split: str = "train",
        validation_fraction: float = 0.05,
        band_dropout: float = 0.1,
        survey_dropout: float = 0.15,
        survey_subset_rate: float = 0.0,
        survey_subsets: Sequence[Sequence[str]] = SURVEY_SUBSETS,
        redraw_noise: bool = True,
        seed: int = 0,
        error_inflation: float = 0.0,
        max_error_factor: float = 10.0,
        max_parallax_error_factor: float = 30.0,
        saturation_release: float = 0.0,
        threads: int = 1,
        with_truth: bool = False,
    ) -> None:
        if split not in ("train", "validation", "all"):
            raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
        self.path = Path(store)
        self.params, self.bands = tuple(params), tuple(bands)
        self.batch_size = int(batch_size)
        self.band_dropout, self.survey_dropout = band_dropout, survey_dropout
        if not 0.0 <= survey_subset_rate <= 1.0:
            raise ValueError(f"survey_subset_rate must be in [0, 1], got {survey_subset_rate}")
        unknown = sorted({s for subset in survey_subsets for s in subset} - set(SURVEYS))
        if unknown or not survey_subsets:
            raise ValueError(f"survey_subsets must list surveys of {SURVEYS}; unknown: {unknown}")
        self.survey_subset_rate = survey_subset_rate
        self.survey_subsets = tuple(tuple(subset) for subset in survey_subsets)
        self.redraw_noise, self.seed = redraw_noise, seed
        if not 0.0 <= error_inflation <= 1.0:
            raise ValueError(f"error_inflation must be in [0, 1], got {error_inflation}")
        if min(max_error_factor, max_parallax_error_factor) < 1.0:
            raise ValueError("error factors must be >= 1")
        self.error_inflation = error_inflation
        if not 0.0 <= saturation_release <= 1.0:
            raise ValueError(f"saturation_release must be in [0, 1], got {saturation_release}")
        self.saturation_release = saturation_release
        self.max_error_factor, self.max_parallax_error_factor = (
            max_error_factor,
            max_parallax_error_factor,
        )
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.with_truth = bool(with_truth)
        with xr.open_zarr(self.path) as ds:
            self.store_attrs = dict(ds.attrs)
            self.config = SimulationConfig.from_dict(json.loads(ds.attrs["config"]))
            self.store_params = [str(p) for p in ds.param.values]
            store_bands = [str(b) for b in ds.band.values]
            missing = [b for b in self.bands if b not in store_bands]
            if missing:
                raise ValueError(f"bands {missing} are not in the store {self.path}")
            self._columns = [store_bands.index(b) for b in self.bands]
            self._chunk = int(ds.theta.encoding.get("chunks", (ds.sizes["star"],))[0])
            n_star = ds.sizes["star"]
            done = ds.chunk_done.values.astype(bool)
        chunks = [i for i in range(math.ceil(n_star / self._chunk)) if done[i]]
        n_val = max(1, int(round(len(chunks) * validation_fraction))) if len(chunks) > 1 else 0
        self.chunks = {
            "validation": chunks[len(chunks) - n_val :],
            "train": chunks[: len(chunks) - n_val],
            "all": chunks,
        }[split]
        if not self.chunks:
            raise ValueError(f"{self.path} has no completed chunks for the {split} split")
        self.n_star = n_star
        # band columns of every survey, in the store's full band order
        self._survey_columns = {
            name: [store_bands.index(b) for b in SURVEY_MODELS[name].bands] for name in SURVEYS
        }

    def max_batches(self) -> int:
        """Batches per epoch if every star of the split has a band (an upper bound)."""
        stars = sum(min(self._chunk, self.n_star - i * self._chunk) for i in self.chunks)
        return max(1, math.ceil(stars / self.batch_size))

    def _read(self, ds: xr.Dataset, index: int) -> dict[str, np.ndarray]:
        region = slice(index * self._chunk, min((index + 1) * self._chunk, self.n_star))
        names = ("theta", "mag_true", "mag", "mag_err", "parallax_true", "parallax",
                 "parallax_error", "l", "b")  # fmt: skip
        return {name: ds[name].isel(star=region).values for name in names}

    def _observe(
        self, part: dict[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        if not self.redraw_noise:
            return part["mag"], part["mag_err"], part["parallax"], part["parallax_error"]
        log10_age = part["theta"][:, self.store_params.index("log10_age")]
        unsaturated = None
        if self.saturation_release:
            unsaturated = rng.random(len(log10_age)) < self.saturation_release
        seen = observe(
            part["mag_true"].astype(np.float64),
            part["l"],
            part["b"],
            part["parallax_true"].astype(np.float64),
            rng,
            surveys=self.config.surveys,
            variability=young_variability(log10_age, self.config, rng),
            unsaturated=unsaturated,
        )
        return seen.mag, seen.mag_err, seen.parallax, seen.parallax_error

    def _inflate(
        self,
        value: np.ndarray,
        err: np.ndarray,
        max_factor: float,
        rng: np.random.Generator,
        *,
        per_star: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Errors of a random share of stars times a log-uniform factor, with the extra
        noise ``N(0, new² - old²)`` added so values and errors stay consistent."""
        n = len(value)
        chosen = rng.random(n) < self.error_inflation
        factor = np.where(chosen, 10.0 ** (rng.random(n) * np.log10(max_factor)), 1.0)
        if per_star and value.ndim == 2:
            factor = factor[:, None]
        new_err = (err * factor).astype(np.float32)
        old64, new64 = err.astype(np.float64), new_err.astype(np.float64)
        finite = np.isfinite(old64) & np.isfinite(new64)  # an infinite error: no extra noise
        extra = np.zeros_like(old64)
        extra[finite] = np.sqrt(np.maximum(new64[finite] ** 2 - old64[finite] ** 2, 0.0))
        noise = rng.standard_normal(value.shape) * extra
        return (value + noise).astype(np.float32), new_err

    def _restrict_to_subsets(self, mag: np.ndarray, rng: np.random.Generator) -> None:
        """Keep only one survey subset's bands for a share of the stars, in place."""
        n = len(mag)
        chosen = rng.integers(len(self.survey_subsets), size=n)
        restricted = rng.random(n) < self.survey_subset_rate
        for k, subset in enumerate(self.survey_subsets):
            keep = np.zeros(mag.shape[1], dtype=bool)
            for name in subset:
                keep[self._survey_columns[name]] = True
            rows = restricted & (chosen == k) & np.isfinite(mag[:, keep]).any(axis=1)
            mag[np.ix_(rows, ~keep)] = np.nan

    def _drop(self, mag: np.ndarray, err: np.ndarray, rng: np.random.Generator) -> None:
        """Restrict stars to survey subsets, drop whole surveys, then single bands, in place."""
        n = len(mag)
        if self.survey_subset_rate:
            self._restrict_to_subsets(mag, rng)
        for columns in self._survey_columns.values():
            lost = rng.random(n) < self.survey_dropout
            mag[np.ix_(lost, columns)] = np.nan
        lost = rng.random(mag.shape) < self.band_dropout
        mag[lost] = np.nan
        err[np.isnan(mag)] = np.nan

    def _prepare(self, epoch: int, index: int) -> Batch:
        """One chunk, re-observed, with dropout, shuffled; stars left with no band removed."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index]))
        with xr.open_zarr(self.path) as ds:
            part = self._read(ds, index)
        mag, err, parallax, parallax_err = self._observe(part, rng)
        mag, err = np.array(mag, dtype=np.float32), np.array(err, dtype=np.float32)
        if self.error_inflation and self.redraw_noise:
            mag, err = self._inflate(mag, err, self.max_error_factor, rng, per_star=True)
            parallax, parallax_err = self._inflate(
                np.asarray(parallax, np.float32), np.asarray(parallax_err, np.float32),
                self.max_parallax_error_factor, rng, per_star=False,
            )  # fmt: skip
        if self.band_dropout or self.survey_dropout or self.survey_subset_rate:
            self._drop(mag, err, rng)
        mag, err = mag[:, self._columns], err[:, self._columns]
        keep = np.isfinite(mag).any(axis=1)
        if self.band_dropout or self.survey_dropout:
            parallax = np.where(rng.random(len(mag)) < self.survey_dropout, np.nan, parallax)
        batch = Batch(
            theta=derive_params(part["theta"], self.store_params, self.params),
            mag=mag,
            mag_err=err,
            parallax=np.asarray(parallax, dtype=np.float32),
            parallax_error=np.asarray(parallax_err, dtype=np.float32),
        )
        if self.with_truth:
            batch = dataclasses.replace(
                batch,
                mag_true=np.asarray(part["mag_true"][:, self._columns], dtype=np.float32),
                parallax_true=np.asarray(part["parallax_true"], dtype=np.float32),
                l_deg=np.asarray(part["l"], dtype=np.float64),
                b_deg=np.asarray(part["b"], dtype=np.float64),
            )
        return _take(batch, rng.permutation(np.flatnonzero(keep)))

    def _chunks(self, epoch: int) -> Iterator[Batch]:
        """Prepared chunks in this epoch's order, ``threads`` at a time."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        order = [int(i) for i in rng.permutation(self.chunks)]
        return _prepared([functools.partial(self._prepare, epoch, i) for i in order], self.threads)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of one epoch (the same for the same ``seed`` and ``epoch``)."""
        return _batches(self._chunks(epoch), self.batch_size)


class StoreUnion:
    """Several training stores read as one: every epoch visits every chunk of every store
    in one shuffled order (e.g. a general store and a magnitude-limited one, see
    :class:`~ysoscale.simulate.config.SimulationConfig` ``brighter_than``).

    Parameters
    ----------
    loaders : StoreLoader
        One per store, with the same parameters, bands and batch size. Give them different
        seeds: chunk ``i`` of two stores with one seed would get the same noise draws.

    Examples
    --------
    >>> union = StoreUnion([StoreLoader("all.zarr", P, B, seed=0),
    ...                     StoreLoader("bright.zarr", P, B, seed=1)])  # doctest: +SKIP
    >>> batch = next(iter(union.epoch(0)))  # doctest: +SKIP
    """

    def __init__(self, loaders: Sequence[StoreLoader]) -> None:
        if not loaders:
            raise ValueError("StoreUnion needs at least one StoreLoader")
        first = loaders[0]
        for other in loaders[1:]:
            for name in ("params", "bands", "batch_size"):
                if getattr(other, name) != getattr(first, name):
                    raise ValueError(
                        f"{other.path} and {first.path} are read with different {name}: "
                        f"{getattr(other, name)} != {getattr(first, name)}"
                    )
        self.loaders = tuple(loaders)
        self.params, self.bands, self.batch_size = first.params, first.bands, first.batch_size
        self.seed, self.threads, self.store_attrs = first.seed, first.threads, first.store_attrs
        self.chunks = [(i, c) for i, loader in enumerate(self.loaders) for c in loader.chunks]

    def max_batches(self) -> int:
        """Batches per epoch if every star of the split has a band (an upper bound)."""
        return sum(loader.max_batches() for loader in self.loaders)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of one epoch (the same for the same seeds and ``epoch``)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, len(self.loaders)]))
        tasks = [
            functools.partial(self.loaders[store]._prepare, epoch, index)
            for store, index in (self.chunks[int(k)] for k in rng.permutation(len(self.chunks)))
        ]
        return _batches(_prepared(tasks, self.threads), self.batch_size)


def _prepared(tasks: list[Callable[[], Batch]], threads: int) -> Iterator[Batch]:
    """Results of ``tasks`` in order, ``threads`` prepared at a time."""
    if threads == 1:
        for task in tasks:
            yield task()
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="loader") as pool:
        pending: deque[Future[Batch]] = deque()
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batches(parts: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Cut batches of ``batch_size`` from consecutive parts (the remainder at the end)."""
    pending: list[Batch] = []
    total = 0
    for part in parts:
        pending.append(part)
        total += len(part)
        if total < batch_size:
            continue
        merged = _concat(pending)  # once per part: the batches are views of it
        cut = 0
        while total - cut >= batch_size:
            yield _take(merged, slice(cut, cut + batch_size))
            cut += batch_size
        pending = [_take(merged, slice(cut, None))] if cut < total else []
        total -= cut
    if total > 0:
        yield _concat(pending)


_FIELDS = (
    "theta",
    "mag",
    "mag_err",
    "parallax",
    "parallax_error",
    "mag_true",
    "parallax_true",
    "l_deg",
    "b_deg",
)


def _concat(parts: list[Batch]) -> Batch:
    def joined(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return Batch(*(joined(f) for f in _FIELDS))


def _take(batch: Batch, rows: slice | np.ndarray) -> Batch:
    return Batch(*(None if getattr(batch, f) is None else getattr(batch, f)[rows] for f in _FIELDS))

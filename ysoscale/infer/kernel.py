"""The per-partition inference kernel: arrays in, posterior samples and their summary out.

Pure numpy/torch (no Dask, pandas or files), so it runs unchanged in a test, in a Dask
task and on a GPU worker. The standard-normal draws that the flow maps onto each star's
posterior come from a counter-based generator keyed by ``(seed, source_id, sample,
param)``: a star's samples depend on its own key and photometry only, never on which
other stars share its partition or batch, nor on how partitions are scheduled.

Besides the samples, each star gets ``p_young`` (P(age < threshold), from the samples of
``log10_age``), ``p_disk`` (P(disk), from the samples of ``has_disk``) and its
``condition_pattern``: a bit mask of the inputs the estimator was conditioned on, one bit
per survey of :data:`~ysoscale.simulate.surveys.SURVEYS` then one for the parallax
(:data:`CONDITION_PATTERN_BITS`, :func:`condition_pattern`). With a model's quantile
recalibration (:mod:`ysoscale.nn.recalibration`) the samples are moved by the map of that
pattern before anything is derived from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri

from ysoscale.infer.importance import (
    DEFAULT_DISK,
    DEFAULT_ERROR_FLOOR,
    DEFAULT_OOD_THRESHOLD,
    DiskMarginal,
    effective_sample_size,
    normalise_log_weights,
    weigh_samples,
)
from ysoscale.infer.kernel_proposal import SimformerKernelProposal
from ysoscale.infer.selection import DetectionSelection, survey_footprints_icrs
from ysoscale.nn.batching import stars_per_call
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.predictive import DEFAULT_AGE_THRESHOLD_MYR, p_disk, p_young
from ysoscale.nn.recalibration import QuantileRecalibration
from ysoscale.nn.simformer import Simformer
from ysoscale.physics.forward import ForwardModel
from ysoscale.simulate.surveys import SURVEY_MODELS, SURVEYS

STATS: tuple[str, ...] = ("median", "p16", "p84", "mean", "std")
"""Per-parameter summary statistics of the samples, in this order."""

P16, P84 = 0.5 * math.erfc(1 / math.sqrt(2)), 1 - 0.5 * math.erfc(1 / math.sqrt(2))
"""Quantiles of ``p16`` / ``p84``: the 1-sigma bounds of a normal (15.87 %, 84.13 %)."""

CONDITION_PATTERN_BITS: tuple[str, ...] = (*SURVEYS, "parallax")
"""Meaning of the bits of ``condition_pattern``: bit ``i`` (value ``1 << i``) is set when the
estimator was conditioned on input ``CONDITION_PATTERN_BITS[i]``: a survey (at least one of
its bands observed) or the parallax. With the shipped surveys: gaia 1, tmass 2, wise 4,
ps1 8, sdss 16, galex 32, skymapper 64, parallax 128."""
assert len(CONDITION_PATTERN_BITS) <= 16, "condition_pattern is a uint16"

_BAND_SURVEY: dict[str, int] = {
    band: index for index, name in enumerate(SURVEYS) for band in SURVEY_MODELS[name].bands
}

ISOCHRONE_INPUTS: tuple[str, ...] = ("log10_mass", "log10_age", "mh")
ISOCHRONE_OUTPUTS: tuple[str, ...] = ("teff", "logg", "log10_lum", "radius")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def output_params(params: Sequence[str], isochrones: bool) -> tuple[str, ...]:
    """Parameters of the output: the model's, then those derived from each sample.

    ``distance_pc`` follows from ``log10_distance`` or ``distance_modulus``; ``teff``,
    ``logg``, ``log10_lum`` and ``radius`` from (mass, age, [M/H]) through the isochrones
    when ``isochrones`` is true and the model is in the physical parametrisation.

    Examples
    --------
    >>> output_params(("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv"), True)
    ('log10_mass', 'log10_age', 'mh', 'log10_distance', 'av', 'rv', 'distance_pc', 'teff', \
'logg', 'log10_lum', 'radius')
    >>> output_params(("teff", "logg", "mh", "av", "rv", "distance_modulus"), True)[-1]
    'distance_pc'
    """
    extra: list[str] = []
    if ("log10_distance" in params or "distance_modulus" in params) and "distance_pc" not in params:
        extra.append("distance_pc")
    if isochrones and all(p in params for p in ISOCHRONE_INPUTS):
        extra += [p for p in ISOCHRONE_OUTPUTS if p not in params]
    return (*params, *extra)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed hash of uint64 values (wraps mod 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def keyed_uniform(
    keys: np.ndarray, seed: int, n_samples: int, n_values: int, stream: int = 0
) -> np.ndarray:
    """Uniform draws in (0, 1) ``(n, n_samples, n_values)`` float64, a pure function of each
    key, the seed and the ``stream`` (independent streams for different uses of one seed).

    Examples
    --------
    >>> u = keyed_uniform(np.array([7, 3]), seed=0, n_samples=2, n_values=3)
    >>> u.shape, bool(((u > 0) & (u < 1)).all())
    ((2, 2, 3), True)
    >>> bool((keyed_uniform(np.array([7]), 0, 2, 3, stream=1) == u[0]).any())
    False
    """
    keys = np.asarray(keys).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        root = _mix64(np.asarray([seed], dtype=np.int64).view(np.uint64) + _GOLDEN)
        if stream:
            root = _mix64(root ^ (np.uint64(stream) * _MIX1))
        star = _mix64(keys ^ root)
        counter = (np.arange(1, n_samples * n_values + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix64(star[:, None] + counter)
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    return uniform.reshape(len(keys), n_samples, n_values)


def standard_normal(keys: np.ndarray, seed: int, n_samples: int, n_param: int) -> np.ndarray:
    """Standard-normal draws ``(n, n_samples, n_param)`` float32, a pure function of each key.

    Row ``i`` depends only on ``(seed, keys[i])``: the same star gets the same draws in
    any partition, batch or order, on any machine.

    Examples
    --------
    >>> z = standard_normal(np.array([7, 3, 7]), seed=0, n_samples=4, n_param=2)
    >>> z.shape, bool((z[0] == z[2]).all()), bool((z[0] == z[1]).all())
    ((3, 4, 2), True, False)
    >>> bool((standard_normal(np.array([3]), 0, 4, 2) == z[1]).all())
    True
    """
    return ndtri(keyed_uniform(keys, seed, n_samples, n_param)).astype(np.float32)


def condition_pattern(
    mag: np.ndarray,
    mag_err: np.ndarray,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    bands: Sequence[str],
    *,
    use_parallax: bool = True,
) -> np.ndarray:
    """Bit mask ``(n,)`` uint16 of the inputs each star's estimate is conditioned on.

    Bit ``i`` stands for :data:`CONDITION_PATTERN_BITS` ``[i]``: a survey's bit is set when at
    least one of its bands in ``bands`` has a finite magnitude and a finite, positive error
    (what the tokenizer counts as observed); the parallax bit when the parallax is finite
    and its error finite and positive (and the model reads parallaxes, ``use_parallax``).

    Parameters
    ----------
    mag, mag_err : ndarray, shape (n, n_band)
        Columns in the order of ``bands``; NaN marks a missing band.
    parallax, parallax_error : ndarray, shape (n,)
        mas; NaN marks a missing parallax.
    bands : sequence of str
        Band ids of the columns; a band of no survey of :data:`SURVEYS` sets no bit.
    use_parallax : bool
        Whether the estimator reads the parallax at all.

    Examples
    --------
    >>> nan = np.nan
    >>> mag = np.array([[12.0, nan, nan], [12.0, 11.0, nan], [nan, nan, nan]])
    >>> pattern = condition_pattern(mag, np.full_like(mag, 0.02), np.array([nan, 1.5, 2.0]),
    ...                             np.full(3, 0.1), ("gaia_g", "tmass_j", "wise_w1"))
    >>> pattern.tolist()  # gaia; gaia + tmass + parallax; parallax only
    [1, 131, 128]
    >>> [CONDITION_PATTERN_BITS[i] for i in range(8) if int(pattern[1]) >> i & 1]
    ['gaia', 'tmass', 'parallax']
    """
    mag = np.asarray(mag, dtype=np.float32)
    mag_err = np.asarray(mag_err, dtype=np.float32)
    assert mag.ndim == 2 and mag.shape == mag_err.shape and mag.shape[1] == len(bands), (
        f"mag {mag.shape} and mag_err {mag_err.shape} must be (n, {len(bands)})"
    )
    pattern = np.zeros(len(mag), dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        observed = np.isfinite(mag) & np.isfinite(mag_err) & (mag_err > 0)
        for column, band in enumerate(bands):
            if band in _BAND_SURVEY:
                pattern[observed[:, column]] |= np.uint16(1 << _BAND_SURVEY[band])
        if use_parallax:
            plx = np.asarray(parallax, dtype=np.float32)
            plx_err = np.asarray(parallax_error, dtype=np.float32)
            has_plx = np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0)
            bit = np.uint16(1 << CONDITION_PATTERN_BITS.index("parallax"))
            pattern[has_plx] |= bit
    return pattern


@dataclass(frozen=True)
class SampleWeighting:
    """Importance weights for the kernel's samples: the exact posterior under the forward
    model and the prior (:mod:`ysoscale.infer.importance`).

    With it :func:`infer_arrays` keeps each star's samples but gives them self-normalised
    weights ``w ∝ p(θ) L(x | θ) / q(θ | x)``; the summaries, ``p_young`` and ``ess`` come from
    the weights. The set-transformer's own samples are the proposal; a simformer's is
    :class:`~ysoscale.infer.kernel_proposal.SimformerKernelProposal` (its samples updated by
    the photometry). With ``surveys`` the detection pattern is weighed too: which of those
    surveys saw the star, given each survey's footprint at the star's position
    (:class:`~ysoscale.infer.selection.DetectionSelection`). The errors' variability is not.

    Attributes
    ----------
    forward : ForwardModel
        Predicts every band of the estimator (``ForwardModel.default(bands=...)``).
    prior : PriorDensity
        Over the estimator's physical parameters (``load_default_prior_density()``).
    disk : DiskMarginal or None
        Monte Carlo disks of young stars (their uniforms keyed by star, like the samples).
    error_floor : float
        mag, in quadrature with every reported error.
    ood_threshold : float
        ``ess / n_samples`` below which a star is flagged (``ood``).
    surveys : tuple of str, optional
        The surveys every star was looked for in (e.g. those of the catalog's columns);
        with them the weights include the detection pattern (needs the stars' positions).
    """

    forward: Any
    prior: Any
    disk: DiskMarginal | None = DEFAULT_DISK
    error_floor: float = DEFAULT_ERROR_FLOOR
    ood_threshold: float = DEFAULT_OOD_THRESHOLD
    surveys: tuple[str, ...] | None = None

    def selection(self, bands: Sequence[str]) -> DetectionSelection | None:
        """The detection-pattern likelihood over ``bands`` (None without ``surveys``)."""
        if not self.surveys:
            return None
        return DetectionSelection.from_surveys(bands, self.surveys)


_COMPONENT_STREAM, _DISK_STREAM = 1, 2
"""Streams of :func:`keyed_uniform` for the mixture components and the disks' draws."""


def _weighted_summary(samples: torch.Tensor, log_weight: torch.Tensor) -> torch.Tensor:
    """``(batch, stat, param)`` of weighted ``samples (batch, sample, param)``; a sample with
    a NaN value of a parameter is left out of that parameter's statistics."""
    weight = log_weight.double().exp()[..., None].expand_as(samples)
    weight = torch.where(torch.isfinite(samples), weight, 0.0)
    total = weight.sum(dim=1)  # (batch, param)
    values = samples.double().nan_to_num(nan=math.inf)
    order = values.argsort(dim=1)
    sorted_values = values.gather(1, order)
    share = weight.gather(1, order).cumsum(dim=1) / total[:, None, :]
    stats = []
    for q in (0.5, P16, P84):
        pick = torch.searchsorted(share.transpose(1, 2).contiguous(),
                                  torch.full_like(total[..., None], q))  # fmt: skip
        pick = pick.clamp(max=samples.shape[1] - 1).transpose(1, 2)
        stats.append(sorted_values.gather(1, pick)[:, 0])
    filled = samples.double().nan_to_num(nan=0.0)
    mean = (weight * filled).sum(dim=1) / total
    var = (weight * (filled - mean[:, None]) ** 2).sum(dim=1) / total
    stats += [mean, var.sqrt()]
    out = torch.stack(stats, dim=1)
    return torch.where((total > 0)[:, None, :], out, math.nan).to(samples.dtype)


def _summarise(samples: torch.Tensor) -> torch.Tensor:
    """``(batch, stat, param)`` of ``samples`` ``(batch, sample, param)``, NaN-aware."""
    q = torch.tensor([0.5, P16, P84], dtype=samples.dtype, device=samples.device)
    quantiles = torch.nanquantile(samples, q, dim=1).transpose(0, 1)
    mean = torch.nanmean(samples, dim=1)
    std = torch.nanmean((samples - mean[:, None]) ** 2, dim=1).sqrt()
    return torch.cat([quantiles, mean[:, None], std[:, None]], dim=1)


def _derived(
    theta: torch.Tensor, params: Sequence[str], out: Sequence[str], forward: ForwardModel | None
) -> torch.Tensor:
    """The model's samples ``(..., n_param)`` extended by the derived parameters of ``out``."""
    index = {p: i for i, p in enumerate(params)}
    columns = [theta]
    if "distance_pc" in out[len(params) :]:
        if "log10_distance" in index:
            distance = 10.0 ** theta[..., index["log10_distance"]]
        else:
            distance = 10.0 ** (theta[..., index["distance_modulus"]] / 5.0 + 1.0)
        columns.append(distance[..., None])
    wanted = [p for p in ISOCHRONE_OUTPUTS if p in out[len(params) :]]
    if wanted:
        assert forward is not None and forward.isochrones is not None, "isochrones needed"
        flat = theta.reshape(-1, theta.shape[-1])
        device = forward.isochrones.table.device
        args = [flat[:, index[p]].to(device) for p in ISOCHRONE_INPUTS]
        values, ok = forward.isochrones(*args)
        derived = {
            "teff": 10.0 ** values["log10_teff"],
            "logg": values["logg"],
            "log10_lum": values["log10_lum"],
            "radius": 10.0 ** values["log10_radius"],
        }
        nan = torch.tensor(float("nan"), device=device)
        for name in wanted:
            value = torch.where(ok, derived[name].float(), nan).to(theta.device)
            columns.append(value.reshape(*theta.shape[:-1], 1))
    return torch.cat(columns, dim=-1)


def infer_arrays(
    model: PosteriorEstimator | Simformer,
    mag: np.ndarray,
    mag_err: np.ndarray,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    usable: np.ndarray,
    n_samples: int,
    seed: int,
    forward: ForwardModel | None = None,
    *,
    source_id: np.ndarray | None = None,
    batch_size: int | None = None,
    young_age_myr: float = DEFAULT_AGE_THRESHOLD_MYR,
    weighting: SampleWeighting | None = None,
    position: tuple[np.ndarray, np.ndarray] | None = None,
    recalibration: QuantileRecalibration | None = None,
) -> dict[str, np.ndarray]:
    """Posterior samples and summaries, and young-star products, of a block of stars.

    Parameters
    ----------
    model : PosteriorEstimator or Simformer
        On the device it should run on (its inputs are moved there). A Simformer
        (flow matching) transports the same per-star draws; its ``log_prob`` is NaN.
    mag, mag_err : ndarray, shape (n, n_band)
        Columns in the order of ``model.config.bands``; NaN marks a missing band.
    parallax, parallax_error : ndarray, shape (n,)
        mas; NaN marks a missing parallax.
    usable : ndarray of bool, shape (n,)
        Rows that may reach the model. Rows that are not usable, or that have no band with
        a finite magnitude and a positive error, get NaN samples and summaries.
    n_samples, seed : int
    forward : ForwardModel, optional
        With isochrones: adds ``teff, logg, log10_lum, radius`` of every sample (NaN
        where the tracks are undefined), see :func:`output_params`.
    source_id : ndarray of int, shape (n,), optional
        Key of each star's random draws (default: the row number). Give the catalog's
        source_id so that a star's result does not depend on its position.
    batch_size : int, optional
        Stars sent through the model at once; default by device
        (:func:`ysoscale.nn.batching.stars_per_call`).
    young_age_myr : float
        Age threshold of ``p_young`` in Myr.
    weighting : SampleWeighting, optional
        Importance-weight the samples (:class:`SampleWeighting`): a simformer's samples
        then come from its kernel proposal, in its physical parameters (no ``has_disk``).
    position : (ra, dec) arrays of shape (n,), optional
        Degrees (ICRS); needed when ``weighting`` weighs the detection pattern (its survey
        footprints). A star with no finite position counts as outside every footprint.
    recalibration : QuantileRecalibration, optional
        The model's quantile recalibration (:mod:`ysoscale.nn.recalibration`): each
        star's samples are moved, rank by rank, to the recalibrated quantiles of its
        ``condition_pattern`` before anything is derived from them. Not with
        ``weighting``, whose weights are those of the estimator's own samples. The moved
        samples' ``log_prob`` is NaN (their density is not the estimator's).

    Returns
    -------
    dict
        ``samples`` (n, n_samples, n_out) float32, ``summary`` (n, len(STATS), n_out)
        float32, ``log_prob`` (n, n_samples) float32 (the estimator's, or with
        ``weighting`` the proposal's, log-density of each sample of the model's
        parameters), ``sampled`` (n,) bool; parameter order :func:`output_params`. With
        ``weighting`` also ``log_weight`` (n, n_samples) float32 (self-normalised,
        ``-inf`` = weight zero, NaN for rows not sampled), ``ess`` (n,) float32 (NaN for
        rows not sampled), ``ood`` (n,) bool (``ess / n_samples`` below the threshold) and
        ``log_evidence`` (n,) float64 (the importance estimate of ``log p(x)``, the mean raw
        weight: raw log weights are ``log_weight + log_evidence + log(n_samples)``), and
        the summaries and ``p_young`` are those of the weighted samples.
        ``p_young`` (n,) float32: the (weighted) share of the ``log10_age``
        samples below ``log10(young_age_myr * 1e6)`` (:func:`ysoscale.nn.predictive.p_young`);
        ``p_disk`` (n,) float32: the share of the ``has_disk`` samples above 1/2
        (:func:`ysoscale.nn.predictive.p_disk`); both NaN for rows not sampled and for every
        row when the model lacks that parameter. ``condition_pattern`` (n,) uint16: the
        inputs each sampled row was conditioned on (:func:`condition_pattern`), 0 for rows
        not sampled.

    Examples
    --------
    >>> from ysoscale.nn import EstimatorConfig
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> model = PosteriorEstimator(EstimatorConfig(bands=("gaia_g", "gaia_rp"), width=8,
    ...     heads=2, depth=1, transforms=1, flow_hidden=(8,)))
    >>> mag = np.array([[12.0, 11.4], [np.nan, np.nan], [15.0, 14.2]], dtype=np.float32)
    >>> out = infer_arrays(model, mag, np.full_like(mag, 0.01), np.array([2.0, 1.0, 0.5]),
    ...                    np.full(3, 0.05), np.array([True, True, True]), 16, seed=1)
    >>> out["samples"].shape, out["summary"].shape, out["sampled"].tolist()
    ((3, 16, 7), (3, 5, 7), [True, False, True])
    >>> bool(np.isnan(out["samples"][1]).all())
    True
    >>> out["condition_pattern"].tolist(), bool(np.isnan(out["p_young"][1]))
    ([129, 0, 129], True)
    """
    mag = np.asarray(mag, dtype=np.float32)
    mag_err = np.asarray(mag_err, dtype=np.float32)
    n, n_band = mag.shape
    assert mag_err.shape == mag.shape, f"mag_err {mag_err.shape} != mag {mag.shape}"
    assert n_band == model.config.n_band, f"{n_band} bands given, model has {model.config.n_band}"
    is_simformer = getattr(model, "estimator", "npe") == "simformer"
    proposal = None
    if weighting is not None and is_simformer:
        proposal = SimformerKernelProposal(model, weighting.forward)
    params = (proposal or model).config.params
    use_isochrones = forward is not None and forward.isochrones is not None
    out_params = output_params(params, use_isochrones)
    n_param, n_out = len(params), len(out_params)
    if not young_age_myr > 0:
        raise ValueError(f"young_age_myr must be positive, got {young_age_myr}")
    if recalibration is not None and weighting is not None:
        raise ValueError("recalibration and importance weighting do not combine: the "
                         "weights are those of the estimator's own samples")  # fmt: skip
    with np.errstate(invalid="ignore"):
        observed = np.isfinite(mag) & np.isfinite(mag_err) & (mag_err > 0)
    sampled = np.asarray(usable, dtype=bool) & observed.any(axis=1)
    keys = np.arange(n, dtype=np.int64) if source_id is None else np.asarray(source_id)
    assert keys.shape == (n,), f"source_id must have shape ({n},), got {keys.shape}"

    samples = np.full((n, n_samples, n_out), np.nan, dtype=np.float32)
    summary = np.full((n, len(STATS), n_out), np.nan, dtype=np.float32)
    log_prob = np.full((n, n_samples), np.nan, dtype=np.float32)
    log_weight = np.full((n, n_samples), np.nan, dtype=np.float32)
    ess = np.full(n, np.nan, dtype=np.float32)
    log_evidence = np.full(n, np.nan, dtype=np.float64)
    device = model.lo.device

    def column(values: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32)[rows], device=device)

    batch_size = batch_size or stars_per_call(device, n_samples)
    selection, footprint = None, None
    if weighting is not None:
        selection = weighting.selection(model.config.bands)
    if selection is not None:
        if position is None:
            raise ValueError("weighing the detection pattern needs each star's (ra, dec)")
        footprint = survey_footprints_icrs(*position, selection.surveys)
    pattern = condition_pattern(
        mag, mag_err, parallax, parallax_error, model.config.bands,
        use_parallax=getattr(model.config, "use_parallax", True),
    )  # fmt: skip
    pattern[~sampled] = 0
    model.eval()
    with torch.inference_mode():
        todo = np.flatnonzero(sampled)
        for first in range(0, len(todo), batch_size):
            rows = todo[first : first + batch_size]
            inputs = [column(a, rows) for a in (mag, mag_err, parallax, parallax_error)]
            z = torch.from_numpy(standard_normal(keys[rows], seed, n_samples, n_param)).to(device)
            lp = None
            if proposal is not None:
                # the simformer's kernel proposal, drawn from the star's keyed randomness
                mixture = proposal.mixture(*inputs)
                pick = keyed_uniform(keys[rows], seed, n_samples, 1, _COMPONENT_STREAM)[..., 0]
                theta = mixture.sample_from(torch.from_numpy(pick), z).float()
                lp = mixture.log_prob(theta)
            elif is_simformer:
                # flow matching transports the same per-star draws; it has no density
                theta = model.sample_from_noise(*inputs, z)  # (batch, sample, param)
            else:
                dist = model(*inputs)
                z = z.transpose(0, 1)  # (sample, batch, param)
                theta, ladj = dist.transform.inv.call_and_ladj(z)
                lp = dist.base.log_prob(z) - ladj
                assert lp.shape == z.shape[:2], f"log_prob shape {tuple(lp.shape)}"
                theta = theta.transpose(0, 1)
                lp = lp.transpose(0, 1)
            if lp is not None and recalibration is None:  # moved samples: density unknown
                log_prob[rows] = lp.float().cpu().numpy()
            if recalibration is not None:
                moved = recalibration.apply(theta.float().cpu().numpy(), pattern[rows], params)
                theta = torch.from_numpy(moved).to(theta.device)
            full = _derived(theta, params, out_params, forward)
            samples[rows] = full.cpu().numpy()
            if weighting is None:
                summary[rows] = _summarise(full).cpu().numpy()
                continue
            draws = None
            if weighting.disk is not None:
                uniform = keyed_uniform(keys[rows], seed, n_samples, 2 * weighting.disk.n_draws,
                                        _DISK_STREAM)  # fmt: skip
                draws = torch.from_numpy(uniform).to(device).reshape(len(rows), n_samples, -1, 2)
            raw = weigh_samples(
                weighting.forward, weighting.prior, params, model.config.bands, theta, lp,
                *inputs, error_floor=weighting.error_floor, disk=weighting.disk,
                disk_uniform=draws, selection=selection,
                in_footprint=None if footprint is None else footprint[rows],
            )  # fmt: skip
            normalised = normalise_log_weights(raw)
            log_evidence[rows] = (torch.logsumexp(raw, dim=1) - math.log(n_samples)).cpu().numpy()
            log_weight[rows] = normalised.float().cpu().numpy()
            ess[rows] = effective_sample_size(normalised).float().cpu().numpy()
            summary[rows] = _weighted_summary(full, normalised).cpu().numpy()
    # rows not sampled have only NaN samples, hence NaN shares
    young, disk = np.full(n, np.nan, dtype=np.float32), np.full(n, np.nan, dtype=np.float32)
    weights = None if weighting is None else np.exp(log_weight.astype(np.float64))
    if "log10_age" in params:
        young = p_young(samples[..., params.index("log10_age")], young_age_myr, weights)
    if "has_disk" in params:
        disk = p_disk(samples[..., params.index("has_disk")])
    out = {
        "samples": samples,
        "summary": summary,
        "log_prob": log_prob,
        "sampled": sampled,
        "p_young": np.asarray(young, dtype=np.float32),
        "p_disk": np.asarray(disk, dtype=np.float32),
        "condition_pattern": pattern,
    }
    if weighting is not None:
        with np.errstate(invalid="ignore"):
            ood = sampled & ~(ess >= weighting.ood_threshold * n_samples)
        out.update(log_weight=log_weight, ess=ess, ood=ood, log_evidence=log_evidence)
    return out

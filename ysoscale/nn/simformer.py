"""Arbitrary-conditional estimator: flow matching over parameter and observable tokens.

Every variable is a token (each parameter, each band, the parallax). A token is the sum
of a learned variable-id embedding, a per-variable linear embedding of its (standardised)
value, a condition-flag embedding (observed or not), for observed observables a
per-variable linear embedding of ``log10(error)``, and an embedding of the flow time
``t``. A transformer without positional encoding (so the band order is irrelevant) maps
the tokens to the velocity of every unobserved token.

Training (rectified flow, linear path): for targets ``x1`` (the clean values: true
parameters, noise-free magnitudes and parallax) and noise ``x0 ~ N(0, I)``,
``x_t = (1 - t) x0 + t x1`` and the velocity target is ``x1 - x0`` on the unobserved
tokens; observed tokens keep their observed value at every ``t``. Condition masks start
from the survey pattern the loader produced (survey and band dropout, detection limits)
and are thinned to random subsets, extended by random parameters, and unobserved
observables are left out of the sequence for a share of stars (marginals), so that one
network serves every conditional.

Physics guidance: ``L = w_FM L_FM + w_R L_R``, where ``L_R`` compares, through the
differentiable :class:`~ysoscale.physics.forward.ForwardModel`, the magnitudes of the
one-step clean estimate ``x̂1 = x_t + (1 - t) v`` of the parameters with the observed
magnitudes (observed bands) or with the clean estimate of the predicted ones
(unobserved bands), as a robust (Cauchy) penalty weighted by ``t²``.

Sampling integrates ``dx/dt = v(x, t)`` from ``t = 0`` (standard-normal noise) to
``t = 1`` with a fixed-step Euler, Heun or RK4 solver, in batches bounded by a number of
tokens. Parameter-only sampling leaves unobserved observables out of the sequence;
joint sampling also returns samples of the unobserved bands (posterior predictive).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ysoscale.nn.batching import tokens_per_call
from ysoscale.nn.config import EstimatorConfig
from ysoscale.nn.context_cache import attention_mask, decode_latent, encode_context
from ysoscale.nn.flow_density import solver_step
from ysoscale.nn.model_files import load_weights, read_card, save_model
from ysoscale.nn.npe import PosteriorEstimator
from ysoscale.nn.parallax_centring import token_frame
from ysoscale.nn.simformer_config import (
    SIMFORMER_PARAM_BOUNDS,
    SOLVERS,
    SimformerConfig,
)
from ysoscale.nn.tokenizer import ERROR_FLOOR_MAG, observed_bands
from ysoscale.physics.passbands import BAND_IDS, BAND_LIST_VERSION

ESTIMATOR_NAME = "simformer"
"""Value of ``"estimator"`` in the model card of a simformer."""

INFRARED_EXCESS_BANDS: tuple[str, ...] = (
    "tmass_h",
    "tmass_ks",
    "wise_w1",
    "wise_w2",
    "wise_w3",
    "wise_w4",
)
"""Bands scored for infrared excess by default (a warm disk adds flux from H onwards)."""

ERROR_OFFSET = 1.5
"""``log10(error) + ERROR_OFFSET`` is the error feature (about 0 for a 0.03 mag error)."""

_CAUCHY_SCALE = 2.0


def _as_tensor(value: Any, device: torch.device) -> Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32, device=device)


def _pack(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Token indices ``(rows, width)`` putting each row's ``mask`` tokens first (in order),
    cut to the longest row, and the padding ``(rows, width)`` (True past a row's count).

    Examples
    --------
    >>> index, padding = _pack(torch.tensor([[False, True, True], [True, False, False]]))
    >>> index.tolist(), padding.tolist()
    ([[1, 2], [0, 1]], [[False, False], [False, True]])
    """
    width = int(mask.sum(dim=1).max()) if len(mask) else 0
    index = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    return index, ~mask.gather(1, index)


def _canonical_keys(config: SimformerConfig) -> list[int]:
    """A key per variable that does not depend on the order of ``config.bands``: noise
    drawn in key order lands on the same variable whatever the column order."""
    known = list(SIMFORMER_PARAM_BOUNDS)
    keys = [known.index(p) for p in config.params]
    keys += [1000 + BAND_IDS.index(b) for b in config.bands]
    keys += [10_000] if config.use_parallax else []
    return keys


@dataclass
class Observations:
    """A batch of stars in token space (tensors of shape ``(batch, n_var)``).

    ``values`` are standardised observed values (0 where not observed), ``observed`` marks
    observed observables, ``error`` is the error feature (0 where not observed);
    ``parallax`` and ``parallax_error`` keep the measured parallax (mas, ``(batch,)``, NaN
    where there is none) for the distance frame.
    """

    values: Tensor
    observed: Tensor
    error: Tensor
    parallax: Tensor | None = None
    parallax_error: Tensor | None = None

    def rows(self, index: Tensor | slice) -> Observations:
        def part(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index]

        return Observations(self.values[index], self.observed[index], self.error[index],
                            part(self.parallax), part(self.parallax_error))  # fmt: skip


@dataclass
class LatentFlow:
    """The flow of a chunk's unobserved tokens (:meth:`Simformer.cached_latent_flow`).

    ``velocity(x, t)`` maps latent values ``(stars, samples, n_latent)`` at flow time ``t``
    to their velocity (zero in padding slots); ``index`` ``(stars, samples, n_latent)``
    holds each latent slot's variable index, ``padding`` marks slots that are not tokens
    of the star, and ``template`` ``(stars, samples, n_var)`` the conditioning values.
    """

    velocity: Any
    index: Tensor
    padding: Tensor
    template: Tensor

    def take(self, values: Tensor) -> Tensor:
        """Latent slots ``(stars, samples, n_latent)`` of full-variable values ``(..., n_var)``."""
        return values.gather(-1, self.index)

    def fill(self, x: Tensor) -> Tensor:
        """Full-variable values: ``template`` with the latent slots set to ``x``."""
        x = torch.where(self.padding, self.template.gather(2, self.index), x)
        return self.template.scatter(2, self.index, x)


class Simformer(nn.Module):
    """Flow matching over all parameter and observable tokens with condition masks.

    Parameters
    ----------
    config : SimformerConfig

    Examples
    --------
    >>> config = SimformerConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=16, heads=2,
    ...                          depth=1, ff=32)
    >>> model = Simformer(config)
    >>> mag = torch.tensor([[12.0, 12.4, 11.5], [15.0, float("nan"), 14.1]])
    >>> err = torch.full_like(mag, 0.01)
    >>> samples, log_prob = model.sample(mag, err, torch.tensor([2.0, float("nan")]),
    ...                                  torch.tensor([0.05, 0.1]), n_samples=8, steps=4)
    >>> samples.shape, bool(torch.isnan(log_prob).all())
    (torch.Size([2, 8, 7]), True)
    >>> joint = model.sample_joint(mag, err, n_samples=4, steps=2)
    >>> joint["bands"].shape, joint["parallax"].shape
    (torch.Size([2, 4, 3]), torch.Size([2, 4]))
    """

    estimator = ESTIMATOR_NAME

    def __init__(self, config: SimformerConfig) -> None:
        super().__init__()
        self.config = config
        n_var, width = config.n_var, config.width
        n_obs_var = n_var - config.n_param
        self.id_embedding = nn.Embedding(n_var, width)
        self.value_weight = nn.Parameter(torch.randn(n_var, width) / math.sqrt(width))
        self.condition_embedding = nn.Embedding(2, width)
        self.error_weight = nn.Parameter(torch.randn(n_obs_var, width) / math.sqrt(width))
        self.error_bias = nn.Parameter(torch.zeros(width))
        self.time_embedding = nn.Sequential(
            nn.Linear(2 * config.time_frequencies, width), nn.GELU(), nn.Linear(width, width)
        )
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=config.heads,
            dim_feedforward=config.ff,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=config.depth, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.head = nn.Linear(width, 1)

        def buffer(name: str, values: Any, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        standard = config.standardization
        buffer("loc", [standard[v][0] for v in config.variables])
        buffer("scale", [standard[v][1] for v in config.variables])
        lo, hi = config.bounds
        buffer("lo", lo)
        buffer("hi", hi)
        buffer("frequencies", [math.pi * k for k in range(1, config.time_frequencies + 1)])
        keys = torch.tensor(_canonical_keys(config))
        buffer("noise_rank", torch.argsort(torch.argsort(keys)).tolist(), torch.long)
        buffer("param_noise_rank", torch.argsort(torch.argsort(keys[: config.n_param])).tolist(),
               torch.long)  # fmt: skip

    # -- token space -------------------------------------------------------------------
    @property
    def n_param(self) -> int:
        return self.config.n_param

    def standardize(self, values: Tensor, var: slice | Tensor | None = None) -> Tensor:
        """Physical values ``(..., n)`` of the variables ``var`` -> token space."""
        index = slice(None) if var is None else var
        return (values - self.loc[index]) / self.scale[index]

    def unstandardize(self, values: Tensor, var: slice | Tensor | None = None) -> Tensor:
        """Token space -> physical values (inverse of :meth:`standardize`)."""
        index = slice(None) if var is None else var
        return values * self.scale[index] + self.loc[index]

    def _band_slice(self) -> slice:
        return slice(self.n_param, self.n_param + self.config.n_band)

    def observations(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> Observations:
        """Catalog arrays -> token-space values, observed flags and error features.

        A band is observed when its magnitude and error are finite and the error is
        positive; the parallax likewise (a negative parallax is a valid measurement).
        """
        config = self.config
        n_band = config.n_band
        assert mag.ndim == 2 and mag.shape[1] == n_band, (
            f"mag must be (batch, {n_band}) in the order of config.bands, got {tuple(mag.shape)}"
        )
        assert mag_err.shape == mag.shape, (
            f"mag_err shape {tuple(mag_err.shape)} != mag shape {tuple(mag.shape)}"
        )
        batch = mag.shape[0]
        zeros = mag.new_zeros(batch, config.n_param)
        no = torch.zeros(batch, config.n_param, dtype=torch.bool, device=mag.device)
        seen = observed_bands(mag, mag_err)
        band_values = torch.where(seen, self.standardize(mag, self._band_slice()), 0.0)
        band_error = torch.where(
            seen, torch.log10(mag_err.clamp(min=ERROR_FLOOR_MAG)) + ERROR_OFFSET, 0.0
        )
        values, observed, error = [zeros, band_values], [no, seen], [zeros, band_error]
        if config.use_parallax:
            if parallax is None or parallax_error is None:
                parallax = mag.new_full((batch,), float("nan"))
                parallax_error = parallax
            assert parallax.shape == (batch,) and parallax_error.shape == (batch,), (
                f"parallax and parallax_error must be ({batch},), got "
                f"{tuple(parallax.shape)} and {tuple(parallax_error.shape)}"
            )
            has = torch.isfinite(parallax) & torch.isfinite(parallax_error) & (parallax_error > 0)
            index = slice(config.n_var - 1, config.n_var)
            value = torch.where(has, self.standardize(parallax[:, None], index)[:, 0], 0.0)
            err = torch.where(
                has, torch.log10(parallax_error.clamp(min=ERROR_FLOOR_MAG)) + ERROR_OFFSET, 0.0
            )
            values.append(value[:, None])
            observed.append(has[:, None])
            error.append(err[:, None])
            nan = torch.full_like(parallax, float("nan"))
            return Observations(torch.cat(values, 1), torch.cat(observed, 1), torch.cat(error, 1),
                                torch.where(has, parallax, nan),
                                torch.where(has, parallax_error, nan))  # fmt: skip
        return Observations(torch.cat(values, 1), torch.cat(observed, 1), torch.cat(error, 1))

    def frame(self, obs: Observations, condition: Tensor) -> tuple[Tensor, Tensor]:
        """Each star's token frame: centre and width ``(batch, n_var)``.

        The network sees and predicts ``(token - centre) / width``. That is the token itself
        (centre 0, width 1) for every variable but the distance of a star whose parallax is
        a conditioning token, when ``config.distance_frame == "parallax"``: there the frame
        is the distance the parallax implies and its width
        (:func:`~ysoscale.nn.parallax_centring.token_frame`).
        """
        config = self.config
        batch, n_var = condition.shape
        centre = obs.values.new_zeros(batch, n_var)
        width = obs.values.new_ones(batch, n_var)
        if config.distance_frame != "parallax" or obs.parallax is None:
            return centre, width
        n = self.n_param
        used = torch.where(condition[:, -1], obs.parallax, float("nan"))
        centre[:, :n], width[:, :n] = token_frame(config.params, self.loc[:n], self.scale[:n],
                                                  self.lo, self.hi, used, obs.parallax_error,
                                                  batch)  # fmt: skip
        return centre, width

    def clean_targets(
        self, theta: Tensor, mag_true: Tensor, parallax_true: Tensor | None = None
    ) -> Tensor:
        """Token-space targets ``(batch, n_var)``: parameters, noise-free magnitudes, parallax."""
        parts = [theta, mag_true]
        if self.config.use_parallax:
            assert parallax_true is not None, "parallax_true is needed (config.use_parallax)"
            parts.append(parallax_true[:, None])
        return self.standardize(torch.cat(parts, dim=1))

    def conditioned(
        self, obs: Observations, condition: Mapping[str, Any] | None
    ) -> tuple[Tensor, Tensor]:
        """Token values and condition mask ``(batch, n_var)``: the observations plus the
        parameters in ``condition`` (``{parameter: value}``, scalar or ``(batch,)``)."""
        params = self.config.params
        cond = obs.observed.clone()
        start = obs.values.clone()
        for name, value in (condition or {}).items():
            if name not in params:
                raise ValueError(f"can only condition on parameters {params}, not {name!r}")
            index = params.index(name)
            value = torch.as_tensor(value, dtype=start.dtype, device=start.device)
            start[:, index] = (value.expand(len(start)) - self.loc[index]) / self.scale[index]
            cond[:, index] = True
        return start, cond

    def solver_settings(self, solver: str | None, steps: int | None) -> tuple[str, int]:
        """``solver`` and ``steps``, the model's defaults where None, checked."""
        solver = solver or self.config.default_solver
        steps = int(steps or self.config.default_steps)
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return solver, steps

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode for the block; the previous mode is restored after it."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def _check_observed(self, obs: Observations) -> None:
        seen = obs.observed[:, self._band_slice()]
        empty = torch.nonzero(~seen.any(dim=1)).flatten().tolist()
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            raise ValueError(
                f"{len(empty)} star(s) have no observed band (rows {shown}); "
                "flag and drop them before calling the estimator"
            )

    # -- network -----------------------------------------------------------------------
    def velocity(
        self,
        x: Tensor,
        t: Tensor,
        condition: Tensor,
        error: Tensor,
        present: Tensor | None = None,
        variable: Tensor | None = None,
    ) -> Tensor:
        """Velocity of every token.

        Parameters
        ----------
        x : Tensor, shape (batch, length)
            Token-space values at time ``t`` (observed tokens: their observed value).
        t : Tensor, shape (batch,)
        condition : Tensor of bool, shape (batch, length)
            True for observed (conditioning) tokens.
        error : Tensor, shape (batch, length)
            Error feature of observed observables (0 elsewhere).
        present : Tensor of bool, shape (batch, length), optional
            False for tokens left out of the sequence (padding / marginalised).
        variable : Tensor of int, shape (batch, length), optional
            Variable index of each token (default: the config's variable order).

        Returns
        -------
        Tensor, shape (batch, length)
        """
        batch, length = x.shape
        if variable is None:
            assert length == self.config.n_var, f"x must be (batch, {self.config.n_var})"
            variable = torch.arange(length, device=x.device).expand(batch, length)
        if present is None:
            present = torch.ones_like(condition)
        tokens = self._embed(x, t, condition, error, variable)
        mask = None
        if self.config.attention == "cached_context":
            mask = attention_mask(condition, present, self.config.heads)
        out = self.transformer(tokens, mask=mask, src_key_padding_mask=~present)
        return self.head(out).squeeze(-1)

    def _embed(
        self, x: Tensor, t: Tensor | None, condition: Tensor, error: Tensor, variable: Tensor
    ) -> Tensor:
        """Tokens ``(..., length, width)`` of values ``x`` (..., length) at flow time ``t``
        (shape ``x.shape[:-1]``; None: no time, for conditioning tokens alone). In the
        cached-context mode conditioning tokens carry no flow time."""
        n_param = self.n_param
        error_weight = torch.cat([self.error_weight.new_zeros(n_param, self.config.width),
                                  self.error_weight])  # fmt: skip
        has_error = (condition & (variable >= n_param)).unsqueeze(-1)
        tokens = (
            self.id_embedding(variable)
            + x.unsqueeze(-1) * self.value_weight[variable]
            + self.condition_embedding(condition.long())
            + has_error * (error.unsqueeze(-1) * error_weight[variable] + self.error_bias)
        )
        if t is None:
            return tokens
        features = t[..., None] * self.frequencies
        time = self.time_embedding(torch.cat([features.sin(), features.cos()], dim=-1))
        time = time.unsqueeze(-2)
        if self.config.attention == "cached_context":
            time = time * (~condition).unsqueeze(-1)
        return tokens + time

    # -- training ----------------------------------------------------------------------
    def draw_masks(
        self, observed: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Training condition mask and presence mask ``(batch, n_var)``.

        The condition starts as the loader's survey pattern (``observed``); a share of
        stars keep a random half of it, a share also condition on random parameters (and
        on ``has_disk``); unobserved observables are left out of the sequence for a
        share of stars and half-left-out for another.
        """
        config = self.config
        batch, n_var = observed.shape
        device = observed.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, device=device)

        condition = observed.clone()
        thin = (rand(batch, 1) < config.subset_prob) & (rand(batch, n_var) < 0.5)
        condition &= ~thin
        n_param = self.n_param
        params = (rand(batch, 1) < config.param_condition_prob) & (rand(batch, n_param) < 0.3)
        condition[:, :n_param] = params
        if "has_disk" in config.params:
            index = config.params.index("has_disk")
            condition[:, index] |= rand(batch) < config.disk_condition_prob
        mode = rand(batch, 1)
        keep_half = rand(batch, n_var) < 0.5
        keep = torch.where(
            mode < config.marginal_prob,
            torch.zeros_like(keep_half),
            torch.where(mode < 2 * config.marginal_prob, keep_half, torch.ones_like(keep_half)),
        )
        present = condition | keep
        present[:, :n_param] = True
        return condition, present

    def loss(
        self,
        theta: Tensor,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None,
        parallax_error: Tensor | None,
        mag_true: Tensor,
        parallax_true: Tensor | None = None,
        *,
        forward_model: Any = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Training loss ``w_FM L_FM + w_R L_R`` of a batch and its parts.

        Parameters
        ----------
        theta : Tensor, shape (batch, n_param)
            True parameters (``config.params`` order).
        mag, mag_err, parallax, parallax_error : Tensor
            Observed catalog values (NaN = not observed), as from the loader.
        mag_true, parallax_true : Tensor
            Noise-free magnitudes ``(batch, n_band)`` and parallax ``(batch,)``: the targets
            of unobserved observables.
        forward_model : ForwardModel, optional
            Over ``config.bands`` with isochrones; needed when ``config.w_r > 0``.
        generator : torch.Generator, optional
            Source of the masks, noise and times.

        Returns
        -------
        loss : Tensor (scalar)
        parts : dict
            ``fm`` and ``physics`` (the unweighted losses; ``physics`` is NaN without guidance).
        """
        config = self.config
        assert theta.shape == (mag.shape[0], config.n_param), (
            f"theta must be ({mag.shape[0]}, {config.n_param}), got {tuple(theta.shape)}"
        )
        obs = self.observations(mag, mag_err, parallax, parallax_error)
        x1 = self.clean_targets(theta, mag_true, parallax_true)
        known = torch.isfinite(x1)
        condition, present = self.draw_masks(obs.observed, generator)
        condition &= known | obs.observed
        centre, width = self.frame(obs, condition)
        x1 = torch.where(known, (x1 - centre) / width, 0.0)
        batch = x1.shape[0]
        device = x1.device
        x0 = torch.randn(x1.shape, generator=generator, device=device)
        t = torch.rand(batch, generator=generator, device=device)
        cond_values = torch.where(obs.observed, obs.values, x1)  # parameters: their truth
        xt = torch.where(condition, cond_values, (1 - t[:, None]) * x0 + t[:, None] * x1)
        error = torch.where(condition, obs.error, 0.0)
        v = self.velocity(xt, t, condition, error, present)
        target = (~condition) & present & known
        count = target.sum(dim=1)
        per_star = ((v - (x1 - x0)) ** 2 * target).sum(dim=1) / count.clamp(min=1)
        fm = per_star[count > 0].mean()
        loss = config.w_fm * fm
        parts = {"fm": float(fm.detach()), "physics": float("nan")}
        if config.w_r > 0:
            if forward_model is None:
                raise ValueError("config.w_r > 0: the physics guidance needs a forward_model")
            clean = torch.where(condition, cond_values, xt + (1 - t[:, None]) * v)
            clean = clean * width + centre
            disk = None
            if "has_disk" in config.params:
                disk = theta[:, config.params.index("has_disk")] > 0.5
            physics = self._physics_residual(
                clean, condition, present, obs, mag_err, forward_model, t**2, disk
            )
            loss = loss + config.w_r * physics
            parts["physics"] = float(physics.detach())
        return loss, parts

    def _physics_residual(
        self,
        clean: Tensor,
        condition: Tensor,
        present: Tensor,
        obs: Observations,
        mag_err: Tensor,
        forward_model: Any,
        weight: Tensor,
        disk: Tensor | None,
    ) -> Tensor:
        """Weighted Cauchy penalty between ``m_fwd(θ̂)`` and observed / predicted magnitudes."""
        config = self.config
        assert tuple(forward_model.bands) == config.bands, (
            "the forward model must predict config.bands in the same order"
        )
        theta = self.unstandardize(clean[:, : self.n_param], slice(0, self.n_param))
        theta = torch.maximum(torch.minimum(theta, self.hi), self.lo)
        index = {p: i for i, p in enumerate(config.params)}
        fwd = forward_model.physical(
            theta[:, index["log10_mass"]],
            theta[:, index["log10_age"]],
            theta[:, index["mh"]],
            10.0 ** theta[:, index["log10_distance"]],
            theta[:, index["av"]],
            theta[:, index["rv"]],
        )
        bands = self._band_slice()
        m_ref = self.unstandardize(clean[:, bands], bands)
        floor2 = config.guidance_floor**2
        err = torch.where(condition[:, bands], mag_err.nan_to_num(0.0), 0.0)
        use = present[:, bands] & fwd.valid[:, None]
        if disk is not None:
            use = use & ~disk[:, None]  # the forward model here has no disk
        mag_fwd = torch.where(use, fwd.mag, 0.0)
        r2 = torch.where(use, (mag_fwd - m_ref) ** 2 / (err**2 + floor2), 0.0)
        penalty = torch.log1p(r2 / _CAUCHY_SCALE**2)
        per_star = penalty.sum(dim=1) / use.sum(dim=1).clamp(min=1)
        has = use.any(dim=1)
        w = weight * has
        return (w * per_star).sum() / w.sum().clamp(min=1e-6)

    # -- sampling ----------------------------------------------------------------------
    @staticmethod
    def _integrate(x: Tensor, velocity: Any, solver: str, steps: int) -> Tensor:
        """Integrate ``dx/dt = velocity(x, t)`` from t = 0 to 1 with a fixed-step solver."""
        dt = 1.0 / steps
        for i in range(steps):
            x = solver_step(x, velocity, solver, i * dt, dt)
        return x

    def _solve(
        self,
        x: Tensor,
        condition: Tensor,
        error: Tensor,
        present: Tensor,
        variable: Tensor,
        solver: str,
        steps: int,
    ) -> Tensor:
        """Integrate the unobserved tokens from t = 0 to 1 (observed tokens stay put)."""
        latent = (~condition).to(x.dtype)

        def v(x: Tensor, t: float) -> Tensor:
            times = x.new_full((x.shape[0],), t)
            return self.velocity(x, times, condition, error, present, variable) * latent

        return self._integrate(x, v, solver, steps)

    def _solve_cached(
        self,
        start: Tensor,
        noise: Tensor,
        condition: Tensor,
        error: Tensor,
        present: Tensor,
        solver: str,
        steps: int,
    ) -> Tensor:
        """The cached-context solve of a chunk of stars: ``start``, ``condition``, ``error``,
        ``present`` are ``(stars, n_var)`` in variable order, ``noise`` ``(stars, samples,
        n_var)``; returns ``(stars, samples, n_var)`` (conditioning tokens: ``start``). A
        token's index is its variable index."""
        latent = self.cached_latent_flow(start, condition, error, present, noise.shape[1])
        if latent.index.shape[-1] == 0:
            return latent.fill(noise.new_zeros(*noise.shape[:2], 0))
        x = self._integrate(latent.take(noise), latent.velocity, solver, steps)
        return latent.fill(x)

    def cached_latent_flow(
        self, start: Tensor, condition: Tensor, error: Tensor, present: Tensor, samples: int
    ) -> LatentFlow:
        """The velocity field of the unobserved tokens of a chunk of stars, their
        conditioning tokens encoded once (``attention = "cached_context"``).

        ``start``, ``condition``, ``error``, ``present`` are ``(stars, n_var)`` in variable
        order; the flow acts on ``(stars, samples, n_latent)`` (:class:`LatentFlow`).
        """
        stars = start.shape[0]

        def take(values: Tensor, index: Tensor) -> Tensor:
            return values.gather(-1, index.expand(*values.shape[:-1], -1))

        context, context_padding = _pack(condition)
        latent, latent_padding = _pack(present & ~condition)
        n_latent = latent.shape[1]
        template = start[:, None].expand(-1, samples, -1).clone()
        tokens = self._embed(take(start, context), None, ~context_padding,
                             take(error, context), context)  # fmt: skip
        cache = encode_context(self.transformer, tokens, context_padding)
        no = torch.zeros(stars, samples, n_latent, dtype=torch.bool, device=start.device)
        latent_variable = latent[:, None].expand(-1, samples, -1)
        zero_error = start.new_zeros(stars, samples, n_latent)
        keep = (~latent_padding).to(start.dtype)[:, None]

        def v(x: Tensor, t: float) -> Tensor:
            times = x.new_full((stars, samples), t)
            tokens = self._embed(x, times, no, zero_error, latent_variable)
            out = decode_latent(self.transformer, tokens, latent_padding, cache)
            return self.head(out).squeeze(-1) * keep

        return LatentFlow(v, latent[:, None].expand(-1, samples, -1),
                          latent_padding[:, None].expand(-1, samples, -1), template)  # fmt: skip

    def _transport(
        self,
        obs: Observations,
        condition: Tensor,
        present: Tensor,
        start: Tensor,
        noise: Tensor,
        solver: str | None,
        steps: int | None,
        max_tokens: int | None,
    ) -> Tensor:
        """Samples ``(batch, n_samples, n_var)`` in token space.

        ``start`` holds the conditioning values, ``noise`` ``(batch, n_samples, n_var)`` the
        starting points of the unobserved tokens. Tokens are packed (present first) and
        star-samples are sent in chunks of at most ``max_tokens`` tokens.
        """
        solver, steps = self.solver_settings(solver, steps)
        batch, n_samples, n_var = noise.shape
        if self.config.attention == "cached_context":
            return self._transport_cached(obs, condition, present, start, noise, solver, steps,
                                          max_tokens)  # fmt: skip
        order, _ = _pack(present)
        length = order.shape[1]

        def packed(values: Tensor) -> Tensor:
            return values.gather(1, order)

        p_condition, p_present = packed(condition), packed(present)
        p_error, p_start = packed(torch.where(condition, obs.error, 0.0)), packed(start)
        p_noise = noise.gather(2, order[:, None, :].expand(-1, n_samples, -1))
        out = torch.full_like(noise, float("nan"))
        max_tokens = max_tokens or tokens_per_call(noise.device)
        rows_per_chunk = max(1, max_tokens // max(length, 1))
        stars_per_chunk = max(1, rows_per_chunk // n_samples)
        for first in range(0, batch, stars_per_chunk):
            rows = slice(first, first + stars_per_chunk)
            n = p_condition[rows].shape[0]

            def flat(values: Tensor, rows: slice = rows, n: int = n) -> Tensor:
                return values[rows, None].expand(n, n_samples, length).reshape(-1, length)

            cond = flat(p_condition)
            x = torch.where(cond, flat(p_start), p_noise[rows].reshape(-1, length))
            x = self._solve(x, cond, flat(p_error), flat(p_present), flat(order), solver, steps)
            x = torch.where(flat(p_present), x, float("nan")).reshape(n, n_samples, length)
            out[rows] = out[rows].scatter(2, order[rows, None, :].expand(-1, n_samples, -1), x)
        return out

    def _transport_cached(
        self,
        obs: Observations,
        condition: Tensor,
        present: Tensor,
        start: Tensor,
        noise: Tensor,
        solver: str,
        steps: int,
        max_tokens: int | None,
    ) -> Tensor:
        """:meth:`_transport` of a cached-context model: chunks of stars whose unobserved
        tokens (over all samples) fit in ``max_tokens``."""
        batch, n_samples, _ = noise.shape
        out = torch.full_like(noise, float("nan"))
        n_latent = int((present & ~condition).sum(dim=1).max()) if batch else 0
        max_tokens = max_tokens or tokens_per_call(noise.device)
        stars_per_chunk = max(1, max_tokens // max(1, n_latent * n_samples))
        error = torch.where(condition, obs.error, 0.0)
        for first in range(0, batch, stars_per_chunk):
            rows = slice(first, first + stars_per_chunk)
            x = self._solve_cached(start[rows], noise[rows], condition[rows], error[rows],
                                   present[rows], solver, steps)  # fmt: skip
            out[rows] = torch.where(present[rows, None], x, float("nan"))
        return out

    def _prepare(
        self,
        mag: Any,
        mag_err: Any,
        parallax: Any,
        parallax_error: Any,
    ) -> Observations:
        device = self.loc.device
        mag, mag_err = _as_tensor(mag, device), _as_tensor(mag_err, device)
        obs = self.observations(
            mag, mag_err, _as_tensor(parallax, device), _as_tensor(parallax_error, device)
        )
        self._check_observed(obs)
        return obs

    def _clip(self, params: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(params, self.hi), self.lo)

    @torch.no_grad()
    def sample_from_noise(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None,
        parallax_error: Tensor | None,
        noise: Tensor,
        *,
        solver: str | None = None,
        steps: int | None = None,
        max_tokens: int | None = None,
    ) -> Tensor:
        """Posterior samples of the parameters, transported from given standard-normal draws.

        Parameters
        ----------
        mag, mag_err, parallax, parallax_error : as in :meth:`sample`
        noise : Tensor, shape (batch, n_samples, n_param)
            Standard-normal draws (e.g. the inference kernel's counter-based ones), one
            column per parameter in ``config.params`` order.
        max_tokens : int, optional
            Tokens per network call; default by device
            (:func:`ysoscale.nn.batching.tokens_per_call`).

        Returns
        -------
        Tensor, shape (batch, n_samples, n_param)
            Physical units, clipped onto the parameter box.
        """
        obs = self._prepare(mag, mag_err, parallax, parallax_error)
        batch, n_var, n_param = obs.values.shape[0], self.config.n_var, self.n_param
        noise = torch.as_tensor(noise, dtype=torch.float32, device=self.loc.device)
        assert noise.ndim == 3 and noise.shape[0] == batch and noise.shape[2] == n_param, (
            f"noise must be ({batch}, n_samples, {n_param}), got {tuple(noise.shape)}"
        )
        full = noise.new_zeros(batch, noise.shape[1], n_var)
        full[..., :n_param] = noise
        present = obs.observed.clone()
        present[:, :n_param] = True  # unobserved observables are left out (marginalised)
        centre, width = self.frame(obs, obs.observed)
        with self.evaluating():
            x = self._transport(
                obs, obs.observed, present, obs.values, full, solver, steps, max_tokens
            )
        x = x[..., :n_param] * width[:, None, :n_param] + centre[:, None, :n_param]
        params = self.unstandardize(x, slice(0, n_param))
        return self._clip(params)

    def forward(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> SimformerPosterior:
        """Posterior of every star (samples; exact densities cost Newton inversions, see
        :mod:`ysoscale.nn.simformer_density`).

        Raises
        ------
        ValueError
            If a star has no observed band (the message names the rows).
        """
        obs = self._prepare(mag, mag_err, parallax, parallax_error)
        del obs  # checked here; the posterior keeps the raw arrays
        return SimformerPosterior(self, mag, mag_err, parallax, parallax_error)

    @torch.no_grad()
    def sample(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
        n_samples: int = 64,
        batch_size: int = 4096,
        *,
        solver: str | None = None,
        steps: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw posterior samples of the parameters (same call as
        :meth:`PosteriorEstimator.sample <ysoscale.nn.npe.PosteriorEstimator.sample>`).

        Returns
        -------
        samples : Tensor, shape (batch, n_samples, n_param)
        log_prob : Tensor, shape (batch, n_samples)
            NaN: not computed here (it costs Jacobians of every solver step;
            :func:`ysoscale.nn.simformer_density.sample_with_log_prob` gives it).
        """
        device = self.loc.device
        mag = _as_tensor(mag, device)
        self._prepare(mag, mag_err, parallax, parallax_error)  # rows named over the whole call
        n = mag.shape[0]
        noise = torch.randn(n, n_samples, self.config.n_var, device=device)
        noise = noise[..., self.param_noise_rank]
        out = []
        for first in range(0, n, batch_size):
            rows = slice(first, first + batch_size)
            out.append(
                self.sample_from_noise(
                    mag[rows],
                    _as_tensor(mag_err, device)[rows],
                    None if parallax is None else _as_tensor(parallax, device)[rows],
                    None if parallax_error is None else _as_tensor(parallax_error, device)[rows],
                    noise[rows],
                    solver=solver,
                    steps=steps,
                )
            )
        samples = torch.cat(out) if out else mag.new_empty(0, n_samples, self.n_param)
        return samples, torch.full(samples.shape[:2], float("nan"), device=device)

    @torch.no_grad()
    def sample_joint(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
        n_samples: int = 64,
        *,
        noise: Tensor | None = None,
        condition: Mapping[str, Any] | None = None,
        leave_out: Sequence[str] = (),
        solver: str | None = None,
        steps: int | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, Tensor]:
        """Joint posterior samples of the parameters and of every unobserved observable.

        Parameters
        ----------
        mag, mag_err, parallax, parallax_error : as in :meth:`sample`
        n_samples : int
        noise : Tensor, shape (batch, n_samples, n_var), optional
            Standard-normal draws in ``config.variables`` order (default: drawn here, in an
            order that does not depend on the band order).
        condition : dict, optional
            ``{parameter: value}`` (scalar or ``(batch,)``) to condition on, e.g.
            ``{"has_disk": 0.0}`` for a disk-free (photospheric) prediction.
        leave_out : sequence of str
            Observed variables (band ids, ``"parallax"``) to treat as unobserved: their
            values are predicted instead of used.

        Returns
        -------
        dict
            ``params`` (batch, n_samples, n_param), physical, clipped onto the box;
            ``bands`` (batch, n_samples, n_band): predicted noise-free magnitudes of the
            unobserved bands and the given magnitude of the observed ones; ``parallax``
            (batch, n_samples) likewise (if ``config.use_parallax``); ``band_observed``
            (batch, n_band) bool.

        Raises
        ------
        ValueError
            If a star has no observed band after ``leave_out``, or a name is unknown.
        """
        config = self.config
        device = self.loc.device
        mag, mag_err = _as_tensor(mag, device), _as_tensor(mag_err, device)
        obs = self.observations(
            mag, mag_err, _as_tensor(parallax, device), _as_tensor(parallax_error, device)
        )
        variables = config.variables
        unknown = [name for name in leave_out if name not in variables[self.n_param :]]
        if unknown:
            raise ValueError(f"leave_out names unknown observables {unknown}")
        for name in leave_out:
            obs.observed[:, variables.index(name)] = False
        self._check_observed(obs)
        start, cond = self.conditioned(obs, condition)
        batch = start.shape[0]
        if noise is None:
            noise = torch.randn(batch, n_samples, config.n_var, device=device)
            noise = noise[..., self.noise_rank]
        noise = torch.as_tensor(noise, dtype=torch.float32, device=device)
        assert noise.shape == (batch, n_samples, config.n_var), (
            f"noise must be ({batch}, {n_samples}, {config.n_var}), got {tuple(noise.shape)}"
        )
        centre, width = self.frame(obs, cond)
        with self.evaluating():
            present = torch.ones_like(cond)
            x = self._transport(obs, cond, present, (start - centre) / width, noise, solver,
                                steps, max_tokens)  # fmt: skip
        values = self.unstandardize(x * width[:, None] + centre[:, None])
        observed_values = self.unstandardize(start)
        values = torch.where(cond[:, None, :], observed_values[:, None, :], values)
        bands = self._band_slice()
        out = {
            "params": self._clip(values[..., : self.n_param]),
            "bands": values[..., bands],
            "band_observed": obs.observed[:, bands],
        }
        if config.use_parallax:
            out["parallax"] = values[..., -1]
        return out

    def yso_products(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
        n_samples: int = 64,
        *,
        age_threshold_myr: float = 10.0,
        excess_bands: Sequence[str] | None = None,
        samples: Tensor | None = None,
        noise: Tensor | None = None,
        solver: str | None = None,
        steps: int | None = None,
    ) -> dict[str, Tensor]:
        """Young-star and disk probabilities and the infrared-excess score per band.

        ``p_young`` = P(age < ``age_threshold_myr`` | data) and ``p_disk`` =
        P(has_disk | data) from the parameter samples (``samples`` if given, else drawn).
        The excess score of each observed band of ``excess_bands`` (default
        :data:`INFRARED_EXCESS_BANDS`) compares it with its photospheric prediction: the
        simformer's predictive of those bands conditioned on the other bands, the
        parallax and ``has_disk = 0`` (see :func:`ysoscale.nn.predictive.infrared_excess`).
        Stars with no band outside ``excess_bands`` get NaN scores. ``noise``
        ``(batch, n_samples, n_var)`` gives the standard-normal draws of that prediction
        (e.g. counter-based ones, for results that do not depend on the batch).

        Returns
        -------
        dict
            ``p_young`` (batch,), ``p_disk`` (batch,) (NaN without a ``has_disk``
            parameter), ``excess`` (batch, n_band) (NaN outside scored, observed bands).
        """
        from ysoscale.nn.predictive import infrared_excess, p_disk, p_young

        config = self.config
        device = self.loc.device
        mag, mag_err = _as_tensor(mag, device), _as_tensor(mag_err, device)
        parallax, parallax_error = _as_tensor(parallax, device), _as_tensor(parallax_error, device)
        if samples is None:
            samples, _ = self.sample(mag, mag_err, parallax, parallax_error, n_samples,
                                     solver=solver, steps=steps)  # fmt: skip
        if "log10_age" in config.params:
            young = p_young(samples[..., config.params.index("log10_age")], age_threshold_myr)
        else:
            young = mag.new_full((mag.shape[0],), float("nan"))
        if "has_disk" in config.params:
            disk = p_disk(samples[..., config.params.index("has_disk")])
        else:
            disk = mag.new_full((mag.shape[0],), float("nan"))
        scored = tuple(b for b in (excess_bands or INFRARED_EXCESS_BANDS) if b in config.bands)
        excess = torch.full_like(mag, float("nan"))
        if scored:
            anchor = [i for i, b in enumerate(config.bands) if b not in scored]
            anchored = (
                torch.isfinite(mag[:, anchor]).any(dim=1) if anchor else mag[:, 0] != mag[:, 0]
            )
            rows = torch.nonzero(anchored).flatten()
            if rows.numel():
                plx = None if parallax is None else parallax[rows]
                plx_err = None if parallax_error is None else parallax_error[rows]
                condition = {"has_disk": 0.0} if "has_disk" in config.params else None
                draws = None if noise is None else torch.as_tensor(noise, device=device)[rows]
                predicted = self.sample_joint(mag[rows], mag_err[rows], plx, plx_err, n_samples,
                                              noise=draws, condition=condition, leave_out=scored,
                                              solver=solver, steps=steps)["bands"]  # fmt: skip
                columns = [config.bands.index(b) for b in scored]
                score = infrared_excess(mag[rows][:, columns], mag_err[rows][:, columns],
                                        predicted[..., columns])  # fmt: skip
                block = excess[rows]
                block[:, columns] = score
                excess[rows] = block
        return {"p_young": young, "p_disk": disk, "excess": excess}

    # -- persistence -------------------------------------------------------------------
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(self, path_dir: str | Path, card: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``model_card.json`` (``"estimator": "simformer"``,
        config, band-list version, ``card`` extras).

        Examples
        --------
        >>> import tempfile
        >>> config = SimformerConfig(bands=("gaia_g",), width=8, heads=2, depth=1, ff=8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = Simformer(config).save(tmp, {"trained_on": "nothing"})
        ...     Simformer.load(tmp).config == config
        True
        """
        header = {
            "estimator": ESTIMATOR_NAME,
            "config": self.config.to_dict(),
            "band_list_version": BAND_LIST_VERSION,
            "n_parameters": self.n_parameters(),
        }
        return save_model(self, path_dir, header, card)

    @classmethod
    def load(cls, path_dir: str | Path, map_location: str | torch.device = "cpu") -> Simformer:
        """Rebuild a model from :meth:`save` output (safetensors, never pickle)."""
        card = read_card(path_dir)
        if card.get("estimator") != ESTIMATOR_NAME:
            raise ValueError(
                f"{path_dir} holds a {card.get('estimator', 'npe')!r} model, not a simformer"
            )
        return load_weights(cls(SimformerConfig.from_card(card["config"])), path_dir, map_location)


class SimformerPosterior(Distribution):
    """The posterior of a batch of stars under a :class:`Simformer` (sampling only).

    Batch shape ``(batch,)``, event shape ``(n_param,)``. :meth:`sample` integrates the
    flow; :meth:`log_prob` inverts the solver's steps for the exact density of its samples
    (:mod:`ysoscale.nn.simformer_density`).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        model: Simformer,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None,
        parallax_error: Tensor | None,
    ) -> None:
        self.model = model
        self.arrays = (mag, mag_err, parallax, parallax_error)
        batch = torch.Size([mag.shape[0]])
        super().__init__(batch, torch.Size([model.n_param]), validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Samples of shape ``(*sample_shape, batch, n_param)``."""
        shape = torch.Size(sample_shape)
        n = max(1, shape.numel())
        samples, _ = self.model.sample(*self.arrays, n_samples=n)
        return samples.transpose(0, 1).reshape(*shape, *self.batch_shape, self.model.n_param)

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        """Samples ``(batch, n_samples, n_param)`` from draws ``(batch, n_samples, n_param)``."""
        return self.model.sample_from_noise(*self.arrays, noise)

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log-density ``(*sample_shape, batch)`` of ``value (*sample_shape, batch,
        n_param)`` under the model's solver and steps, by inverting its steps
        (:func:`~ysoscale.nn.simformer_density.simformer_log_prob`; cached-context models
        only). It is the density of the *unclipped* solver samples; NaN where a step cannot
        be inverted (e.g. where the joint ``has_disk`` flow folds)."""
        from ysoscale.nn.simformer_density import simformer_log_prob

        value = torch.as_tensor(value, dtype=torch.float32, device=self.model.loc.device)
        shape = value.shape[:-2]
        flat = value.reshape(-1, *value.shape[-2:]).transpose(0, 1)  # (batch, S, n_param)
        log_q = simformer_log_prob(self.model, flat, *self.arrays)
        return log_q.transpose(0, 1).reshape(*shape, log_q.shape[0])


def config_from_card(card: Mapping[str, Any]) -> EstimatorConfig | SimformerConfig:
    """The configuration in a model card, of the estimator its ``"estimator"`` entry names
    (as :func:`load_estimator` chooses the class), without loading any weights.

    Examples
    --------
    >>> card = {"estimator": "simformer", "config": {}}  # older than both settings
    >>> config_from_card(card) == SimformerConfig(attention="full", distance_frame="native")
    True
    """
    if card.get("estimator", "npe") == ESTIMATOR_NAME:
        return SimformerConfig.from_card(card["config"])
    return EstimatorConfig.from_card(card["config"])


def load_estimator(
    path_dir: str | Path, map_location: str | torch.device = "cpu"
) -> PosteriorEstimator | Simformer:
    """The estimator saved in ``path_dir``, by the ``"estimator"`` entry of its model card
    (``"simformer"``: :class:`Simformer`; absent: the set-transformer
    :class:`~ysoscale.nn.npe.PosteriorEstimator`).

    Examples
    --------
    >>> import tempfile
    >>> config = SimformerConfig(bands=("gaia_g",), width=8, heads=2, depth=1, ff=8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Simformer(config).save(tmp)
    ...     type(load_estimator(tmp)).__name__
    'Simformer'
    """
    card = read_card(path_dir)
    if card.get("estimator", "npe") == ESTIMATOR_NAME:
        return Simformer.load(path_dir, map_location=map_location)
    return PosteriorEstimator.load(path_dir, map_location=map_location)


__all__ = [
    "ESTIMATOR_NAME",
    "INFRARED_EXCESS_BANDS",
    "Observations",
    "Simformer",
    "SimformerPosterior",
    "config_from_card",
    "load_estimator",
]

"""Exact log-densities of a simformer's parameter samples, for importance sampling.

A :class:`~ysoscale.nn.simformer.Simformer` samples the parameters of a star by a
fixed-step ODE solve from standard-normal noise (:meth:`Simformer.sample`). Through the
change of variables of each solver step (:mod:`ysoscale.nn.flow_density`) the density of
those samples is exact: not the density of the continuous flow the network approximates,
but that of the samples the solver actually returns, so importance weights
``p(θ) L(x | θ) / q(θ | x)`` built on it are consistent whatever the integration error.

* :func:`sample_with_log_prob` draws samples and their log-density (physical units; the
  samples are *not* clipped onto the parameter box, as :meth:`Simformer.sample` does, since
  clipping puts mass on the box's faces: a sample outside the box has prior density zero);
* :func:`simformer_log_prob` gives the log-density of given parameter values (e.g. the
  true parameters of simulated stars) by inverting the solver's steps.

Parameters can be conditioned on fixed values (``condition={"has_disk": 0.0}``): the density
is then that of the other parameters given those values and the data.

Only models with ``attention = "cached_context"`` are supported (the conditioning tokens are
encoded once per star, so the Jacobians cost reverse passes through the latent tokens
alone). The cost is about ``2 n_latent`` sampling passes per step (Jacobians), and
Newton iterations on top for :func:`simformer_log_prob`.

Examples
--------
>>> from ysoscale.nn.simformer import Simformer
>>> from ysoscale.nn.simformer_config import SimformerConfig
>>> config = SimformerConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=16, heads=2,
...                          depth=1, ff=32, params=("log10_mass", "log10_age", "av"))
>>> model = Simformer(config)
>>> mag = torch.tensor([[12.0, 12.4, 11.5]])
>>> err = torch.full_like(mag, 0.01)
>>> theta, log_q = sample_with_log_prob(model, mag, err, n_samples=3, steps=2)
>>> again = simformer_log_prob(model, theta, mag, err, steps=2)
>>> theta.shape, bool(torch.allclose(log_q, again, atol=1e-3))
(torch.Size([1, 3, 3]), True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ysoscale.nn.batching import tokens_per_call
from ysoscale.nn.flow_density import integrate_with_log_det, invert_steps, normal_log_prob
from ysoscale.nn.simformer import LatentFlow, Simformer, _as_tensor

JACOBIAN_TOKEN_SHARE = 2
"""Token budget of a density call relative to a sampling call: the reverse passes keep the
graph of a whole solver step, so chunks are this many times smaller (on 2 CPU cores:
8,192 latent tokens per call gave 737 samples/s, 2,048 669, 65,536 320)."""


@dataclass
class _Stars:
    """A batch of stars ready for the latent flow: token values ``start``, condition and
    presence masks, error features (all ``(batch, n_var)``), the distance frame ``centre``,
    ``width``, and the checked solver settings."""

    start: Tensor
    cond: Tensor
    present: Tensor
    error: Tensor
    centre: Tensor
    width: Tensor
    solver: str
    steps: int
    noise_scale: float


def _stars(
    model: Simformer,
    arrays: tuple[Any, ...],
    condition: Mapping[str, Any] | None,
    solver: str | None,
    steps: int | None,
    noise_scale: float,
) -> _Stars:
    """Check the model and settings; tokens, masks and frame of the stars in ``arrays``
    (``mag, mag_err, parallax, parallax_error``)."""
    if model.config.attention != "cached_context":
        raise ValueError(
            "exact simformer densities need attention = 'cached_context' "
            f"(this model has {model.config.attention!r})"
        )
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be positive, got {noise_scale}")
    solver, steps = model.solver_settings(solver, steps)
    obs = model._prepare(*arrays)
    start, cond = model.conditioned(obs, condition)
    centre, width = model.frame(obs, cond)
    present = obs.observed.clone()
    present[:, : model.n_param] = True  # unobserved observables are left out (marginalised)
    return _Stars(torch.where(cond, (start - centre) / width, start), cond, present,
                  torch.where(cond, obs.error, 0.0), centre, width, solver, steps,
                  noise_scale)  # fmt: skip


def _chunk_flows(
    model: Simformer, stars: _Stars, n_samples: int, max_tokens: int | None
) -> Iterator[tuple[slice, LatentFlow]]:
    """Chunks of stars and the latent flow of each (call it in eval mode)."""
    budget = max_tokens or tokens_per_call(model.loc.device) // JACOBIAN_TOKEN_SHARE
    per_chunk = max(1, budget // max(1, model.n_param * n_samples))
    for first in range(0, stars.start.shape[0], per_chunk):
        rows = slice(first, first + per_chunk)
        yield rows, model.cached_latent_flow(stars.start[rows], stars.cond[rows],
                                             stars.error[rows], stars.present[rows],
                                             n_samples)  # fmt: skip


def _log_prob(model: Simformer, stars: _Stars, rows: slice, z: Tensor, log_det: Tensor) -> Tensor:
    """``log q`` ``(stars, samples)`` in physical units of the free parameters, from the
    noise ``z`` and the flow's ``log |det ∂x/∂z|``: the base density, the flow, and the
    affine map frame -> physical units."""
    n_param = model.n_param
    free = (~stars.cond[rows, :n_param]).double()
    frame = (stars.width[rows, :n_param] * model.scale[:n_param]).double().log()
    return (normal_log_prob(z, stars.noise_scale) - log_det
            - (frame * free).sum(dim=1)[:, None])  # fmt: skip


@torch.no_grad()
def sample_with_log_prob(
    model: Simformer,
    mag: Any,
    mag_err: Any,
    parallax: Any = None,
    parallax_error: Any = None,
    n_samples: int = 64,
    *,
    condition: Mapping[str, Any] | None = None,
    noise: Tensor | None = None,
    noise_scale: float = 1.0,
    solver: str | None = None,
    steps: int | None = None,
    max_tokens: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Parameter samples of every star and their exact log-density under the solver.

    Parameters
    ----------
    model : Simformer
        With ``attention = "cached_context"``.
    mag, mag_err, parallax, parallax_error : as in :meth:`Simformer.sample`
    n_samples : int
    condition : dict, optional
        ``{parameter: value}`` (scalar or ``(batch,)``) held fixed; those columns of the
        samples carry the value and the density is over the other parameters.
    noise : Tensor (batch, n_samples, n_param), optional
        Standard-normal draws (default: drawn like :meth:`Simformer.sample`, so the same seed
        gives the same samples as there, before its clipping).
    noise_scale : float
        The flow starts from ``noise_scale × noise``, i.e. ``N(0, noise_scale² I)``: above 1
        the samples spread wider than the model's posterior (heavier tails for an
        importance-sampling proposal); the density accounts for it.
    solver, steps : optional
        Default: the model's.
    max_tokens : int, optional
        Latent tokens per call (default: the device's budget over
        :data:`JACOBIAN_TOKEN_SHARE`).

    Returns
    -------
    samples : Tensor (batch, n_samples, n_param)
        Physical units, ``config.params`` order, not clipped.
    log_prob : Tensor (batch, n_samples), float64
        ``log q(θ_free | data, θ_conditioned)`` in the physical units of the free parameters.
    """
    stars = _stars(model, (mag, mag_err, parallax, parallax_error), condition, solver, steps,
                   noise_scale)  # fmt: skip
    config, n_param = model.config, model.n_param
    batch, device = stars.start.shape[0], stars.start.device
    if noise is None:
        noise = torch.randn(batch, n_samples, config.n_var, device=device)
        noise = noise[..., model.param_noise_rank]
    noise = torch.as_tensor(noise, dtype=stars.start.dtype, device=device)
    assert noise.shape == (batch, n_samples, n_param), (
        f"noise must be ({batch}, {n_samples}, {n_param}), got {tuple(noise.shape)}"
    )
    full = noise.new_zeros(batch, n_samples, config.n_var)
    full[..., :n_param] = noise * noise_scale
    samples = noise.new_empty(batch, n_samples, n_param)
    log_prob = torch.empty(batch, n_samples, dtype=torch.float64, device=device)
    with model.evaluating():
        for rows, flow in _chunk_flows(model, stars, n_samples, max_tokens):
            z = flow.take(full[rows])
            x, log_det = integrate_with_log_det(z, flow.velocity, stars.solver, stars.steps)
            token = flow.fill(x)[..., :n_param] * stars.width[rows, None, :n_param]
            samples[rows] = model.unstandardize(token + stars.centre[rows, None, :n_param],
                                                slice(0, n_param))  # fmt: skip
            log_prob[rows] = _log_prob(model, stars, rows, z, log_det)
    return samples, log_prob


@torch.no_grad()
def simformer_log_prob(
    model: Simformer,
    theta: Any,
    mag: Any,
    mag_err: Any,
    parallax: Any = None,
    parallax_error: Any = None,
    *,
    condition: Mapping[str, Any] | None = None,
    noise_scale: float = 1.0,
    solver: str | None = None,
    steps: int | None = None,
    max_tokens: int | None = None,
) -> Tensor:
    """Log-density ``(batch, S)`` (float64) of parameter values ``theta (batch, S, n_param)``.

    The density :func:`sample_with_log_prob` gives its own samples, for any values: each
    solver step is inverted (:func:`~ysoscale.nn.flow_density.invert_steps`); NaN where a
    step cannot be inverted. Conditioned columns of ``theta`` are ignored; ``noise_scale``
    as in :func:`sample_with_log_prob`.
    """
    stars = _stars(model, (mag, mag_err, parallax, parallax_error), condition, solver, steps,
                   noise_scale)  # fmt: skip
    config, n_param = model.config, model.n_param
    theta = _as_tensor(theta, stars.start.device)
    batch = stars.start.shape[0]
    assert theta.ndim == 3 and theta.shape[0] == batch and theta.shape[2] == n_param, (
        f"theta must be ({batch}, S, {n_param}), got {tuple(theta.shape)}"
    )
    n_samples = theta.shape[1]
    token = model.standardize(theta, slice(0, n_param))
    full = theta.new_zeros(batch, n_samples, config.n_var)
    frame = slice(0, n_param)
    full[..., frame] = (token - stars.centre[:, None, frame]) / stars.width[:, None, frame]
    log_prob = torch.empty(batch, n_samples, dtype=torch.float64, device=theta.device)
    with model.evaluating():
        for rows, flow in _chunk_flows(model, stars, n_samples, max_tokens):
            z, log_det = invert_steps(flow.take(full[rows]), flow.velocity, stars.solver,
                                      stars.steps)  # fmt: skip
            log_prob[rows] = _log_prob(model, stars, rows, z, log_det)
    return log_prob


__all__ = ["JACOBIAN_TOKEN_SHARE", "sample_with_log_prob", "simformer_log_prob"]

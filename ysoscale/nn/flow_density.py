"""Exact densities of a fixed-step ODE sampler (change of variables through each step).

A flow-matching model samples by integrating ``dx/dt = v(x, t)`` from noise ``z`` at
``t = 0`` to ``x`` at ``t = 1`` with a fixed-step solver. The samples are then exactly
``x = Φ(z)`` with ``Φ`` the composition of the solver's steps ``Φ_k``, so their density is

    log q(x) = log N(z; 0, I) − Σ_k log |det ∂Φ_k / ∂x|   (at the points the steps pass)

— the density of *these samples*, whatever the integration error of the solver, which is
what importance sampling needs (Dax et al. 2023 use the continuous divergence integral
instead, exact only in the limit of many steps). Each step's Jacobian is ``d × d`` per
sample (``d`` = the unobserved tokens of a star: a handful), computed by ``d`` reverse-mode
passes through the step; that costs about ``2 d`` times the sampling itself.

The density of a *given* point (e.g. the true parameters of a simulated star) needs the
inverse map: each step is inverted by Newton's method from the explicit backward step
(:func:`invert_steps`). A step ``x + dt v`` is invertible when ``dt`` times the Lipschitz
constant of ``v`` is below one; a point the iteration cannot invert gets a NaN density.

Every function here works on tensors of shape ``(..., d)`` whose leading entries are
independent (the velocity of one entry never depends on another), as the samples of a
simformer are.

Examples
--------
A linear velocity ``v(x, t) = a x`` maps ``N(0, 1)`` to ``N(0, s²)`` with ``s = (1 + a dt)^N``
under Euler steps, so the density is known exactly:

>>> velocity = lambda x, t: 0.5 * x
>>> z = torch.tensor([[0.3], [-1.2]])
>>> x, log_det = integrate_with_log_det(z, velocity, "euler", 4)
>>> s = 1.125 ** 4
>>> torch.allclose(log_det, torch.full((2,), math.log(s), dtype=torch.float64))
True
>>> z_back, log_det_back = invert_steps(x, velocity, "euler", 4)
>>> torch.allclose(z_back, z, atol=1e-6), torch.allclose(log_det_back, log_det)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, float], Tensor]
"""``velocity(x (..., d), t) -> (..., d)``."""

NEWTON_ITERATIONS = 8
"""Newton iterations per inverted step (quadratic convergence: 3-4 usually suffice)."""
NEWTON_TOLERANCE = 1e-4
"""Largest |step(x) − y| (token units) accepted as an inverted step; worse gives NaN."""
NEWTON_CONVERGED = 1e-6
"""|step(x) − y| below which every entry counts as converged and the iteration stops."""


def solver_step(x: Tensor, velocity: Velocity, solver: str, t: float, dt: float) -> Tensor:
    """One fixed step of ``solver`` ("euler", "heun" or "rk4") from ``t`` to ``t + dt``."""
    if solver == "euler":
        return x + dt * velocity(x, t)
    if solver == "heun":
        k1 = velocity(x, t)
        k2 = velocity(x + dt * k1, t + dt)
        return x + 0.5 * dt * (k1 + k2)
    if solver == "rk4":
        k1 = velocity(x, t)
        k2 = velocity(x + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = velocity(x + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = velocity(x + dt * k3, t + dt)
        return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"unknown solver {solver!r}; choose euler, heun or rk4")


def step_jacobian(
    x: Tensor, velocity: Velocity, solver: str, t: float, dt: float
) -> tuple[Tensor, Tensor]:
    """The step's image ``(..., d)`` and its Jacobian ``(..., d, d)`` (``[..., i, j] = ∂y_i/∂x_j``).

    Examples
    --------
    >>> y, jac = step_jacobian(torch.ones(3, 2), lambda x, t: x**2, "euler", 0.0, 0.1)
    >>> jac[0]
    tensor([[1.2000, 0.0000],
            [0.0000, 1.2000]])
    """
    d = x.shape[-1]
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = solver_step(x, velocity, solver, t, dt)
        rows = []
        for i in range(d):
            select = torch.zeros_like(y)
            select[..., i] = 1.0
            (grad,) = torch.autograd.grad(y, x, select, retain_graph=i < d - 1)
            rows.append(grad)
    return y.detach(), torch.stack(rows, dim=-2).detach()


def _log_abs_det(jac: Tensor) -> Tensor:
    return torch.linalg.slogdet(jac.double())[1]


def integrate_with_log_det(
    z: Tensor, velocity: Velocity, solver: str, steps: int
) -> tuple[Tensor, Tensor]:
    """Integrate from ``t = 0`` to 1; return ``x`` and ``log |det ∂x/∂z|`` (float64,
    shape ``z.shape[:-1]``).

    The same steps as a plain fixed-step solve, so ``x`` equals its samples (to round-off).
    """
    dt = 1.0 / steps
    x = z
    log_det = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    for i in range(steps):
        x, jac = step_jacobian(x, velocity, solver, i * dt, dt)
        log_det = log_det + _log_abs_det(jac)
    return x, log_det


def invert_steps(
    x: Tensor,
    velocity: Velocity,
    solver: str,
    steps: int,
    *,
    iterations: int = NEWTON_ITERATIONS,
    tolerance: float = NEWTON_TOLERANCE,
) -> tuple[Tensor, Tensor]:
    """The noise ``z`` that the solver maps to ``x``, and ``log |det ∂x/∂z|`` at it.

    Each step, last first, is inverted by Newton's method started from the explicit backward
    Euler step. Entries whose residual stays above ``tolerance`` (or turns non-finite) get
    NaN in both outputs.
    """
    dt = 1.0 / steps
    log_det = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
    failed = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    target = x
    for i in reversed(range(steps)):
        t = i * dt
        with torch.no_grad():
            guess = target - dt * velocity(target, t)
        for iteration in range(iterations + 1):
            image, jac = step_jacobian(guess, velocity, solver, t, dt)
            residual = image - target
            error = residual.abs().amax(dim=-1)
            if iteration == iterations or not bool((error > NEWTON_CONVERGED).any()):
                break
            update = torch.linalg.solve(jac.double(), residual.double().unsqueeze(-1))
            guess = guess - update.squeeze(-1).to(guess.dtype)
        failed |= ~(error <= tolerance)
        log_det = log_det + _log_abs_det(jac)
        target = guess
    nan = torch.tensor(math.nan, device=x.device)
    return (
        torch.where(failed[..., None], nan.to(target.dtype), target),
        torch.where(failed, nan.double(), log_det),
    )


def normal_log_prob(z: Tensor, scale: float = 1.0) -> Tensor:
    """``log N(z; 0, scale² I)`` summed over the last axis (float64).

    >>> float(normal_log_prob(torch.zeros(1, 2))[0]) == -math.log(2 * math.pi)
    True
    """
    z = z.double() / scale
    return (-0.5 * (z**2).sum(dim=-1)
            - z.shape[-1] * (0.5 * math.log(2.0 * math.pi) + math.log(scale)))  # fmt: skip


__all__ = [
    "NEWTON_CONVERGED",
    "NEWTON_ITERATIONS",
    "NEWTON_TOLERANCE",
    "integrate_with_log_det",
    "invert_steps",
    "solver_step",
    "normal_log_prob",
    "step_jacobian",
]

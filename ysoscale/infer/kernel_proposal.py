"""A Gaussian-mixture proposal built on an estimator's samples, for importance sampling.

Importance sampling needs a proposal whose density is known at every point, its own draws
and the truth of a simulated star alike. A simformer's ODE samples have an exact density
(:class:`~ysoscale.infer.simformer_proposal.SimformerProposal`), but it costs ``d``
reverse passes per solver step, and a Newton inversion at given points. This module takes
the road of defensive kernel importance sampling (West 1993; Owen & Zhou 2000): the
estimator draws ``K`` samples ``c_k`` per star from a fixed noise, and the proposal is a
Gaussian mixture on them,

    q(θ | x) = (1 − α)/K Σ_k N(θ; m_k, P_k⁻¹) + α/K Σ_k N(θ; c_k, H),

with ``H = (h · bandwidth)² Σ`` (``Σ`` the samples' covariance, ``h`` Silverman's factor
``(4/(d+2))^(1/(d+4)) K^(-1/(d+4))``). Without a forward model ``α = 1``: a plain kernel
density estimate of the estimator's posterior. With one (``forward=``), each kernel is also
*updated by the star's photometry*: the linearised Gaussian likelihood of the magnitudes
(and parallax) is multiplied into ``N(c_k, H)`` (one Gauss-Newton step, an extended Kalman
update), so ``m_k`` and ``P_k = H⁻¹ + Jᵀ W J`` put the component on the thin ridge the
magnitudes allow, which no estimator trained with finite data resolves to 0.01 mag. The
``α`` share of un-updated kernels keeps the proposal's tails (defensive mixture).

With the shipped CPU simformer on the 2-core CPU (``benchmarks/simformer_importance.py``,
68,268-100,000 independent held-out stars per condition pattern): median ESS 6.6-6.9 of 128
(the exact ODE density as proposal: 3-5), 7-9 % of stars below the 1 % efficiency flag
(23-30 %), 35-42 stars/s (about 5), and the weighted posterior within 0.009 of nominal
coverage.

The density is a log-sum-exp over ``2K`` Gaussians (float64), exact and cheap at any
point. The samples start from the same noise (:data:`KERNEL_SEED`) for every star and the
update is deterministic, so ``q`` is a function of the star's data alone, as the weight of
the truth (the coverage of the weighted posterior) needs.

Examples
--------
>>> mixture = GaussianMixture.kernel(torch.randn(2, 64, 3, dtype=torch.float64))
>>> theta = mixture.sample(5, torch.Generator().manual_seed(0))
>>> theta.shape, mixture.log_prob(theta).shape
(torch.Size([2, 5, 3]), torch.Size([2, 5]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ysoscale.infer.importance import predict_magnitudes
from ysoscale.infer.simformer_proposal import SimformerPhysical
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.tokenizer import observed_bands

KERNEL_CENTRES = 64
"""Estimator samples per star the mixture is centred on."""
KERNEL_SEED = 0
"""Seed of the fixed noise those samples start from (the same for every star)."""
COVARIANCE_FLOOR = 1e-10
"""Added to the diagonal of the samples' covariance (squared parameter units), so that a
parameter all of whose samples sit on one value (e.g. clipped onto the prior box's face)
still gives a proper density."""
DEFENSIVE_SHARE = 0.1
"""Share ``α`` of the mixture left on the un-updated kernels when a forward model updates
the others."""
UPDATE_ERROR_FLOOR = 0.01
"""Magnitude error (mag) added in quadrature to the catalogue's in the kernels' update: the
linearisation is not exact, and a component narrower than the posterior loses the tails."""
UPDATE_EXCLUDED_BANDS = ("tmass_ks", "wise_w1", "wise_w2", "wise_w3", "wise_w4")
"""Bands left out of the update: a disk's infrared excess would pull the photosphere there.
(The importance weights use every band, with the disk marginalised.)"""
DERIVATIVE_STEP = 1e-3
"""Central-difference step (parameter units) of the forward model's Jacobian."""


def silverman_factor(n_centres: int, dim: int) -> float:
    """Silverman's rule-of-thumb bandwidth factor for ``n_centres`` points in ``dim`` dims.

    >>> round(silverman_factor(64, 6), 3)
    0.616
    """
    return (4.0 / (dim + 2)) ** (1.0 / (dim + 4)) * n_centres ** (-1.0 / (dim + 4))


def _kernel_covariance(samples: Tensor, bandwidth: float) -> Tensor:
    """``(bandwidth h)² Σ`` of samples ``(n, K, d)``: ``(n, d, d)`` float64."""
    n, k, d = samples.shape
    if k < 2:
        raise ValueError(f"a kernel mixture needs at least 2 samples per star, got {k}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    centred = samples - samples.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / (k - 1)
    cov = cov + COVARIANCE_FLOOR * torch.eye(d, dtype=cov.dtype, device=cov.device)
    return (bandwidth * silverman_factor(k, d)) ** 2 * cov


@dataclass
class GaussianMixture:
    """One Gaussian mixture per star.

    Attributes
    ----------
    means : Tensor, shape (n, K, d)
    scale_tril : Tensor, shape (n, K, d, d)
        Lower Cholesky factors of the components' covariances.
    log_weight : Tensor, shape (n, K)
        Normalised log-weights of the components.
    """

    means: Tensor
    scale_tril: Tensor
    log_weight: Tensor

    @classmethod
    def kernel(cls, samples: Tensor, bandwidth: float = 1.0) -> GaussianMixture:
        """Equal-weight kernels ``N(c_k, (bandwidth h)² Σ)`` on samples ``(n, K, d)``."""
        samples = samples.double()
        n, k, d = samples.shape
        tril = torch.linalg.cholesky(_kernel_covariance(samples, bandwidth))
        log_weight = torch.full((n, k), -math.log(k), dtype=torch.float64, device=samples.device)
        return cls(samples, tril[:, None].expand(n, k, d, d), log_weight)

    def sample(self, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``(n, n_samples, d)`` (float64): a component by its weight, then its noise."""
        n, _, d = self.means.shape
        device = self.means.device
        u = torch.rand(n, n_samples, generator=generator, device=device, dtype=torch.float64)
        noise = torch.randn(n, n_samples, d, generator=generator, device=device,
                            dtype=torch.float64)  # fmt: skip
        return self.sample_from(u, noise)

    def sample_from(self, uniform: Tensor, noise: Tensor) -> Tensor:
        """Draws ``(n, S, d)`` (float64) from given randomness: ``uniform (n, S)`` in (0, 1)
        picks each draw's component by weight, ``noise (n, S, d)`` standard normal."""
        k, d = self.means.shape[1:]
        device = self.means.device
        uniform = uniform.to(device=device, dtype=torch.float64)
        noise = noise.to(device=device, dtype=torch.float64)
        cdf = self.log_weight.exp().cumsum(dim=1)
        pick = torch.searchsorted(cdf, uniform * cdf[:, -1:]).clamp(max=k - 1)
        mean = torch.gather(self.means, 1, pick[..., None].expand(-1, -1, d))
        tril = torch.gather(self.scale_tril, 1, pick[..., None, None].expand(-1, -1, d, d))
        return mean + (tril @ noise[..., None])[..., 0]

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density ``(n, S)`` of ``value (n, S, d)`` (float64)."""
        value = value.double()
        n, k, d = self.means.shape
        eye = torch.eye(d, dtype=torch.float64, device=value.device).expand(n, k, d, d)
        inverse = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False)
        diff = value[:, :, None, :] - self.means[:, None, :, :]  # (n, S, K, d)
        white = torch.einsum("nkij,nskj->nski", inverse, diff)
        log_det = torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(dim=-1)
        log_norm = log_det + 0.5 * d * math.log(2.0 * math.pi)
        log_component = -0.5 * (white**2).sum(dim=-1) - log_norm[:, None, :]
        return torch.logsumexp(log_component + self.log_weight[:, None, :], dim=-1)


Observe = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``observe(points (N, d)) -> (predictions (N, M), valid (N,))``: what the data measure."""


def likelihood_update(
    centres: Tensor,
    cov: Tensor,
    observe: Observe,
    observed: Tensor,
    weight: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One Gauss-Newton (extended Kalman) update of the kernels ``N(c_k, cov)`` by the
    linearised Gaussian likelihood ``Π_j N(y_j; f_j(θ), 1/w_j)``.

    The Jacobian of ``f`` is taken by central differences of :data:`DERIVATIVE_STEP`.

    Parameters
    ----------
    centres : Tensor, shape (n, K, d)
    cov : Tensor, shape (n, d, d)
        The kernels' covariance.
    observe : callable
        ``f`` at points ``(N, d)``: predictions ``(N, M)`` and validity ``(N,)``.
    observed, weight : Tensor, shape (n, M)
        The measurements ``y`` and their inverse variances (0 for a measurement to leave out).

    Returns
    -------
    means : Tensor, shape (n, K, d)
    scale_tril : Tensor, shape (n, K, d, d)
        Cholesky factors of ``(cov⁻¹ + Jᵀ W J)⁻¹``.
    updated : Tensor, shape (n, K), bool
        False where ``f`` or its derivatives are invalid at the centre or the update is not
        finite; those kernels are returned as they were.

    Examples
    --------
    A linear measurement of the first coordinate, exact to 1e-6 (the kernel is N(0, 1)):

    >>> observe = lambda x: (x[:, :1].double(), torch.ones(len(x), dtype=torch.bool))
    >>> means, tril, ok = likelihood_update(torch.zeros(1, 1, 2), torch.eye(2)[None],
    ...                                     observe, torch.tensor([[1.0]]),
    ...                                     torch.tensor([[1.0]]))
    >>> [round(v, 6) for v in means[0, 0].tolist()]
    [0.5, 0.0]
    >>> [round(v, 6) for v in (tril[0, 0] @ tril[0, 0].T).diagonal().tolist()]
    [0.5, 1.0]
    """
    centres = centres.double()
    n, k, d = centres.shape
    device = centres.device
    step = DERIVATIVE_STEP * torch.eye(d, dtype=torch.float64, device=device)
    points = torch.cat([centres[:, :, None, :], centres[:, :, None, :] + step,
                        centres[:, :, None, :] - step], dim=2)  # fmt: skip
    pred, valid = observe(points.reshape(-1, d))
    pred = pred.double().view(n, k, 2 * d + 1, -1)
    valid = valid.view(n, k, 2 * d + 1).all(dim=-1)
    f0 = pred[:, :, 0]
    jac = ((pred[:, :, 1 : d + 1] - pred[:, :, d + 1 :]) / (2 * DERIVATIVE_STEP)).transpose(2, 3)
    use = (weight > 0)[:, None, :] & torch.isfinite(f0) & torch.isfinite(jac).all(dim=-1)
    w = torch.where(use, weight.double()[:, None, :], 0.0)
    resid = torch.where(use, observed.double()[:, None, :] - f0, 0.0)
    jac = torch.where(use[..., None], jac, 0.0)  # (n, K, M, d)
    info = jac.transpose(2, 3) @ (w[..., None] * jac)  # (n, K, d, d)
    score = (jac.transpose(2, 3) @ (w * resid)[..., None])[..., 0]  # (n, K, d)

    eye = torch.eye(d, dtype=torch.float64, device=device).expand(n, k, d, d)
    precision = torch.linalg.inv(cov.double())[:, None] + info
    factor = torch.linalg.cholesky_ex(precision)
    ok = valid & (factor.info == 0)
    safe = torch.where(ok[..., None, None], factor.L, eye)
    delta = torch.cholesky_solve(score[..., None], safe)[..., 0]
    inverse = torch.linalg.solve_triangular(safe, eye, upper=False)
    updated = torch.linalg.cholesky_ex(inverse.transpose(-1, -2) @ inverse)
    ok = ok & (updated.info == 0) & torch.isfinite(delta).all(dim=-1)
    kernel = torch.linalg.cholesky(cov.double())[:, None].expand(n, k, d, d)
    means = torch.where(ok[..., None], centres + delta, centres)
    return means, torch.where(ok[..., None, None], updated.L, kernel), ok


class SimformerKernelProposal(SimformerPhysical):
    """A Gaussian mixture on a simformer's samples, as an importance-sampling proposal.

    Plugs into :func:`~ysoscale.infer.importance.importance_sample` and
    :func:`~ysoscale.infer.importance.log_importance_weight` like the estimators. The
    simformer's ``has_disk`` (not a forward-model input) is dropped from its joint samples,
    so the mixture follows the posterior marginalised over the disk state; the weights
    marginalise the likelihood over the prior's disks
    (:class:`~ysoscale.infer.importance.DiskMarginal`). The mixture is in physical units:
    draws outside the prior's support get weight zero. (A mixture in the logit coordinates
    of the parameter box wastes no draws there, but on 60 all-band stars its median ESS was
    half this one's.)

    Parameters
    ----------
    model : Simformer
        Any attention mode: only its samples are used.
    forward : ForwardModel, optional
        Update the kernels by each star's magnitudes and parallax
        (:func:`likelihood_update`; the bands of :data:`UPDATE_EXCLUDED_BANDS` left out);
        without it the proposal is the plain kernel density estimate.
    n_centres : int
        Samples per star the mixture is centred on (:data:`KERNEL_CENTRES`).
    bandwidth : float
        Multiplies Silverman's factor; above 1 a wider, more defensive proposal.
    defensive : float
        Share of un-updated kernels when ``forward`` is given (:data:`DEFENSIVE_SHARE`).
    update_floor : float
        Magnitude error added in quadrature in the update (:data:`UPDATE_ERROR_FLOOR`).
    solver, steps : optional
        The simformer's ODE solver and steps (default: the model's).

    Examples
    --------
    >>> from ysoscale.nn.simformer_config import SimformerConfig
    >>> config = SimformerConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=16, heads=2,
    ...                          depth=1, ff=32)
    >>> proposal = SimformerKernelProposal(Simformer(config), n_centres=16, steps=2)
    >>> mag = torch.tensor([[12.0, 12.4, 11.5]])
    >>> err = torch.full_like(mag, 0.01)
    >>> theta, log_q = proposal.sample(mag, err, n_samples=4)
    >>> again = proposal(mag, err).log_prob(theta.transpose(0, 1)).T
    >>> theta.shape, bool(torch.allclose(log_q, again))
    (torch.Size([1, 4, 6]), True)
    """

    def __init__(
        self,
        model: Simformer,
        forward: Any | None = None,
        *,
        n_centres: int = KERNEL_CENTRES,
        bandwidth: float = 1.0,
        defensive: float = DEFENSIVE_SHARE,
        update_floor: float = UPDATE_ERROR_FLOOR,
        solver: str | None = None,
        steps: int | None = None,
    ) -> None:
        super().__init__(model)
        self.forward = forward
        if n_centres < len(self.keep) + 1:
            raise ValueError(f"n_centres ({n_centres}) must exceed the number of parameters "
                             f"({len(self.keep)}) for a full-rank kernel covariance")  # fmt: skip
        if not 0.0 < defensive <= 1.0:
            raise ValueError(f"defensive must be in (0, 1], got {defensive}")
        if forward is not None and "log10_distance" not in self.config.params:
            raise ValueError("the photometric update needs a log10_distance parameter")
        self.n_centres = n_centres
        self.bandwidth = bandwidth
        self.defensive = defensive
        self.update_floor = update_floor
        self.options: dict[str, Any] = {"solver": solver, "steps": steps}
        self._last: tuple[tuple[Tensor | None, ...], GaussianMixture] | None = None

    def mixture(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> GaussianMixture:
        """The mixture of these stars.

        The last batch's mixture is kept: the weights of given points for the stars just
        sampled (:func:`~ysoscale.infer.importance.log_importance_weight`, e.g. of the truth)
        reuse it instead of sampling the simformer again."""
        key = tuple(None if a is None else torch.as_tensor(a)
                    for a in (mag, mag_err, parallax, parallax_error))  # fmt: skip
        if self._last is not None and all(map(_same, key, self._last[0])):
            return self._last[1]
        mixture = self._mixture(mag, mag_err, parallax, parallax_error)
        self._last = (tuple(None if a is None else a.clone() for a in key), mixture)
        return mixture

    def _mixture(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None,
        parallax_error: Tensor | None,
    ) -> GaussianMixture:
        device = self.model.loc.device
        mag, mag_err = (torch.as_tensor(a, device=device) for a in (mag, mag_err))
        if parallax is not None and parallax_error is not None:
            parallax, parallax_error = (torch.as_tensor(a, device=device)
                                        for a in (parallax, parallax_error))  # fmt: skip
        samples = self.fixed_noise_samples((mag, mag_err, parallax, parallax_error),
                                           self.n_centres, KERNEL_SEED, **self.options)  # fmt: skip
        kernel = GaussianMixture.kernel(samples[..., self.keep], self.bandwidth)
        if self.forward is None or self.defensive == 1.0:
            return kernel
        observed, weight = self._measurements(mag, mag_err, parallax, parallax_error)
        tril = kernel.scale_tril[:, 0]  # the kernels share one covariance
        cov = tril @ tril.transpose(1, 2)
        means, tril, _ = likelihood_update(kernel.means, cov, self._observe, observed, weight)
        share = torch.tensor([math.log(self.defensive), math.log1p(-self.defensive)])
        log_weight = torch.cat([kernel.log_weight + share[0], kernel.log_weight + share[1]], 1)
        return GaussianMixture(torch.cat([kernel.means, means], dim=1),
                               torch.cat([kernel.scale_tril, tril], dim=1), log_weight)  # fmt: skip

    def _measurements(
        self, mag: Tensor, mag_err: Tensor, parallax: Tensor | None, parallax_error: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Magnitudes and parallax ``(n, B + 1)`` and their update weights."""
        bands = self.config.bands
        use = observed_bands(mag, mag_err) & torch.tensor(
            [b not in UPDATE_EXCLUDED_BANDS for b in bands], device=mag.device
        )
        weight = torch.where(use, 1.0 / (mag_err.double() ** 2 + self.update_floor**2), 0.0)
        observed = torch.where(use, mag.double(), 0.0)
        plx = torch.zeros(mag.shape[0], dtype=torch.float64, device=mag.device)
        plx_weight = torch.zeros_like(plx)
        if parallax is not None and parallax_error is not None:
            value, error = parallax.double(), parallax_error.double()
            has = torch.isfinite(value) & torch.isfinite(error) & (error > 0)
            plx = torch.where(has, value, 0.0)
            plx_weight = torch.where(has, 1.0 / torch.where(has, error, 1.0) ** 2, 0.0)
        return (torch.cat([observed, plx[:, None]], dim=1),
                torch.cat([weight, plx_weight[:, None]], dim=1))  # fmt: skip

    def _observe(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Magnitudes and parallax (mas) ``(N, B + 1)`` at parameter points ``(N, d)``."""
        params, bands = self.config.params, self.config.bands
        mag, valid = predict_magnitudes(self.forward, theta.float(), params, bands)
        parallax = 1000.0 / 10.0 ** theta[:, params.index("log10_distance")]
        return torch.cat([mag.double(), parallax[:, None]], dim=1), valid

    def sample(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
        n_samples: int = 64,
        batch_size: int = 4096,
    ) -> tuple[Tensor, Tensor]:
        """Draws ``(n, n_samples, n_param)`` (float32) and their log-density ``(n, n_samples)``
        (float64, of the float32 draws)."""
        del batch_size  # sample_from_noise chunks by its own token budget
        mixture = self.mixture(mag, mag_err, parallax, parallax_error)
        theta = mixture.sample(n_samples).float()
        return theta, mixture.log_prob(theta)

    def __call__(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> MixtureDensity:
        """The proposal of these stars, with a ``log_prob`` like a flow's."""
        return MixtureDensity(self.mixture(mag, mag_err, parallax, parallax_error))


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """The same values (NaN equal to NaN), shape and dtype; or both None."""
    if a is None or b is None:
        return a is b
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0),
                                                                  b.nan_to_num(0.0)))  # fmt: skip


@dataclass
class MixtureDensity:
    """The density of a :class:`SimformerKernelProposal` for a batch of ``n`` stars."""

    mixture: GaussianMixture

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density ``(S, n)`` of ``value (S, n, n_param)`` (float64)."""
        value = torch.as_tensor(value, device=self.mixture.means.device)
        return self.mixture.log_prob(value.transpose(0, 1)).transpose(0, 1)


__all__ = [
    "COVARIANCE_FLOOR",
    "DEFENSIVE_SHARE",
    "DERIVATIVE_STEP",
    "GaussianMixture",
    "KERNEL_CENTRES",
    "KERNEL_SEED",
    "MixtureDensity",
    "Observe",
    "SimformerKernelProposal",
    "UPDATE_ERROR_FLOOR",
    "UPDATE_EXCLUDED_BANDS",
    "likelihood_update",
    "silverman_factor",
]

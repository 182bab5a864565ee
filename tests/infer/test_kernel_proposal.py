"""The kernel-mixture proposal on a simformer's samples (ysoscale.infer.kernel_proposal)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.infer.test_importance import (
    BANDS,
    SIGMA,
    GaussianPrior,
    ToyForward,
    analytic_posterior,
    simulate,
)
from ysoscale.infer.importance import importance_sample, log_importance_weight
from ysoscale.infer.kernel_proposal import (
    GaussianMixture,
    SimformerKernelProposal,
    likelihood_update,
    silverman_factor,
)
from ysoscale.nn.simformer import Simformer
from ysoscale.nn.simformer_config import SimformerConfig

PARAMS = ("log10_mass", "log10_age", "mh", "log10_distance", "av", "rv", "has_disk")


@pytest.fixture(scope="module")
def simformer():
    torch.manual_seed(0)
    config = SimformerConfig(bands=BANDS, params=PARAMS, width=16, heads=2, depth=1, ff=32,
                             use_parallax=False)  # fmt: skip
    return Simformer(config)


def two_component_mixture() -> GaussianMixture:
    means = torch.tensor([[[0.0, 0.0], [2.0, 1.0]]], dtype=torch.float64)
    covs = torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.2, -0.1], [-0.1, 0.4]]],
                        dtype=torch.float64)  # fmt: skip
    log_weight = torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64))
    return GaussianMixture(means, torch.linalg.cholesky(covs)[None], log_weight)


def test_mixture_density_integrates_to_one_and_matches_its_samples():
    mixture = two_component_mixture()
    step = 0.02
    axis = torch.arange(-6.0, 8.0, step, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 2)
    total = float(mixture.log_prob(grid).exp().sum() * step**2)
    assert abs(total - 1.0) < 1e-4, total

    n = 200_000
    draws = mixture.sample(n, torch.Generator().manual_seed(1))[0]
    weight = torch.tensor([0.3, 0.7], dtype=torch.float64)
    mean = weight @ mixture.means[0]
    # the sample mean of n draws scatters by sd / sqrt(n): 5 sigma
    tolerance = 5.0 * draws.std(dim=0) / math.sqrt(n)
    assert torch.all((draws.mean(dim=0) - mean).abs() < tolerance), (draws.mean(dim=0), mean)
    # and the share of draws in a box is the density's integral over it
    inside = (draws[:, 0] > 1.0) & (draws[:, 1] > 0.5)
    in_grid = (grid[0, :, 0] > 1.0) & (grid[0, :, 1] > 0.5)
    expected = float(mixture.log_prob(grid).exp()[0, in_grid].sum() * step**2)
    assert abs(float(inside.double().mean()) - expected) < 5 * math.sqrt(expected / n)


def test_update_is_the_exact_gaussian_posterior_for_a_linear_measurement():
    """For f(θ) = B θ the update is the conjugate posterior of N(c_k, H) and the data."""
    gen = torch.Generator().manual_seed(2)
    n, k, d, m = 3, 4, 3, 5
    design = torch.randn(m, d, generator=gen, dtype=torch.float64)
    centres = torch.randn(n, k, d, generator=gen, dtype=torch.float64)
    root = torch.randn(n, d, d, generator=gen, dtype=torch.float64)
    cov = root @ root.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    observed = torch.randn(n, m, generator=gen, dtype=torch.float64)
    weight = torch.rand(n, m, generator=gen, dtype=torch.float64) + 0.5
    weight[0, 1] = 0.0  # a measurement left out

    def observe(points):
        valid = torch.ones(len(points), dtype=torch.bool)
        valid[: 2 * d + 1] = False  # the first kernel of the first star: invalid
        return points @ design.T, valid

    means, tril, ok = likelihood_update(centres, cov, observe, observed, weight)
    assert not ok[0, 0] and ok.sum() == n * k - 1
    assert torch.equal(means[0, 0], centres[0, 0])
    for i in range(n):
        precision = torch.linalg.inv(cov[i]) + design.T @ torch.diag(weight[i]) @ design
        post_cov = torch.linalg.inv(precision)
        for j in range(k):
            if not ok[i, j]:
                assert torch.allclose(tril[i, j], torch.linalg.cholesky(cov[i]))
                continue
            resid = observed[i] - design @ centres[i, j]
            post_mean = centres[i, j] + post_cov @ design.T @ (weight[i] * resid)
            assert torch.allclose(means[i, j], post_mean, atol=1e-6)
            assert torch.allclose(tril[i, j] @ tril[i, j].T, post_cov, atol=1e-8)


def test_kernel_bandwidth_and_bad_settings(simformer):
    assert silverman_factor(64, 6) == pytest.approx(0.6156, abs=1e-4)
    samples = torch.randn(1, 500, 2, generator=torch.Generator().manual_seed(3),
                          dtype=torch.float64)  # fmt: skip
    kernel = GaussianMixture.kernel(samples, bandwidth=2.0)
    cov = kernel.scale_tril[0, 0] @ kernel.scale_tril[0, 0].T
    expected = (2.0 * silverman_factor(500, 2)) ** 2 * torch.cov(samples[0].T)
    assert torch.allclose(cov, expected)
    with pytest.raises(ValueError, match="at least 2"):
        GaussianMixture.kernel(samples[:, :1])
    with pytest.raises(ValueError, match="n_centres"):
        SimformerKernelProposal(simformer, n_centres=5)
    with pytest.raises(ValueError, match="defensive"):
        SimformerKernelProposal(simformer, defensive=0.0)


def test_the_proposal_is_a_function_of_each_stars_data(simformer):
    _, mag = simulate(5, seed=3)
    err = torch.full_like(mag, SIGMA)
    proposal = SimformerKernelProposal(simformer, ToyForward(), n_centres=16, steps=2)
    assert proposal.config.params == PARAMS[:6]
    batch = proposal.mixture(mag, err)
    assert batch.means.shape == (5, 32, 6)
    for i in range(5):
        alone = proposal.mixture(mag[i : i + 1], err[i : i + 1])
        assert torch.allclose(alone.means, batch.means[i : i + 1], atol=1e-5)
    # the last batch's mixture is reused for the same data, and only for it
    last = proposal.mixture(mag, err)
    assert proposal.mixture(mag.clone(), err.clone()) is last
    changed = mag.clone()
    changed[0, 0] += 0.01
    assert proposal.mixture(changed, err) is not last


class PosteriorSampler:
    """Stands in for a trained simformer on the toy: ``sample_from_noise`` transports the
    noise to the analytic posterior shifted by half a posterior sd in the first parameter
    and widened 1.2×, plus a ``has_disk`` column."""

    def __init__(self, simformer: Simformer) -> None:
        self.config, self.n_param, self.loc = simformer.config, simformer.n_param, simformer.loc

    def sample_from_noise(self, mag, mag_err, parallax, parallax_error, noise, **options):
        mean, cov = analytic_posterior(mag)
        root = torch.linalg.cholesky(cov)
        theta = mean[:, None, :].clone()
        theta[..., 0] += 0.5 * cov[0, 0].sqrt()
        theta = theta + 1.2 * noise[..., :6].double() @ root.T
        return torch.cat([theta, torch.zeros_like(theta[..., :1])], dim=-1).float()

    def parameters(self):
        return iter([self.loc])

    def buffers(self):
        return iter([self.loc])


def test_truth_weights_are_the_proposal_weights_and_the_posterior_is_recovered(simformer):
    """Kernels on biased, too wide posterior samples, updated by the (linear) toy photometry:
    the weights of given points equal the sampler's, and the weighted mean is the analytic
    posterior's within its Monte Carlo error."""
    _, mag = simulate(4, seed=1)
    err = torch.full_like(mag, SIGMA)
    model = PosteriorSampler(simformer)
    proposal = SimformerKernelProposal(model, ToyForward())
    result = importance_sample(proposal, ToyForward(), GaussianPrior(), mag, err,
                               n_proposal=4000, n_out=16, error_floor=0.0, disk=None,
                               seed=0)  # fmt: skip
    again = log_importance_weight(proposal, ToyForward(), GaussianPrior(), result.proposal, mag,
                                  err, error_floor=0.0, disk=None)  # fmt: skip
    raw = result.raw_log_weight()
    assert torch.isfinite(raw).all()
    assert torch.allclose(again, raw, atol=1e-6)

    mean, cov = analytic_posterior(mag)
    sd = cov.diagonal().sqrt()
    for i in range(4):
        ess = float(result.ess[i])
        assert ess > 200, ess
        w = result.log_weight[i].double().exp()
        weighted_mean = (w[:, None] * result.proposal[i].double()).sum(0)
        z = (weighted_mean - mean[i]) / (sd / math.sqrt(ess))
        assert z.abs().max() < 4.5, z
    # samples far from the posterior (an untrained simformer): the update moves the
    # kernels onto the likelihood, as a trained estimator's vague thin directions need
    ess = {}
    for name, forward in (("plain", None), ("updated", ToyForward())):
        far = SimformerKernelProposal(simformer, forward, steps=2)
        ess[name] = importance_sample(far, ToyForward(), GaussianPrior(), mag, err,
                                      n_proposal=4000, n_out=16, error_floor=0.0, disk=None,
                                      seed=0).ess  # fmt: skip
    print("ESS of kernels far from the posterior, without / with the update", ess)
    assert torch.all(ess["plain"] < 1.01)  # one draw carries all the weight
    assert torch.all(ess["updated"] > ess["plain"]) and float(ess["updated"].median()) > 5

"""Statistical correctness on a linear-Gaussian toy with an analytic posterior.

Two parameters theta ~ N(0, I) (bounds +-5: the truncation is negligible); four "bands"
x = 15 + A theta + sigma * eps, all observed, with known sigma. The posterior is Gaussian
with precision I + A^T A / sigma^2. A tiny estimator is trained on fresh simulations and
scored by a classifier two-sample test (C2ST) and by simulation-based-calibration ranks.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import stats

from ysoscale.nn import EstimatorConfig, PosteriorEstimator

A = torch.tensor([[1.0, 0.5], [0.3, -1.0], [0.8, 0.8], [-0.5, 0.2]])
SIGMA = 0.3
LEVEL = 15.0
CONFIG = EstimatorConfig(
    bands=("gaia_g", "gaia_bp", "gaia_rp", "tmass_j"),
    params=("mh", "rv"),
    param_bounds={"mh": (-5.0, 5.0), "rv": (-5.0, 5.0)},
    width=32,
    depth=1,
    heads=4,
    ff=64,
    dropout=0.0,
    transforms=3,
    flow_hidden=(64, 64),
    use_parallax=False,
)


def simulate(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    theta = torch.randn(n, 2, generator=gen).clamp(-4.9, 4.9)
    x = LEVEL + theta @ A.T + SIGMA * torch.randn(n, 4, generator=gen)
    return theta, x


def analytic_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    precision = torch.eye(2) + A.T @ A / SIGMA**2
    cov = torch.linalg.inv(precision)
    mean = (x - LEVEL) @ A @ cov.T / SIGMA**2
    return mean, cov


@pytest.fixture(scope="module")
def trained() -> PosteriorEstimator:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = PosteriorEstimator(CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps, batch = 1500, 256
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    err = torch.full((batch, 4), SIGMA)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        theta, x = simulate(batch, gen)
        loss = model.nll(theta, x, err)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"toy training: {steps} steps x {batch} in {time.perf_counter() - start:.1f} s")
    return model.eval()


def _fit_logistic(feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Weights (last = bias) of an L2-regularised logistic regression, fitted by LBFGS."""
    w = torch.zeros(feats.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = feats @ w[:-1] + w[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss = loss + 1e-3 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def c2st(a: torch.Tensor, b: torch.Tensor, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic classifier on quadratic features."""

    def features(z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[:, 0:1], z[:, 1:2]
        return torch.cat([z1, z2, z1**2, z1 * z2, z2**2], dim=1)

    z = torch.cat([a, b]).double()
    z = (z - z.mean(0)) / z.std(0)
    feats = features(z)
    feats = (feats - feats.mean(0)) / feats.std(0)
    labels = torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).double()
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    correct = 0
    for fold in order.chunk(folds):
        train = torch.ones(len(labels), dtype=torch.bool)
        train[fold] = False
        w = _fit_logistic(feats[train], labels[train])
        with torch.no_grad():
            pred = (feats[fold] @ w[:-1] + w[-1]) > 0
        correct += int((pred.double() == labels[fold]).sum())
    return correct / len(labels)


def test_c2st_against_analytic_posterior(trained):
    gen = torch.Generator().manual_seed(2)
    _, x = simulate(3, gen)
    torch.manual_seed(3)
    samples, log_prob = trained.sample(x, torch.full_like(x, SIGMA), n_samples=1000)
    mean, cov = analytic_posterior(x)
    reference = torch.distributions.MultivariateNormal(mean, cov)
    exact = reference.sample((1000,)).transpose(0, 1)
    accuracies = [c2st(samples[i], exact[i], seed=i) for i in range(len(x))]
    print(f"toy C2ST accuracies: {[round(a, 3) for a in accuracies]}")
    assert max(accuracies) <= 0.6, accuracies
    # The learned density should approximate the analytic one at its own samples.
    exact_lp = reference.log_prob(samples.transpose(0, 1)).transpose(0, 1)
    assert (log_prob - exact_lp).mean().abs() < 0.15


def test_sbc_ranks_are_uniform(trained):
    gen = torch.Generator().manual_seed(4)
    theta, x = simulate(300, gen)
    torch.manual_seed(5)
    samples, _ = trained.sample(x, torch.full_like(x, SIGMA), n_samples=99)
    ranks = (samples < theta[:, None, :]).sum(dim=1).numpy()  # 0..99
    for dim in range(2):
        counts = np.bincount(ranks[:, dim] // 10, minlength=10)
        p_value = stats.chisquare(counts).pvalue
        print(f"toy SBC dim {dim}: rank-bin counts {counts.tolist()}, p = {p_value:.3f}")
        assert p_value > 1e-3, counts
    # Posterior width check: z-scores of the truth under the analytic posterior mean/std
    # of the samples should have unit spread.
    z = (theta - samples.mean(1)) / samples.std(1)
    assert math.isclose(float(z.std()), 1.0, abs_tol=0.15)


def test_c2st_detects_a_wrong_posterior():
    torch.manual_seed(6)
    mean, cov = analytic_posterior(torch.full((1, 4), LEVEL))
    exact = torch.distributions.MultivariateNormal(mean[0], cov)
    too_wide = torch.distributions.MultivariateNormal(mean[0], 2.0 * cov)
    same = c2st(exact.sample((1000,)), exact.sample((1000,)))
    wrong = c2st(exact.sample((1000,)), too_wide.sample((1000,)))
    assert same <= 0.55 and wrong >= 0.6, (same, wrong)

"""Importance sampling: weights, ESS, resampling, and exactness on an analytic toy.

The toy: Gaussian prior on the six physical parameters, a linear "forward model" over
eight bands, Gaussian noise, so the posterior is Gaussian and known; the proposal is that
posterior deliberately shifted and widened, so importance sampling must correct it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ysoscale.infer.importance import (
    DiskMarginal,
    effective_sample_size,
    importance_sample,
    log_importance_weight,
    normalise_log_weights,
    parallax_log_likelihood,
    photometric_log_likelihood,
    systematic_resample,
)
from ysoscale.nn.config import PHYSICAL_PARAMS

BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_j", "tmass_h", "tmass_ks", "wise_w1", "wise_w2")
N_PARAM = len(PHYSICAL_PARAMS)
PRIOR_MEAN = torch.tensor([0.0, 8.0, -0.2, 3.0, 1.0, 3.1], dtype=torch.float64)
PRIOR_SD = torch.tensor([0.3, 0.5, 0.3, 0.3, 0.5, 0.2], dtype=torch.float64)
SIGMA = 0.1
LEVEL = 12.0
A = torch.from_numpy(np.random.default_rng(0).normal(0.0, 0.5, (len(BANDS), N_PARAM)))


def as_z(theta: torch.Tensor) -> torch.Tensor:
    """Toy parameter vector (log10_distance in place of the distance)."""
    return theta.double()


class ToyForward:
    """Linear photometry: mag = LEVEL + A z; ``physical`` as ForwardModel's."""

    bands = BANDS

    def __init__(self, valid=None, disk_shift: float = 0.0) -> None:
        self.valid_rule = valid
        self.disk_shift = disk_shift

    def physical(self, log10_mass, log10_age, mh, distance, av, rv, disk_frac=None, disk_temp=None):
        z = torch.stack([log10_mass, log10_age, mh, torch.log10(distance), av, rv], dim=-1)
        mag = LEVEL + z.double() @ A.T
        if disk_frac is not None:  # a disk brightens the last two bands by disk_shift * frac
            mag[:, -2:] -= self.disk_shift * disk_frac.double()[:, None] / 0.1
        valid = torch.ones(len(z), dtype=torch.bool)
        if self.valid_rule is not None:
            valid = self.valid_rule(z)
        return SimpleNamespace(mag=mag.float(), valid=valid)


class GaussianPrior:
    params = PHYSICAL_PARAMS

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        dist = torch.distributions.Normal(PRIOR_MEAN, PRIOR_SD)
        return dist.log_prob(as_z(theta)).sum(-1)


def analytic_posterior(mag: torch.Tensor, sigma: float = SIGMA):
    precision = torch.diag(PRIOR_SD**-2) + A.T @ A / sigma**2
    cov = torch.linalg.inv(precision)
    rhs = PRIOR_MEAN / PRIOR_SD**2 + (mag.double() - LEVEL) @ A / sigma**2
    return rhs @ cov, cov  # cov symmetric


class ToyProposal:
    """The analytic posterior shifted by ``shift`` posterior sds (first parameter) and with
    its covariance multiplied by ``inflate``."""

    def __init__(self, shift: float = 0.5, inflate: float = 2.0) -> None:
        self.config = SimpleNamespace(params=PHYSICAL_PARAMS, bands=BANDS)
        self.shift, self.inflate = shift, inflate

    def distribution(self, mag):
        mean, cov = analytic_posterior(mag)
        mean = mean.clone()
        mean[:, 0] += self.shift * cov[0, 0].sqrt()
        return torch.distributions.MultivariateNormal(mean, self.inflate * cov)

    def __call__(self, mag, mag_err, parallax=None, parallax_error=None):
        """The proposal as a distribution over each star's parameters (as the estimator)."""
        return self.distribution(mag)

    def sample(
        self, mag, mag_err, parallax=None, parallax_error=None, n_samples=64, batch_size=4096
    ):
        dist = self.distribution(mag)
        x = dist.sample((n_samples,))
        return x.transpose(0, 1).float(), dist.log_prob(x).transpose(0, 1).float()


def simulate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = PRIOR_MEAN + PRIOR_SD * torch.randn(n, N_PARAM, generator=gen, dtype=torch.float64)
    mag = LEVEL + z @ A.T + SIGMA * torch.randn(n, len(BANDS), generator=gen, dtype=torch.float64)
    return z, mag.float()


def theory_efficiency(shift: float, inflate: float) -> float:
    """1 / E_q[(p/q)^2] for q = N(mu + delta, inflate Sigma), p = N(mu, Sigma), with
    delta = shift * sd_1 e_1: per whitened dimension s^2 / sqrt(2 s^2 - 1), times
    exp(|delta|^2_Sigma / (2 s^2 - 1)) (Mahalanobis norm of the shift)."""
    _, cov = analytic_posterior(torch.full((1, len(BANDS)), LEVEL))
    mahalanobis_sq = shift**2 * float(cov[0, 0] * torch.linalg.inv(cov)[0, 0])
    per_dim = inflate / math.sqrt(2.0 * inflate - 1.0)
    return 1.0 / (per_dim**N_PARAM * math.exp(mahalanobis_sq / (2.0 * inflate - 1.0)))


def run_toy(mag, proposal=None, forward=None, **kwargs):
    kwargs = {"error_floor": 0.0, "seed": 0, "disk": None, **kwargs}
    err = torch.full_like(mag, SIGMA)
    return importance_sample(
        proposal or ToyProposal(), forward or ToyForward(), GaussianPrior(), mag, err, **kwargs
    )


# ------------------------------------------------------------------------- formulas


def test_ess_and_efficiency_by_hand():
    w = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    ess = effective_sample_size(torch.log(w))
    assert torch.allclose(ess, torch.tensor([36.0 / 14.0, 4.0, 0.0]))
    # invariant to the normalisation
    assert torch.allclose(effective_sample_size(torch.log(w) + 7.0), ess)
    log_w = normalise_log_weights(torch.log(w))
    assert torch.allclose(log_w[:2].exp().sum(-1), torch.ones(2))
    assert torch.isneginf(log_w[2]).all() and torch.isneginf(log_w[0, 3])


def test_systematic_resampling_counts_are_floor_or_ceil():
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(50, 20, generator=gen) ** 3
    weights[:, ::4] = 0.0
    log_w = normalise_log_weights(weights.log())
    n_out = 64
    index = systematic_resample(log_w, n_out, torch.Generator().manual_seed(1))
    counts = torch.zeros_like(weights).scatter_add_(
        1, index, torch.ones_like(index, dtype=weights.dtype)
    )
    expected = n_out * log_w.exp()
    assert torch.all(counts >= expected.floor() - 1e-9) and torch.all(
        counts <= expected.ceil() + 1e-9
    )
    assert torch.all(counts[:, ::4] == 0)


def test_photometric_and_parallax_log_likelihood_by_hand():
    f64 = torch.float64
    mag = torch.tensor([[10.0, 11.0, float("nan")]], dtype=f64)
    err = torch.tensor([[0.03, 0.04, 0.1]], dtype=f64)
    pred = torch.tensor([[[10.05, 10.9, 99.0]]], dtype=f64)
    floor = 0.01
    expected = 0.0
    for m, e, p in ((10.0, 0.03, 10.05), (11.0, 0.04, 10.9)):
        var = e**2 + floor**2
        expected += -0.5 * ((p - m) ** 2 / var + math.log(2 * math.pi * var))
    got = photometric_log_likelihood(pred, mag, err, error_floor=floor)
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx(expected, rel=1e-6)

    distance = torch.tensor([[250.0, 500.0], [100.0, 100.0]], dtype=f64)
    plx = torch.tensor([3.8, float("nan")], dtype=f64)
    plx_err = torch.tensor([0.2, 0.1], dtype=f64)
    ll = parallax_log_likelihood(distance, plx, plx_err)
    var = 0.04
    for s, d in enumerate((250.0, 500.0)):
        want = -0.5 * ((1000.0 / d - 3.8) ** 2 / var + math.log(2 * math.pi * var))
        assert float(ll[0, s]) == pytest.approx(want, rel=1e-6)
    assert torch.all(ll[1] == 0.0)


# ------------------------------------------------------------------------- toy posterior


def test_importance_sampling_recovers_the_analytic_posterior():
    _, mag = simulate(3, seed=1)
    n_proposal, n_out = 20000, 4000
    result = run_toy(mag, n_proposal=n_proposal, n_out=n_out, batch_size=2)
    mean, cov = analytic_posterior(mag)
    sd = cov.diagonal().sqrt()
    assert result.samples.shape == (3, n_out, N_PARAM)
    assert result.proposal.shape == (3, n_proposal, N_PARAM)
    assert torch.all(result.valid)

    theory = theory_efficiency(0.5, 2.0)
    print(f"toy IS efficiency {result.efficiency.tolist()} (theory {theory:.3f})")
    assert torch.allclose(result.efficiency, torch.tensor(theory).float(), atol=0.02)
    assert not result.ood.any()

    for i in range(3):
        ess = float(result.ess[i])
        # weighted estimate from the proposal, and the resampled draws
        w = result.log_weight[i].double().exp()
        weighted_mean = (w[:, None] * result.proposal[i].double()).sum(0)
        z_w = (weighted_mean - mean[i]) / (sd / math.sqrt(ess))
        assert z_w.abs().max() < 4.5, z_w
        draws = result.samples[i].double()
        # resampling adds at most the variance of n_out iid draws
        tol = sd * math.sqrt(1.0 / ess + 1.0 / n_out)
        assert torch.all((draws.mean(0) - mean[i]).abs() < 4.5 * tol), (draws.mean(0), mean[i])
        var_ratio = draws.var(0) / sd**2
        rel_tol = 4.5 * math.sqrt(2.0 / ess + 2.0 / n_out)
        assert torch.all((var_ratio - 1.0).abs() < rel_tol), var_ratio
    # the proposal's deliberate bias in the first parameter is gone
    bias_proposal = (result.proposal[..., 0].double().mean(1) - mean[:, 0]) / sd[0]
    bias_is = (result.samples[..., 0].double().mean(1) - mean[:, 0]) / sd[0]
    assert torch.all(bias_proposal > 0.4) and torch.all(bias_is.abs() < 0.15)


def test_same_seed_same_result_and_unresampled_weights():
    _, mag = simulate(4, seed=2)
    a = run_toy(mag, n_proposal=256, n_out=32, seed=5)
    b = run_toy(mag, n_proposal=256, n_out=32, seed=5)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.log_weight, b.log_weight)
    c = run_toy(mag, n_proposal=256, n_out=32, seed=5, resample=False)
    assert c.index is None and c.samples is c.proposal
    assert torch.allclose(
        torch.logsumexp(c.log_weight.double(), -1), torch.zeros(4, dtype=torch.float64), atol=1e-5
    )
    # resampled draws are proposal draws
    assert torch.equal(a.samples, a.proposal.gather(1, a.index[..., None].expand(-1, -1, N_PARAM)))


def test_without_the_proposal_only_draws_and_ess_are_kept():
    _, mag = simulate(2, seed=9)
    full = run_toy(mag, n_proposal=128, n_out=16)
    lean = run_toy(mag, n_proposal=128, n_out=16, keep_proposal=False)
    assert lean.proposal is None and lean.log_weight is None and lean.valid is None
    assert torch.equal(lean.samples, full.samples) and torch.equal(lean.ess, full.ess)
    with pytest.raises(ValueError, match="resample"):
        run_toy(mag, n_proposal=8, keep_proposal=False, resample=False)


def test_proposal_that_misses_the_posterior_is_flagged():
    _, mag = simulate(2, seed=3)
    missed = run_toy(mag, proposal=ToyProposal(shift=12.0, inflate=0.5), n_proposal=512)
    good = run_toy(mag, proposal=ToyProposal(shift=0.0, inflate=1.2), n_proposal=512)
    print(f"efficiency: missed {missed.efficiency.tolist()}, good {good.efficiency.tolist()}")
    assert torch.all(missed.efficiency < 0.01) and missed.ood.all()
    assert torch.all(good.efficiency > 0.5) and not good.ood.any()


def test_invalid_forward_samples_get_zero_weight():
    _, mag = simulate(2, seed=4)
    mean, _ = analytic_posterior(mag)
    cut = float(mean[0, 2])  # star 0: half its samples invalid; star 1 (mh below) mostly valid
    forward = ToyForward(valid=lambda z: z[:, 2] < cut)
    result = run_toy(mag, forward=forward, n_proposal=2000, n_out=500)
    invalid = result.proposal[..., 2] >= cut
    assert torch.equal(result.valid, ~invalid)
    assert torch.isneginf(result.log_weight[invalid]).all()
    assert torch.isfinite(result.log_weight[~invalid]).all()
    assert torch.all(result.samples[..., 2] < cut)
    # a star with no valid sample: zero ESS, NaN draws, flagged
    never = run_toy(mag, forward=ToyForward(valid=lambda z: z[:, 0] > 99.0), n_proposal=64)
    assert torch.all(never.ess == 0) and never.ood.all() and torch.isnan(never.samples).all()


def test_disk_marginal_likelihood_formula():
    """With a fixed disk, the marginal likelihood is (1 - p) L_bare + p L_disk, per sample."""
    forward = ToyForward(disk_shift=0.3)
    z, _ = simulate(3, seed=6)
    z[:, 1] = torch.tensor([6.2, 6.6, 9.5], dtype=torch.float64)  # two young stars, one old
    gen = torch.Generator().manual_seed(6)
    noise = SIGMA * torch.randn(3, len(BANDS), generator=gen, dtype=torch.float64)
    mag = (LEVEL + z @ A.T + noise).float()
    disk = DiskMarginal(
        n_draws=3, efold_myr=2.5, frac_range=(0.1, 0.1 + 1e-9), temp_range_k=(800.0, 800.0 + 1e-6)
    )
    bare = run_toy(mag, forward=forward, n_proposal=64, resample=False)
    with_disk = run_toy(mag, forward=forward, n_proposal=64, resample=False, disk=disk)
    assert torch.equal(bare.proposal, with_disk.proposal)
    theta = bare.proposal.double()
    p = torch.exp(-(10.0 ** theta[..., 1]) / 2.5e6)
    pred_disk = LEVEL + theta @ A.T
    pred_disk[..., -2:] -= 0.3
    ll_disk = photometric_log_likelihood(pred_disk, mag, torch.full_like(mag, SIGMA), 0.0)
    bare_ll = bare.log_likelihood.double()
    expected = torch.logaddexp(torch.log1p(-p) + bare_ll, torch.log(p) + ll_disk)
    young = p > 1e-12
    assert young[:2].float().mean() > 0.8 and (~young).any()
    assert torch.allclose(with_disk.log_likelihood.double(), expected, rtol=1e-4, atol=1e-3)
    changed = (with_disk.log_likelihood - bare.log_likelihood).abs() > 1e-3
    assert changed[:2].float().mean() > 0.5 and not changed[~young].any()


def test_observed_band_missing_from_forward_model_raises():
    _, mag = simulate(1, seed=7)
    forward = ToyForward()
    forward.bands = BANDS[:-1]
    with pytest.raises(ValueError, match="wise_w2"):
        run_toy(mag, forward=forward, n_proposal=8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_toy_on_cuda():
    class CudaProposal(ToyProposal):
        def buffers(self):
            return iter([torch.zeros(1, device="cuda")])

        def sample(self, mag, *args, **kwargs):
            x, lp = super().sample(mag.cpu(), *args, **kwargs)
            return x.cuda(), lp.cuda()

    class CudaPrior(GaussianPrior):
        def log_prob(self, theta):
            return super().log_prob(theta.cpu()).cuda()

    class CudaForward(ToyForward):
        def physical(self, *args, **kwargs):
            out = super().physical(*(a.cpu() for a in args))
            return SimpleNamespace(mag=out.mag.cuda(), valid=out.valid.cuda())

    _, mag = simulate(3, seed=8)
    result = importance_sample(
        CudaProposal(),
        CudaForward(),
        CudaPrior(),
        mag.cuda(),
        torch.full_like(mag, SIGMA).cuda(),
        n_proposal=4000,
        n_out=100,
        error_floor=0.0,
        disk=None,
    )
    assert result.samples.is_cuda and result.ess.is_cuda
    assert torch.allclose(
        result.efficiency.cpu(), torch.tensor(theory_efficiency(0.5, 2.0)), atol=0.08
    )


# ------------------------------------------------------------------------- real pieces

REAL_BANDS = ("gaia_g", "gaia_bp", "gaia_rp", "tmass_ks")


def test_smoke_with_the_real_forward_model(photometry_grid, isochrone_grid):
    from ysoscale.infer.prior_density import load_default_prior_density
    from ysoscale.nn import EstimatorConfig, PosteriorEstimator
    from ysoscale.physics.forward import ForwardModel
    from ysoscale.simulate.priors import sample_prior

    forward = ForwardModel(photometry_grid, isochrone_grid, bands=REAL_BANDS)
    rng = np.random.default_rng(0)
    draws = sample_prior(200, rng)
    phot = forward.physical(
        draws["log10_mass"],
        draws["log10_age"],
        draws["mh"],
        draws["distance_pc"],
        draws["av"],
        draws["rv"],
    )
    keep = np.flatnonzero(phot.valid)[:5]
    mag = phot.mag[keep] + rng.normal(0.0, 0.02, (len(keep), len(REAL_BANDS)))
    mag[1, 3] = np.nan  # a missing band
    err = np.full_like(mag, 0.02)
    plx = 1000.0 / draws["distance_pc"][keep] + rng.normal(0.0, 0.1, len(keep))
    plx_err = np.full(len(keep), 0.1)
    plx[2] = np.nan  # a missing parallax

    torch.manual_seed(0)
    config = EstimatorConfig(
        bands=REAL_BANDS, width=16, heads=2, depth=1, transforms=2, flow_hidden=(32,)
    )
    model = PosteriorEstimator(config).eval()
    result = importance_sample(
        model,
        forward,
        load_default_prior_density(),
        mag,
        err,
        plx,
        plx_err,
        n_proposal=128,
        n_out=16,
        batch_size=2,
    )
    n = len(keep)
    assert result.samples.shape == (n, 16, 6) and result.log_weight.shape == (n, 128)
    assert torch.all(torch.isfinite(result.ess)) and torch.all(result.ess >= 0)
    assert torch.all(result.ess <= 128 + 1e-3)
    lo, hi = (torch.tensor(b) for b in config.bounds)
    ok = result.ess > 0
    assert ok.any()
    assert torch.all((result.samples[ok] >= lo) & (result.samples[ok] <= hi))
    total = torch.logsumexp(result.log_weight[ok].double(), dim=-1)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-5)
    assert torch.all(torch.isneginf(result.log_weight[~result.valid]))


def test_min_ess_refines_only_the_poorly_sampled_stars():
    _, mag = simulate(6, seed=4)
    base = run_toy(mag, n_proposal=64, n_out=32, seed=3)
    min_ess = float(base.ess.median())  # about half the stars fall below it
    refined = run_toy(mag, n_proposal=64, n_out=32, seed=3, min_ess=min_ess, max_proposal=1024)
    low = base.ess < min_ess
    assert 0 < int(low.sum()) < 6
    # well-sampled stars are untouched, bit for bit
    assert torch.equal(refined.samples[~low], base.samples[~low])
    assert torch.equal(refined.ess[~low], base.ess[~low])
    n_used, index = refined.n_proposals, refined.index
    assert torch.all(n_used[~low] == 64) and torch.all(n_used[low] == 1024)
    assert torch.all(index[low] == -1) and torch.equal(index[~low], base.index[~low])
    # 16x the draws: the ESS grows by about that (efficiency is a property of q and p)
    assert torch.all(refined.ess[low] > 4.0 * base.ess[low]), (refined.ess, base.ess)
    assert torch.allclose(refined.efficiency, refined.ess / refined.n_proposals)
    # the per-proposal fields keep the first pass
    assert torch.equal(refined.proposal, base.proposal)
    # seeded: the same call gives the same refined draws
    again = run_toy(mag, n_proposal=64, n_out=32, seed=3, min_ess=min_ess, max_proposal=1024)
    assert torch.equal(again.samples, refined.samples)


def test_min_ess_needs_resampling_and_a_larger_pool():
    _, mag = simulate(1, seed=4)
    with pytest.raises(ValueError, match="resample"):
        run_toy(mag, n_proposal=16, resample=False, min_ess=8)
    with pytest.raises(ValueError, match="max_proposal"):
        run_toy(mag, n_proposal=16, min_ess=8, max_proposal=16)


def test_flux_scaled_errors_follow_the_predicted_magnitude():
    mag = torch.tensor([[10.0, 20.0]])
    err = torch.tensor([[0.1, 0.2]])
    pred = torch.tensor([[[10.5, 20.0], [9.5, 20.0]]])
    scaled = photometric_log_likelihood(pred, mag, err, error_floor=0.02, flux_scaled=True)
    plain = photometric_log_likelihood(pred, mag, err, error_floor=0.02)

    def by_hand(m_hat: float) -> float:
        total = 0.0
        for m, s, p in ((10.0, 0.1, m_hat), (20.0, 0.2, 20.0)):
            var = s**2 * 10 ** (0.8 * (p - m)) + 0.02**2
            total += -0.5 * ((p - m) ** 2 / var + math.log(2 * math.pi * var))
        return total

    assert scaled[0, 0].item() == pytest.approx(by_hand(10.5), rel=1e-6)
    assert scaled[0, 1].item() == pytest.approx(by_hand(9.5), rel=1e-6)
    # a prediction fainter than observed is penalised less than one as much brighter
    assert scaled[0, 0] > scaled[0, 1]
    assert plain[0, 0].item() == pytest.approx(plain[0, 1].item(), rel=1e-12)
    # where the prediction is the observation, both likelihoods agree
    same = torch.tensor([[[10.0, 20.0]]])
    assert photometric_log_likelihood(same, mag, err, 0.02, flux_scaled=True).item() == (
        pytest.approx(photometric_log_likelihood(same, mag, err, 0.02).item(), rel=1e-12)
    )


def test_weights_of_given_parameters_match_the_proposals_and_calibrate_the_truth():
    """log_importance_weight gives a proposal sample the weight importance_sample gave it;
    with the truths' weights the weighted posterior covers at every level, from only 16
    proposals per star (where resampled draws are too narrow)."""
    from ysoscale.validate import LEVELS, coverage_tolerance, importance_coverage

    n = 2000
    truth, mag = simulate(n, seed=8)
    result = run_toy(mag, n_proposal=16, n_out=16)
    err = torch.full_like(mag, SIGMA)
    again = log_importance_weight(ToyProposal(), ToyForward(), GaussianPrior(), result.proposal,
                                  mag, err, error_floor=0.0, disk=None)  # fmt: skip
    raw = result.raw_log_weight()
    assert again.shape == (n, 16) and again.dtype == torch.float64
    assert torch.allclose(again, raw, atol=1e-3)
    truth_weight = log_importance_weight(ToyProposal(), ToyForward(), GaussianPrior(),
                                         truth[:, None, :], mag, err, error_floor=0.0,
                                         disk=None)[:, 0]  # fmt: skip
    cov = importance_coverage(result.proposal.numpy(), again.numpy(), truth.numpy(),
                              truth_weight.numpy())  # fmt: skip
    tolerance = coverage_tolerance(LEVELS, n, k=4.0)[:, None]
    assert np.all(np.abs(cov - LEVELS[:, None]) < tolerance), cov - LEVELS[:, None]
    with pytest.raises(AssertionError, match="theta must be"):
        log_importance_weight(ToyProposal(), ToyForward(), GaussianPrior(), truth, mag, err)

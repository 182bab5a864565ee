"""What the reported errors say about youth: VariabilityEvidence against the simulator's own
observation of young and old stars, and its place in the importance weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tests.infer.test_importance import (
    BANDS,
    SIGMA,
    GaussianPrior,
    ToyForward,
    ToyProposal,
    run_toy,
    simulate,
)
from ysoscale.infer.importance import log_importance_weight
from ysoscale.infer.variability import VariabilityEvidence
from ysoscale.physics.passbands import BAND_IDS
from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.kernel import YOUNG_AGE_LOG10_YR, young_variability
from ysoscale.simulate.surveys import observe

N_STARS = 6000


def observed_stars(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half young, half old stars from G = 8 to 20.5 seen by Gaia and 2MASS with the
    simulator's variability: (mag, err, young) of the stars some survey detected."""
    rng = np.random.default_rng(seed)
    young = np.arange(N_STARS) < N_STARS // 2
    log10_age = np.where(young, 6.5, 9.5)
    g = rng.uniform(8.0, 20.5, N_STARS)
    colour = rng.uniform(0.5, 3.0, N_STARS)  # G - Ks
    true = np.full((N_STARS, len(BAND_IDS)), np.nan)
    for band, offset in (("gaia_g", 0.0), ("gaia_bp", 0.4), ("gaia_rp", -0.5),
                         ("tmass_j", -0.6), ("tmass_h", -0.85), ("tmass_ks", -1.0)):  # fmt: skip
        true[:, BAND_IDS.index(band)] = g + offset * colour
    v = young_variability(log10_age, SimulationConfig(), rng)
    seen = observe(true, rng.uniform(0, 360, N_STARS), rng.uniform(-60, 60, N_STARS),
                   np.ones(N_STARS), rng, surveys=("gaia", "tmass"), variability=v)  # fmt: skip
    keep = np.isfinite(seen.mag).any(axis=1)
    return seen.mag[keep], seen.mag_err[keep], young[keep]


def test_reported_errors_tell_every_young_star_from_every_old_one():
    mag, err, young = observed_stars()
    assert young.sum() > 2000 and (~young).sum() > 2000
    terms = VariabilityEvidence.from_surveys(BAND_IDS).star_terms(
        torch.from_numpy(mag), torch.from_numpy(err)
    )
    favours_young = (terms[:, 0] > terms[:, 1]).numpy()
    assert favours_young[young].all(), f"{(~favours_young[young]).sum()} young stars look old"
    assert not favours_young[~young].any(), f"{favours_young[~young].sum()} old stars look young"
    assert torch.isfinite(terms).all()


def test_young_excess_follows_the_modelled_lognormal():
    """The probability integral transform of log w under the model is uniform (binomial
    tolerance at 4 sigma on the young stars)."""
    mag, err, young = observed_stars(seed=4)
    evidence = VariabilityEvidence.from_surveys(BAND_IDS)
    w, _, has = evidence.variance_excess(torch.from_numpy(mag[young]), torch.from_numpy(err[young]))
    assert bool(has.all())
    w = w.numpy()
    assert np.all(w > 0)
    mu, sigma = 2 * math.log(evidence.median_mag), 2 * evidence.log_sigma
    u = stats.norm.cdf((np.log(w) - mu) / sigma)
    n = u.size
    for level in (0.1, 0.5, 0.9):
        tolerance = 4.0 * math.sqrt(level * (1 - level) / n)
        assert abs(np.mean(u < level) - level) < tolerance, (level, np.mean(u < level))


def test_no_information_without_variability_or_without_a_band():
    mag = torch.tensor([[15.0, 15.4, 14.4], [math.nan] * 3])
    err = torch.tensor([[0.1, 0.1, 0.1], [math.nan] * 3])
    bands = ("gaia_g", "gaia_bp", "gaia_rp")
    terms = VariabilityEvidence.from_surveys(bands).star_terms(mag, err)
    assert torch.equal(terms[1], torch.zeros(2, dtype=torch.float64))
    quiet = VariabilityEvidence.from_surveys(bands, median_mag=0.0)
    assert torch.equal(quiet.star_terms(mag, err), torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="median_mag"):
        VariabilityEvidence.from_surveys(bands, median_mag=-0.1)
    with pytest.raises(ValueError, match="log_sigma"):
        VariabilityEvidence.from_surveys(bands, log_sigma=0.0)


def test_importance_weights_add_the_term_of_each_samples_age():
    """With ``variability`` each weight gains log p(w | young) or log p(w | old) by the
    sample's age, the same in importance_sample and log_importance_weight."""
    _, mag = simulate(40, seed=2)
    err = torch.full_like(mag, SIGMA)  # far above the survey law's error: a variable star
    evidence = VariabilityEvidence.from_surveys(BANDS)
    plain = run_toy(mag, n_proposal=32, n_out=8)
    weighed = run_toy(mag, n_proposal=32, n_out=8, variability=evidence)
    assert torch.equal(plain.proposal, weighed.proposal)
    terms = evidence.star_terms(mag, err)
    assert bool((terms[:, 0] > terms[:, 1]).all())
    expected = evidence.log_probability(plain.proposal[..., 1].double(), terms)
    gained = weighed.raw_log_weight() - plain.raw_log_weight()
    finite = torch.isfinite(gained)
    assert finite.float().mean() > 0.9
    assert torch.allclose(gained[finite], expected[finite], atol=1e-6)
    young = plain.proposal[..., 1] < YOUNG_AGE_LOG10_YR
    assert young.any() and (~young).any()
    again = log_importance_weight(ToyProposal(), ToyForward(), GaussianPrior(), weighed.proposal,
                                  mag, err, error_floor=0.0, disk=None,
                                  variability=evidence)  # fmt: skip
    assert torch.allclose(again, weighed.raw_log_weight(), atol=1e-3)

"""Detection-pattern likelihood: hand-computed values, footprints, and calibration on a toy.

The toy (from test_importance): a linear forward model over eight bands and a Gaussian
prior; two toy surveys with completeness limits inside the magnitude range, so which bands
a star has depends on its parameters. The importance-weighted posterior with the
detection term is calibrated; without it, it is not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.infer.test_importance import (
    BANDS,
    LEVEL,
    PRIOR_MEAN,
    PRIOR_SD,
    A,
    GaussianPrior,
    ToyForward,
)
from ysoscale.infer.importance import importance_sample, log_importance_weight
from ysoscale.infer.selection import DetectionSelection, survey_footprints
from ysoscale.nn.config import PHYSICAL_PARAMS
from ysoscale.simulate.surveys import SURVEY_MODELS, SurveyModel
from ysoscale.validate import LEVELS, importance_coverage

FAINT, WIDTH, BRIGHT = LEVEL + 0.2, 0.1, LEVEL - 3.0
SIGMA = 0.5


def _all_sky(ra, dec, l, b):  # noqa: E741
    return np.ones(np.shape(ra), dtype=bool)


def toy_survey(name: str, bands: tuple[str, ...], detection: tuple[str, ...]) -> SurveyModel:
    k = len(bands)
    return SurveyModel(
        name=name,
        bands=bands,
        bright_limit=(BRIGHT,) * k,
        faint_limit=(FAINT,) * k,
        snr5_mag=(FAINT,) * k,
        error_floor=(0.01,) * k,
        source_noise_fraction=(0.0,) * k,
        completeness_width=(WIDTH,) * k,
        detection_bands=detection,
        footprint=_all_sky,
    )


TOY_MODELS = {
    "toy_a": toy_survey("toy_a", BANDS[:4], BANDS[:2]),
    "toy_b": toy_survey("toy_b", BANDS[4:], BANDS[4:5]),
}


def toy_selection() -> DetectionSelection:
    return DetectionSelection.from_surveys(BANDS, ("toy_a", "toy_b"), models=TOY_MODELS)


def p_det(m: np.ndarray) -> np.ndarray:
    return np.where(m >= BRIGHT, 1.0 / (1.0 + np.exp((m - FAINT) / WIDTH)), 0.0)


def observe_toy(n: int, seed: int):
    """Stars seen by at least one toy survey: truths, magnitudes (NaN = missing), footprints."""
    rng = np.random.default_rng(seed)
    z = PRIOR_MEAN.numpy() + PRIOR_SD.numpy() * rng.standard_normal((n, len(PRIOR_MEAN)))
    true_mag = LEVEL + z @ A.numpy().T
    detected = rng.random(true_mag.shape) < p_det(true_mag)
    in_b = rng.random(n) < 0.7  # toy_b covers 70 % of the stars
    seen_a = detected[:, :2].any(axis=1)
    seen_b = detected[:, 4] & in_b
    keep_band = detected & np.column_stack([np.repeat(seen_a[:, None], 4, 1),
                                            np.repeat(seen_b[:, None], 4, 1)])  # fmt: skip
    mag = np.where(keep_band, true_mag + SIGMA * rng.standard_normal(true_mag.shape), np.nan)
    rows = keep_band.any(axis=1)
    footprint = np.column_stack([np.ones(n, bool), in_b])
    return z[rows], mag[rows], footprint[rows]


class PriorProposal:
    """The Gaussian prior as proposal (covers every posterior of the toy)."""

    def __init__(self) -> None:
        self.config = type("C", (), {"params": PHYSICAL_PARAMS, "bands": BANDS})()
        self.dist = torch.distributions.Normal(PRIOR_MEAN, PRIOR_SD)

    def __call__(self, mag, mag_err, parallax=None, parallax_error=None):
        n = mag.shape[0]
        normal = torch.distributions.Normal(PRIOR_MEAN.expand(n, -1), PRIOR_SD.expand(n, -1))
        return torch.distributions.Independent(normal, 1)

    def sample(self, mag, mag_err, parallax=None, parallax_error=None, n_samples=64,
               batch_size=4096):  # fmt: skip
        x = self.dist.sample((mag.shape[0], n_samples))
        return x.float(), self.dist.log_prob(x).sum(-1).float()


def test_from_surveys_keeps_surveys_with_bands_and_ignores_other_bands():
    selection = DetectionSelection.from_surveys(("gaia_g", "gaia_rp", "wise_w1", "xp_fake"),
                                                ("gaia", "tmass", "wise"))  # fmt: skip
    assert selection.surveys == ("gaia", "wise")
    assert selection.member.shape == (4, 2)
    assert torch.isnan(selection.faint[3])  # a band of no survey is ignored
    assert selection.member[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_from_surveys_refuses_a_survey_without_its_detection_bands():
    with pytest.raises(ValueError, match="detection bands"):
        toy = {"toy_b": TOY_MODELS["toy_b"]}
        DetectionSelection.from_surveys(BANDS[5:], ("toy_b",), models=toy)
    with pytest.raises(ValueError, match="unknown surveys"):
        DetectionSelection.from_surveys(BANDS, ("nope",))


def test_log_probability_matches_a_hand_computation():
    selection = toy_selection()
    pred = torch.tensor([[[12.0, 12.5, 11.8, 12.3, 12.1, 12.4, 11.9, 12.6]]], dtype=torch.float64)
    observed = torch.tensor([[True, False, True, False, False, False, False, False]])
    p = p_det(pred.numpy()[0, 0])
    # toy_a seen: detected bands 0 and 2, missing 1 and 3; toy_b in footprint, absent:
    # its one detection band (4) was not detected
    expected = math.log(p[0] * (1 - p[1]) * p[2] * (1 - p[3])) + math.log(1 - p[4])
    footprint = torch.tensor([[True, True]])
    got = selection.log_probability(pred, observed, footprint)
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # outside toy_b's footprint (or footprints unknown), its absence says nothing
    expected_out = math.log(p[0] * (1 - p[1]) * p[2] * (1 - p[3]))
    outside = selection.log_probability(pred, observed, torch.tensor([[True, False]]))
    assert float(outside) == pytest.approx(expected_out, rel=1e-9)
    assert float(selection.log_probability(pred, observed)) == pytest.approx(expected_out)


def test_saturated_detection_is_floored_not_impossible():
    selection = toy_selection()
    pred = torch.full((1, 1, len(BANDS)), FAINT - 1.0, dtype=torch.float64)
    pred[0, 0, 0] = BRIGHT - 0.5  # brighter than saturation, yet detected
    observed = torch.zeros(1, len(BANDS), dtype=torch.bool)
    observed[0, 0] = True
    floored = selection.log_probability(pred, observed)
    rest = math.log(1 - p_det(np.array([FAINT - 1.0]))[0]) * 3  # toy_a's other bands
    assert float(floored) == pytest.approx(math.log(selection.min_probability) + rest)
    exact = DetectionSelection.from_surveys(BANDS, ("toy_a", "toy_b"), models=TOY_MODELS,
                                            min_probability=0.0)  # fmt: skip
    assert float(exact.log_probability(pred, observed)) == -math.inf


def test_footprints_of_the_shipped_surveys():
    inside = survey_footprints(np.array([0.0, 0.0]), np.array([60.0, -60.0]), ("gaia", "ps1"))
    assert inside.shape == (2, 2) and inside[:, 0].all()
    # PS1 covers dec > -30: (l, b) = (0, 60) is at dec ≈ +3, (0, -60) at dec ≈ -43
    assert inside[:, 1].tolist() == [True, False]
    assert set(SURVEY_MODELS) >= {"gaia", "ps1"}


def test_importance_sample_checks_the_footprint_shape():
    mag = torch.full((2, len(BANDS)), LEVEL)
    with pytest.raises(ValueError, match="in_footprint"):
        importance_sample(PriorProposal(), ToyForward(), GaussianPrior(), mag,
                          torch.full_like(mag, SIGMA), selection=toy_selection(),
                          in_footprint=np.ones((2, 3), bool), disk=None)  # fmt: skip
    with pytest.raises(ValueError, match="only used with a selection"):
        importance_sample(PriorProposal(), ToyForward(), GaussianPrior(), mag,
                          torch.full_like(mag, SIGMA), in_footprint=np.ones((2, 2), bool),
                          disk=None)  # fmt: skip


def test_weighted_posterior_is_calibrated_only_with_the_detection_pattern():
    # 20,000 stars: the bias of leaving the pattern out is ~0.03 at most here (8 binomial
    # standard deviations), where the weighted posterior with it stays within 2.1
    truth, mag, footprint = observe_toy(20_000, seed=11)
    n = len(truth)
    err = np.where(np.isfinite(mag), SIGMA, np.nan)
    args = (PriorProposal(), ToyForward(), GaussianPrior(), mag, err)
    coverage = {}
    for label, selection in (("with", toy_selection()), ("without", None)):
        extra = dict(error_floor=0.0, disk=None, selection=selection,
                     in_footprint=None if selection is None else footprint)  # fmt: skip
        result = importance_sample(*args, n_proposal=256, n_out=8, seed=3, **extra)
        truth_weight = log_importance_weight(*args[:3], truth[:, None, :], mag, err, **extra)
        weight = result.raw_log_weight()
        coverage[label] = importance_coverage(result.proposal.numpy(), weight.numpy(), truth,
                                              truth_weight[:, 0].numpy(),
                                              rng=np.random.default_rng(0))  # fmt: skip
    sd = np.sqrt(LEVELS * (1 - LEVELS) / n)[:, None]  # binomial, per level
    assert np.all(np.abs(coverage["with"] - LEVELS[:, None]) < 4.0 * sd)
    assert np.any(np.abs(coverage["without"] - LEVELS[:, None]) > 6.0 * sd)

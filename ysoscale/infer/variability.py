"""Youth written in the reported magnitude errors: the likelihood of young-star variability.

The simulator gives every star younger than 50 Myr an extra photometric scatter
``v = v0 · LogNormal(0, σ_v)`` (``v0 = SimulationConfig.young_variability_mag``, 0.1 mag;
``σ_v = 0.5``; :func:`ysoscale.simulate.kernel.young_variability`), added in quadrature both
to the noise drawn and to the *reported* error of every band, as variability inflates the
errors of a catalog's mean magnitudes. The reported errors therefore tell young stars from
old ones: on the first 12,000 held-out simulated stars with Gaia + 2MASS, the reported
G error divided by the survey model's error at the observed G is 1.00 for every old star
and above 5.4 for 95 % of the young ones. The estimator reads that from its error tokens; a
likelihood that takes the reported errors as given constants does not, so the importance
weights pulled young stars towards the prior's old solutions (and the reverse), and the
weighted posterior's age, [M/H] and A_V came out worse calibrated than the proposal with
few bands.

This module adds ``log p(w | young)`` or ``log p(w | old)`` to each sample, by its age, for
one statistic per star: the variance excess

    w = σ_reported² − σ_law(m)²

of the observed band with the smallest model error ``σ_law`` at its observed magnitude
``m`` (the error law of :class:`~ysoscale.simulate.surveys.SurveyModel`). The simulator,
like a catalog, reports the error at the observed magnitude, so ``w`` is the star's ``v²``
(zero for an old star) up to the rounding of float32 magnitudes and errors, taken here as
a normal error of standard deviation ``s = 1e-4 σ_rep²`` (some thousand times the
rounding). Then

* old: ``w ~ N(0, s²)``;
* young: ``w = u + N(0, s²)`` with ``u = v²``, ``log u ~ N(2 log v0, (2 σ_v)²)``: the
  lognormal density of ``u`` at ``w`` where ``s`` is below 5 % of ``w``, else integrated
  numerically over ``log u``.

The term depends on a sample only through whether its age is below 50 Myr, and on the star
only through its data, so it costs one pass per star. It describes the simulator; on a real
catalog whose errors do not follow the survey models (or whose young stars vary otherwise)
leave it out, like :mod:`ysoscale.infer.selection`.

Examples
--------
>>> import torch
>>> evidence = VariabilityEvidence.from_surveys(("gaia_g", "gaia_bp", "gaia_rp"))
>>> mag = torch.tensor([[15.0, 15.4, 14.4], [15.0, 15.4, 14.4]])
>>> law = evidence.law_error(mag)
>>> err = torch.stack([law[0], torch.sqrt(law[1] ** 2 + 0.1**2)])  # old star, young star
>>> terms = evidence.star_terms(mag, err)  # (star, [young, old])
>>> bool(terms[0, 1] > terms[0, 0]), bool(terms[1, 0] > terms[1, 1])
(True, True)
>>> ages = torch.tensor([[9.5, 6.5], [9.5, 6.5]])  # log10 yr: one old, one young sample each
>>> logp = evidence.log_probability(ages, terms)
>>> bool(logp[0, 0] > logp[0, 1]), bool(logp[1, 1] > logp[1, 0])
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ysoscale.simulate.config import SimulationConfig
from ysoscale.simulate.kernel import YOUNG_AGE_LOG10_YR
from ysoscale.simulate.surveys import SURVEY_MODELS, SurveyModel

_LOG_2PI = math.log(2.0 * math.pi)
_NOISE_TO_MAG = (2.5 / math.log(10.0)) / 5.0  # σ at S/N 5 (the error law's unit)
_GRID = torch.linspace(-7.0, 7.0, 1401, dtype=torch.float64)  # log u in units of its σ
_LOG_GRID_WEIGHT = -0.5 * _GRID**2 - 0.5 * _LOG_2PI + math.log(float(_GRID[1] - _GRID[0]))
_DELTA_BELOW = 0.05  # s / w under which p(w | young) is the lognormal density at w
_ROUNDING = 1e-4  # relative to σ_rep²: float32 storage of magnitudes and errors

VARIABILITY_LOG_SIGMA = 0.5
"""σ of log(v / v0) in :func:`ysoscale.simulate.kernel.young_variability`."""


@dataclass(frozen=True)
class VariabilityEvidence:
    """``log p(reported-error excess | young or old)`` per star, weighed by sample age.

    Build it with :meth:`from_surveys`. Bands that belong to no survey model are ignored.

    Attributes
    ----------
    snr5_mag, noise_fraction, floor : Tensor (n_band,)
        The survey error law per band (NaN for ignored bands).
    median_mag : float
        ``v0``: median extra scatter of a young star (mag); 0 = no variability (the term is
        then zero).
    log_sigma : float
        ``σ_v``, the lognormal width of ``v / v0``.
    young_below_log10_age : float
        Stars younger than this vary (log10 yr).
    """

    snr5_mag: Tensor
    noise_fraction: Tensor
    floor: Tensor
    median_mag: float = SimulationConfig.young_variability_mag
    log_sigma: float = VARIABILITY_LOG_SIGMA
    young_below_log10_age: float = YOUNG_AGE_LOG10_YR

    @classmethod
    def from_surveys(
        cls,
        bands: Sequence[str],
        *,
        models: dict[str, SurveyModel] | None = None,
        median_mag: float = SimulationConfig.young_variability_mag,
        log_sigma: float = VARIABILITY_LOG_SIGMA,
    ) -> VariabilityEvidence:
        """The evidence over ``bands`` under the survey models (default: the simulator's)."""
        if not (math.isfinite(median_mag) and median_mag >= 0):
            raise ValueError(f"median_mag must be finite and >= 0, got {median_mag!r}")
        if not (math.isfinite(log_sigma) and log_sigma > 0):
            raise ValueError(f"log_sigma must be finite and > 0, got {log_sigma!r}")
        models = SURVEY_MODELS if models is None else models
        law = np.full((3, len(bands)), np.nan)
        for model in models.values():
            for k, band in enumerate(model.bands):
                if band in bands:
                    law[:, list(bands).index(band)] = (
                        model.snr5_mag[k],
                        model.source_noise_fraction[k],
                        model.error_floor[k],
                    )
        snr5, fraction, floor = (torch.as_tensor(v) for v in law)
        return cls(snr5, fraction, floor, float(median_mag), float(log_sigma))

    def law_variance(self, mag: Tensor) -> Tensor:
        """σ_law² (mag²) of the survey error law at magnitudes ``(..., n_band)``."""
        m = mag.double()
        snr5, g, floor = (t.to(m.device) for t in (self.snr5_mag, self.noise_fraction, self.floor))
        x = torch.exp((0.4 * math.log(10.0)) * (m - snr5))
        return x * ((1.0 - g) * x + g) * _NOISE_TO_MAG**2 + floor**2

    def law_error(self, mag: Tensor) -> Tensor:
        """σ_law (mag) at magnitudes ``(..., n_band)``: a variability-free star's error."""
        return torch.sqrt(self.law_variance(mag))

    def variance_excess(self, mag: Tensor, mag_err: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per star ``(w, σ_rep, has)``: the excess ``σ_rep² − σ_law(m)²`` of the observed
        band with the smallest ``σ_law``, that band's reported error, and whether the star
        has a usable band (where it has none, ``w = 0`` and ``σ_rep = 1``)."""
        mag, err = mag.double(), mag_err.double()
        law_var = self.law_variance(mag)
        usable = torch.isfinite(mag) & torch.isfinite(err) & (err > 0) & torch.isfinite(law_var)
        pick = torch.where(usable, law_var, math.inf).argmin(dim=1, keepdim=True)
        has = usable.gather(1, pick)[:, 0]
        rep = torch.where(has, err.gather(1, pick)[:, 0], 1.0)
        w = torch.where(has, rep**2 - law_var.gather(1, pick)[:, 0], 0.0)
        return w, rep, has

    def star_terms(self, mag: Tensor, mag_err: Tensor) -> Tensor:
        """``(n, 2)`` float64: ``log p(w | young)``, ``log p(w | old)`` per star (zeros for a
        star with no usable band, or without variability in the model)."""
        if self.median_mag == 0.0:
            return torch.zeros(mag.shape[0], 2, dtype=torch.float64, device=mag.device)
        w, rep, has = self.variance_excess(mag, mag_err)
        s = _ROUNDING * rep**2
        log_old = -0.5 * ((w / s) ** 2 + _LOG_2PI) - torch.log(s)

        mu = 2.0 * math.log(self.median_mag)
        sigma = 2.0 * self.log_sigma
        grid = _GRID.to(mag.device)
        u = torch.exp(mu + sigma * grid)  # (K,)
        kernel = -0.5 * (((w[:, None] - u) / s[:, None]) ** 2 + _LOG_2PI) - torch.log(s)[:, None]
        log_young = torch.logsumexp(kernel + _LOG_GRID_WEIGHT.to(mag.device), dim=1)
        positive = w > 0
        log_w = torch.log(torch.where(positive, w, 1.0))
        lognormal = -0.5 * (((log_w - mu) / sigma) ** 2 + _LOG_2PI) - math.log(sigma) - log_w
        sharp = positive & (s < _DELTA_BELOW * w)
        log_young = torch.where(sharp, lognormal, log_young)
        terms = torch.stack([log_young, log_old], dim=1)
        return torch.where(has[:, None], terms, 0.0)

    def log_probability(self, log10_age: Tensor, terms: Tensor) -> Tensor:
        """``(n, S)``: each sample's term by its age (``log10_age (n, S)``, ``terms`` from
        :meth:`star_terms`)."""
        young = log10_age.to(terms.device) < self.young_below_log10_age
        return torch.where(young, terms[:, :1], terms[:, 1:])

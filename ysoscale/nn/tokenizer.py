"""Turn a star's photometry (and parallax) into a padded set of tokens.

Normalisation (IrisML centres the magnitudes per star; we keep the absolute level too):

* band token ``i`` = ``band_embedding[i]`` + ``Linear(1, width)((m_i - m_mean) / 2)``
  + ``Linear(1, width)(log10(max(err_i, 1e-3)))``, where ``m_mean`` is the mean of the
  star's *observed* magnitudes. Colours live in the centred magnitudes.
* summary token = learned id + ``Linear(2, width)([(m_mean - 15) / 5, n_observed / n_band])``.
  The absolute brightness matters: with a parallax it constrains the luminosity.
* parallax token = learned id + ``Linear(2, width)([asinh(parallax / parallax_error) / 3,
  log10(parallax_error)])`` (mas); masked when the parallax or its error is missing. For a
  significant parallax ``asinh(S/N) = ln(2 S/N)``, so ``log10(parallax)`` (the distance
  modulus) is linear in the two features at any S/N, and a negative parallax keeps its sign.
  Models saved with ``parallax_encoding = "snr_clip"`` use ``clip(S/N, ±100) / 10`` instead,
  which cannot tell S/N 100 from S/N 1000.

A band is observed when its magnitude and error are finite and the error is positive.
Nothing depends on the column order except through the band-id embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ysoscale.nn.config import EstimatorConfig

ERROR_FLOOR_MAG = 1e-3
"""Magnitude errors below this are treated as this (log-error feature is finite)."""


BAND_COUNT_SCALE = 28.0
"""Scale of the observed-band count in the summary token: a constant (the size of band list
version 1), not the model's own band count, so extending a model by new bands
(:mod:`ysoscale.train.extend`) leaves the tokens of its old stars unchanged."""


def observed_bands(mag: Tensor, mag_err: Tensor) -> Tensor:
    """Bool mask of observed bands: finite magnitude, finite positive error.

    The one definition of "observed" for the estimators and the likelihoods.

    Examples
    --------
    >>> nan = float("nan")
    >>> observed_bands(torch.tensor([[12.0, nan, 13.0]]), torch.tensor([[0.1, 0.1, 0.0]]))
    tensor([[ True, False, False]])
    """
    return torch.isfinite(mag) & torch.isfinite(mag_err) & (mag_err > 0)


class BandTokenizer(nn.Module):
    """Photometry ``(batch, band)`` -> tokens ``(batch, token, width)`` plus a padding mask.

    Token order: ``n_band`` band tokens (column order of ``config.bands``), one summary
    token, then (if ``config.use_parallax``) one parallax token.

    Parameters
    ----------
    config : EstimatorConfig
        Uses ``bands``, ``width`` and ``use_parallax``.

    Examples
    --------
    >>> config = EstimatorConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=16, heads=2)
    >>> tok = BandTokenizer(config)
    >>> mag = torch.tensor([[12.0, 12.4, float("nan")]])
    >>> tokens, pad = tok(mag, torch.full_like(mag, 0.01), torch.tensor([2.0]),
    ...                   torch.tensor([0.05]))
    >>> tokens.shape, pad.tolist()
    (torch.Size([1, 5, 16]), [[False, False, True, False, False]])
    """

    def __init__(self, config: EstimatorConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.band_embedding = nn.Embedding(config.n_band, width)
        self.mag_embedding = nn.Linear(1, width)
        self.err_embedding = nn.Linear(1, width)
        self.summary_id = nn.Parameter(torch.randn(width) * 0.02)
        self.summary_embedding = nn.Linear(2, width)
        if config.use_parallax:
            self.parallax_id = nn.Parameter(torch.randn(width) * 0.02)
            self.parallax_embedding = nn.Linear(2, width)

    @property
    def n_token(self) -> int:
        return self.config.n_band + 1 + int(self.config.use_parallax)

    def forward(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Build tokens.

        Parameters
        ----------
        mag, mag_err : Tensor, shape (batch, n_band)
            Magnitudes and their errors; NaN marks a missing band.
        parallax, parallax_error : Tensor, shape (batch,), optional
            Parallax and its error in mas; NaN (or None) marks a missing parallax. Ignored
            when ``config.use_parallax`` is False.

        Returns
        -------
        tokens : Tensor, shape (batch, n_token, width)
        padding_mask : Tensor of bool, shape (batch, n_token)
            True where the token is missing (attention ignores it).
        """
        n_band = self.config.n_band
        assert mag.ndim == 2 and mag.shape[1] == n_band, (
            f"mag must be (batch, {n_band}) in the order of config.bands, got {tuple(mag.shape)}"
        )
        assert mag_err.shape == mag.shape, (
            f"mag_err shape {tuple(mag_err.shape)} != mag shape {tuple(mag.shape)}"
        )
        batch = mag.shape[0]
        observed = observed_bands(mag, mag_err)
        n_obs = observed.sum(dim=1, keepdim=True)
        mag0 = torch.where(observed, mag, torch.zeros_like(mag))
        mean_mag = mag0.sum(dim=1, keepdim=True) / n_obs.clamp(min=1)
        # Zero the features of missing bands: a NaN would leak through masked attention.
        centred = torch.where(observed, (mag0 - mean_mag) / 2.0, torch.zeros_like(mag))
        err0 = torch.where(observed, mag_err, torch.ones_like(mag_err))
        log_err = torch.where(
            observed, torch.log10(err0.clamp(min=ERROR_FLOOR_MAG)), torch.zeros_like(mag)
        )
        band_tokens = (
            self.band_embedding.weight.unsqueeze(0)
            + self.mag_embedding(centred.unsqueeze(-1))
            + self.err_embedding(log_err.unsqueeze(-1))
        )
        summary_feat = torch.cat([(mean_mag - 15.0) / 5.0, n_obs.to(mag.dtype) / BAND_COUNT_SCALE],
                                 dim=1)  # fmt: skip
        summary = (self.summary_id + self.summary_embedding(summary_feat)).unsqueeze(1)
        tokens = [band_tokens, summary]
        masks = [~observed, torch.zeros(batch, 1, dtype=torch.bool, device=mag.device)]

        if self.config.use_parallax:
            if parallax is None or parallax_error is None:
                parallax = torch.full((batch,), float("nan"), dtype=mag.dtype, device=mag.device)
                parallax_error = parallax
            assert parallax.shape == (batch,) and parallax_error.shape == (batch,), (
                f"parallax and parallax_error must be ({batch},), got "
                f"{tuple(parallax.shape)} and {tuple(parallax_error.shape)}"
            )
            has_plx = torch.isfinite(parallax) & torch.isfinite(parallax_error)
            has_plx = has_plx & (parallax_error > 0)
            safe_err = torch.where(has_plx, parallax_error, torch.ones_like(parallax_error))
            safe_plx = torch.where(has_plx, parallax, torch.zeros_like(parallax))
            snr = safe_plx / safe_err
            if self.config.parallax_encoding == "asinh":
                snr_feature = torch.asinh(snr) / 3.0
            else:  # "snr_clip", models trained before the asinh encoding
                snr_feature = snr.clamp(-100.0, 100.0) / 10.0
            feat = torch.stack([snr_feature, torch.log10(safe_err)], dim=1).to(mag.dtype)
            feat = torch.where(has_plx.unsqueeze(1), feat, torch.zeros_like(feat))
            tokens.append((self.parallax_id + self.parallax_embedding(feat)).unsqueeze(1))
            masks.append(~has_plx.unsqueeze(1))

        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

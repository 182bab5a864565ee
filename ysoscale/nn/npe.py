"""Amortised neural posterior estimator: band tokens -> set transformer -> conditional flow.

The flow lives in an unconstrained space ``u = logit((theta - lo) / (hi - lo))``; the map
back onto the parameter box is a bijection whose Jacobian enters every log-density, so the
posterior has support exactly on ``[lo, hi]`` with no clipping of samples. The distance
coordinate is further centred and scaled per star on its parallax
(:mod:`ysoscale.nn.parallax_centring`), an affine map with an exact Jacobian.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Distribution, Transform, constraints
from torch.nn import functional as F
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from ysoscale.nn.batching import stars_per_call
from ysoscale.nn.config import EstimatorConfig
from ysoscale.nn.encoder import SetEncoder
from ysoscale.nn.model_files import load_weights, read_card, save_model
from ysoscale.nn.parallax_centring import ParallaxCentring, parallax_frame
from ysoscale.nn.tail_compression import TailCompression
from ysoscale.nn.tokenizer import BandTokenizer, observed_bands
from ysoscale.physics.passbands import BAND_LIST_VERSION

BOUND_EPS = 1e-6
"""Relative distance from a bound below which a parameter value is moved onto it + eps
(only when evaluating a density at, e.g., ``av == 0`` exactly; samples are never clipped)."""


class BoxToRealTransform(Transform):
    """Elementwise bijection ``[lo, hi] -> R``, ``u = logit((x - lo) / (hi - lo))``.

    Its inverse ``x = lo + (hi - lo) * sigmoid(u)`` maps a flow's samples onto the box.
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, lo: Tensor, hi: Tensor) -> None:
        super().__init__()
        self.lo = lo
        self.scale = hi - lo

    def _call(self, x: Tensor) -> Tensor:
        p = ((x - self.lo) / self.scale).clamp(BOUND_EPS, 1.0 - BOUND_EPS)
        return torch.logit(p)

    def _inverse(self, u: Tensor) -> Tensor:
        return self.lo + self.scale * torch.sigmoid(u)

    def log_abs_det_jacobian(self, x: Tensor, u: Tensor) -> Tensor:
        # du/dx = 1 / (scale * s(u) * (1 - s(u))), written with softplus to stay finite.
        return F.softplus(u) + F.softplus(-u) - torch.log(self.scale)


def _as_tensor(value: Any, device: torch.device) -> Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32, device=device)


PACKING_GROUPS = 4


def encode_packed(encoder: SetEncoder, tokens: Tensor, padding_mask: Tensor) -> Tensor:
    """Run ``encoder`` on tokens packed by count (see :meth:`PosteriorEstimator.context`)."""
    batch, _, width = tokens.shape
    counts = (~padding_mask).sum(dim=1)
    order = torch.argsort(padding_mask.to(torch.int8), dim=1, stable=True)  # observed first
    tokens = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, width))
    padding_mask = padding_mask.gather(1, order)
    if batch < 64:
        length = int(counts.max())
        return encoder(tokens[:, :length], padding_mask[:, :length])
    by_count = torch.argsort(counts)
    out = tokens.new_empty(batch, width)
    for group in torch.tensor_split(by_count, PACKING_GROUPS):
        if group.numel():
            length = int(counts[group].max())
            encoded = encoder(tokens[group, :length], padding_mask[group, :length])
            out = out.index_copy(0, group, encoded)
    return out


class PosteriorEstimator(nn.Module):
    """Conditional density ``p(theta | photometry, parallax)`` over physical parameters.

    ``BandTokenizer`` -> ``SetEncoder`` (CLS summary) -> zuko NSF/MAF conditioned on the
    summary, in the logit space of the parameter box ``config.param_bounds``.

    Parameters
    ----------
    config : EstimatorConfig

    Examples
    --------
    >>> config = EstimatorConfig(bands=("gaia_g", "gaia_bp", "gaia_rp"), width=16, heads=2,
    ...                          depth=1, transforms=2, flow_hidden=(32,))
    >>> model = PosteriorEstimator(config)
    >>> mag = torch.tensor([[12.0, 12.4, 11.5], [15.0, float("nan"), 14.1]])
    >>> err = torch.full_like(mag, 0.01)
    >>> dist = model(mag, err, torch.tensor([2.0, float("nan")]), torch.tensor([0.05, 0.1]))
    >>> dist.batch_shape, dist.event_shape
    (torch.Size([2]), torch.Size([6]))
    >>> samples, log_prob = model.sample(mag, err, n_samples=8)
    >>> samples.shape, log_prob.shape
    (torch.Size([2, 8, 6]), torch.Size([2, 8]))
    """

    def __init__(self, config: EstimatorConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = BandTokenizer(config)
        self.encoder = SetEncoder(
            config.width, config.depth, config.heads, config.ff, config.dropout
        )
        flow_cls = {"NSF": zuko.flows.NSF, "MAF": zuko.flows.MAF}[config.flow]
        self.flow = flow_cls(
            features=config.n_param,
            context=config.width,
            transforms=config.transforms,
            hidden_features=config.flow_hidden,
            passes=config.passes,
        )
        lo, hi = config.bounds
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32), persistent=False)
        self.register_buffer("hi", torch.tensor(hi, dtype=torch.float32), persistent=False)

    def _check_observed(self, mag: Tensor, mag_err: Tensor) -> None:
        observed = observed_bands(mag, mag_err)
        empty = torch.nonzero(~observed.any(dim=1)).flatten().tolist()
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            raise ValueError(
                f"{len(empty)} star(s) have no observed band (rows {shown}); "
                "flag and drop them before calling the estimator"
            )

    def context(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> Tensor:
        """Summary vector ``(batch, width)`` that conditions the flow.

        Stars carry a handful of observed bands out of ``n_band`` tokens. Tokens are
        packed (observed first) and stars grouped by their token count, and each group
        is encoded with only as many positions as it needs: exact, because the encoder is
        permutation invariant and ignores padding, and several times faster.
        """
        self._check_observed(mag, mag_err)
        tokens, padding_mask = self.tokenizer(mag, mag_err, parallax, parallax_error)
        return encode_packed(self.encoder, tokens, padding_mask)

    def forward(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> Distribution:
        """Posterior distribution of every star.

        Parameters
        ----------
        mag, mag_err : Tensor, shape (batch, n_band)
            Columns in the order of ``config.bands``; NaN marks a missing band.
        parallax, parallax_error : Tensor, shape (batch,), optional
            In mas; NaN marks a missing parallax.

        Returns
        -------
        Distribution
            Batch shape ``(batch,)``, event shape ``(n_param,)``, in physical units
            (``config.params`` order), support ``[lo, hi]`` per parameter.

        Raises
        ------
        ValueError
            If a star has no observed band (the message names the rows).
        """
        flow = self.flow(self.context(mag, mag_err, parallax, parallax_error))
        transforms = [BoxToRealTransform(self.lo, self.hi)]
        if self.config.distance_coordinate == "parallax" and self.config.use_parallax:
            centre, width = parallax_frame(
                self.config.params, self.lo, self.hi, parallax, parallax_error, mag.shape[0]
            )
            transforms.append(ParallaxCentring(centre, width))
        if self.config.logit_tails == "compressed":
            transforms.append(TailCompression())
        return NormalizingFlow(ComposedTransform(*transforms, flow.transform), flow.base)

    def nll(
        self,
        theta: Tensor,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
    ) -> Tensor:
        """Mean negative log posterior density of ``theta`` ``(batch, n_param)`` (the loss)."""
        assert theta.shape == (mag.shape[0], self.config.n_param), (
            f"theta must be ({mag.shape[0]}, {self.config.n_param}), got {tuple(theta.shape)}"
        )
        return -self(mag, mag_err, parallax, parallax_error).log_prob(theta).mean()

    @torch.no_grad()
    def sample(
        self,
        mag: Tensor,
        mag_err: Tensor,
        parallax: Tensor | None = None,
        parallax_error: Tensor | None = None,
        n_samples: int = 64,
        batch_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw posterior samples, ``batch_size`` stars at a time (default by device,
        :func:`ysoscale.nn.batching.stars_per_call`), in eval mode.

        Returns
        -------
        samples : Tensor, shape (batch, n_samples, n_param)
        log_prob : Tensor, shape (batch, n_samples)
            Posterior log-density of each sample (physical units, Jacobian included).
        """
        device = self.lo.device
        mag, mag_err = _as_tensor(mag, device), _as_tensor(mag_err, device)
        parallax = _as_tensor(parallax, device)
        parallax_error = _as_tensor(parallax_error, device)
        self._check_observed(mag, mag_err)
        batch_size = batch_size or stars_per_call(device, n_samples)
        was_training = self.training
        self.eval()
        try:
            out_x, out_lp = [], []
            for start in range(0, mag.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                plx = None if parallax is None else parallax[rows]
                plx_err = None if parallax_error is None else parallax_error[rows]
                dist = self(mag[rows], mag_err[rows], plx, plx_err)
                x, lp = dist.rsample_and_log_prob((n_samples,))
                out_x.append(x.transpose(0, 1))
                out_lp.append(lp.transpose(0, 1))
        finally:
            self.train(was_training)
        n_param = self.config.n_param
        if not out_x:
            return mag.new_empty(0, n_samples, n_param), mag.new_empty(0, n_samples)
        return torch.cat(out_x), torch.cat(out_lp)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(self, path_dir: str | Path, card: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``model_card.json`` (config + ``card`` extras).

        Examples
        --------
        >>> import tempfile
        >>> config = EstimatorConfig(bands=("gaia_g",), width=8, heads=2, depth=1,
        ...                          transforms=1, flow_hidden=(8,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = PosteriorEstimator(config).save(tmp, {"trained_on": "nothing"})
        ...     PosteriorEstimator.load(tmp).config == config
        True
        """
        header = {
            "config": self.config.to_dict(),
            "band_list_version": BAND_LIST_VERSION,
            "n_parameters": self.n_parameters(),
        }
        return save_model(self, path_dir, header, card)

    @classmethod
    def load(
        cls, path_dir: str | Path, map_location: str | torch.device = "cpu"
    ) -> PosteriorEstimator:
        """Rebuild a model from :meth:`save` output (safetensors, never pickle)."""
        model = cls(EstimatorConfig.from_card(read_card(path_dir)["config"]))
        return load_weights(model, path_dir, map_location)

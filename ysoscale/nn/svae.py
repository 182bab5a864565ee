"""Scatter-VAE for Gaia XP coefficients (Laroche & Speagle 2024), with full XP covariance.

An encoder maps the (normalised) BP/RP coefficients of a star to a Gaussian latent
(6-d by default); a decoder maps a latent back to the coefficients ``x_hat`` and a
non-negative per-coefficient *scatter* ``s`` that absorbs what the latent cannot
describe. The loss per star is

    (1/n) [ r^T S^-1 r + log det S ] + kl_weight * KL(q(z|x) || N(0, I)),
    r = x - x_hat,  S = C + diag(s^2),

with ``C`` the measurement covariance of the coefficients. With diagonal errors
(``C = diag(sigma^2)``) this is the original loss, the mean over coefficients of
``r^2 / (sigma^2 + s^2) + log(sigma^2 + s^2)``. Where the Gaia correlation arrays are
known, ``C = D R D`` per photometer (``D = diag(sigma)``, ``R`` the 55 x 55 correlation
matrix) and the quadratic form is evaluated through a Cholesky factor (a whitened
chi-square), blockwise for BP and RP. Stars without correlations use ``R = I``, which is
the diagonal loss.

Everything here is plain torch on arrays: no Dask, no files except :meth:`ScatterVAE.save`
and :meth:`ScatterVAE.load` (safetensors and a JSON model card, never pickle). How the
coefficients are normalised before they get here is the caller's business
(:mod:`ysoscale.xp.normalise`); the model only standardises its encoder input with
per-coefficient statistics it keeps as buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ysoscale.nn.model_files import load_weights, read_card, save_model

MODEL_KIND = "svae"


@dataclass(frozen=True)
class SVAEConfig:
    """Shape and loss weights of a :class:`ScatterVAE`.

    Parameters
    ----------
    n_coefficients : int
        Input length (110: 55 BP then 55 RP coefficients).
    latent : int
        Latent dimension.
    hidden : tuple of int
        Widths of the encoder's hidden layers; the decoder mirrors them.
    kl_weight : float, optional
        Weight of the KL term against the per-coefficient mean of the likelihood term.
        Default ``1 / n_coefficients``: the loss is then the negative ELBO per
        coefficient. (Weight 1 over-weights the KL 110-fold; on the real Gaia sample the
        posterior then collapses onto the prior and the latent is unused.)
    input_clip : float
        Standardised encoder inputs are clipped to +-``input_clip`` (noisy faint spectra
        have very large high-order coefficients after normalisation).
    initial_scatter : float
        Scatter at initialisation, in units of each coefficient's standardisation scale.
    linear_path : bool
        Add a linear map beside each MLP (encoder ``x -> z`` and decoder ``z -> x``);
        :meth:`ScatterVAE.init_linear` sets them to a principal-component projection, so
        training starts from the PCA reconstruction and the MLPs learn what is not linear.

    Examples
    --------
    >>> SVAEConfig(latent=4).hidden
    (256, 128)
    >>> SVAEConfig.from_dict({"latent": 3, "hidden": [8]}).to_dict()["hidden"]
    [8]
    """

    n_coefficients: int = 110
    latent: int = 6
    hidden: tuple[int, ...] = (256, 128)
    kl_weight: float | None = None
    input_clip: float = 10.0
    initial_scatter: float = 0.01
    linear_path: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kl_weight is None:
            object.__setattr__(self, "kl_weight", 1.0 / max(self.n_coefficients, 1))
        if self.n_coefficients < 1 or self.latent < 1:
            raise ValueError(
                f"n_coefficients and latent must be positive, got {self.n_coefficients}, "
                f"{self.latent}"
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be positive widths, got {self.hidden}")
        if self.kl_weight < 0 or self.input_clip <= 0 or self.initial_scatter <= 0:
            raise ValueError(
                "kl_weight must be >= 0 and input_clip, initial_scatter > 0, got "
                f"{self.kl_weight}, {self.input_clip}, {self.initial_scatter}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SVAEConfig:
        """Build from a mapping; misspelled keys are rejected by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sVAE setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class SVAEOutput:
    """What :meth:`ScatterVAE.forward` returns; shapes ``(batch, latent)`` or
    ``(batch, n_coefficients)``."""

    mean: Tensor
    log_var: Tensor
    latent: Tensor
    reconstruction: Tensor
    scatter: Tensor


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers)


class ScatterVAE(nn.Module):
    """Encoder ``x -> q(z | x)`` and decoder ``z -> (x_hat, s)`` for XP coefficients.

    Parameters
    ----------
    config : SVAEConfig

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = ScatterVAE(SVAEConfig(n_coefficients=8, latent=2, hidden=(16,)))
    >>> x, sigma = torch.randn(5, 8), torch.full((5, 8), 0.1)
    >>> out = model(x)
    >>> out.latent.shape, out.reconstruction.shape, bool((out.scatter >= 0).all())
    (torch.Size([5, 2]), torch.Size([5, 8]), True)
    >>> model.loss(x, sigma).shape
    torch.Size([5])
    """

    def __init__(self, config: SVAEConfig) -> None:
        super().__init__()
        self.config = config
        n, widths = config.n_coefficients, list(config.hidden)
        self.register_buffer("center", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.encoder = _mlp([n, *widths])
        self.to_latent = nn.Linear(widths[-1], 2 * config.latent)
        self.decoder = _mlp([config.latent, *reversed(widths)])
        self.to_reconstruction = nn.Linear(widths[0], n)
        self.to_scatter = nn.Linear(widths[0], n)
        self.encoder_linear = (
            nn.Linear(n, config.latent, bias=False) if config.linear_path else None
        )
        self.decoder_linear = (
            nn.Linear(config.latent, n, bias=False) if config.linear_path else None
        )
        with torch.no_grad():
            # softplus(b) = initial_scatter, so the first steps see a moderate scatter
            self.to_scatter.bias.fill_(math.log(math.expm1(config.initial_scatter)))
            self.to_scatter.weight.mul_(0.1)

    def set_standardisation(self, center: Tensor, scale: Tensor) -> None:
        """Per-coefficient centre and scale of the encoder input (and decoder output).

        Raises
        ------
        ValueError
            If a scale is not positive and finite, or shapes do not match.
        """
        center = torch.as_tensor(center, dtype=self.center.dtype)
        scale = torch.as_tensor(scale, dtype=self.scale.dtype)
        n = self.config.n_coefficients
        if center.shape != (n,) or scale.shape != (n,):
            raise ValueError(f"center/scale must have shape ({n},), got {center.shape}")
        bad_scale = torch.nonzero(~(torch.isfinite(scale) & (scale > 0))).flatten()
        if len(bad_scale):
            i = int(bad_scale[0])
            raise ValueError(f"standardisation scale of coefficient {i} is {float(scale[i])}")
        bad_center = torch.nonzero(~torch.isfinite(center)).flatten()
        if len(bad_center):
            i = int(bad_center[0])
            raise ValueError(f"standardisation centre of coefficient {i} is {float(center[i])}")
        self.center.copy_(center)
        self.scale.copy_(scale)

    @torch.no_grad()
    def init_linear(self, x: Tensor) -> None:
        """Start from PCA: the linear paths project onto the first ``latent`` principal
        components of ``x`` (about ``center``), scaled to unit latent variance, and the
        MLPs' output layers start at zero.

        Raises
        ------
        ValueError
            If the model has no linear path, or ``x`` has fewer rows than the latent.
        """
        if not self.config.linear_path:
            raise ValueError("init_linear needs a model with linear_path=True")
        k = self.config.latent
        if x.shape[0] <= k:
            raise ValueError(f"{x.shape[0]} stars cannot define {k} principal components")
        centred = (x - self.center).to(torch.float64)
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        spread = (singular[:k] / (x.shape[0] - 1) ** 0.5).clamp_min(1e-12)
        self.encoder_linear.weight.copy_(vh[:k] / spread[:, None])
        self.decoder_linear.weight.copy_((vh[:k] * spread[:, None]).T)
        for layer in (self.to_latent, self.to_reconstruction):
            layer.weight.zero_()
            layer.bias.zero_()
        self.to_latent.bias[k:] = -4.0  # narrow posteriors to start with

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(z | x)``, each ``(batch, latent)``."""
        assert x.shape[-1] == self.config.n_coefficients, (
            f"expected {self.config.n_coefficients} coefficients, got {x.shape[-1]}"
        )
        clip = self.config.input_clip
        h = self.encoder(((x - self.center) / self.scale).clamp(-clip, clip))
        mean, log_var = self.to_latent(h).chunk(2, dim=-1)
        if self.encoder_linear is not None:
            mean = mean + self.encoder_linear(x - self.center)
        return mean, log_var.clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction ``x_hat`` and non-negative scatter ``s``, each ``(batch, n)``."""
        h = self.decoder(z)
        x_hat = self.center + self.scale * self.to_reconstruction(h)
        if self.decoder_linear is not None:
            x_hat = x_hat + self.decoder_linear(z)
        scatter = self.scale * F.softplus(self.to_scatter(h))
        return x_hat, scatter

    def forward(self, x: Tensor, *, sample: bool | None = None) -> SVAEOutput:
        """Encode, draw (or take the mean of) the latent, decode.

        ``sample`` defaults to ``self.training``: a reparametrised draw while training,
        the posterior mean otherwise (deterministic outputs for inference).
        """
        mean, log_var = self.encode(x)
        sample = self.training if sample is None else sample
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if sample else mean
        x_hat, scatter = self.decode(z)
        return SVAEOutput(mean, log_var, z, x_hat, scatter)

    def loss(
        self,
        x: Tensor,
        sigma: Tensor,
        correlations: Tensor | None = None,
        *,
        output: SVAEOutput | None = None,
    ) -> Tensor:
        """Per-star loss ``(batch,)``: scatter likelihood term plus weighted KL.

        Parameters
        ----------
        x, sigma : Tensor
            ``(batch, n)`` normalised coefficients and their errors.
        correlations : Tensor, optional
            ``(batch, blocks, block * (block - 1) / 2)`` packed correlations (see
            :func:`correlation_matrices`); NaN rows mean "unknown" (identity). Without
            it the diagonal loss is used.
        output : SVAEOutput, optional
            A forward pass already made on ``x``.
        """
        out = self(x) if output is None else output
        nll = scatter_nll(x, out.reconstruction, sigma, out.scatter, correlations)
        return nll + self.config.kl_weight * kl_divergence(out.mean, out.log_var)

    def save(self, path_dir: str | Path, card: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``model_card.json`` (config + ``card`` extras).

        Examples
        --------
        >>> import tempfile
        >>> model = ScatterVAE(SVAEConfig(n_coefficients=4, latent=2, hidden=(8,)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     again = ScatterVAE.load(model.save(tmp, {"note": "example"}))
        >>> again.config == model.config
        True
        """
        header = {"kind": MODEL_KIND, "config": self.config.to_dict()}
        return save_model(self, path_dir, header, card)

    @classmethod
    def load(cls, path_dir: str | Path, map_location: str | torch.device = "cpu") -> ScatterVAE:
        """Rebuild a model from :meth:`save` output (safetensors, never pickle).

        Raises
        ------
        ValueError
            If the directory holds another kind of model.
        """
        card = read_card(path_dir)
        if card.get("kind") != MODEL_KIND:
            raise ValueError(f"{path_dir} holds a {card.get('kind', 'npe')!r} model, not an sVAE")
        return load_weights(cls(SVAEConfig.from_dict(card["config"])), path_dir, map_location)


def kl_divergence(mean: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(mean, exp(log_var)) || N(0, I))`` per star, ``(batch,)``.

    Examples
    --------
    >>> kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).tolist()
    [0.0, 0.0]
    """
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def correlation_matrices(packed: Tensor, block: int) -> Tensor:
    """Full correlation matrices from the packed off-diagonal elements.

    Parameters
    ----------
    packed : Tensor
        ``(batch, blocks, block * (block - 1) / 2)``, the lower triangle row by row (the
        Gaia archive's order, ``np.tril_indices(block, -1)``). A row with any NaN is
        unknown and becomes the identity.
    block : int
        Matrix size (55 for Gaia XP).

    Returns
    -------
    Tensor
        ``(batch, blocks, block, block)``, symmetric with unit diagonal.

    Examples
    --------
    >>> correlation_matrices(torch.tensor([[[0.5]]]), 2)[0, 0].tolist()
    [[1.0, 0.5], [0.5, 1.0]]
    """
    n_pairs = block * (block - 1) // 2
    assert packed.shape[-1] == n_pairs, f"expected {n_pairs} correlations, got {packed.shape[-1]}"
    known = torch.isfinite(packed).all(dim=-1, keepdim=True)
    packed = torch.where(known, packed, torch.zeros_like(packed))
    rows, cols = torch.tril_indices(block, block, offset=-1, device=packed.device)
    matrix = packed.new_zeros((*packed.shape[:-1], block, block))
    matrix[..., rows, cols] = packed
    return matrix + matrix.transpose(-1, -2) + torch.eye(block, dtype=packed.dtype)


def gaussian_terms(
    residual: Tensor,
    sigma: Tensor,
    scatter: Tensor | None = None,
    correlations: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``r^T S^-1 r`` and ``log det S`` per star, ``S = D R D + diag(s^2)``.

    Evaluated as ``S = V M V`` with ``V = diag(sqrt(sigma^2 + s^2))``: ``M`` has a unit
    diagonal and eigenvalues between those of ``R``, so its Cholesky factor is well
    conditioned in float32 even where ``s >> sigma``. With ``R = I``, ``M = I`` and both
    terms reduce to their diagonal sums.

    Parameters
    ----------
    residual, sigma : Tensor
        ``(batch, n)``.
    scatter : Tensor, optional
        ``(batch, n)`` model scatter ``s`` (zero if omitted).
    correlations : Tensor, optional
        ``(batch, blocks, pairs)`` packed correlations; ``n`` must be ``blocks * block``.

    Returns
    -------
    tuple of Tensor
        Quadratic form and log-determinant, each ``(batch,)``.

    Examples
    --------
    >>> chi2, logdet = gaussian_terms(torch.ones(1, 4), torch.full((1, 4), 2.0))
    >>> float(chi2[0]), round(float(logdet[0]), 4)
    (1.0, 5.5452)
    """
    variance = sigma.square() if scatter is None else sigma.square() + scatter.square()
    if correlations is None:
        return (residual.square() / variance).sum(-1), variance.log().sum(-1)
    batch, n = residual.shape
    blocks = correlations.shape[1]
    assert n % blocks == 0, f"{n} coefficients do not split into {blocks} blocks"
    block = n // blocks
    root = variance.sqrt()
    weight = (sigma / root).reshape(batch, blocks, block)
    corr = correlation_matrices(correlations.to(residual.dtype), block)
    eye = torch.eye(block, dtype=residual.dtype, device=residual.device)
    m = weight.unsqueeze(-1) * corr * weight.unsqueeze(-2)
    m = m + eye * (1.0 - weight.square()).unsqueeze(-1)
    factor = torch.linalg.cholesky(m)
    scaled = (residual / root).reshape(batch, blocks, block, 1)
    white = torch.linalg.solve_triangular(factor, scaled, upper=False)
    chi2 = white.square().sum(dim=(-1, -2, -3))
    logdet_m = 2.0 * factor.diagonal(dim1=-2, dim2=-1).log().sum(dim=(-1, -2))
    return chi2, variance.log().sum(-1) + logdet_m


def scatter_nll(
    x: Tensor,
    x_hat: Tensor,
    sigma: Tensor,
    scatter: Tensor,
    correlations: Tensor | None = None,
) -> Tensor:
    """Mean over coefficients of the scatter likelihood term, per star ``(batch,)``.

    Diagonal: ``mean((x - x_hat)^2 / (sigma^2 + s^2) + log(sigma^2 + s^2))``; with
    ``correlations``, the whitened ``(r^T S^-1 r + log det S) / n``.

    Examples
    --------
    >>> x = torch.zeros(1, 3)
    >>> float(scatter_nll(x, x + 1.0, torch.ones(1, 3), torch.zeros(1, 3))[0])
    1.0
    """
    chi2, logdet = gaussian_terms(x - x_hat, sigma, scatter, correlations)
    return (chi2 + logdet) / x.shape[-1]


def chi2_dof(
    x: Tensor,
    x_hat: Tensor,
    sigma: Tensor,
    correlations: Tensor | None = None,
    scatter: Tensor | None = None,
) -> Tensor:
    """Reconstruction chi-square per coefficient, ``(batch,)``.

    Without ``scatter``: against the measurement errors only (the reconstruction
    quality, comparable with any other model of the coefficients). With ``scatter``:
    against ``C + diag(s^2)``, the residual in units of what the model expects.

    Examples
    --------
    >>> x = torch.zeros(1, 2)
    >>> chi2_dof(x, x + 2.0, torch.ones(1, 2)).tolist()
    [4.0]
    """
    chi2, _ = gaussian_terms(x - x_hat, sigma, scatter, correlations)
    return chi2 / x.shape[-1]


__all__ = [
    "MODEL_KIND",
    "SVAEConfig",
    "SVAEOutput",
    "ScatterVAE",
    "chi2_dof",
    "correlation_matrices",
    "gaussian_terms",
    "kl_divergence",
    "scatter_nll",
]

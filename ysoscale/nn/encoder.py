"""Permutation-invariant set encoder: CLS token + transformer over a padded token set."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SetEncoder(nn.Module):
    """Transformer encoder over a set of tokens, summarised by a learned CLS token.

    No positional encoding is used, so the output is invariant to the order of the tokens.

    Parameters
    ----------
    width : int
        Token width (``feature``).
    depth : int
        Number of transformer layers.
    heads : int
        Attention heads (divides ``width``).
    ff : int
        Feed-forward width.
    dropout : float
        Dropout inside the layers.

    Examples
    --------
    >>> enc = SetEncoder(width=16, depth=1, heads=2, ff=32)
    >>> tokens = torch.randn(3, 5, 16)
    >>> mask = torch.zeros(3, 5, dtype=torch.bool)
    >>> enc(tokens, mask).shape
    torch.Size([3, 16])
    """

    def __init__(self, width: int, depth: int, heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.width = width
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=ff,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=depth, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )

    def forward(self, tokens: Tensor, padding_mask: Tensor) -> Tensor:
        """Encode a padded set.

        Parameters
        ----------
        tokens : Tensor, shape (batch, set, feature)
        padding_mask : Tensor of bool, shape (batch, set)
            True marks padding (ignored by attention).

        Returns
        -------
        Tensor, shape (batch, feature)
            The CLS token's output.
        """
        assert tokens.ndim == 3 and tokens.shape[-1] == self.width, (
            f"tokens must be (batch, set, {self.width}), got {tuple(tokens.shape)}"
        )
        assert padding_mask.shape == tokens.shape[:2], (
            f"padding_mask must be {tuple(tokens.shape[:2])}, got {tuple(padding_mask.shape)}"
        )
        assert padding_mask.dtype == torch.bool, "padding_mask must be bool (True = padding)"
        batch = tokens.shape[0]
        cls = self.cls.expand(batch, 1, self.width)
        x = torch.cat([cls, tokens], dim=1)
        mask = torch.cat([padding_mask.new_zeros(batch, 1), padding_mask], dim=1)
        return self.transformer(x, src_key_padding_mask=mask)[:, 0]

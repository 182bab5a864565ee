"""Condition tokens encoded once per star: the Simformer's ``attention = "cached_context"``.

With full attention every token attends to every other, so the states of the observed
(conditioning) tokens change with the unobserved ones and with the flow time, and the whole
sequence goes through the transformer for every sample and every ODE step. In the
``cached_context`` mode the conditioning tokens attend only to each other and carry no
flow time. Their states at every layer then depend on the star's observations alone, so
they are computed once per star, and only the unobserved tokens of each sample pass
through the layers at each step, attending to themselves and to the cached keys and values
of the conditioning tokens. The unobserved tokens still attend to everything, so the model
can represent the same conditionals; it is a different network from a full-attention one
(trained with :func:`attention_mask`), not an approximation of it.

The functions here run the layers of a ``torch.nn.TransformerEncoder`` built as
:class:`~ysoscale.nn.simformer.Simformer` builds it (pre-norm, GELU, ``batch_first``),
with its own weights, so training uses the stock module with :func:`attention_mask`, and
:func:`encode_context` / :func:`decode_latent` give the same outputs (tested).

Examples
--------
>>> import torch
>>> condition = torch.tensor([[True, False, False]])
>>> present = torch.tensor([[True, True, False]])
>>> attention_mask(condition, present, heads=1)[0].int()  # 1 = may not attend
tensor([[0, 1, 1],
        [0, 0, 1],
        [0, 0, 1]], dtype=torch.int32)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_MODES: tuple[str, ...] = ("full", "cached_context")
"""``full``: every token attends to every present token. ``cached_context``: conditioning
tokens attend only to conditioning tokens and carry no flow time."""


def attention_mask(condition: Tensor, present: Tensor, heads: int) -> Tensor:
    """Boolean attention mask ``(batch * heads, length, length)`` of the cached-context mode.

    ``True`` blocks attention (PyTorch's convention). A conditioning token may attend to
    the conditioning tokens only; any other token to every present token. Every row keeps
    at least one allowed key as long as the star has a present token (a conditioning token
    sees itself), so no softmax row is empty.

    Parameters
    ----------
    condition, present : Tensor of bool, shape (batch, length)
        Conditioning tokens; tokens in the sequence (``condition`` implies ``present``).
    heads : int
        Attention heads (the mask is repeated per head, as ``nn.MultiheadAttention`` wants).
    """
    key_ok = present[:, None, :] & (~condition[:, :, None] | condition[:, None, :])
    return (~key_ok).repeat_interleave(heads, dim=0)


@dataclass
class ContextCache:
    """Keys and values of the conditioning tokens at every layer, for a chunk of stars.

    ``keys[l]`` and ``values[l]`` have shape ``(stars, heads, n_context, head_dim)``;
    ``padding`` ``(stars, n_context)`` is True for padding slots (stars with fewer
    conditioning tokens than the longest).
    """

    keys: list[Tensor]
    values: list[Tensor]
    padding: Tensor


def _projections(layer: nn.TransformerEncoderLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key and value of the normalised tokens ``x`` (..., length, width), split into
    heads: each ``(..., heads, length, head_dim)``."""
    attn = layer.self_attn
    heads = attn.num_heads
    q, k, v = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split(t: Tensor) -> Tensor:
        return t.unflatten(-1, (heads, -1)).transpose(-3, -2)

    return split(q), split(k), split(v)


def _feed_forward(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


def _check_layer(layer: nn.TransformerEncoderLayer) -> None:
    assert layer.norm_first, "cached-context attention needs pre-norm layers (norm_first=True)"
    assert layer.self_attn.batch_first and layer.self_attn._qkv_same_embed_dim


@torch.no_grad()
def encode_context(encoder: nn.TransformerEncoder, tokens: Tensor, padding: Tensor) -> ContextCache:
    """Run the conditioning tokens through every layer (attending to each other only) and
    keep each layer's keys and values.

    Parameters
    ----------
    encoder : nn.TransformerEncoder
        Pre-norm, ``batch_first`` layers, in eval mode.
    tokens : Tensor, shape (stars, n_context, width)
        Embedded conditioning tokens (no flow time).
    padding : Tensor of bool, shape (stars, n_context)
        True for padding slots.
    """
    keys, values = [], []
    blocked = padding[:, None, None, :]
    h = tokens
    for layer in encoder.layers:
        _check_layer(layer)
        q, k, v = _projections(layer, h)
        keys.append(k)
        values.append(v)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked)
        attended = attended.transpose(-3, -2).flatten(-2)
        h = h + layer.self_attn.out_proj(attended)
        h = _feed_forward(layer, h)
    return ContextCache(keys, values, padding)


def decode_latent(
    encoder: nn.TransformerEncoder, tokens: Tensor, padding: Tensor, cache: ContextCache
) -> Tensor:
    """The unobserved tokens of every sample through every layer, attending to themselves
    (within their sample) and to the cached conditioning tokens of their star.

    Differentiable in ``tokens`` (the Jacobians of :mod:`ysoscale.nn.flow_density` need
    that); samplers call it under ``torch.no_grad()``.

    Parameters
    ----------
    tokens : Tensor, shape (stars, samples, n_latent, width)
        Embedded unobserved tokens (with the flow time).
    padding : Tensor of bool, shape (stars, n_latent)
        True for padding slots.
    cache : ContextCache
        From :func:`encode_context` for the same stars.

    Returns
    -------
    Tensor, shape (stars, samples, n_latent, width)
        Outputs after the encoder's final norm (if it has one).
    """
    h = tokens
    # allowed keys: the star's present latent tokens, then its present context tokens
    allowed = torch.cat([~padding, ~cache.padding], dim=1)[:, None, None, None, :]
    for layer, k_context, v_context in zip(encoder.layers, cache.keys, cache.values, strict=True):
        q, k, v = _projections(layer, h)  # (stars, samples, heads, n_latent, head_dim)
        samples = q.shape[1]
        k_all = torch.cat([k, k_context[:, None].expand(-1, samples, -1, -1, -1)], dim=-2)
        v_all = torch.cat([v, v_context[:, None].expand(-1, samples, -1, -1, -1)], dim=-2)
        attended = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=allowed)
        attended = attended.transpose(-3, -2).flatten(-2)
        h = h + layer.self_attn.out_proj(attended)
        h = _feed_forward(layer, h)
    return encoder.norm(h) if encoder.norm is not None else h


__all__ = [
    "ATTENTION_MODES",
    "ContextCache",
    "attention_mask",
    "decode_latent",
    "encode_context",
]

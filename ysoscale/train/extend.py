"""Teach a trained estimator new bands without touching what it already knows.

A band's token is its embedding row plus the embeddings of its magnitude and error
(:class:`~ysoscale.nn.tokenizer.BandTokenizer`). Adding a band appends one embedding row
(token indices of the old bands never change) and trains only the new rows; everything
else is frozen. A star observed in none of the new bands therefore gets exactly the
posterior the old model gave it: the old bands' accuracy cannot drop.

Examples
--------
>>> from ysoscale.nn import EstimatorConfig, PosteriorEstimator
>>> old = PosteriorEstimator(EstimatorConfig(bands=("gaia_g", "gaia_rp"), width=16, heads=2,
...                                          depth=1, transforms=1, flow_hidden=(16,)))
>>> new = with_new_bands(old, ["tmass_ks"])
>>> new.config.bands
('gaia_g', 'gaia_rp', 'tmass_ks')
>>> [name for name, p in new.named_parameters() if p.requires_grad]
['tokenizer.band_embedding.weight']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ysoscale.nn import PosteriorEstimator
from ysoscale.physics.passbands import validate_band_ids

BAND_WEIGHT = "tokenizer.band_embedding.weight"


def with_new_bands(
    model: PosteriorEstimator, new_bands: Sequence[str], *, seed: int = 0
) -> PosteriorEstimator:
    """A copy of ``model`` that also accepts ``new_bands``, with only their rows trainable.

    New rows start at the mean of the old rows (a neutral token) plus a small random
    offset. Gradients of the old rows are zeroed by a hook, so any optimiser without
    weight decay on this parameter leaves them bit for bit unchanged.

    Raises
    ------
    ValueError
        If a band is unknown or already known to the model.
    """
    new_bands = validate_band_ids(new_bands)
    already = [b for b in new_bands if b in model.config.bands]
    if already:
        raise ValueError(f"the model already has band(s) {already}")
    if not new_bands:
        raise ValueError("no new band given")
    config = dataclasses.replace(model.config, bands=model.config.bands + tuple(new_bands))
    extended = PosteriorEstimator(config).to(model.lo.device)
    state = model.state_dict()
    old_rows = state[BAND_WEIGHT]
    generator = torch.Generator().manual_seed(seed)
    noise = 0.02 * torch.randn(len(new_bands), old_rows.shape[1], generator=generator)
    state[BAND_WEIGHT] = torch.cat([old_rows, old_rows.mean(0) + noise.to(old_rows)])
    extended.load_state_dict(state, strict=True)

    n_old = model.config.n_band
    for name, parameter in extended.named_parameters():
        parameter.requires_grad_(name == BAND_WEIGHT)
    weight = extended.tokenizer.band_embedding.weight

    def keep_old_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:n_old] = 0
        return grad

    weight.register_hook(keep_old_rows)
    return extended


__all__ = ["with_new_bands"]

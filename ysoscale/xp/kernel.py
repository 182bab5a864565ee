"""The numeric kernel of the XP branch: normalised coefficients -> latent, chi2/dof, anomaly.

Pure numpy/torch on arrays (no Dask, no files), used alike by training diagnostics, the
benchmark and each task of the distributed pass.

Outputs per usable star (the model runs in eval mode: the latent is the posterior mean):

* ``latent`` ``(n, latent)``: mean of ``q(z | x)``;
* ``chi2_dof``: reconstruction chi-square per coefficient against the measurement
  covariance only, ``r^T C^-1 r / 110`` (full covariance where correlations are known);
* ``anomaly``: the same residual against ``C + diag(s^2)``, i.e. in units of the scatter
  the model expects at that latent position. Stars the model describes score ~1 or less;
  spectra unlike the training sample score high.
"""

from __future__ import annotations

import numpy as np
import torch

from ysoscale.nn.svae import ScatterVAE, chi2_dof
from ysoscale.xp.normalise import XPArrays

OUTPUTS = ("latent", "chi2_dof", "anomaly", "reconstruction", "scatter")


@torch.no_grad()
def encode_arrays(
    model: ScatterVAE,
    arrays: XPArrays,
    *,
    batch_size: int = 4096,
    reconstructions: bool = False,
) -> dict[str, np.ndarray]:
    """Latent, chi2/dof and anomaly of every star of ``arrays``; NaN where not usable.

    Parameters
    ----------
    model : ScatterVAE
    arrays : XPArrays
    batch_size : int
        Stars per model call.
    reconstructions : bool
        Also return ``reconstruction`` and ``scatter`` ``(n, 110)`` (normalised units).

    Examples
    --------
    >>> from ysoscale.nn.svae import SVAEConfig
    >>> from ysoscale.xp.normalise import normalise
    >>> rng = np.random.default_rng(0)
    >>> bp, rp = rng.normal(size=(3, 55)) + 5.0, rng.normal(size=(3, 55)) + 5.0
    >>> arrays = normalise(np.arange(3), bp, np.ones((3, 55)), rp, np.ones((3, 55)))
    >>> out = encode_arrays(ScatterVAE(SVAEConfig(latent=2, hidden=(8,))), arrays)
    >>> out["latent"].shape, out["chi2_dof"].shape
    ((3, 2), (3,))
    """
    model.eval()
    device = next(model.parameters()).device
    n, latent, width = len(arrays), model.config.latent, model.config.n_coefficients
    out = {
        "latent": np.full((n, latent), np.nan, dtype=np.float32),
        "chi2_dof": np.full(n, np.nan, dtype=np.float32),
        "anomaly": np.full(n, np.nan, dtype=np.float32),
    }
    if reconstructions:
        out["reconstruction"] = np.full((n, width), np.nan, dtype=np.float32)
        out["scatter"] = np.full((n, width), np.nan, dtype=np.float32)
    rows = np.flatnonzero(arrays.usable)
    for first in range(0, len(rows), batch_size):
        take = rows[first : first + batch_size]
        x = torch.as_tensor(arrays.coefficients[take], device=device)
        sigma = torch.as_tensor(arrays.errors[take], device=device)
        corr = None
        if arrays.correlations is not None:
            corr = torch.as_tensor(arrays.correlations[take], device=device)
        result = model(x, sample=False)
        out["latent"][take] = result.mean.cpu().numpy()
        out["chi2_dof"][take] = chi2_dof(x, result.reconstruction, sigma, corr).cpu().numpy()
        out["anomaly"][take] = (
            chi2_dof(x, result.reconstruction, sigma, corr, scatter=result.scatter).cpu().numpy()
        )
        if reconstructions:
            out["reconstruction"][take] = result.reconstruction.cpu().numpy()
            out["scatter"][take] = result.scatter.cpu().numpy()
    return out


__all__ = ["OUTPUTS", "encode_arrays"]

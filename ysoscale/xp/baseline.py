"""The PCA baseline of the sVAE: the same latent dimension, linear, fitted in one run.

Reconstruction of held-out stars from the first ``k`` principal components of the
training stars' normalised coefficients, scored with the same chi-square per
coefficient as the sVAE (against the measurement errors).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from ysoscale.xp.normalise import XPArrays, robust_standardisation


def pca_chi2_dof(
    train: XPArrays,
    test: XPArrays,
    n_components: int,
    *,
    standardise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The PCA baseline: chi2/dof and reconstruction of ``test`` from the first
    ``n_components`` principal components of ``train`` (usable stars only).

    With ``standardise`` the PCA runs on coefficients scaled by their robust spread
    (the sVAE's encoder input); otherwise on the normalised coefficients. The
    chi-square is against the measurement errors (diagonal), like the sVAE's
    ``chi2_dof`` without correlations.

    Examples
    --------
    >>> from ysoscale.xp.normalise import normalise
    >>> rng = np.random.default_rng(0)
    >>> bp, rp = rng.normal(size=(50, 55)) + 5.0, rng.normal(size=(50, 55)) + 5.0
    >>> arrays = normalise(np.arange(50), bp, np.ones((50, 55)), rp, np.ones((50, 55)))
    >>> chi2, _ = pca_chi2_dof(arrays, arrays, 3)
    >>> chi2.shape
    (50,)
    """
    fit_x = train.coefficients[train.usable].astype(np.float64)
    center, scale = np.zeros(fit_x.shape[1]), np.ones(fit_x.shape[1])
    if standardise:
        center, scale = (a.astype(np.float64) for a in robust_standardisation(fit_x))
    pca = PCA(n_components=n_components, svd_solver="full").fit((fit_x - center) / scale)
    x = test.coefficients.astype(np.float64)
    rows = test.usable
    x_hat = np.full_like(x, np.nan)
    scaled = (x[rows] - center) / scale
    x_hat[rows] = pca.inverse_transform(pca.transform(scaled)) * scale + center
    chi2 = np.full(len(x), np.nan)
    chi2[rows] = np.mean(((x[rows] - x_hat[rows]) / test.errors[rows]) ** 2, axis=1)
    return chi2, x_hat


__all__ = ["pca_chi2_dof"]

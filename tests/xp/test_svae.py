"""Contract of the scatter-VAE: shapes, gradients, loss algebra, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ysoscale.nn.svae import (
    ScatterVAE,
    SVAEConfig,
    chi2_dof,
    correlation_matrices,
    gaussian_terms,
    kl_divergence,
    scatter_nll,
)
from ysoscale.xp.kernel import encode_arrays
from ysoscale.xp.normalise import normalise

CONFIGS = [
    SVAEConfig(latent=2, hidden=(16,)),
    SVAEConfig(latent=6, hidden=(32, 16), linear_path=False),
    SVAEConfig(n_coefficients=10, latent=3, hidden=(8, 8)),
]


def _batch(n: int, width: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=g, dtype=dtype)
    sigma = 0.05 + torch.rand(n, width, generator=g, dtype=dtype)
    return x, sigma


def _packed(rng: np.random.Generator, n: int, block: int, blocks: int = 2) -> torch.Tensor:
    """Packed correlations of random positive-definite matrices ``(n, blocks, pairs)``."""
    rows = np.tril_indices(block, -1)
    out = np.empty((n, blocks, len(rows[0])))
    for i in range(n):
        for b in range(blocks):
            a = rng.normal(size=(block, 2 * block))
            cov = a @ a.T
            d = np.sqrt(np.diag(cov))
            out[i, b] = (cov / np.outer(d, d))[rows]
    return torch.as_tensor(out)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"latent{c.latent}")
def test_shapes_and_gradients_reach_every_parameter(config):
    torch.manual_seed(0)
    model = ScatterVAE(config)
    x, sigma = _batch(12, config.n_coefficients)
    if config.linear_path:
        model.init_linear(x)
    out = model(x)
    assert out.mean.shape == out.log_var.shape == out.latent.shape == (12, config.latent)
    assert out.reconstruction.shape == out.scatter.shape == (12, config.n_coefficients)
    assert (out.scatter >= 0).all()
    # after init_linear the MLP heads start at zero; one step moves them off it
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.loss(x, sigma).mean().backward()
    optimiser.step()
    optimiser.zero_grad()
    model.loss(x, sigma).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_init_linear_starts_from_pca():
    """With the MLP heads at zero, encode -> decode of the training rows is the PCA
    reconstruction with ``latent`` components (about the standardisation centre)."""
    x, _ = _batch(200, 10, dtype=torch.float32)
    x = x @ torch.randn(10, 10, generator=torch.Generator().manual_seed(1))
    model = ScatterVAE(SVAEConfig(n_coefficients=10, latent=3, hidden=(8,)))
    model.set_standardisation(x.mean(0), x.std(0))
    model.init_linear(x)
    out = model(x, sample=False)
    centred = (x - x.mean(0)).double()
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    pca = centred @ vh[:3].T @ vh[:3] + x.mean(0)
    torch.testing.assert_close(out.reconstruction.double(), pca, atol=1e-4, rtol=1e-4)
    assert torch.allclose(out.latent.std(0), torch.ones(3), atol=1e-3)


def test_diagonal_loss_is_the_published_formula():
    x, sigma = _batch(5, 7, dtype=torch.float64)
    x_hat, scatter = x + 0.3, 0.2 * torch.ones_like(x)
    variance = sigma**2 + scatter**2
    expected = ((x - x_hat) ** 2 / variance + variance.log()).mean(-1)
    torch.testing.assert_close(scatter_nll(x, x_hat, sigma, scatter), expected)
    mean, log_var = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(-1)
    torch.testing.assert_close(kl_divergence(mean, log_var), kl)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_and_diagonal_covariance_agree_when_correlations_are_zero(dtype):
    torch.manual_seed(3)
    model = ScatterVAE(SVAEConfig(latent=3, hidden=(16,))).to(dtype)
    x, sigma = _batch(16, 110, dtype=dtype)
    out = model(x, sample=False)
    zero = torch.zeros(16, 2, 1485, dtype=dtype)
    unknown = torch.full((16, 2, 1485), float("nan"), dtype=dtype)  # treated as identity
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    diagonal = model.loss(x, sigma, output=out)
    torch.testing.assert_close(model.loss(x, sigma, zero, output=out), diagonal, **tol)
    torch.testing.assert_close(model.loss(x, sigma, unknown, output=out), diagonal, **tol)
    r = out.reconstruction
    torch.testing.assert_close(chi2_dof(x, r, sigma, zero), chi2_dof(x, r, sigma), **tol)
    torch.testing.assert_close(
        chi2_dof(x, r, sigma, zero, scatter=out.scatter),
        chi2_dof(x, r, sigma, scatter=out.scatter),
        **tol,
    )


def test_full_covariance_matches_a_dense_solve():
    rng = np.random.default_rng(4)
    block, n = 6, 3
    corr = _packed(rng, n, block)
    x, sigma = _batch(n, 2 * block, dtype=torch.float64)
    scatter = torch.rand(n, 2 * block, dtype=torch.float64)
    residual = x - 0.1
    chi2, logdet = gaussian_terms(residual, sigma, scatter, corr)
    matrices = correlation_matrices(corr, block).numpy()
    for i in range(n):
        expected_chi2 = expected_logdet = 0.0
        for b in range(2):
            part = slice(b * block, (b + 1) * block)
            s = sigma[i, part].numpy()
            cov = np.outer(s, s) * matrices[i, b] + np.diag(scatter[i, part].numpy() ** 2)
            r = residual[i, part].numpy()
            expected_chi2 += r @ np.linalg.solve(cov, r)
            expected_logdet += np.linalg.slogdet(cov)[1]
        assert float(chi2[i]) == pytest.approx(expected_chi2, rel=1e-10)
        assert float(logdet[i]) == pytest.approx(expected_logdet, rel=1e-10)
    # correlations matter: the diagonal answer differs
    diagonal, _ = gaussian_terms(residual, sigma, scatter)
    assert not torch.allclose(chi2, diagonal)


def test_correlation_matrices_follow_the_archive_order():
    packed = torch.tensor([[[0.1, 0.2, 0.3]]])  # (1,0), (2,0), (2,1)
    matrix = correlation_matrices(packed, 3)[0, 0]
    assert matrix[1, 0] == matrix[0, 1] == pytest.approx(0.1)
    assert matrix[2, 0] == pytest.approx(0.2) and matrix[2, 1] == pytest.approx(0.3)
    assert torch.equal(matrix.diagonal(), torch.ones(3))


def test_default_kl_weight_makes_the_loss_a_negative_elbo_per_coefficient():
    assert SVAEConfig().kl_weight == pytest.approx(1 / 110)
    assert SVAEConfig(kl_weight=1.0).kl_weight == 1.0


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="latnt"):
        SVAEConfig.from_dict({"latnt": 4})
    with pytest.raises(ValueError, match="hidden"):
        SVAEConfig(hidden=())
    model = ScatterVAE(SVAEConfig(n_coefficients=3, latent=1, hidden=(4,)))
    with pytest.raises(ValueError, match="coefficient 1 is 0.0"):
        model.set_standardisation(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(5)
    model = ScatterVAE(SVAEConfig(latent=3, hidden=(16,)))
    rng = np.random.default_rng(0)
    bp, rp = rng.normal(size=(20, 55)) + 5.0, rng.normal(size=(20, 55)) + 5.0
    arrays = normalise(np.arange(20), bp, np.ones((20, 55)), rp, np.ones((20, 55)))
    model.set_standardisation(torch.tensor(arrays.coefficients.mean(0)), torch.ones(110))
    model.init_linear(torch.tensor(arrays.coefficients))
    model.save(tmp_path / "m", {"note": "test"})
    again = ScatterVAE.load(tmp_path / "m")
    assert again.config == model.config
    first = encode_arrays(model, arrays, reconstructions=True)
    second = encode_arrays(again, arrays, reconstructions=True)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    with pytest.raises(ValueError, match="config"):
        model.save(tmp_path / "bad", {"config": {}})


def test_loading_another_kind_of_model_is_refused(tmp_path):
    from tests.infer import tiny_model

    with pytest.raises(ValueError, match="not an sVAE"):
        ScatterVAE.load(tiny_model(tmp_path / "npe"))


def test_numeric_core_does_not_import_dask():
    import subprocess
    import sys

    code = (
        "import sys, ysoscale.nn.svae, ysoscale.xp.normalise, ysoscale.xp.kernel; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

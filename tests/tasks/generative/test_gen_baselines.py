"""The VAE baseline's KL term and the supervised gradient-error measurement."""

from __future__ import annotations

import torch
from torch import distributions as D

from jiio_tasks.generative.train import outer_gradient_error
from jiio_tasks.generative.vae import ConvVAE, gaussian_kl

from .tiny import tiny_decoder


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 4, generator=g, dtype=torch.float64)
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    p = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), D.kl_divergence(q, p))


def test_vae_shapes_and_loss_decomposition() -> None:
    torch.manual_seed(0)
    vae = ConvVAE(16, 1, 5, 4)
    images = torch.rand(3, 1, 16, 16)
    assert vae.reconstruct(images).shape == images.shape
    torch.manual_seed(1)
    loss, err, kl = vae.loss(images, beta=2.0)
    torch.testing.assert_close(loss, err + 2.0 * kl / 256)


def test_gradient_error_is_zero_against_itself_and_positive_for_fixed_input() -> None:
    model = tiny_decoder(dtype=torch.float64, alpha_x=0.5, iterations=30)
    clean = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = outer_gradient_error(model, clean, "inpaint", approximate="kkt")
    assert same["relative_error"] < 1e-10 and abs(same["cosine"] - 1) < 1e-10
    cheap = outer_gradient_error(model, clean, "inpaint")
    assert 1e-4 < cheap["relative_error"] < 2 and -1 <= cheap["cosine"] < 1

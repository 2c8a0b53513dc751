"""The VAE baseline's KL term and loss."""

from __future__ import annotations

import torch
from torch import distributions as D

from jiio_tasks.generative.vae import ConvVAE, gaussian_kl


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

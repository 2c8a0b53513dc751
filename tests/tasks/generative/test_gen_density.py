"""Post-hoc densities: Gaussian-mixture EM against known parameters and torch.distributions;
the latent VAE against the moments of its data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from jiio_tasks.generative.density import GaussianMixture, fit_gmm, fit_latent_vae


def _truth() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    m = torch.tensor([[0.0, 0.0], [6.0, 1.0], [-3.0, 7.0]], dtype=torch.float64)
    s = torch.stack([
        torch.tensor([[1.0, 0.3], [0.3, 0.5]]),
        torch.tensor([[0.4, 0.0], [0.0, 2.0]]),
        torch.tensor([[1.5, -0.6], [-0.6, 1.0]]),
    ]).to(torch.float64)
    return w, m, s


def _reference(w: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(D.Categorical(probs=w), D.MultivariateNormal(m, covariance_matrix=s))


def test_log_prob_and_sampling_match_torch_distributions() -> None:
    w, m, s = _truth()
    gmm = GaussianMixture(w, m, s)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    torch.testing.assert_close(gmm.log_prob(x), _reference(w, m, s).log_prob(x))
    draws = gmm.sample(40000, torch.Generator().manual_seed(1))
    mean = (w[:, None] * m).sum(0)
    # mixture covariance by hand: Σ_k w_k (S_k + m_k m_kᵀ) − μ μᵀ
    cov = (w[:, None, None] * (s + m[:, :, None] * m[:, None, :])).sum(0) - torch.outer(mean, mean)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.25, rtol=0.02)


def test_em_recovers_known_parameters() -> None:
    w, m, s = _truth()
    torch.manual_seed(0)
    x = _reference(w, m, s).sample((6000,))
    gmm = fit_gmm(x, 3, generator=torch.Generator().manual_seed(2))
    order = [int(torch.cdist(m[i : i + 1], gmm.means).argmin()) for i in range(3)]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(gmm.weights[order], w, atol=0.03, rtol=0)
    torch.testing.assert_close(gmm.means[order], m, atol=0.1, rtol=0)
    torch.testing.assert_close(gmm.covariances[order], s, atol=0.15, rtol=0)
    # the fit is at least as likely as the truth on its own data (EM maximises likelihood)
    assert gmm.log_likelihood >= float(_reference(w, m, s).log_prob(x).mean()) - 1e-9


def test_single_component_is_the_sample_mean_and_covariance() -> None:
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gmm = fit_gmm(x, 1, reg=0.0)
    torch.testing.assert_close(gmm.means[0], x.mean(0))
    torch.testing.assert_close(gmm.covariances[0], torch.cov(x.T, correction=0))


def test_latent_vae_samples_match_the_latents_mean_and_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    n = 300
    a = torch.randn(n, 4, generator=g, dtype=torch.float64)
    mix = torch.tensor([[1.0, 0, 0, 0], [2.0, 0.5, 0, 0], [0, 0, 0.3, 0], [0, 0, 1, 1]], dtype=torch.float64)
    x = a @ mix.T + torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x[:, 3] += (torch.rand(n, generator=g) > 0.5).double() * 4  # bimodal last coordinate
    vae, nelbo = fit_latent_vae(x, latent_dim=4, hidden=32, steps=300, seed=0)
    assert math.isfinite(nelbo)
    draws = vae.sample(20000, torch.Generator().manual_seed(1)).double()
    assert draws.shape == (20000, 4) and bool(torch.isfinite(draws).all())
    std = x.std(0)
    # means within 0.1 data std; variances within 20 %; the strong correlation (0.97) mostly kept
    # (a diagonal Gaussian would give 0)
    assert bool(((draws.mean(0) - x.mean(0)).abs() < 0.1 * std).all()), (draws.mean(0), x.mean(0))
    ratio = draws.var(0) / x.var(0)
    assert bool(((ratio > 0.8) & (ratio < 1.2)).all()), ratio
    corr = torch.corrcoef(draws.T)[0, 1]
    assert float(torch.corrcoef(x.T)[0, 1]) > 0.95 and float(corr) > 0.6, corr
    # seeded: the same generator gives the same draws
    torch.testing.assert_close(vae.sample(5, torch.Generator().manual_seed(2)), vae.sample(5, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="shape"):
        fit_latent_vae(x[0])

"""Post-hoc density on inferred latents (paper §4.1): a Gaussian mixture fitted by EM.

Full covariances with ``reg · I`` added to each (keeps them positive definite when a component
has few points, as with the 80 embedded training faces). Everything is batched torch on the
data's device and dtype.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor

__all__ = ["GaussianMixture", "fit_gmm"]


@attrs.frozen(eq=False)
class GaussianMixture:
    """``p(x) = Σ_k π_k N(x; m_k, S_k)``: ``weights (K,)``, ``means (K, d)``, ``covariances
    (K, d, d)``; ``log_likelihood`` is the mean log-density of the fitting data."""

    weights: Tensor
    means: Tensor
    covariances: Tensor
    log_likelihood: float = math.nan
    iterations: int = 0

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log π_k + log N(x_n; m_k, S_k)``, shape ``(N, K)``."""
        d = x.shape[1]
        chol = torch.linalg.cholesky(self.covariances)  # (K, d, d)
        diff = (x.unsqueeze(0) - self.means.unsqueeze(1)).unsqueeze(-1)  # (K, N, d, 1)
        sol = torch.linalg.solve_triangular(chol.unsqueeze(1), diff, upper=False).squeeze(-1)
        maha = sol.pow(2).sum(-1)  # (K, N)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        logn = -0.5 * (maha + logdet.unsqueeze(1) + d * math.log(2 * math.pi))
        out: Tensor = (logn + torch.log(self.weights).unsqueeze(1)).T
        return out

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x_n)``, shape ``(N,)``."""
        out: Tensor = torch.logsumexp(self.component_log_prob(x), dim=1)
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, d)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covariances)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=self.means.dtype)
        eps = eps.to(self.means.device)
        out: Tensor = self.means[comp] + (chol[comp] @ eps).squeeze(-1)
        return out


def fit_gmm(
    x: Tensor,
    components: int,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
    reg: float = 1e-6,
    generator: torch.Generator | None = None,
) -> GaussianMixture:
    """EM for a ``components``-Gaussian mixture on ``x (N, d)``; means start at distinct
    random data points, covariances at the data covariance, weights uniform. Stops when the
    mean log-likelihood improves by less than ``tol``."""
    if x.ndim != 2:
        raise ValueError(f"x must be (N, d), got shape {tuple(x.shape)}")
    n, d = x.shape
    if not isinstance(components, int) or not 1 <= components <= n:
        raise ValueError(f"components must be an int in [1, N={n}], got {components!r}")
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or Inf")
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    idx = torch.randperm(n, generator=generator)[:components].to(x.device)
    centred = x - x.mean(0)
    cov0 = centred.T @ centred / n + reg * eye
    gmm = GaussianMixture(
        weights=torch.full((components,), 1.0 / components, dtype=x.dtype, device=x.device),
        means=x[idx].clone(),
        covariances=cov0.expand(components, d, d).clone(),
    )
    prev = -math.inf
    ll = -math.inf
    it = 0
    for step in range(1, max_iter + 1):
        it = step
        logp = gmm.component_log_prob(x)  # E-step
        total = torch.logsumexp(logp, dim=1, keepdim=True)
        ll = float(total.mean())
        resp = torch.exp(logp - total)  # (N, K)
        nk = resp.sum(0).clamp_min(10 * torch.finfo(x.dtype).eps)  # M-step
        means = (resp.T @ x) / nk.unsqueeze(1)
        diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, d)
        covs = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / nk.view(-1, 1, 1) + reg * eye
        gmm = GaussianMixture(weights=nk / n, means=means, covariances=covs)
        if abs(ll - prev) < tol:
            break
        prev = ll
    final = float(gmm.log_prob(x).mean())
    return attrs.evolve(gmm, log_likelihood=final, iterations=it)

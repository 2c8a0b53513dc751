"""Post-hoc densities on inferred latents (paper §4.1): a Gaussian mixture fitted by EM, and a
small MLP VAE ([`LatentVAE`][jiio_tasks.generative.density.LatentVAE], [`fit_latent_vae`][jiio_tasks.generative.density.fit_latent_vae]).

The mixture has full covariances with ``reg · I`` added to each (keeps them positive definite
when a component has few points, as with the 80 embedded training faces); it runs in the
data's device and dtype. The VAE standardises the latents and trains in float32.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor, nn

from jiio_tasks.progress import progress_bar

__all__ = ["GaussianMixture", "LatentVAE", "fit_gmm", "fit_latent_vae"]


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
        where = generator.device if generator is not None else torch.device("cpu")  # draw there
        comp = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covariances)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=self.means.dtype, device=where)
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


class LatentVAE(nn.Module):
    """A small MLP VAE as a post-hoc density on inferred latents ``x (N, d)``.

    Data are standardised per dimension (``shift``, ``scale`` buffers from the fitting set).
    Encoder ``d → hidden → hidden → 2k`` (``μ``, ``log σ²`` of ``q(u|x)``), decoder
    ``k → hidden → hidden → d`` (the mean of ``p(x|u)``), both with tanh; the likelihood is
    ``N(x; dec(u), diag exp(log_var))`` with one learned log-variance per dimension. Samples:
    ``u ~ N(0, I_k)``, ``x = dec(u) + exp(½ log_var) ε``, mapped back to the data scale.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, dim: int, latent_dim: int = 8, hidden: int = 64) -> None:
        super().__init__()
        if dim < 1 or latent_dim < 1 or hidden < 1:
            raise ValueError(
                f"LatentVAE needs dim, latent_dim, hidden >= 1, got {dim}, {latent_dim}, {hidden}"
            )
        self.dim, self.latent_dim = dim, latent_dim
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, dim)
        )
        self.log_var = nn.Parameter(torch.zeros(dim))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def negative_elbo(self, x: Tensor) -> Tensor:
        """Per-sample ``−ELBO`` of standardised ``x`` (nats), one reparameterised draw."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-12, 6)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        mean = self.decoder(u)
        nll = 0.5 * (((x - mean) ** 2) / self.log_var.exp() + self.log_var + math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
        out: Tensor = nll + kl
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, d)`` on the data scale (no grad)."""
        p = self.log_var
        with torch.no_grad():
            u = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
            eps = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
            std = (0.5 * self.log_var).exp()
            out: Tensor = (self.decoder(u) + std * eps) * self.scale + self.shift
        return out


def fit_latent_vae(
    x: Tensor,
    *,
    latent_dim: int = 8,
    hidden: int = 64,
    steps: int = 1500,
    learning_rate: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> tuple[LatentVAE, float]:
    """Fit a [`LatentVAE`][jiio_tasks.generative.density.LatentVAE] to ``x (N, d)`` by Adam on the negative ELBO (minibatches of
    ``batch_size`` drawn with replacement, seeded; cosine learning-rate decay); returns the model and its final mean ``−ELBO`` per sample on ``x``
    (in nats, standardised data). ``progress`` shows the steps on stderr."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (N >= 2, d), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or Inf")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    gen = torch.Generator().manual_seed(seed)
    data = x.detach().to(torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = LatentVAE(x.shape[1], latent_dim, hidden).to(data.device)
        vae.shift.copy_(data.mean(0))
        vae.scale.copy_(data.std(0).clamp_min(1e-6))
        xs = (data - vae.shift) / vae.scale
        opt = torch.optim.Adam(vae.parameters(), lr=learning_rate)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        bar = progress_bar(steps, "latent VAE", enabled=progress, unit="step")
        for _ in range(steps):
            idx = torch.randint(0, xs.shape[0], (batch_size,), generator=gen).to(xs.device)
            loss = vae.negative_elbo(xs[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        bar.close()
        with torch.no_grad():
            final = float(vae.negative_elbo(xs).mean())
    vae.eval()
    return vae, final

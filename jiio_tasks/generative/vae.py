"""Baseline: a small convolutional VAE on the same images (the "equally sized VAE" that the
JIIO-trained decoder is compared with; paper Table 1 compares with VAE/MDEQ-VAE).

``ConvVAE(image_size, channels, latent_dim, width)``: encoder conv stride-2 stack → (μ, log σ²);
decoder linear → transposed-conv stack → sigmoid. ``width`` sets the size; pick it with
[`width_for_parameters`][jiio_tasks.generative.vae.width_for_parameters] to match another model's parameter count. The loss is the
negative ELBO with a Gaussian likelihood of fixed variance, written per pixel as
``MSE + β · KL / D`` (``D`` = pixels), so that ``β = 1`` matches ``σ² = 1/2`` and the
reconstruction term is on the same scale as the JIIO decoder's loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.runs import RunDir

__all__ = ["ConvVAE", "gaussian_kl", "train_vae", "width_for_parameters"]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` per sample: ``½ Σ (μ² + σ² − log σ² − 1)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)


class ConvVAE(nn.Module):
    def __init__(self, image_size: int, channels: int, latent_dim: int, width: int) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"ConvVAE needs image_size divisible by 8, got {image_size}")
        self.image_size, self.channels, self.latent_dim, self.width = image_size, channels, latent_dim, width
        w, s = width, image_size // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(4 * w * s * s, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, 4 * w * s * s)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.Unflatten(1, (4 * w, s, s)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.to_stats(self.encoder(images)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 6)

    def decode(self, latent: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(self.from_latent(latent)))

    def decoder_parameters(self) -> int:
        return sum(p.numel() for m in (self.from_latent, self.decoder) for p in m.parameters())

    def loss(self, images: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, mse, kl)`` batch means: ``loss = mse + β kl / D``."""
        mu, logvar = self.encode(images)
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.decode(latent)
        err = F.mse_loss(recon, images, reduction="none").flatten(1).mean(1)
        kl = gaussian_kl(mu, logvar)
        d = images[0].numel()
        return (err + beta * kl / d).mean(), err.mean(), kl.mean()

    def reconstruct(self, images: Tensor) -> Tensor:
        """Decode the posterior mean."""
        return self.decode(self.encode(images)[0])


def width_for_parameters(target: int, image_size: int, channels: int, latent_dim: int) -> int:
    """The smallest ``width`` whose whole VAE has at least ``target`` parameters."""
    for width in range(1, 1024):
        vae = ConvVAE(image_size, channels, latent_dim, width)
        if sum(p.numel() for p in vae.parameters()) >= target:
            return width
    raise ValueError(f"no width up to 1023 reaches {target} parameters")


def train_vae(
    vae: ConvVAE,
    source: ImageSource,
    run: RunDir,
    *,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    beta: float = 1.0,
    seconds: float | None = None,
    log_every: int = 10,
    save_every: int = 50,
    progress: bool = True,
    describe: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Adam on the negative ELBO for ``steps`` steps in total, or until ``seconds`` of training
    time over all resumptions ([`jiio_tasks.loop.Loop`][jiio_tasks.loop.Loop]: resumable, ``metrics.json``
    like every trainer). ``describe``: more settings to record with the run (e.g. how the
    width was chosen). ``clock`` times the steps (wall time by default; ``time.process_time``
    for a CPU-time budget)."""
    opt = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    loop = Loop(
        run_dir=run, model=vae, optimizer=opt,
        config={**(describe or {}), "baseline": "ConvVAE", "width": vae.width, "batch_size": batch_size,
                "learning_rate": learning_rate, "beta": beta, "data": source.name, "max_seconds": seconds},
        steps=steps, save_every=save_every, log_every=log_every, max_seconds=seconds, progress=progress,
        title="train vae", panels={"loss": "negative ELBO (per pixel)", "mse": "reconstruction MSE", "kl": "KL / D"},
        clock=clock,
    )

    def step_fn(step: int) -> StepResult:
        loss, err, kl = vae.loss(source.batch(batch_size), beta)
        return StepResult(loss, {"loss": float(loss.detach()), "mse": float(err.detach()), "kl": float(kl.detach())})

    result = loop.run(step_fn)
    return loop.finish(result, {"parameters": sum(p.numel() for p in vae.parameters())})

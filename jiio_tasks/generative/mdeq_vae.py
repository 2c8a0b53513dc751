"""Baseline: the MDEQ-VAE of Table 1 (an encoder + the zoo's MDEQ decoder, trained on the ELBO).

The decoder is exactly a zoo decoder (``layer`` with latent injection + image ``head``): a
latent ``x`` is decoded as ``h(z*(x))`` with ``z*`` from a forward DEQ solve (Anderson, the
config's memory and forward threshold) and the implicit backward pass of
[`jiio_core.DEQSolver`][jiio_core.deq.DEQSolver]. The encoder is a small stride-2 conv stack to ``(μ, log σ²)``
(a plain CNN, not the paper's MDEQ encoder: it only has to amortise the posterior). The loss is
the negative ELBO written per pixel like [`ConvVAE`][jiio_tasks.generative.vae.ConvVAE]'s,
``MSE + β · KL / D``, plus ``λ ·`` the Hutchinson Jacobian penalty at the equilibrium (λ = the
config's ``jac_reg``, as for the JIIO-trained decoder).

"Test-time JIIO on its decoder" (Table 1, MDEQ-VAE w/ JIIO): the latent starts at the encoder
mean and is refined by JIIO on the reconstruction loss
([`jiio_tasks.imaging.inversion.infer`][jiio_tasks.imaging.inversion.infer] with ``x0 = μ``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core import hutchinson_jacobian_norm
from jiio_tasks.generative.vae import gaussian_kl
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.problem import image_shape
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.runs import RunDir
from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import deq_solver

__all__ = ["MDEQVAE", "ConvEncoder", "train_mdeq_vae"]


class ConvEncoder(nn.Module):
    """``(C, H, W)`` → three 4×4 stride-2 convs (``w, 2w, 4w`` channels, ReLU) → linear to
    ``(μ, log σ²)``; ``log σ²`` clamped to [−12, 6]."""

    def __init__(self, image_size: int, channels: int, latent_dim: int, width: int) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"ConvEncoder width must be >= 1, got {width!r}")
        s = image_size
        for _ in range(3):
            s = (s + 2 - 4) // 2 + 1
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * width * s * s, 2 * latent_dim),
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(images).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 6)


class MDEQVAE(nn.Module):
    """``encoder`` ([`ConvEncoder`][jiio_tasks.generative.mdeq_vae.ConvEncoder]) + ``decoder`` (a zoo latent-to-image MDEQ)."""

    def __init__(self, decoder: ZooModel, encoder_width: int = 16) -> None:
        super().__init__()
        c, h, _ = image_shape(decoder)
        m = decoder.config.model
        if not isinstance(m, MDEQConfig) or m.output_activation == "tanh":
            raise ValueError(
                f"MDEQVAE needs a [0, 1] (sigmoid/none) image decoder, got {decoder.name!r}"
            )
        self.decoder = decoder
        self.encoder = ConvEncoder(h, c, m.latent_dim, encoder_width)
        self.encoder_width = encoder_width
        self.deq = deq_solver(decoder, tol=1e-4)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out: tuple[Tensor, Tensor] = self.encoder(images)
        return out

    def decode(self, latent: Tensor) -> Tensor:
        """``h(z*(latent))`` (differentiable through the implicit backward pass)."""
        return self.decoder.decode(self.deq.solve(self.decoder.layer, latent).z)

    def loss(self, images: Tensor, beta: float = 1.0, jac_reg: float = 0.0) -> dict[str, Tensor]:
        """Batch means ``loss = mse + β kl / D + λ jacobian`` and its parts."""
        mu, logvar = self.encode(images)
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        sol = self.deq.solve(self.decoder.layer, latent)
        recon = self.decoder.decode(sol.z)
        err = F.mse_loss(recon, images, reduction="none").flatten(1).mean(1)
        kl = gaussian_kl(mu, logvar)
        d = images[0].numel()
        loss = (err + beta * kl / d).mean()
        jac = images.new_zeros(())
        if jac_reg > 0:
            z = tuple(t.detach() for t in sol.z) if isinstance(sol.z, tuple) else sol.z.detach()
            jac = hutchinson_jacobian_norm(self.decoder.layer, z, latent.detach(), probes=1).mean()
            loss = loss + jac_reg * jac
        return {"loss": loss, "mse": err.mean(), "kl": kl.mean(), "jacobian": jac,
                "forward_residual": sol.residual.median()}


def train_mdeq_vae(
    vae: MDEQVAE,
    source: ImageSource,
    run: RunDir,
    *,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    beta: float = 1.0,
    jac_reg: float | None = None,
    seconds: float | None = None,
    save_every: int = 10,
    progress: bool = True,
    describe: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Adam on the negative ELBO (+ Jacobian penalty, default λ = the decoder config's
    ``jac_reg``) for ``steps`` steps in total, or until ``seconds`` of training time over all
    resumptions ([`jiio_tasks.loop.Loop`][jiio_tasks.loop.Loop]: resumable, ``metrics.json`` like every
    trainer). ``describe``: more settings to record with the run. ``clock`` times the steps
    (wall time by default; ``time.process_time`` for a CPU-time budget)."""
    lam = vae.decoder.config.train.jac_reg if jac_reg is None else jac_reg
    if not (isinstance(lam, (int, float)) and lam >= 0):
        raise ValueError(f"jac_reg must be a number >= 0 or None, got {jac_reg!r}")
    opt = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    loop = Loop(
        run_dir=run, model=vae, optimizer=opt,
        config={**(describe or {}), "baseline": "MDEQ-VAE", "decoder_config": vae.decoder.config.name,
                "encoder_width": vae.encoder_width, "batch_size": batch_size, "learning_rate": learning_rate,
                "beta": beta, "jac_reg": float(lam), "data": source.name, "max_seconds": seconds},
        steps=steps, save_every=save_every, max_seconds=seconds, progress=progress, title="train mdeq-vae", clock=clock,
        panels={"loss": "negative ELBO (per pixel) + penalty", "mse": "reconstruction MSE",
                "forward_residual": "forward residual (median)"},
    )

    def step_fn(step: int) -> StepResult:
        parts = vae.loss(source.batch(batch_size), beta, lam)
        return StepResult(parts["loss"], {k: float(v.detach()) for k, v in parts.items()})

    result = loop.run(step_fn)
    return loop.finish(result, {"jac_reg": lam, "parameters": sum(p.numel() for p in vae.parameters()),
                                "decoder_parameters": sum(p.numel() for p in vae.decoder.parameters())})

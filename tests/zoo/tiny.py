"""Tiny zoo configurations for fast CPU tests (channels [4, 8], 8×8 images, GroupNorm(2))."""

from __future__ import annotations

from typing import Any

import torch

from jiio_zoo.configs import MDEQConfig, OptEqConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel, build_model

TASKS = ("adversarial", "generative", "meta", "toy")

_MODEL: dict[str, dict[str, Any]] = {
    "adversarial": dict(
        injection="image",
        head="classification",
        num_classes=3,
        head_channels=(2, 4),
        final_channels=8,
    ),
    "generative": dict(injection="latent", latent_dim=6, head="image", output_activation="tanh"),
    "meta": dict(injection="film", latent_dim=5, head="classification", num_classes=3, pool_size=2),
}


def tiny_config(task: str, **model: Any) -> ZooConfig:
    """A tiny config of ``task`` ("adversarial", "generative", "meta" or "toy")."""
    solver = SolverConfig(
        anderson_memory=5,
        damping=(0.8, 0.6, 0.1),
        jiio_iterations=20,
        epsilon=1.0 if task == "adversarial" else None,
    )
    train = TrainConfig(batch_size=4, learning_rate=1e-3)
    if task == "toy":
        opts: dict[str, Any] = dict(state_dim=6, input_dim=3, output_dim=4)
        opts.update(model)
        return ZooConfig(
            name="tiny_toy", task="toy", scale="test", model=OptEqConfig(**opts),
            solver=solver, train=train,
        )
    opts = dict(image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2)
    opts.update(_MODEL[task])
    opts.update(model)
    return ZooConfig(
        name=f"tiny_{task}", task=task, scale="test", model=MDEQConfig(**opts),  # type: ignore[arg-type]
        solver=solver, train=train,
    )


def tiny_model(task: str, seed: int = 0, dtype: torch.dtype = torch.float64, **model: Any) -> ZooModel:
    torch.manual_seed(seed)
    return build_model(tiny_config(task, **model)).to(dtype)


def tiny_input(
    model: ZooModel, batch: int, seed: int = 1, support: int = 3
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random input ``x`` for ``model`` and the context its solves need: ``support`` images
    per task ``(B, S, 1, H, W)`` for FiLM models, ``None`` otherwise."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    cfg = model.config.model
    context = None
    if isinstance(cfg, MDEQConfig) and cfg.injection == "film":
        context = torch.rand(batch, support, 1, cfg.image_size, cfg.image_size, generator=g, dtype=dtype)
    if isinstance(cfg, MDEQConfig) and cfg.injection == "image":
        return torch.rand(batch, *model.x_shape, generator=g, dtype=dtype), context
    return torch.randn(batch, *model.x_shape, generator=g, dtype=dtype), context

"""A tiny latent-to-image MDEQ decoder (8×8 grey, channels [4, 8]) for fast CPU tests."""

from __future__ import annotations

import torch

from jiio_zoo.configs import MDEQConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel, build_model


def tiny_config(iterations: int = 12, activation: str = "sigmoid", alpha_x: float = 0.01) -> ZooConfig:
    return ZooConfig(
        name="tiny_gen",
        task="generative",
        scale="test",
        model=MDEQConfig(
            image_size=8,
            image_channels=1,
            num_branches=2,
            channels=(4, 8),
            groups=2,
            injection="latent",
            latent_dim=6,
            head="image",
            output_activation=activation,  # type: ignore[arg-type]
        ),
        solver=SolverConfig(anderson_memory=5, damping=(0.8, 0.6, alpha_x), jiio_iterations=iterations),
        train=TrainConfig(batch_size=4, learning_rate=1e-2, jac_reg=0.1),
    )


def tiny_decoder(seed: int = 0, dtype: torch.dtype = torch.float32, **kw: object) -> ZooModel:
    """A fresh tiny decoder whose latent injection and output conv are scaled up ×30, so that its images depend
    visibly on ``x`` before any training (the zoo's 0.01-std init makes them nearly constant)."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(**kw)).to(dtype)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.layer.injection.parameters():  # type: ignore[union-attr]
            p.mul_(30.0)
        for p in model.head.out.parameters():  # type: ignore[union-attr]
            p.mul_(30.0)
    return model

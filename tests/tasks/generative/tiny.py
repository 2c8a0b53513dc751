"""A tiny latent-to-image MDEQ decoder (8×8 grey, channels [4, 8]) for fast CPU tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from jiio_core import DEQSolver
from jiio_tasks.imaging.data import ImageSource
from jiio_zoo.checkpoint import load_model
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


class _Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, dtype: torch.dtype) -> None:
        g = torch.Generator().manual_seed(5)
        self.images = torch.rand(12, 1, 8, 8, generator=g, dtype=dtype)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


def image_source(dtype: torch.dtype = torch.float32) -> ImageSource:
    """Twelve random 8×8 grey images as a training stream for the tiny decoder."""
    return ImageSource(_Images(dtype), 8, 1, "random test images")


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def check_training_run(root: Path, model: ZooModel, before: torch.Tensor, final: dict[str, Any]) -> None:
    """What every decoder-training run must leave: parameters moved and finite, a history of
    finite losses with the penalty computed (λ = 0.1 from the config), the curve, the
    reconstruction grid and a model.pt holding the trained weights."""
    after = params(model)
    assert bool(torch.isfinite(after).all())
    assert float((after - before).abs().max()) > 1e-5
    metrics = json.loads((root / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == list(range(1, final["steps_done"] + 1))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in metrics["history"])
    assert metrics["history"][0]["jacobian"] > 0
    assert final["steps"] == final["steps_done"]
    assert (root / "training_curve.png").stat().st_size > 1000
    assert (root / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    torch.testing.assert_close(params(load_model(root / "model.pt")), after)


def own_images(model: torch.nn.Module, n: int, seed: int = 3) -> torch.Tensor:
    """Images the decoder can produce exactly (from hidden latents), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64) * 3
    with torch.no_grad():
        z = DEQSolver(max_iter=200, tol=1e-10).solve(model.layer, x).z  # type: ignore[attr-defined]
        return model.decode(z)  # type: ignore[attr-defined,no-any-return]

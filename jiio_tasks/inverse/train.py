"""Supervised inverse training (paper eq. 24): the inverse-problem family's step.

Each step corrupts a clean batch with the task's operator ([`jiio_tasks.imaging.operators`][jiio_tasks.imaging.operators]),
solves JIIO for the observation (the operator is the solve's context) and scores the decoded
equilibrium against the clean batch, plus ``λ ·`` the Jacobian penalty. The outer loss differs
from the inner one, so the gradient is the exact implicit one through the whole augmented
fixed point (``"kkt"``, eq. 16–17) or the cheaper one at fixed latents (``"fixed-input"``,
ignores ``dx*/dθ``; [`outer_gradient_error`][jiio_tasks.inverse.train.outer_gradient_error] measures how far it is). The shared decoder
trainer ([`jiio_tasks.imaging.training.train_decoder`][jiio_tasks.imaging.training.train_decoder]) runs it through the one loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import torch

from jiio_core import Relation
from jiio_core.validators import one_of
from jiio_tasks.distributed import DistEnv
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.inversion import activation
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.operators import CORRUPTIONS, corruption, mse
from jiio_tasks.imaging.problem import jiio_problem, outer_gradient
from jiio_tasks.imaging.training import DecoderSettings, train_decoder
from jiio_tasks.runs import RunDir
from jiio_zoo.model import ZooModel

__all__ = ["TrainSettings", "outer_gradient_error", "train"]


@attrs.frozen(kw_only=True)
class TrainSettings(DecoderSettings):
    """The supervised run: [`DecoderSettings`][jiio_tasks.imaging.training.DecoderSettings], the
    corruption to invert (``task``) and the outer gradient (``"kkt"`` or ``"fixed-input"``;
    the shortcut of eq. 19 is exact only when the outer loss is the inner one)."""

    task: str = attrs.field(default="denoise0.2", validator=one_of(*CORRUPTIONS))
    outer: str = attrs.field(default="kkt", validator=one_of("kkt", "fixed-input"))


def train(model: ZooModel, source: ImageSource, run: RunDir, settings: TrainSettings, *,
          progress: bool = True, env: DistEnv | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Train ``model`` in place to invert ``settings.task`` on ``source``'s images for
    ``settings.steps`` steps in total, resuming from ``run`` (see
    [`train_decoder`][jiio_tasks.imaging.training.train_decoder]; ``clock`` times the steps)."""
    return train_decoder(model, source, run, settings, outer=settings.outer, task=settings.task,
                         family="inverse", progress=progress, env=env, clock=clock)


def outer_gradient_error(
    model: ZooModel,
    clean: torch.Tensor,
    corruption_name: str,
    *,
    iterations: int | None = None,
    approximate: str = "fixed-input",
    seed: int = 0,
) -> dict[str, float]:
    """How far the cheap gradient (``approximate``) of the supervised loss (eq. 24) is from the
    exact implicit one (``kkt``) on one batch of model-range images: relative error
    ``‖g − g_kkt‖ / ‖g_kkt‖`` and cosine similarity over all parameters."""
    act = activation(model)
    corr = corruption(corruption_name, 2.0 if act == "tanh" else 1.0)
    op, observed = corr(clean, torch.Generator().manual_seed(seed))
    grads: dict[str, torch.Tensor] = {}
    for name in ("kkt", approximate):
        objective = MeasurementObjective(model.head, op, relation=Relation.OTHER)
        problem = jiio_problem(model, objective, outer=outer_gradient(name), iterations=iterations)
        model.zero_grad(set_to_none=True)
        sol = problem.solve(observed)
        mse(model.decode(sol.z), clean).mean().backward()
        grads[name] = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()
        ])
    model.zero_grad(set_to_none=True)
    exact, approx = grads["kkt"], grads[approximate]
    return {
        "relative_error": float((approx - exact).norm() / exact.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(approx, exact, dim=0)),
    }

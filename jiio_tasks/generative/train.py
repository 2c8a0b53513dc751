"""Training a decoder-only MDEQ with JIIO latents (paper eq. 20): the generative family's step.

Each step infers the latents of a clean batch jointly with the equilibrium and fits the
decoder to the batch (outer loss = inner loss, the per-pixel MSE), plus ``λ ·`` the Jacobian
penalty; the shared decoder trainer ([`jiio_tasks.imaging.training.train_decoder`][jiio_tasks.imaging.training.train_decoder]) runs
it through the one training loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from jiio_core.validators import one_of
from jiio_tasks.distributed import DistEnv
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.problem import OUTER_CHOICES
from jiio_tasks.imaging.training import DecoderSettings, train_decoder
from jiio_tasks.runs import RunDir
from jiio_zoo.model import ZooModel

__all__ = ["TrainSettings", "train"]


@attrs.frozen(kw_only=True)
class TrainSettings(DecoderSettings):
    """The generative run: [`DecoderSettings`][jiio_tasks.imaging.training.DecoderSettings] and the outer
    gradient (``"shortcut"``, the paper's eq. 19, is exact here since the outer loss is the
    inner one)."""

    outer: str = attrs.field(default="shortcut", validator=one_of(*OUTER_CHOICES))


def train(model: ZooModel, source: ImageSource, run: RunDir, settings: TrainSettings, *,
          progress: bool = True, env: DistEnv | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Train ``model`` in place on ``source``'s clean images for ``settings.steps`` steps in
    total, resuming from ``run`` (see [`train_decoder`][jiio_tasks.imaging.training.train_decoder])."""
    return train_decoder(model, source, run, settings, outer=settings.outer, family="generative",
                         progress=progress, env=env, clock=clock)

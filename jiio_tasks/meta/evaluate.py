"""Meta-test evaluation: the mean query accuracy of a meta-trained model over fixed tasks
([`jiio_tasks.meta.splits.meta_test_tasks`][jiio_tasks.meta.splits.meta_test_tasks]), with the inner loop of its method."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from jiio_tasks.meta.tasks import collate
from jiio_tasks.progress import progress_bar

if TYPE_CHECKING:
    from jiio_tasks.meta.train import MetaTrainConfig

__all__ = ["evaluate"]


def evaluate(model: nn.Module, tasks: Any, cfg: MetaTrainConfig, batch: int = 10, *,
             progress: bool = False) -> dict[str, float]:
    """Mean query accuracy over ``tasks`` (e.g. [`meta_test_tasks`][jiio_tasks.meta.splits.meta_test_tasks])
    with ``cfg``'s method and inner-loop settings, ``batch`` tasks at a time, and the seconds
    spent in the inner loops; ``progress`` shows a bar on stderr (one tick per task)."""
    from jiio_tasks.meta.train import maml_step, step_loss  # lazily: train.py may import this module

    accs: list[float] = []
    seconds = 0.0
    items = list(tasks)
    model.eval()
    with progress_bar(len(items), f"eval meta/{cfg.method}", enabled=progress, unit="task") as bar:
        for i in range(0, len(items), batch):
            tb = collate(items[i : i + batch])
            t0 = time.perf_counter()
            if cfg.method == "maml":
                _, acc = maml_step(model, tb, cfg.maml_steps)
            else:
                with torch.no_grad():
                    _, acc = step_loss(model, tb, cfg)
            seconds += time.perf_counter() - t0
            accs.append(acc * tb.images.shape[0])
            bar.update(tb.images.shape[0])
    return {"accuracy": sum(accs) / len(items), "inner_seconds": seconds, "tasks": float(len(items))}

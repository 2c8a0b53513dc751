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
    spent in the inner loops; ``progress`` shows a bar on stderr (one tick per task). For
    ``jiio`` and ``adam`` also the median and largest relative residual ``‖f(z) − z‖ / ‖z‖`` of
    the query DEQ solves (``cfg.inner.deq_iterations`` iterations at most, stopping at
    ``deq_tol``): how far from equilibrium the scored logits are."""
    from jiio_tasks.meta.train import (  # lazily: train.py imports this module
        deq_forward,
        maml_step,
        query_accuracy,
    )

    accs: list[float] = []
    residuals: list[torch.Tensor] = []
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
                    out = deq_forward(model, tb, cfg.method, cfg.inner)  # type: ignore[arg-type]
                acc = query_accuracy(out.logits, tb)
                if out.query_residual is not None:
                    residuals.append(out.query_residual)
            seconds += time.perf_counter() - t0
            accs.append(acc * tb.images.shape[0])
            bar.update(tb.images.shape[0])
    result = {"accuracy": sum(accs) / len(items), "inner_seconds": seconds, "tasks": float(len(items))}
    if residuals:
        rel = torch.cat(residuals)
        result["query_residual_median"] = float(rel.median())
        result["query_residual_max"] = float(rel.max())
    return result

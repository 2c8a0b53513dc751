"""Task batches for the FiLM-conditioned DEQ and the regularised inner loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core.objective import InnerObjective, Relation
from jiio_core.state import State
from jiio_tasks.data import Task, TaskSet
from jiio_zoo.heads import Head
from jiio_zoo.objectives import FewShotObjective


@attrs.frozen(eq=False)
class TaskBatch:
    """``B`` tasks side by side: ``images`` ``(B, S, C, H, W)`` with each task's support images
    first and its query images after them, ``labels`` ``(B, S)``, ``support`` the number of
    support images per task (``S − support`` query images)."""

    images: Tensor
    labels: Tensor
    support: int

    @property
    def query_labels(self) -> Tensor:
        return self.labels[:, self.support :]

    def to(self, dtype: torch.dtype) -> TaskBatch:
        return TaskBatch(self.images.to(dtype), self.labels, self.support)


def collate(tasks: Sequence[Task]) -> TaskBatch:
    """Stack tasks (all with the same support/query sizes) into a [`TaskBatch`][jiio_tasks.meta.tasks.TaskBatch]."""
    if not tasks:
        raise ValueError("collate needs at least one task")
    s = int(tasks[0].support_x.shape[0])
    q = int(tasks[0].query_x.shape[0])
    for i, t in enumerate(tasks):
        if t.support_x.shape[0] != s or t.query_x.shape[0] != q:
            raise ValueError(f"task {i} has {t.support_x.shape[0]}+{t.query_x.shape[0]} items, task 0 {s}+{q}")
    images = torch.stack([torch.cat([t.support_x, t.query_x]) for t in tasks])
    labels = torch.stack([torch.cat([t.support_y, t.query_y]) for t in tasks]).long()
    return TaskBatch(images, labels, s)


def sample_batch(taskset: TaskSet, n: int) -> TaskBatch:
    """``n`` fresh tasks from ``taskset``."""
    return collate([taskset.sample() for _ in range(n)])


class RegularizedFewShot(InnerObjective):
    """Inner loss of eq. 29: support cross-entropy plus ``weight · ‖x‖²`` per task."""

    relation = Relation.OTHER

    def __init__(self, head: Head, support: int, weight: float = 0.01) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.ce = FewShotObjective(head, support)
        self.weight = float(weight)

    def forward(self, z: State, x: Tensor, y: Any) -> Tensor:
        out: Tensor = self.ce(z, x, y) + self.weight * x.pow(2).sum(dim=1)
        return out

    def loss_scale(self, y: Any) -> float:
        return self.ce.loss_scale(y)

"""Task batching: shapes and order against the tasks it stacks, and the regularised inner
loss against a hand computation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from jiio_tasks.data import Task, make_taskset
from jiio_tasks.meta import RegularizedFewShot, collate, sample_batch


class _Labelled(TensorDataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        super().__init__(x, y)
        self.targets = y.tolist()

    def __getitem__(self, i: int) -> tuple[Tensor, int]:  # type: ignore[override]
        x, y = super().__getitem__(i)
        return x, int(y)


def _dataset(classes: int = 12, per_class: int = 4) -> _Labelled:
    # image of item (c, k) is filled with the value 100 c + k, so items are identifiable
    ys = torch.arange(classes).repeat_interleave(per_class)
    ks = torch.arange(per_class).repeat(classes)
    x = (100.0 * ys + ks).view(-1, 1, 1, 1).expand(-1, 1, 6, 6).clone()
    return _Labelled(x, ys)


def test_collate_puts_support_before_query_per_task() -> None:
    g = torch.Generator().manual_seed(0)
    tasks = [
        Task(torch.randn(3, 1, 6, 6, generator=g), torch.tensor([0, 1, 2]),
             torch.randn(6, 1, 6, 6, generator=g), torch.tensor([0, 0, 1, 1, 2, 2]))
        for _ in range(4)
    ]
    b = collate(tasks)
    assert b.images.shape == (4, 9, 1, 6, 6) and b.labels.shape == (4, 9) and b.support == 3
    for i, t in enumerate(tasks):
        assert torch.equal(b.images[i, :3], t.support_x) and torch.equal(b.images[i, 3:], t.query_x)
        assert torch.equal(b.labels[i, 3:], t.query_y) and torch.equal(b.query_labels[i], t.query_y)


def test_sampled_batch_is_a_valid_few_shot_batch() -> None:
    ts = make_taskset(_dataset(), ways=3, shots=1, query_shots=2, rotations=False, seed=3)
    b = sample_batch(ts, 5)
    assert b.images.shape == (5, 9, 1, 6, 6) and b.support == 3
    for i in range(5):
        ids = b.images[i, :, 0, 0, 0]
        cls = torch.div(ids, 100, rounding_mode="floor")
        # labels are consistent with the underlying class of every item
        for lab in range(3):
            assert len(set(cls[b.labels[i] == lab].tolist())) == 1
        assert sorted(b.labels[i, :3].tolist()) == [0, 1, 2]
        # three distinct classes; support and query items are distinct images
        assert len(set(cls.tolist())) == 3
        assert len(set(ids.tolist())) == 9


def test_regularized_inner_loss_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 3, generator=g)

    class Head(torch.nn.Module):
        def forward(self, z: Tensor) -> Tensor:
            return z

    y = torch.randint(0, 3, (2, 5), generator=g)
    x = torch.randn(2, 4, generator=g)
    obj = RegularizedFewShot(Head(), support=2, weight=0.3)  # type: ignore[arg-type]
    got = obj(logits, x, y)
    for b in range(2):
        ce = sum(float(F.cross_entropy(logits[b, k : k + 1], y[b, k : k + 1])) for k in range(2)) / 2
        assert abs(float(got[b]) - (ce + 0.3 * float((x[b] ** 2).sum()))) < 1e-5

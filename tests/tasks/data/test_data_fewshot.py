"""Few-shot tasks: structure, disjoint support/query, rotation classes, reproducibility.

Most tests use a data set whose every image is a distinct random pattern, so each image in a
sampled task can be traced back to the item (and rotation) it came from.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from jiio_tasks.data import (
    EmbeddedGlyphs,
    RotatedClasses,
    Task,
    make_taskset,
    split_task,
)
from jiio_tasks.data.fewshot import drop_gym_notice


class Patterns(Dataset[tuple[Tensor, int]]):
    """``classes × per_class`` random 6×6 images, item ``i`` of class ``i // per_class``."""

    def __init__(self, classes: int, per_class: int, with_targets: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(classes * per_class, 1, 6, 6, generator=g)
        self.labels = [i // per_class for i in range(classes * per_class)]
        if with_targets:
            self.targets = list(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], self.labels[index]


def _decoder(ds: Patterns) -> Callable[[Tensor], tuple[int, int]]:
    """image -> (item index, quarter turns) by exact lookup over all items and rotations."""
    table = {}
    for i in range(len(ds)):
        for k in range(4):
            table[torch.rot90(ds.images[i], k, dims=(-2, -1)).numpy().tobytes()] = (i, k)

    def decode(image: Tensor) -> tuple[int, int]:
        return table[image.numpy().tobytes()]

    return decode


def _check_structure(task: Task, ways: int, shots: int, query_shots: int) -> None:
    assert task.support_x.shape[0] == ways * shots
    assert task.query_x.shape[0] == ways * query_shots
    assert task.support_y.tolist() == [c for c in range(ways) for _ in range(shots)]
    assert task.query_y.tolist() == [c for c in range(ways) for _ in range(query_shots)]


def test_task_structure_and_disjoint_support_query() -> None:
    ds = Patterns(classes=12, per_class=6)
    decode = _decoder(ds)
    tasks = make_taskset(ds, ways=5, shots=2, query_shots=3, rotations=False, seed=0)
    for _ in range(20):
        task = tasks.sample()
        _check_structure(task, 5, 2, 3)
        support = [decode(x) for x in task.support_x]
        query = [decode(x) for x in task.query_x]
        assert all(k == 0 for _, k in support + query)  # no rotation asked for
        s_items, q_items = {i for i, _ in support}, {i for i, _ in query}
        assert len(s_items) == 10
        assert len(q_items) == 15
        assert not s_items & q_items
        # every task class is one original class, and the 5 are different classes
        origin = {}
        for (item, _), label in zip(
            support + query, task.support_y.tolist() + task.query_y.tolist(), strict=True
        ):
            origin.setdefault(label, set()).add(ds.labels[item])
        assert all(len(v) == 1 for v in origin.values())
        assert len({next(iter(v)) for v in origin.values()}) == 5


def test_rotated_classes_are_rot90_of_the_base_image() -> None:
    ds = Patterns(classes=3, per_class=2)
    rotated = RotatedClasses(ds)
    assert len(rotated) == 4 * len(ds)
    seen = set()
    for j in range(len(rotated)):
        image, label = rotated[j]
        base_label, k = divmod(label, 4)
        matches = [
            i
            for i in range(len(ds))
            if torch.equal(image, torch.rot90(ds.images[i], k, dims=(-2, -1)))
        ]
        assert len(matches) == 1
        assert ds.labels[matches[0]] == base_label
        seen.add((matches[0], k))
    assert len(seen) == len(rotated)  # every (item, rotation) exactly once
    assert rotated.targets == [rotated[j][1] for j in range(len(rotated))]


def test_rotated_classes_respect_distinct_mask() -> None:
    ds = Patterns(classes=3, per_class=2)
    mask = np.array(
        [[True, True, True, True], [True, False, True, False], [True, False, False, False]]
    )
    rotated = RotatedClasses(ds, mask)
    assert len(rotated) == 2 * (4 + 2 + 1)
    assert sorted(set(rotated.targets)) == [0, 1, 2, 3, 4, 6, 8]
    with pytest.raises(ValueError, match="distinct"):
        RotatedClasses(ds, np.ones((2, 4), dtype=bool))  # does not cover label 2


def test_rotation_augmented_tasks() -> None:
    ds = Patterns(classes=4, per_class=3)
    decode = _decoder(ds)
    tasks = make_taskset(ds, ways=5, shots=1, query_shots=2, rotations=True, seed=1)
    turns = set()
    for _ in range(30):
        task = tasks.sample()
        _check_structure(task, 5, 1, 2)
        per_class: dict[int, set[tuple[int, int]]] = {}
        items = []
        for x, label in zip(
            torch.cat([task.support_x, task.query_x]),
            torch.cat([task.support_y, task.query_y]).tolist(),
            strict=True,
        ):
            item, k = decode(x)
            items.append(item)
            per_class.setdefault(label, set()).add((ds.labels[item], k))
        # a task class is one (original class, rotation); 5 ways from 4 base classes
        assert all(len(v) == 1 for v in per_class.values())
        assert len({next(iter(v)) for v in per_class.values()}) == 5
        turns |= {k for v in per_class.values() for _, k in v}
        s_items = {
            (i, tuple(x.flatten().tolist())) for i, x in zip(items[:5], task.support_x, strict=True)
        }
        q_items = {
            (i, tuple(x.flatten().tolist())) for i, x in zip(items[5:], task.query_x, strict=True)
        }
        assert not s_items & q_items
    assert turns == {0, 1, 2, 3}


def test_glyph_tasks() -> None:
    glyphs = EmbeddedGlyphs("test", samples_per_class=4)
    tasks = make_taskset(glyphs, ways=5, shots=1, query_shots=3, rotations=True, seed=0)
    assert len(tasks.meta_dataset.labels) == int(glyphs.distinct_rotations.sum())
    for _ in range(3):
        task = tasks.sample()
        _check_structure(task, 5, 1, 3)
        assert task.support_x.shape[1:] == (1, 28, 28)
        assert task.query_x.dtype == torch.float32
        flat_s = task.support_x.flatten(1)
        flat_q = task.query_x.flatten(1)
        assert not (flat_s[:, None] == flat_q[None]).all(-1).any()  # no shared image


def test_seeded_tasks_are_reproducible_and_leave_random_alone() -> None:
    ds = Patterns(classes=10, per_class=4)
    a = make_taskset(ds, ways=3, shots=1, query_shots=1, seed=7)
    b = make_taskset(ds, ways=3, shots=1, query_shots=1, seed=7)
    c = make_taskset(ds, ways=3, shots=1, query_shots=1, seed=8)
    random.seed(123)
    before = random.getstate()
    ta = [a.sample() for _ in range(5)]
    assert random.getstate() == before
    tb = [b.sample() for _ in range(5)]
    tc = [c.sample() for _ in range(5)]
    assert all(
        torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)
        for x, y in zip(ta, tb, strict=True)
    )
    assert not all(torch.equal(x.support_x, y.support_x) for x, y in zip(ta, tc, strict=True))


def test_unseeded_tasks_follow_global_random() -> None:
    ds = Patterns(classes=10, per_class=4)
    tasks = make_taskset(ds, ways=3, shots=1, query_shots=1)
    random.seed(5)
    first = tasks.sample()
    random.seed(5)
    again = tasks.sample()
    assert torch.equal(first.support_x, again.support_x)


def test_fixed_number_of_tasks() -> None:
    ds = Patterns(classes=10, per_class=4, with_targets=False)  # labels found by one pass
    a = make_taskset(ds, ways=3, shots=2, query_shots=1, num_tasks=6, seed=2)
    b = make_taskset(ds, ways=3, shots=2, query_shots=1, num_tasks=6, seed=2)
    assert len(a) == 6
    assert len(list(a)) == 6
    later = a[4]
    _ = [b[i] for i in range(4)]  # a different access order
    assert torch.equal(later.support_x, b[4].support_x)
    assert torch.equal(a[4].query_x, later.query_x)  # the same task every time
    assert not torch.equal(a[0].support_x, a[1].support_x)
    with pytest.raises(IndexError):
        a[6]
    unbounded = make_taskset(ds, ways=3, seed=2)
    with pytest.raises(TypeError, match="sample"):
        len(unbounded)


def test_split_task_by_hand() -> None:
    x = torch.arange(6.0).view(6, 1)
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    task = split_task(x, y, ways=2, shots=1, query_shots=2)
    assert task.support_x.flatten().tolist() == [1.0, 0.0]
    assert task.support_y.tolist() == [0, 1]
    assert task.query_x.flatten().tolist() == [3.0, 4.0, 2.0, 5.0]
    assert task.query_y.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="class 0 has 3 items"):
        split_task(x, y, ways=2, shots=1, query_shots=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ways": 11}, "at least 11 classes"),
        ({"ways": 3, "shots": 3, "query_shots": 2}, ">= 5 samples"),
        ({"ways": 1}, "ways must be an int >= 2"),
        ({"query_shots": 0}, "query_shots"),
        ({"num_tasks": 0}, "num_tasks"),
    ],
)
def test_invalid_settings(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_taskset(Patterns(classes=10, per_class=4), rotations=False, **kwargs)


def test_gym_notice_is_dropped_other_stderr_kept() -> None:
    notices = pytest.importorskip("gym_notices.notices").notices
    notice = next(iter(notices.values()))
    text = "real warning from a library\n" + notice + "\n"
    assert drop_gym_notice(text) == "real warning from a library\n"
    assert drop_gym_notice("") == ""


@pytest.mark.slow  # a fresh interpreter importing learn2learn takes ~10 s
def test_importing_learn2learn_prints_nothing() -> None:
    import subprocess
    import sys

    code = "from jiio_tasks.data.fewshot import _learn2learn; _learn2learn()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gym" not in done.stderr.lower()
    assert "warning" not in done.stderr.lower()

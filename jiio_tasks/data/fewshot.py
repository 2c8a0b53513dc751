"""Few-shot classification tasks (N-way, K-shot) built with learn2learn.

[`make_taskset`][jiio_tasks.data.fewshot.make_taskset] wraps a labelled image data set in ``learn2learn.data.MetaDataset`` and a
``TaskDataset`` (``Taskset``, its current name) with the transforms ``NWays``, ``KShots``
(``shots + query_shots`` per class), ``LoadData``, ``RemapLabels`` and ``ConsecutiveLabels``;
[`split_task`][jiio_tasks.data.fewshot.split_task] cuts a sampled task into disjoint support and query sets. With
``rotations=True`` every rotation of a class by a multiple of 90° is a class of its own
([`RotatedClasses`][jiio_tasks.data.fewshot.RotatedClasses]), as in the paper (and MAML).

learn2learn's ``vision.benchmarks`` download their data and are not used. Its
``vision.transforms.RandomClassRotation`` is not used either: it rotates each *task's* classes
by a random angle instead of enlarging the class set, and in 0.2.0 its per-sample closures all
bind the last class's rotation.

learn2learn samples with Python's ``random`` module; a [`TaskSet`][jiio_tasks.data.fewshot.TaskSet] made with a ``seed``
samples from a private stream (the global state is saved and restored around each draw), so its
tasks are reproducible and it leaves ``random`` untouched.
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset


def _learn2learn() -> Any:
    """Import learn2learn, silencing the warnings and the gym deprecation notice (printed to
    stderr by ``import gym``) that its import emits; other stderr output is passed on."""
    if "learn2learn" in sys.modules:
        return sys.modules["learn2learn"]
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            import learn2learn
    finally:
        sys.stderr.write(drop_gym_notice(captured.getvalue()))
    return learn2learn


def drop_gym_notice(text: str) -> str:
    """``text`` without the lines of gym's "unmaintained, upgrade to Gymnasium" notice."""
    return "".join(ln for ln in text.splitlines(keepends=True) if "gym" not in ln.lower())


def _labels(dataset: Dataset[Any]) -> list[int]:
    """Every item's label: the data set's ``targets`` when it has one, else one pass."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        if isinstance(targets, Tensor):
            return [int(t) for t in targets.tolist()]
        return [int(t) for t in targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]


class RotatedClasses(Dataset[tuple[Tensor, int]]):
    """Every class of ``dataset`` turned by 0, 90, 180 and 270 degrees, each a new class.

    Item ``(image, label)`` of the base data set turned by ``k`` quarter turns (``torch.rot90``
    on the last two axes, counter-clockwise) has label ``4 * label + k``. ``distinct[c, k]``
    (default: the data set's ``distinct_rotations`` when it has one, else all) drops the
    rotations of class ``c`` that would duplicate another class (a symmetric glyph, or 'u'
    versus 'n' turned twice).
    """

    def __init__(self, dataset: Dataset[Any], distinct: NDArray[np.bool_] | None = None) -> None:
        self.dataset = dataset
        base = np.asarray(_labels(dataset), dtype=np.int64)
        if distinct is None:
            distinct = getattr(dataset, "distinct_rotations", None)
        if distinct is None:
            distinct = np.ones((int(base.max()) + 1 if len(base) else 0, 4), dtype=bool)
        distinct = np.asarray(distinct, dtype=bool)
        if distinct.ndim != 2 or distinct.shape[1] != 4 or distinct.shape[0] <= base.max():
            raise ValueError(
                f"distinct must have shape (num_classes, 4) covering label {base.max()}, "
                f"got {distinct.shape}"
            )
        quarter, item = np.nonzero(distinct[base].T)  # quarter-turn major, then item order
        self._items: NDArray[np.int64] = item
        self._turns: NDArray[np.int64] = quarter
        self.targets: list[int] = (4 * base[item] + quarter).tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, _ = self.dataset[int(self._items[index])]
        turns = int(self._turns[index])
        rotated = torch.rot90(image, turns, dims=(-2, -1)) if turns else image
        return rotated, self.targets[index]


@attrs.frozen(eq=False)
class Task:
    """One few-shot task: ``support_x`` ``(ways * shots, C, H, W)`` with ``support_y`` in
    ``0 .. ways - 1`` (class-major: ``shots`` items of class 0, then class 1, ...), and
    ``query_x``/``query_y`` likewise with ``query_shots`` per class. No item is in both."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


def split_task(x: Tensor, y: Tensor, ways: int, shots: int, query_shots: int) -> Task:
    """Split a sampled task (labels ``0 .. ways - 1``, ``shots + query_shots`` items each) into
    support (the first ``shots`` items of each class) and query (the rest)."""
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"need x (B, ...) and y (B,), got {tuple(x.shape)}, {tuple(y.shape)}")
    per_class = shots + query_shots
    support: list[Tensor] = []
    query: list[Tensor] = []
    for c in range(ways):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) != per_class:
            raise ValueError(
                f"class {c} has {len(idx)} items, expected shots + query_shots = {per_class} "
                f"(labels present: {sorted(set(y.tolist()))})"
            )
        support.append(idx[:shots])
        query.append(idx[shots:])
    if len(y) != ways * per_class:
        raise ValueError(
            f"task has {len(y)} items, expected ways * {per_class} = {ways * per_class}"
        )
    s = torch.cat(support)
    q = torch.cat(query)
    return Task(x[s], y[s], x[q], y[q])


class TaskSet:
    """Few-shot tasks over a labelled data set; see [`make_taskset`][jiio_tasks.data.fewshot.make_taskset].

    ``sample()`` draws a new task; when ``num_tasks > 0`` the set is also a fixed sequence of
    tasks (``len``, indexing, iteration), task ``i`` always the same. ``tasks`` is the
    underlying ``learn2learn.data.Taskset`` (ex ``TaskDataset``) and ``meta_dataset`` its
    ``MetaDataset``.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        ways: int,
        shots: int,
        query_shots: int,
        num_tasks: int,
        seed: int | None,
    ) -> None:
        l2l = _learn2learn()
        from learn2learn.data.transforms import (
            ConsecutiveLabels,
            KShots,
            LoadData,
            NWays,
            RemapLabels,
        )

        self.dataset = dataset
        self.ways = ways
        self.shots = shots
        self.query_shots = query_shots
        self.num_tasks = num_tasks
        self.seed = seed
        labels = _labels(dataset)
        by_label: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(label, []).append(i)
        per_class = shots + query_shots
        usable = sum(len(v) >= per_class for v in by_label.values())
        if len(by_label) < ways or usable < len(by_label):
            raise ValueError(
                f"{ways}-way tasks with {shots} + {query_shots} samples per class need at least "
                f"{ways} classes with >= {per_class} samples each; the data set has "
                f"{len(by_label)} classes, the smallest with "
                f"{min((len(v) for v in by_label.values()), default=0)} samples"
            )
        self.meta_dataset = l2l.data.MetaDataset(dataset, labels_to_indices=by_label)
        md = self.meta_dataset
        transforms = [
            NWays(md, ways),
            KShots(md, per_class),
            LoadData(md),
            RemapLabels(md),
            ConsecutiveLabels(md),
        ]
        # Taskset is learn2learn's current name for TaskDataset (the old name warns)
        self.tasks = l2l.data.Taskset(md, task_transforms=transforms, num_tasks=num_tasks)
        self._state = random.Random(seed).getstate() if seed is not None else None

    def rng_state(self) -> Any:
        """The state of this task set's private sampling stream (``None`` when it samples from
        Python's global ``random``): save it with a checkpoint to resume the same task stream."""
        return self._state

    def set_rng_state(self, state: Any) -> None:
        """Restore a state returned by [`rng_state`][jiio_tasks.data.fewshot.TaskSet.rng_state]."""
        if state is not None and self._state is None:
            raise ValueError("this TaskSet was built with seed=None (global random stream); it has no state to set")
        if state is not None:
            try:
                random.Random().setstate(state)
            except (TypeError, ValueError) as err:
                raise ValueError(f"state is not a random-module state: {err}") from None
        self._state = state

    @contextlib.contextmanager
    def _stream(self, state: Any = None) -> Iterator[None]:
        if state is None and self._state is None:
            yield
            return
        outer = random.getstate()
        inner = state if state is not None else self._state
        assert inner is not None
        random.setstate(inner)
        try:
            yield
        finally:
            if state is None:
                self._state = random.getstate()
            random.setstate(outer)

    def _split(self, raw: Sequence[Any]) -> Task:
        x, y = raw[0], raw[1]
        return split_task(x, torch.as_tensor(y), self.ways, self.shots, self.query_shots)

    def sample(self) -> Task:
        """A new random task."""
        with self._stream():
            raw = self.tasks.sample()
        return self._split(raw)

    def __len__(self) -> int:
        if self.num_tasks <= 0:
            raise TypeError("this TaskSet has num_tasks=-1 (unbounded): use sample()")
        return self.num_tasks

    def __getitem__(self, index: int) -> Task:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"task index {index} out of range for {n} tasks")
        index %= n
        state = None
        if self.seed is not None:  # task i depends on (seed, i) only, not on access order
            state = random.Random(f"{self.seed}:{index}").getstate()
        with self._stream(state):
            raw = self.tasks[index]
        return self._split(raw)

    def __iter__(self) -> Iterator[Task]:
        for i in range(len(self)):
            yield self[i]


def make_taskset(
    dataset: Dataset[Any],
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 1,
    num_tasks: int = -1,
    rotations: bool = True,
    seed: int | None = None,
) -> TaskSet:
    """N-way few-shot tasks over ``dataset`` (items ``(image, label)``; a ``targets`` attribute
    listing all labels avoids a pass over the images).

    Args:
        ways: classes per task. shots / query_shots: support / query items per class.
        num_tasks: ``-1`` for an unbounded stream of tasks, else a fixed set of that many.
        rotations: every 90° rotation of a class is a class of its own ([`RotatedClasses`][jiio_tasks.data.fewshot.RotatedClasses]).
        seed: makes the tasks reproducible (``None``: Python's global ``random``).
    """
    checks = (("ways", ways, 2), ("shots", shots, 1), ("query_shots", query_shots, 1))
    for name, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(num_tasks, int) or (num_tasks < 1 and num_tasks != -1):
        raise ValueError(f"num_tasks must be -1 or an int >= 1, got {num_tasks!r}")
    base = RotatedClasses(dataset) if rotations else dataset
    return TaskSet(base, ways, shots, query_shots, num_tasks, seed)

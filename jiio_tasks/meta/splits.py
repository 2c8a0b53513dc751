"""The task splits of the meta-learning family, in one place: the meta-training task stream and
the fixed meta-test tasks every evaluator scores on.

Both draw few-shot tasks ([`jiio_tasks.data.make_taskset`][jiio_tasks.data.fewshot.make_taskset], every 90° rotation of a glyph a
class of its own) from the embedded Hershey glyphs ([`jiio_tasks.data.EmbeddedGlyphs`][jiio_tasks.data.glyphs.EmbeddedGlyphs]),
which are split **by class**: the meta-test tasks use only the 280 meta-test glyph classes, the
training stream only the 839 meta-train classes, so no meta-test character is ever trained on.

- **Meta-test tasks** ([`meta_test_tasks`][jiio_tasks.meta.splits.meta_test_tasks]): a fixed sequence of ``count`` tasks (task
  ``i`` depends only on ``i`` and the task shape, never on the access order or the run's seed),
  drawn from the test glyphs rendered with jitter seed [`META_TEST_JITTER_SEED`][jiio_tasks.meta.splits.META_TEST_JITTER_SEED] and tasks
  seeded with [`META_TEST_SEED`][jiio_tasks.meta.splits.META_TEST_SEED]. ``jiio eval meta`` (``--eval-tasks``, default 100) and
  the final accuracy of ``jiio train meta`` use them.
- **Meta-training tasks** ([`meta_train_tasks`][jiio_tasks.meta.splits.meta_train_tasks]): an unbounded stream over the train glyphs,
  seeded by the run's seed (its position is saved with a run, so a resumed run continues it).

With ``data="omniglot"`` and a local ``data_root`` the same two functions draw from Omniglot
instead: its background set (meta-train) and its evaluation set (meta-test), whose alphabets
are disjoint (the paper's setting, Table 6).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from jiio_tasks.data import EmbeddedGlyphs, TaskSet, make_taskset
from jiio_tasks.data.local import omniglot
from jiio_zoo.configs import MDEQConfig, get_config

__all__ = ["META_TEST_JITTER_SEED", "META_TEST_SEED", "glyph_size", "meta_test_tasks", "meta_train_tasks"]

META_TEST_SEED = 12345
"""Seed of the fixed meta-test tasks (which classes and items each task takes)."""

META_TEST_JITTER_SEED = 1
"""Seed of the jitter of the meta-test glyphs' renders (the training glyphs use 0)."""


def glyph_size(config: str = "glyphs_meta_small") -> int:
    """Side of the glyph images for a zoo config (or ``.json`` path): its MDEQ's
    ``image_size``, else 28 (MAML's small CNN)."""
    m = get_config(config).model
    return m.image_size if isinstance(m, MDEQConfig) else 28


def _characters(data: str, data_root: str | None, meta_test: bool, size: int) -> Dataset[Any]:
    """The character set of one side of the class split: the embedded glyphs (meta-test: the
    test classes, rendered with [`META_TEST_JITTER_SEED`][jiio_tasks.meta.splits.META_TEST_JITTER_SEED]), or Omniglot from ``data_root``
    (meta-train: its background set, 964 characters; meta-test: its evaluation set, 659
    characters of other alphabets; the usual split, paper Table 6)."""
    if data == "embedded":
        if data_root is not None:
            raise ValueError(f"data_root {data_root!r} is for data='omniglot'; the embedded glyphs need none")
        return EmbeddedGlyphs("test", size=size, seed=META_TEST_JITTER_SEED) if meta_test else \
            EmbeddedGlyphs("train", size=size)
    if data == "omniglot":
        if data_root is None:
            raise ValueError("data='omniglot' needs data_root (a folder holding omniglot-py/)")
        return omniglot(data_root, background=not meta_test, size=size)
    raise ValueError(f"data must be 'embedded' or 'omniglot', got {data!r}")


def meta_test_tasks(
    *,
    config: str = "glyphs_meta_small",
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 2,
    count: int = 100,
    data: str = "embedded",
    data_root: str | None = None,
) -> TaskSet:
    """The fixed meta-test tasks every meta-learning evaluator uses: ``count`` ``ways``-way
    tasks with ``shots`` support and ``query_shots`` query images per class, over the meta-test
    classes (embedded glyphs, or Omniglot's evaluation set with ``data="omniglot"``) at the
    config's image size ([`glyph_size`][jiio_tasks.meta.splits.glyph_size]). Indexing and iterating give the same tasks on
    every call."""
    chars = _characters(data, data_root, True, glyph_size(config))
    return make_taskset(chars, ways, shots, query_shots, num_tasks=count, seed=META_TEST_SEED)


def meta_train_tasks(
    *,
    config: str = "glyphs_meta_small",
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 2,
    seed: int = 0,
    data: str = "embedded",
    data_root: str | None = None,
) -> TaskSet:
    """The meta-training task stream (``sample()`` draws the next task): ``ways``-way tasks
    over the meta-train classes (embedded glyphs, or Omniglot's background set with
    ``data="omniglot"``), seeded by ``seed``."""
    chars = _characters(data, data_root, False, glyph_size(config))
    return make_taskset(chars, ways, shots, query_shots, seed=seed)

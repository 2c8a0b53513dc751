"""Data for the jiio tasks.

Embedded sets, shipped in the package (no download, no root; see ``embedded/README.md``):

- [`EmbeddedDigits`][jiio_tasks.data.digits.EmbeddedDigits]: 5,000 real MNIST digits, 28×28, fixed 4,000/1,000 split.
- [`EmbeddedFaces`][jiio_tasks.data.faces.EmbeddedFaces]: 100 real LFW faces, 25×25 resized to ``size``, fixed 80/20 split.
- [`EmbeddedGlyphs`][jiio_tasks.data.glyphs.EmbeddedGlyphs]: 1,119 Hershey stroke-font glyph classes rendered with random
  jitter, split by classes into meta-train (839) and meta-test (280).

The paper's data sets from a local root (never downloaded): [`mnist`][jiio_tasks.data.local.mnist], [`cifar10`][jiio_tasks.data.local.cifar10],
[`celeba64`][jiio_tasks.data.local.celeba64], [`omniglot`][jiio_tasks.data.local.omniglot]; a missing root raises [`DatasetNotFoundError`][jiio_tasks.data.local.DatasetNotFoundError].

Few-shot tasks (learn2learn): [`make_taskset`][jiio_tasks.data.fewshot.make_taskset], [`TaskSet`][jiio_tasks.data.fewshot.TaskSet], [`Task`][jiio_tasks.data.fewshot.Task],
[`split_task`][jiio_tasks.data.fewshot.split_task], [`RotatedClasses`][jiio_tasks.data.fewshot.RotatedClasses].
"""

from jiio_tasks.data.digits import EmbeddedDigits
from jiio_tasks.data.faces import EmbeddedFaces
from jiio_tasks.data.fewshot import RotatedClasses, Task, TaskSet, make_taskset, split_task
from jiio_tasks.data.glyphs import EmbeddedGlyphs
from jiio_tasks.data.local import (
    DatasetNotFoundError,
    OmniglotCharacters,
    celeba64,
    cifar10,
    mnist,
    omniglot,
)
from jiio_tasks.data.strokes import StrokeJitter

__all__ = [
    "DatasetNotFoundError",
    "EmbeddedDigits",
    "EmbeddedFaces",
    "EmbeddedGlyphs",
    "OmniglotCharacters",
    "RotatedClasses",
    "StrokeJitter",
    "Task",
    "TaskSet",
    "celeba64",
    "cifar10",
    "make_taskset",
    "mnist",
    "omniglot",
    "split_task",
]

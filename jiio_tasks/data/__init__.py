"""Data for the jiio tasks.

Embedded sets, shipped in the package (no download, no root; see ``embedded/README.md``):

- :class:`EmbeddedDigits`: 5,000 real MNIST digits, 28×28, fixed 4,000/1,000 split.
- :class:`EmbeddedFaces`: 100 real LFW faces, 25×25 resized to ``size``, fixed 80/20 split.
- :class:`EmbeddedGlyphs`: 1,119 Hershey stroke-font glyph classes rendered with random
  jitter, split by classes into meta-train (839) and meta-test (280).

The paper's data sets from a local root (never downloaded): :func:`mnist`, :func:`cifar10`,
:func:`celeba64`, :func:`omniglot`; a missing root raises :class:`DatasetNotFoundError`.

Few-shot tasks (learn2learn): :func:`make_taskset`, :class:`TaskSet`, :class:`Task`,
:func:`split_task`, :class:`RotatedClasses`.
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

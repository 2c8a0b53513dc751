"""The face splits of the generative family, in one place: what the trainers draw from and what
every evaluator scores on.

- **Held-out faces** ([`held_out_faces`][jiio_tasks.imaging.splits.held_out_faces]): the first ``count`` images of the *test* split,
  unaugmented, in [0, 1]. With the embedded faces (the default) that is the fixed 20-face LFW
  test split (``EmbeddedFaces("test")``); with ``data_root`` it is CelebA's official test
  partition. ``jiio eval generative|inverse|vae|table1`` score on them (``--count``, default
  20, i.e. all embedded test faces), and ``jiio train features`` reports its rotation accuracy
  on all of them.
- **Training faces** ([`training_faces`][jiio_tasks.imaging.splits.training_faces]): the whole *train* split, unaugmented: the 80
  embedded training faces (or CelebA's train partition). ``jiio sample generative`` and
  ``jiio eval table1`` infer their latents for the post-hoc densities and use them as the
  Fréchet reference of the samples.
- **Training stream** ([`training_stream`][jiio_tasks.imaging.splits.training_stream]): random augmented batches of the same train
  split, what ``jiio train generative|inverse|vae|mdeq-vae|features`` train on.

The train and test splits share no image (the embedded faces are a fixed, seeded 80/20 split
of 100 distinct faces; CelebA's partitions are disjoint), so the held-out faces are never
trained on.
"""

from __future__ import annotations

import os

from torch import Tensor

from jiio_tasks.imaging.data import ImageSource, image_source

__all__ = ["HELD_OUT_COUNT", "held_out_faces", "training_faces", "training_stream"]

HELD_OUT_COUNT = 20
"""How many held-out faces the ``jiio eval`` commands use by default (all 20 embedded test faces)."""


def held_out_faces(
    count: int | None = HELD_OUT_COUNT,
    *,
    size: int = 32,
    channels: int = 1,
    data_root: str | os.PathLike[str] | None = None,
) -> Tensor:
    """The held-out faces every generative evaluator uses: the first ``count`` images (all of
    them for ``None``; at most the split's size) of the test split, unaugmented, as
    ``(N, channels, size, size)`` in [0, 1]; the same tensor on every call.

    ``size``/``channels`` are the model's image shape (e.g. from
    [`image_shape`][jiio_tasks.imaging.problem.image_shape]); the embedded faces are grey and resized
    to ``size``, CelebA (``data_root``) is RGB 64×64. Raises ``ValueError`` when the data cannot
    have that shape, and a ``FileNotFoundError`` for a missing CelebA root."""
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError(f"count must be an int >= 1 or None (all), got {count!r}")
    source = image_source("test", size=size, channels=channels, data_root=data_root)
    return source.first(len(source) if count is None else count)


def training_faces(
    *, size: int = 32, channels: int = 1, data_root: str | os.PathLike[str] | None = None
) -> Tensor:
    """The whole training split, unaugmented, ``(N, channels, size, size)`` in [0, 1] (the 80
    embedded training faces by default): the images whose latents the post-hoc densities are
    fitted to and the Fréchet reference of generated samples."""
    source = training_stream(size=size, channels=channels, data_root=data_root, augment=False)
    return source.first(len(source))


def training_stream(
    *,
    size: int = 32,
    channels: int = 1,
    data_root: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
) -> ImageSource:
    """The training split as an [`ImageSource`][jiio_tasks.imaging.data.ImageSource]: random
    batches (augmented by default: random crops and flips for the embedded faces, flips for
    CelebA) drawn from torch's global generator, what the trainers consume."""
    return image_source("train", size=size, channels=channels, data_root=data_root, augment=augment)

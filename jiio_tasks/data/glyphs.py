"""Embedded few-shot character set: Hershey stroke-font glyphs drawn with random jitter.

An Omniglot-like set: each glyph shape is a class (1,119 classes after deduplication; glyphs
shared by several fonts count once), split by classes into meta-train (839) and meta-test
(280) so that no meta-test glyph resembles a meta-train glyph (not even after a rotation by a
multiple of 90°). Each class has ``samples_per_class`` "drawings", each a jittered render
([`StrokeJitter`][jiio_tasks.data.strokes.StrokeJitter]) whose randomness is fixed by
``(seed, glyph, sample)``: the data set is a fixed set of images, like Omniglot's 20 drawers.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from jiio_tasks.data import strokes
from jiio_tasks.data._embedded import Split, check_split, load_arrays


class EmbeddedGlyphs(Dataset[tuple[Tensor, int]]):
    """Jittered Hershey glyphs as ``(1, size, size)`` float images in [0, 1] (ink = 1).

    Args:
        split: ``"train"`` (meta-train classes) or ``"test"`` (meta-test classes).
        jitter: ``True`` for the default [`StrokeJitter`][jiio_tasks.data.strokes.StrokeJitter], a ``StrokeJitter`` for other
            magnitudes, ``False`` for clean renders (all samples of a class are then equal).
        seed: fixes the jitter of every sample.
        samples_per_class: number of drawings of each class.
        size: canvas side in pixels.
        cache: keep rendered samples in memory (about ``4·size²`` bytes each).

    Item ``i`` is sample ``i % samples_per_class`` of class ``i // samples_per_class``; labels
    are ``0 .. num_classes - 1`` within the split. ``targets`` lists the label of every item.
    """

    def __init__(
        self,
        split: Split = "train",
        jitter: bool | strokes.StrokeJitter = True,
        seed: int = 0,
        samples_per_class: int = 20,
        size: int = 28,
        cache: bool = True,
    ) -> None:
        check_split(split)
        if not isinstance(samples_per_class, int) or samples_per_class < 1:
            raise ValueError(f"samples_per_class must be an int >= 1, got {samples_per_class!r}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        arrays = load_arrays("glyphs")
        self.split = split
        self.jitter: strokes.StrokeJitter | None
        if isinstance(jitter, strokes.StrokeJitter):
            self.jitter = jitter
        elif isinstance(jitter, bool):
            self.jitter = strokes.StrokeJitter() if jitter else None
        else:
            raise TypeError(f"jitter must be a bool or a StrokeJitter, got {jitter!r}")
        self.seed = seed
        self.samples_per_class = samples_per_class
        self.size = size
        #: global glyph id (row of glyphs.npz) of each class
        self.glyph_ids: NDArray[np.int64] = np.nonzero(arrays["split"] == (split == "test"))[0]
        self.num_classes = len(self.glyph_ids)
        #: ``distinct_rotations[c, k]``: class ``c`` turned by ``k`` quarter turns (counter-
        #: clockwise, as ``torch.rot90``) is a new class, i.e. it looks like no glyph (nor
        #: rotation of one) that comes earlier in the curation order.
        self.distinct_rotations: NDArray[np.bool_] = arrays["distinct_rotations"][self.glyph_ids]
        self.targets: list[int] = np.repeat(np.arange(self.num_classes), samples_per_class).tolist()
        self._cache: dict[int, Tensor] | None = {} if cache else None
        points = arrays["points"].astype(np.float32)
        stroke_off = arrays["stroke_offsets"].astype(np.int64)
        glyph_off = arrays["glyph_offsets"].astype(np.int64)
        self._geometry: list[tuple[NDArray[np.float32], NDArray[np.int64]]] = []
        for g in self.glyph_ids:
            s0, s1 = glyph_off[g], glyph_off[g + 1]
            offsets = stroke_off[s0 : s1 + 1]
            self._geometry.append(
                (points[offsets[0] : offsets[-1]], strokes.segment_starts(offsets - offsets[0]))
            )

    def __len__(self) -> int:
        return self.num_classes * self.samples_per_class

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        label, sample = divmod(index, self.samples_per_class)
        if self._cache is not None and index in self._cache:
            return self._cache[index], label
        image = self._render(label, sample)
        if self._cache is not None:
            self._cache[index] = image
        return image, label

    def _render(self, label: int, sample: int) -> Tensor:
        pts, starts = self._geometry[label]
        if self.jitter is None:
            ink = strokes.render(pts, starts, self.size)
        else:
            rng = np.random.default_rng([self.seed, int(self.glyph_ids[label]), sample])
            ink = strokes.render(pts, starts, self.size, self.jitter, rng)
        return torch.from_numpy(ink).unsqueeze(0)

    def clean(self, label: int) -> Tensor:
        """The unjittered render of class ``label``, ``(1, size, size)``."""
        pts, starts = self._geometry[label]
        return torch.from_numpy(strokes.render(pts, starts, self.size)).unsqueeze(0)

    def describe(self, label: int) -> tuple[str, str]:
        """``(font name, character)`` of class ``label`` (the character the font maps the glyph
        to; for symbol fonts it is only an index)."""
        arrays = load_arrays("glyphs")
        g = int(self.glyph_ids[label])
        return str(arrays["font_names"][arrays["font"][g]]), chr(int(arrays["char"][g]))

"""Image batches for the generative family: the embedded faces (default) or CelebA-64."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from jiio_tasks.data import EmbeddedFaces, celeba64

__all__ = ["ImageSource", "from_model", "image_source", "model_range", "to_model"]


def model_range(activation: str) -> tuple[float, float]:
    """Range of the model's images: ``[-1, 1]`` for a tanh head, else ``[0, 1]``."""
    return (-1.0, 1.0) if activation == "tanh" else (0.0, 1.0)


def to_model(images: Tensor, activation: str) -> Tensor:
    """[0, 1] images to the model's range."""
    lo, hi = model_range(activation)
    return images * (hi - lo) + lo


def from_model(images: Tensor, activation: str) -> Tensor:
    """Model-range images back to [0, 1] (where all metrics are computed)."""
    lo, hi = model_range(activation)
    return (images - lo) / (hi - lo)


class ImageSource:
    """A split of images in [0, 1] with random batches drawn from torch's global generator
    (so a resumed run continues the same stream), and the whole (unaugmented) split for eval."""

    def __init__(self, dataset: Dataset[Any], size: int, channels: int, name: str) -> None:
        self.dataset = dataset
        self.size = size
        self.channels = channels
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _item(self, i: int) -> Tensor:
        image = self.dataset[i][0]
        if not isinstance(image, Tensor):
            raise TypeError(f"{self.name}: item {i} is not a tensor image")
        if image.shape != (self.channels, self.size, self.size):
            raise ValueError(
                f"{self.name} images are {tuple(image.shape)}, but the model needs "
                f"({self.channels}, {self.size}, {self.size})"
            )
        return image

    def batch(self, batch_size: int) -> Tensor:
        """A random batch (with the split's augmentation), ``(B, C, H, W)``."""
        return self.indexed_batch(batch_size)[0]

    def indexed_batch(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """[`batch`][jiio_tasks.imaging.data.ImageSource.batch] and the ``(B,)`` indices of its images in the split (the same draws
        from torch's generator as [`batch`][jiio_tasks.imaging.data.ImageSource.batch])."""
        idx = torch.randint(0, len(self), (batch_size,))
        return torch.stack([self._item(int(i)) for i in idx]), idx

    def first(self, count: int) -> Tensor:
        """The first ``count`` images of the split (deterministic, for evaluation)."""
        n = min(count, len(self))
        return torch.stack([self._item(i) for i in range(n)])


def image_source(
    split: str,
    *,
    size: int,
    channels: int,
    data_root: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
) -> ImageSource:
    """Embedded faces (grey, 80 train / 20 test, resized to ``size``) when ``data_root`` is
    ``None``; otherwise CelebA-64 from ``data_root`` (RGB, 64×64, official split; ``test``
    maps to CelebA's test partition). Raises ``ValueError`` if the images cannot match the
    model (channels/size) and the data module's ``DatasetNotFoundError`` (a
    ``FileNotFoundError``) for a missing CelebA root."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_root is None:
        if channels != 1:
            raise ValueError(
                f"the embedded faces are grey-scale but the model wants {channels} channels; "
                "pass --data-root with CelebA for RGB models"
            )
        return ImageSource(EmbeddedFaces(split, size=size, augment=augment), size, 1, "embedded faces")  # type: ignore[arg-type]
    if size != 64 or channels != 3:
        raise ValueError(
            f"CelebA images are 3×64×64 but the model wants {channels}×{size}×{size}; use a "
            "CelebA config (celeba_gen, celeba_inverse)"
        )
    flip = (split == "train") if augment is None else augment
    return ImageSource(celeba64(data_root, split, flip=flip), 64, 3, "CelebA-64")  # type: ignore[arg-type]

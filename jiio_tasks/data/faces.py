"""Embedded faces: the 100 real face crops of scikit-image's LFW subset, fixed 80/20 split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from jiio_tasks.data._embedded import Split, check_split, load_arrays

#: Side of the stored images.
NATIVE_SIZE = 25
#: Smallest side of a random crop (augmentation), out of ``NATIVE_SIZE``.
MIN_CROP = 21


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``(N, C, H, W)`` images to ``size × size`` (antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)


class EmbeddedFaces(Dataset[tuple[Tensor, int]]):
    """Grey-scale faces (Labeled Faces in the Wild crops, 25×25) shipped with jiio.

    Args:
        split: ``"train"`` (80 faces) or ``"test"`` (20 faces); the split is fixed and seeded.
        size: output side; the 25×25 images are resized (bilinear, antialiased) to it.
        augment: random crops (side ``MIN_CROP``..25, anywhere in the image, then resized) and
            horizontal flips with probability 1/2. Default: on for ``"train"``, off for
            ``"test"``. Randomness comes from ``generator`` or torch's global generator.

    Items are ``(image, index)``: ``image`` is ``(1, size, size)`` float32 in [0, 1]; there are
    no class labels, so the second element is the image's index in the split (useful to keep
    per-image state such as a warm-started latent). ``images`` holds the whole split,
    unaugmented, as ``(N, 1, size, size)``.
    """

    def __init__(
        self,
        split: Split = "train",
        size: int = 32,
        augment: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        check_split(split)
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        arrays = load_arrays("faces")
        self.split = split
        self.size = size
        self.augment = (split == "train") if augment is None else bool(augment)
        self.generator = generator
        raw = torch.from_numpy(arrays[f"{split}_images"].copy())
        self.native: Tensor = raw.unsqueeze(1).to(torch.float32).div_(255.0)
        self.images: Tensor = resize(self.native, size)

    def __len__(self) -> int:
        return len(self.native)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = range(len(self))[index]  # bounds check, negative indices
        if not self.augment:
            return self.images[index], index
        g = self.generator
        side = int(torch.randint(MIN_CROP, NATIVE_SIZE + 1, (1,), generator=g))
        top = int(torch.randint(0, NATIVE_SIZE - side + 1, (1,), generator=g))
        left = int(torch.randint(0, NATIVE_SIZE - side + 1, (1,), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5)
        crop = self.native[index : index + 1, :, top : top + side, left : left + side]
        image = resize(crop, self.size)[0]
        if flip:
            image = image.flip(-1)
        return image, index

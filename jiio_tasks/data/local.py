"""The paper's data sets (MNIST, CIFAR-10, CelebA-64, Omniglot) from a local root.

These go through torchvision's dataset classes with ``download=False``: jiio never downloads
anything. When the root lacks the files, [`DatasetNotFoundError`][jiio_tasks.data.local.DatasetNotFoundError] says where they were
looked for, the layout expected, and where to get them. An archive left next to where its
contents are expected (``*.gz`` MNIST files, ``cifar-10-python.tar.gz``,
``img_align_celeba.zip``, Omniglot's ``images_*.zip``) is extracted in place first.

All images are float32 tensors in [0, 1], ``(C, H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch import Tensor
from torch.utils.data import Dataset

PathLike = str | os.PathLike[str]


class DatasetNotFoundError(FileNotFoundError):
    """A local data set is missing, incomplete or corrupted under the given root."""


def _missing(root: Path, paths: list[str]) -> list[str]:
    return [p for p in paths if not (root / p).exists()]


def _not_found(
    name: str, root: Path, missing: list[str], layout: str, howto: str
) -> DatasetNotFoundError:
    listed = "\n".join(f"    {root / m}" for m in missing)
    return DatasetNotFoundError(
        f"{name} not found under root {str(root)!r} (jiio never downloads data).\n"
        f"  Missing:\n{listed}\n"
        f"  Expected layout:\n{layout}\n"
        f"  How to get it: {howto}"
    )


def _corrupted(name: str, root: Path, detail: str, howto: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} files are present under root {str(root)!r} but torchvision rejected them "
        f"({detail}): they are corrupted or not the official release.\n  How to get it: {howto}"
    )


def _extract(archive: Path, into: Path) -> None:
    from torchvision.datasets.utils import extract_archive

    try:
        extract_archive(str(archive), str(into))
    except Exception as err:  # a truncated or foreign archive, a read-only root, ...
        raise DatasetNotFoundError(f"could not extract {archive} into {into}: {err}") from err


def _root(root: PathLike) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {root!r}")
    return Path(root).expanduser()


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


# --- MNIST -------------------------------------------------------------------------------

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_HOWTO = (
    "download the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz from the official page "
    "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/) "
    "and place them under <root>/MNIST/raw (they are decompressed on first use); or, on a "
    "machine with internet access, run torchvision.datasets.MNIST(root, download=True) and "
    "copy <root>/MNIST here."
)


def mnist(root: PathLike, split: Literal["train", "test"] = "train") -> Dataset[Any]:
    """MNIST (60,000 train / 10,000 test) from ``<root>/MNIST/raw``; items are
    ``(image (1, 28, 28), label)``."""
    _check_split(split, ("train", "test"))
    base = _root(root)
    raw = base / "MNIST" / "raw"
    for name in MNIST_FILES:
        if not (raw / name).is_file() and (raw / f"{name}.gz").is_file():
            _extract(raw / f"{name}.gz", raw)
    legacy = base / "MNIST" / "processed"  # written by torchvision < 0.9, still read by it
    has_legacy = (legacy / "training.pt").is_file() and (legacy / "test.pt").is_file()
    missing = _missing(raw, list(MNIST_FILES))
    if missing and not has_legacy:
        layout = "\n".join(f"    <root>/MNIST/raw/{f}" for f in MNIST_FILES)
        raise _not_found("MNIST", base, [f"MNIST/raw/{m}" for m in missing], layout, MNIST_HOWTO)
    from torchvision import datasets, transforms

    try:
        return datasets.MNIST(  # type: ignore[no-any-return]
            str(base), train=split == "train", download=False, transform=transforms.ToTensor()
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise _corrupted("MNIST", base, str(err), MNIST_HOWTO) from err


# --- CIFAR-10 ----------------------------------------------------------------------------

CIFAR10_FILES = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)
CIFAR10_HOWTO = (
    "download cifar-10-python.tar.gz (the 'CIFAR-10 python version') from the official page "
    "https://www.cs.toronto.edu/~kriz/cifar.html and put it in <root> (it is extracted on "
    "first use), or extract it yourself so that <root>/cifar-10-batches-py exists."
)


def _cifar_augment(pad: int = 4) -> Callable[[Any], Any]:
    from torchvision import transforms

    return transforms.Compose(  # type: ignore[no-any-return]
        [
            transforms.RandomCrop(32, padding=pad, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )


def cifar10(
    root: PathLike, split: Literal["train", "test"] = "train", augment: bool = False
) -> Dataset[Any]:
    """CIFAR-10 (50,000 train / 10,000 test) from ``<root>/cifar-10-batches-py``; items are
    ``(image (3, 32, 32), label)``. ``augment`` adds the usual random crop (4-pixel reflect
    padding) and horizontal flip."""
    _check_split(split, ("train", "test"))
    base = _root(root)
    folder = base / "cifar-10-batches-py"
    archive = base / "cifar-10-python.tar.gz"
    if not folder.is_dir() and archive.is_file():
        _extract(archive, base)
    missing = _missing(folder, list(CIFAR10_FILES))
    if missing:
        layout = "\n".join(f"    <root>/cifar-10-batches-py/{f}" for f in CIFAR10_FILES)
        raise _not_found(
            "CIFAR-10", base, [f"cifar-10-batches-py/{m}" for m in missing], layout, CIFAR10_HOWTO
        )
    from torchvision import datasets, transforms

    transform = _cifar_augment() if augment else transforms.ToTensor()
    try:
        return datasets.CIFAR10(  # type: ignore[no-any-return]
            str(base), train=split == "train", download=False, transform=transform
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise _corrupted("CIFAR-10", base, str(err), CIFAR10_HOWTO) from err


# --- CelebA-64 ---------------------------------------------------------------------------

CELEBA_FILES = (
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
CELEBA_HOWTO = (
    "from the official CelebA page https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
    "(its Google Drive / Baidu links) get Img/img_align_celeba.zip, the four Anno/*.txt files "
    "named above and Eval/list_eval_partition.txt, and put them in <root>/celeba (the zip is "
    "extracted on first use)."
)


def celeba64(
    root: PathLike,
    split: Literal["train", "valid", "test"] = "train",
    flip: bool | None = None,
) -> Dataset[Any]:
    """CelebA aligned faces at 64×64 (the usual generative-modelling preprocessing: centre
    crop 148, resize to 64) with the official train/valid/test partition (162,770 / 19,867 /
    19,962 images). Items are ``(image (3, 64, 64), attributes (40,) in {0, 1})``. ``flip``
    (random horizontal flips) defaults to on for ``"train"`` only."""
    _check_split(split, ("train", "valid", "test"))
    base = _root(root)
    folder = base / "celeba"
    images = folder / "img_align_celeba"
    archive = folder / "img_align_celeba.zip"
    if not images.is_dir() and archive.is_file():
        _extract(archive, folder)
    wanted = ["img_align_celeba", *CELEBA_FILES]
    missing = _missing(folder, wanted)
    if missing:
        layout = "\n".join(
            ["    <root>/celeba/img_align_celeba/000001.jpg ... 202599.jpg"]
            + [f"    <root>/celeba/{f}" for f in CELEBA_FILES]
        )
        raise _not_found("CelebA", base, [f"celeba/{m}" for m in missing], layout, CELEBA_HOWTO)
    from torchvision import datasets, transforms

    steps: list[Any] = [transforms.CenterCrop(148), transforms.Resize(64)]
    if (split == "train") if flip is None else flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps.append(transforms.ToTensor())
    try:
        return datasets.CelebA(  # type: ignore[no-any-return]
            str(base),
            split=split,
            target_type="attr",
            transform=transforms.Compose(steps),
            download=False,
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise _corrupted("CelebA", base, str(err), CELEBA_HOWTO) from err


# --- Omniglot ----------------------------------------------------------------------------

OMNIGLOT_HOWTO = (
    "download images_background.zip and images_evaluation.zip from the official repository "
    "https://github.com/brendenlake/omniglot/tree/master/python and put them in "
    "<root>/omniglot-py (they are extracted on first use; keep the zips: torchvision checks "
    "their checksums)."
)


class OmniglotCharacters(Dataset[tuple[Tensor, int]]):
    """Omniglot characters as ``(1, size, size)`` float images in [0, 1] with ink = 1 (the
    files are black on white; they are inverted to match the other character sets), resized
    from 105×105 with antialiasing. ``targets`` lists every item's character label, so few-shot
    bookkeeping needs no pass over the images.

    Characters are numbered in sorted ``alphabet/character`` order and drawings sorted by file
    name: torchvision lists directories in file-system order, which varies between machines.
    """

    def __init__(self, dataset: Any, size: int) -> None:
        self.dataset = dataset
        self.size = size
        characters: list[str] = list(dataset._characters)
        flat: list[tuple[str, int]] = dataset._flat_character_images
        names: dict[str, list[str]] = {c: [] for c in characters}
        for image_name, label in flat:
            names[characters[label]].append(image_name)
        ordered = sorted(characters)
        dataset._characters = ordered
        dataset._flat_character_images = [
            (image_name, label)
            for label, character in enumerate(ordered)
            for image_name in sorted(names[character])
        ]
        self.targets: list[int] = [label for _, label in dataset._flat_character_images]
        self.num_classes = len(ordered)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        return 1.0 - image, int(label)


def omniglot(root: PathLike, background: bool = True, size: int = 28) -> OmniglotCharacters:
    """Omniglot's background (964 characters, 30 alphabets) or evaluation (659 characters, 20
    alphabets) set, 20 drawings per character, from ``<root>/omniglot-py``."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    base = _root(root)
    part = "images_background" if background else "images_evaluation"
    folder = base / "omniglot-py"
    if not (folder / part).is_dir() and (folder / f"{part}.zip").is_file():
        _extract(folder / f"{part}.zip", folder)
    missing = _missing(folder, [f"{part}.zip", part])
    if missing:
        layout = (
            f"    <root>/omniglot-py/{part}.zip\n"
            f"    <root>/omniglot-py/{part}/<alphabet>/<character>/<drawing>.png"
        )
        raise _not_found(
            "Omniglot", base, [f"omniglot-py/{m}" for m in missing], layout, OMNIGLOT_HOWTO
        )
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(size, antialias=True), transforms.ToTensor()])
    try:
        data = datasets.Omniglot(
            str(base), background=background, download=False, transform=transform
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise _corrupted("Omniglot", base, str(err), OMNIGLOT_HOWTO) from err
    return OmniglotCharacters(data, size)

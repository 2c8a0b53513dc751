"""Tiny fake data sets written in the exact on-disk formats torchvision reads (MNIST idx files,
CIFAR-10 pickles, CelebA text files and images, Omniglot folders and zips), for the local-root
loaders' tests and the paper-config training tests. torchvision checks some files by md5:
the helpers here patch its tables to the fakes' checksums."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import datasets


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()



def idx(data: np.ndarray) -> bytes:
    """IDX format (big-endian): 0, 0, type 0x08 (uint8), ndim; then each dim as int32."""
    header = struct.pack(">BBBB", 0, 0, 0x08, data.ndim)
    header += b"".join(struct.pack(">i", d) for d in data.shape)
    return header + data.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx(arr)))
        else:
            (raw / name).write_bytes(idx(arr))
    return arrays



def write_cifar(folder: Path, per_batch: int) -> dict[str, dict[str, object]]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
        batches[name] = entry
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


def patch_cifar_md5(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setattr(
        datasets.CIFAR10,
        "train_list",
        [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)],
    )
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]]
    )
    monkeypatch.setattr(
        datasets.CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": md5(folder / "batches.meta")},
    )



CELEB_A = (0, 0, 200)  # left half of the centre 148 × 148 crop
CELEB_B = (0, 200, 0)  # right half
OUTSIDE = (255, 0, 0)  # outside the crop: must not reach the 64 × 64 output


def write_celeba(base: Path) -> None:
    folder = base / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 7)]  # two per split (torchvision fails on one)
    for name in names:
        img = np.zeros((218, 178, 3), dtype=np.uint8)
        img[:] = OUTSIDE
        top, left = 35, 15  # centre crop of 148 from 218 × 178
        img[top : top + 148, left : left + 74] = CELEB_A
        img[top : top + 148, left + 74 : left + 148] = CELEB_B
        Image.fromarray(img).save(folder / "img_align_celeba" / name, format="PNG")
    attrs = [f"Attr{i}" for i in range(40)]
    rows = {
        "list_eval_partition.txt": [f"{n} {i // 2}" for i, n in enumerate(names)],
        "identity_CelebA.txt": [f"{n} {10 + i}" for i, n in enumerate(names)],
        "list_attr_celeba.txt": ["6", " ".join(attrs)]
        + [
            f"{n} " + " ".join("1" if (j + i) % 3 == 0 else "-1" for j in range(40))
            for i, n in enumerate(names)
        ],
        "list_bbox_celeba.txt": ["6", "image_id x_1 y_1 width height"]
        + [f"{n} 1 2 3 4" for n in names],
        "list_landmarks_align_celeba.txt": ["6", " ".join(f"p{i}" for i in range(10))]
        + [f"{n} " + " ".join(str(i) for i in range(10)) for n in names],
    }
    for fname, lines in rows.items():
        (folder / fname).write_text("\n".join(lines) + "\n")



def write_omniglot(base: Path, characters: int, drawings: int, part: str = "images_background",
                   seed: int = 2) -> list[np.ndarray]:
    """``characters`` characters of ``drawings`` 105×105 drawings each (a black stroke on white)
    in two alphabets, as Omniglot's ``part`` folder and its zip."""
    folder = base / "omniglot-py" / part
    rng = np.random.default_rng(seed)
    images = []
    for c in range(characters):
        alphabet = "Alpha" if c < characters // 2 else "Beta"
        char_dir = folder / alphabet / f"character{c:02d}"
        char_dir.mkdir(parents=True)
        for d in range(drawings):
            img = np.full((105, 105), 255, dtype=np.uint8)  # white page
            y, x = rng.integers(10, 70, 2)
            img[y : y + 25, x : x + 8] = 0  # a black stroke
            Image.fromarray(img).save(char_dir / f"{c:02d}_{d:02d}.png")
            images.append(img)
    archive = base / "omniglot-py" / part
    shutil.make_archive(str(archive), "zip", root_dir=base / "omniglot-py", base_dir=part)
    return images


def patch_omniglot_md5(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """torchvision's Omniglot md5 table set to the fake zips under ``base`` ("0" if absent)."""
    folder = base / "omniglot-py"
    monkeypatch.setattr(datasets.Omniglot, "zips_md5", {
        part: md5(folder / f"{part}.zip") if (folder / f"{part}.zip").is_file() else "0"
        for part in ("images_background", "images_evaluation")})


def patch_celeba_md5(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """torchvision's CelebA file table set to the fake files under ``base / "celeba"``."""
    folder = base / "celeba"
    monkeypatch.setattr(datasets.CelebA, "file_list", [
        (fid, md5(folder / name) if (folder / name).is_file() else digest, name)
        for fid, digest, name in datasets.CelebA.file_list])

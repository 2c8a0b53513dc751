"""Local-root loaders: error messages without data, and round trips through tiny fake data sets
written here in the exact on-disk formats torchvision reads (idx files, CIFAR pickles, CelebA
text files, Omniglot folders). torchvision's md5 tables are patched to the fakes' checksums."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from jiio_tasks.data import (
    DatasetNotFoundError,
    celeba64,
    cifar10,
    make_taskset,
    mnist,
    omniglot,
)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- error paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (
            mnist,
            [
                "MNIST",
                "MNIST/raw/train-images-idx3-ubyte",
                "MNIST/raw/t10k-labels-idx1-ubyte",
                "https://yann.lecun.com/exdb/mnist/",
                "<root>/MNIST/raw",
            ],
        ),
        (
            cifar10,
            [
                "CIFAR-10",
                "cifar-10-batches-py/data_batch_1",
                "cifar-10-batches-py/test_batch",
                "https://www.cs.toronto.edu/~kriz/cifar.html",
                "cifar-10-python.tar.gz",
            ],
        ),
        (
            celeba64,
            [
                "CelebA",
                "celeba/img_align_celeba",
                "celeba/list_eval_partition.txt",
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
            ],
        ),
        (
            omniglot,
            [
                "Omniglot",
                "omniglot-py/images_background.zip",
                "<root>/omniglot-py/images_background/<alphabet>/<character>/<drawing>.png",
                "https://github.com/brendenlake/omniglot",
            ],
        ),
    ],
)
def test_missing_root_error_names_root_layout_and_source(
    tmp_path: Path, load: object, expected: list[str]
) -> None:
    root = tmp_path / "nothing here"
    with pytest.raises(DatasetNotFoundError) as info:
        load(root)  # type: ignore[operator]
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(root) in message
    assert "never downloads" in message
    for text in expected:
        assert text in message, text


def test_partial_mnist_lists_only_missing_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path, n_train=2, n_test=1)
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        mnist(tmp_path, "train")
    missing = str(info.value).split("Expected layout")[0]
    assert "t10k-labels-idx1-ubyte" in missing
    assert "train-images" not in missing


def test_bad_split_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        mnist(tmp_path, "valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        celeba64(tmp_path, "validation")  # type: ignore[arg-type]


# --- MNIST -------------------------------------------------------------------------------


def _idx(data: np.ndarray) -> bytes:
    """IDX format (big-endian): 0, 0, type 0x08 (uint8), ndim; then each dim as int32."""
    header = struct.pack(">BBBB", 0, 0, 0x08, data.ndim)
    header += b"".join(struct.pack(">i", d) for d in data.shape)
    return header + data.astype(np.uint8).tobytes()


def _write_mnist(root: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
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
            (raw / f"{name}.gz").write_bytes(gzip.compress(_idx(arr)))
        else:
            (raw / name).write_bytes(_idx(arr))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_fake_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, n_train=5, n_test=3, gz=gz)
    for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
        ds = mnist(tmp_path, split)  # type: ignore[arg-type]
        assert len(ds) == n  # type: ignore[arg-type]
        for i in range(n):
            image, label = ds[i]
            assert image.shape == (1, 28, 28)
            assert image.dtype == torch.float32
            expected = arrays[f"{prefix}-images-idx3-ubyte"][i] / 255.0
            np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
            assert int(label) == arrays[f"{prefix}-labels-idx1-ubyte"][i]


def test_legacy_processed_mnist(tmp_path: Path) -> None:
    # roots prepared by torchvision < 0.9 hold MNIST/processed/{training,test}.pt instead
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1])
    torch.save((images, labels), processed / "training.pt")
    torch.save((images[:2], labels[:2]), processed / "test.pt")
    ds = mnist(tmp_path, "train")
    image, label = ds[2]
    assert len(ds) == 4  # type: ignore[arg-type]
    assert int(label) == 4
    np.testing.assert_allclose(image[0].numpy(), images[2].numpy() / 255.0, atol=1e-6)


# --- CIFAR-10 ----------------------------------------------------------------------------


def _write_cifar(folder: Path, per_batch: int) -> dict[str, dict[str, object]]:
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


def _patch_cifar_md5(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setattr(
        datasets.CIFAR10,
        "train_list",
        [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)],
    )
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]]
    )
    monkeypatch.setattr(
        datasets.CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")},
    )


def _as_chw(row: object) -> np.ndarray:
    return np.asarray(row, dtype=np.float64).reshape(3, 32, 32) / 255.0


@pytest.mark.parametrize("archived", [False, True])
def test_fake_cifar10_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archived: bool
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, per_batch=2)
    _patch_cifar_md5(monkeypatch, folder)
    if archived:  # only the official tarball is present: extracted on first use
        with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
        shutil.rmtree(folder)
    train = cifar10(tmp_path, "train")
    test = cifar10(tmp_path, "test")
    assert len(train) == 10
    assert len(test) == 2
    image, label = train[7]  # batch 4, row 1
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    np.testing.assert_allclose(
        image.numpy(), _as_chw(batches["data_batch_4"]["data"][1]), atol=1e-6
    )  # type: ignore[index]
    assert label == batches["data_batch_4"]["labels"][1]  # type: ignore[index]
    image, label = test[1]
    np.testing.assert_allclose(image.numpy(), _as_chw(batches["test_batch"]["data"][1]), atol=1e-6)  # type: ignore[index]
    assert label == batches["test_batch"]["labels"][1]  # type: ignore[index]


def test_fake_cifar10_augmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, per_batch=1)
    _patch_cifar_md5(monkeypatch, folder)
    original = _as_chw(batches["data_batch_1"]["data"][0])  # type: ignore[index]
    padded = np.pad(original, ((0, 0), (4, 4), (4, 4)), mode="reflect")
    crops = [padded[:, t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
    candidates = np.stack(crops + [c[:, :, ::-1] for c in crops])
    train = cifar10(tmp_path, "train", augment=True)
    torch.manual_seed(0)
    found = set()
    for _ in range(30):
        image, _ = train[0]
        err = np.abs(candidates - image.numpy()).max(axis=(1, 2, 3))
        assert err.min() < 1e-6
        found.add(int(err.argmin()))
    assert len(found) > 5
    assert min(found) < 81 <= max(found)


def test_corrupted_cifar10_is_reported(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py", per_batch=1)  # right names, wrong md5
    with pytest.raises(DatasetNotFoundError, match="rejected"):
        cifar10(tmp_path, "train")


# --- CelebA ------------------------------------------------------------------------------

CELEB_A = (0, 0, 200)  # left half of the centre 148 × 148 crop
CELEB_B = (0, 200, 0)  # right half
OUTSIDE = (255, 0, 0)  # outside the crop: must not reach the 64 × 64 output


def _write_celeba(base: Path) -> None:
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


def test_fake_celeba64_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_celeba(tmp_path)
    folder = tmp_path / "celeba"
    monkeypatch.setattr(
        datasets.CelebA,
        "file_list",
        [
            (fid, _md5(folder / name) if (folder / name).is_file() else md5, name)
            for fid, md5, name in datasets.CelebA.file_list
        ],
    )
    a, b = np.array(CELEB_A) / 255.0, np.array(CELEB_B) / 255.0
    for split in ("valid", "test"):
        ds = celeba64(tmp_path, split)  # type: ignore[arg-type]
        assert len(ds) == 2  # type: ignore[arg-type]
        image, attrs = ds[1]
        assert image.shape == (3, 64, 64)
        assert image.dtype == torch.float32
        assert attrs.shape == (40,)
        assert set(attrs.tolist()) <= {0, 1}
        img = image.numpy()
        assert img[0].max() < 1e-6  # nothing from outside the centre 148 crop
        np.testing.assert_allclose(
            img[:, :, :30].reshape(3, -1).T, np.broadcast_to(a, (64 * 30, 3)), atol=2e-2
        )
        np.testing.assert_allclose(
            img[:, :, 34:].reshape(3, -1).T, np.broadcast_to(b, (64 * 30, 3)), atol=2e-2
        )
    # item 1 of split "test" is the sixth file (i = 5): attribute j is 1 when (j + 5) % 3 == 0
    _, attrs = celeba64(tmp_path, "test")[1]
    assert attrs.tolist() == [int((j + 5) % 3 == 0) for j in range(40)]
    assert len(celeba64(tmp_path, "train")) == 2  # type: ignore[arg-type]
    train = celeba64(tmp_path, "train")
    torch.manual_seed(0)
    left_is_a = {bool(train[0][0][2, 32, 5] < 0.1) for _ in range(20)}
    assert left_is_a == {True, False}  # random horizontal flips in the train split


# --- Omniglot ----------------------------------------------------------------------------


def _write_omniglot(base: Path, characters: int, drawings: int) -> list[np.ndarray]:
    folder = base / "omniglot-py" / "images_background"
    rng = np.random.default_rng(2)
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
    archive = base / "omniglot-py" / "images_background"
    shutil.make_archive(
        str(archive), "zip", root_dir=base / "omniglot-py", base_dir="images_background"
    )
    return images


def test_fake_omniglot_round_trip_and_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _write_omniglot(tmp_path, characters=6, drawings=2)
    zip_path = tmp_path / "omniglot-py" / "images_background.zip"
    assert zipfile.is_zipfile(zip_path)
    monkeypatch.setattr(
        datasets.Omniglot,
        "zips_md5",
        {"images_background": _md5(zip_path), "images_evaluation": "0"},
    )
    shutil.rmtree(tmp_path / "omniglot-py" / "images_background")  # only the zip: extracted
    ds = omniglot(tmp_path, background=True)
    assert len(ds) == 12
    assert ds.num_classes == 6
    assert ds.targets == [c for c in range(6) for _ in range(2)]
    for i in (0, 5, 11):
        image, label = ds[i]
        assert label == ds.targets[i]
        assert image.shape == (1, 28, 28)
        # reference: PIL's antialiased bilinear resize, then ink = 1 - brightness
        ref = np.asarray(Image.fromarray(images[i]).resize((28, 28), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(image[0].numpy(), 1.0 - ref / 255.0, atol=1e-6)
        assert float(image.max()) > 0.5
        assert float(image[0, 0, 0]) == 0.0
    tasks = make_taskset(ds, ways=3, shots=1, query_shots=1, rotations=True, seed=0)
    task = tasks.sample()
    assert task.support_x.shape == (3, 1, 28, 28)
    assert task.query_y.tolist() == [0, 1, 2]
    with pytest.raises(DatasetNotFoundError, match="images_evaluation"):
        omniglot(tmp_path, background=False)

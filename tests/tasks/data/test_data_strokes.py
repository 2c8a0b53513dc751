"""Stroke rendering and jitter against hand computations and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jiio_tasks.data import strokes
from jiio_tasks.data.strokes import StrokeJitter


def test_segment_starts() -> None:
    # strokes of 3 and 2 points: segments (0,1), (1,2), (3,4)
    starts = strokes.segment_starts(np.array([0, 3, 5]))
    assert starts.tolist() == [0, 1, 3]


def test_draw_horizontal_segment_by_hand() -> None:
    # segment along the row of pixel centres y = 10.5 from x = 4 to x = 20, width 2:
    # ink = clip(1 + 0.5 - distance, 0, 1)
    pts = np.array([[4.0, 10.5], [20.0, 10.5]], dtype=np.float32)
    img = strokes.draw(pts, np.array([0]), size=28, width=2.0)
    assert img.shape == (28, 28)
    assert img.dtype == np.float32
    np.testing.assert_allclose(img[10, 4:20], 1.0)  # on the segment
    np.testing.assert_allclose(img[9, 4:20], 0.5)  # one pixel above: distance 1
    np.testing.assert_allclose(img[11, 4:20], 0.5)
    assert img[8].max() == 0
    assert img[12].max() == 0
    assert img[10, 3] == pytest.approx(1.0)  # end cap, distance 0.5
    assert img[10, 2] == 0.0  # distance 1.5
    assert img[9, 3] == pytest.approx(1.5 - math.hypot(0.5, 1.0))
    # 16 full pixels, 2 × 16 half pixels, 2 end caps, 4 corners at distance hypot(0.5, 1)
    corner = 1.5 - math.hypot(0.5, 1.0)
    assert img.sum() == pytest.approx(16 + 16 + 2 + 4 * corner, abs=1e-4)


def _brute_force(points: np.ndarray, starts: np.ndarray, size: int, width: float) -> np.ndarray:
    """Distance to each segment by dense sampling along it (no projection formula)."""
    t = np.linspace(0.0, 1.0, 4001)
    samples = np.concatenate([points[s] + t[:, None] * (points[s + 1] - points[s]) for s in starts])
    out = np.zeros((size, size))
    for r in range(size):
        for c in range(size):
            d = np.sqrt(((samples - (c + 0.5, r + 0.5)) ** 2).sum(1)).min()
            out[r, c] = min(max(width / 2 + 0.5 - d, 0.0), 1.0)
    return out


def test_draw_matches_brute_force_distance() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(2, 14, size=(6, 2)).astype(np.float32)
    starts = strokes.segment_starts(np.array([0, 4, 6]))  # a 3-segment stroke and a 1-segment one
    img = strokes.draw(pts, starts, size=16, width=1.7)
    ref = _brute_force(pts, starts, 16, 1.7)
    np.testing.assert_allclose(img, ref, atol=5e-3)
    assert img.max() == 1.0


def test_place_centres_and_scales() -> None:
    # a 30 × 10 box (font units): larger side fills FILL of the canvas, centred
    big = np.array([[-5.0, 0.0], [25.0, 10.0]], dtype=np.float32)
    placed = strokes.place(big, 28)
    np.testing.assert_allclose(placed.mean(0), [14.0, 14.0], atol=1e-5)
    np.testing.assert_allclose(np.ptp(placed, 0), [20.0, 20.0 / 3], atol=1e-5)
    # an 8-unit glyph is drawn at the scale of a MIN_EXTENT-unit one, not enlarged to fill
    small = np.array([[0.0, 0.0], [8.0, 4.0]], dtype=np.float32)
    placed = strokes.place(small, 56)
    np.testing.assert_allclose(np.ptp(placed, 0), np.array([8, 4]) * 56 * (20 / 28) / 16, atol=1e-5)


def test_zero_jitter_is_the_clean_render() -> None:
    pts = np.array([[0, 0], [10, 20], [20, 0], [5, 10], [15, 10]], dtype=np.float32)
    starts = strokes.segment_starts(np.array([0, 3, 5]))
    still = StrokeJitter(
        rotation=0,
        scale=(1, 1),
        aspect=0,
        shear=0,
        translate=0,
        warp=0,
        point_noise=0,
        width=(strokes.BASE_WIDTH, strokes.BASE_WIDTH),
    )
    clean = strokes.render(pts, starts, 28)
    jittered = strokes.render(pts, starts, 28, still, np.random.default_rng(0))
    np.testing.assert_allclose(jittered, clean, atol=1e-5)
    moved = strokes.render(pts, starts, 28, StrokeJitter(), np.random.default_rng(0))
    assert np.abs(moved - clean).mean() > 0.01


def test_jitter_is_deterministic_per_generator_state() -> None:
    pts = np.array([[0, 0], [10, 20], [20, 0]], dtype=np.float32)
    starts = strokes.segment_starts(np.array([0, 3]))
    a = strokes.render(pts, starts, 28, StrokeJitter(), np.random.default_rng(7))
    b = strokes.render(pts, starts, 28, StrokeJitter(), np.random.default_rng(7))
    c = strokes.render(pts, starts, 28, StrokeJitter(), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_jitter_affine_magnitude() -> None:
    # with only a translation, the ink's centre of mass moves by at most `translate` pixels
    pts = np.array([[0, 0], [10, 20], [20, 0]], dtype=np.float32)
    starts = strokes.segment_starts(np.array([0, 3]))
    shift_only = StrokeJitter(
        rotation=0,
        scale=(1, 1),
        aspect=0,
        shear=0,
        translate=2.0,
        warp=0,
        point_noise=0,
        width=(strokes.BASE_WIDTH, strokes.BASE_WIDTH),
    )
    clean = strokes.render(pts, starts, 28)
    yy, xx = np.mgrid[0:28, 0:28]

    def com(img: np.ndarray) -> np.ndarray:
        return np.array([(img * xx).sum(), (img * yy).sum()]) / img.sum()

    shifts = np.array(
        [
            com(strokes.render(pts, starts, 28, shift_only, np.random.default_rng(s))) - com(clean)
            for s in range(20)
        ]
    )
    assert np.abs(shifts).max() <= 2.0 + 0.05
    assert np.abs(shifts).max() > 1.0  # it does move


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rotation": -1.0}, "rotation"),
        ({"scale": (1.2, 1.0)}, "scale"),
        ({"width": (0.0, 1.0)}, "width"),
        ({"warp": float("nan")}, "warp"),
    ],
)
def test_jitter_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"StrokeJitter.{field}"):
        StrokeJitter(**kwargs)  # type: ignore[arg-type]


def test_render_jitter_needs_rng() -> None:
    pts = np.array([[0, 0], [1, 1]], dtype=np.float32)
    with pytest.raises(ValueError, match="rng"):
        strokes.render(pts, np.array([0]), 28, StrokeJitter())


def test_draw_without_segments_is_blank() -> None:
    img = strokes.draw(np.zeros((1, 2), dtype=np.float32), np.array([], dtype=np.int64), 12, 2.0)
    assert img.shape == (12, 12)
    assert not img.any()

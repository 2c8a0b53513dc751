"""Stroke glyphs drawn onto a pixel grid, optionally with a random "handwriting" jitter.

A glyph is a set of polylines (strokes) in font units, x to the right and y down. It is placed
on a ``size × size`` canvas centred on its bounding box, the larger side filling ``FILL`` of the
canvas (glyphs smaller than ``MIN_EXTENT`` font units are not enlarged beyond the scale a glyph
of that extent gets, so a full stop stays small). Each segment is drawn as an anti-aliased line
from its exact distance field: ``ink = clip(width/2 + 1/2 − distance, 0, 1)``, max over segments.

The jitter ([`StrokeJitter`][jiio_tasks.data.strokes.StrokeJitter]) perturbs the points before drawing: a random affine map
(rotation, scale, aspect, shear, translation), a smooth random displacement field (two random
sinusoids), independent noise per point, and a random stroke width. The same generator state
gives the same image.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]

#: Fraction of the canvas that the larger side of the glyph's bounding box fills.
FILL = 20.0 / 28.0
#: Glyphs smaller than this (font units) are drawn at the scale of a glyph of this extent.
MIN_EXTENT = 16.0
#: Stroke width (pixels on a 28-pixel canvas) of an unjittered render.
BASE_WIDTH = 1.8


def _nonneg(_: object, a: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"StrokeJitter.{a.name} must be a finite number >= 0, got {value!r}")


def _interval(_: object, a: attrs.Attribute[tuple[float, float]], value: object) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        and 0 < value[0] <= value[1]
    )
    if not ok:
        raise ValueError(
            f"StrokeJitter.{a.name} must be a pair (lo, hi) with 0 < lo <= hi, got {value!r}"
        )


@attrs.frozen
class StrokeJitter:
    """Magnitudes of the random perturbation of a glyph (lengths in pixels of a 28-pixel canvas;
    they scale with the canvas size).

    ``rotation`` is the largest absolute rotation in degrees, ``scale`` the range of the
    isotropic scale, ``aspect`` the largest absolute log aspect ratio, ``shear`` the largest
    absolute shear, ``translate`` the largest absolute shift per axis, ``warp`` the standard
    deviation of the smooth displacement per sinusoid and axis, ``point_noise`` the standard
    deviation of the independent noise per stroke point, ``width`` the range of stroke widths.
    """

    rotation: float = attrs.field(default=10.0, validator=_nonneg)
    scale: tuple[float, float] = attrs.field(default=(0.85, 1.1), validator=_interval)
    aspect: float = attrs.field(default=0.1, validator=_nonneg)
    shear: float = attrs.field(default=0.15, validator=_nonneg)
    translate: float = attrs.field(default=1.5, validator=_nonneg)
    warp: float = attrs.field(default=0.5, validator=_nonneg)
    point_noise: float = attrs.field(default=0.2, validator=_nonneg)
    width: tuple[float, float] = attrs.field(default=(1.4, 2.4), validator=_interval)


def segment_starts(stroke_offsets: NDArray[np.int64]) -> NDArray[np.int64]:
    """Indices ``i`` of the points that start a segment ``(i, i + 1)``.

    ``stroke_offsets`` (length ``n_strokes + 1``) delimits the strokes in the point array; the
    last point of each stroke starts no segment.
    """
    n_points = int(stroke_offsets[-1])
    is_start = np.ones(n_points, dtype=bool)
    is_start[stroke_offsets[1:] - 1] = False
    empty = stroke_offsets[1:] == stroke_offsets[:-1]
    if empty.any():
        raise ValueError("every stroke must have at least one point")
    return np.nonzero(is_start)[0].astype(np.int64)


def place(points: FloatArray, size: int) -> FloatArray:
    """Map glyph points (font units) to pixel coordinates of a ``size × size`` canvas, centred on
    the bounding box (see the module docstring for the scale)."""
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    extent = float((hi - lo).max())
    scale = size * FILL / max(extent, MIN_EXTENT)
    centred: FloatArray = ((points - (lo + hi) / 2) * scale + size / 2).astype(np.float32)
    return centred


def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    return np.tile(c, size), np.repeat(c, size)  # x varies fastest: row-major pixel order


def draw(points: FloatArray, starts: NDArray[np.int64], size: int, width: float) -> FloatArray:
    """Draw the segments ``points[starts] → points[starts + 1]`` (pixel coordinates, pixel
    centres at ``i + 0.5``) as anti-aliased lines of the given width; returns ``(size, size)``
    ink in [0, 1]."""
    if len(starts) == 0:
        return np.zeros((size, size), dtype=np.float32)
    a = points[starts]
    b = points[starts + 1]
    ax, ay = a[:, 0], a[:, 1]
    bx, by = b[:, 0] - ax, b[:, 1] - ay
    length2 = bx * bx + by * by
    inv = np.where(length2 > 0, 1.0 / np.maximum(length2, 1e-12), 0.0).astype(np.float32)
    gx, gy = _grid(size)
    px = gx[:, None] - ax[None, :]
    py = gy[:, None] - ay[None, :]
    t = np.clip((px * bx + py * by) * inv, 0.0, 1.0)
    dx = px - t * bx
    dy = py - t * by
    dist = np.sqrt((dx * dx + dy * dy).min(axis=1))
    ink: FloatArray = np.clip(np.float32(width / 2 + 0.5) - dist, 0.0, 1.0).astype(np.float32)
    return ink.reshape(size, size)


def jitter_points(
    points: FloatArray, size: int, jitter: StrokeJitter, rng: np.random.Generator
) -> tuple[FloatArray, float]:
    """Perturb placed points (pixel coordinates) and draw a stroke width; returns both.

    The random draws happen in a fixed order, so a generator in a given state always gives the
    same result.
    """
    unit = size / 28.0
    centre = np.float32(size / 2)
    theta = math.radians(rng.uniform(-jitter.rotation, jitter.rotation))
    scale = rng.uniform(*jitter.scale)
    log_aspect = rng.uniform(-jitter.aspect, jitter.aspect)
    shear = rng.uniform(-jitter.shear, jitter.shear)
    shift = rng.uniform(-jitter.translate, jitter.translate, size=2) * unit
    cos, sin = math.cos(theta), math.sin(theta)
    rotation = np.array([[cos, -sin], [sin, cos]])
    shearing = np.array([[1.0, shear], [0.0, 1.0]])
    stretch = np.diag([scale * math.exp(log_aspect), scale * math.exp(-log_aspect)])
    linear = rotation @ shearing @ stretch
    # smooth displacement: two sinusoids of random direction, wavelength 10..20 px and phase
    angles = rng.uniform(0.0, 2 * math.pi, size=2)
    wavelengths = rng.uniform(10.0, 20.0, size=2) * unit
    phases = rng.uniform(0.0, 2 * math.pi, size=2)
    amplitudes = rng.normal(0.0, jitter.warp, size=(2, 2)) * unit
    noise = rng.normal(0.0, jitter.point_noise, size=points.shape) * unit
    width = rng.uniform(*jitter.width) * unit

    p = points.astype(np.float64) - centre
    moved = p @ linear.T + shift
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    waves = directions * (2 * math.pi / wavelengths)[:, None]
    moved += np.sin(p @ waves.T + phases) @ amplitudes
    moved += noise
    return (moved + centre).astype(np.float32), float(width)


def render(
    points: FloatArray,
    starts: NDArray[np.int64],
    size: int = 28,
    jitter: StrokeJitter | None = None,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Render one glyph given in font units; ``jitter`` (with ``rng``) perturbs it, ``None``
    gives the clean render with width ``BASE_WIDTH``."""
    placed = place(points, size)
    if jitter is None:
        return draw(placed, starts, size, BASE_WIDTH * size / 28.0)
    if rng is None:
        raise ValueError("render: a jittered render needs rng (a numpy Generator)")
    moved, width = jitter_points(placed, size, jitter, rng)
    return draw(moved, starts, size, width)

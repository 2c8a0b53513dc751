"""Measurement operators and metrics against hand computations (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from jiio_tasks.imaging.operators import (
    Blur,
    BoxMask,
    GaussianNoise,
    Identity,
    Inpainting,
    corruption,
    gaussian_kernel,
    mse,
    psnr,
)


def _images(b: int = 2, c: int = 1, h: int = 6, w: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, c, h, w, generator=g, dtype=torch.float64)


def test_noise_is_seeded_gaussian_with_identity_operator() -> None:
    y = _images(4, 1, 32, 32)
    op = GaussianNoise(0.2)
    a = op.corrupt(y, torch.Generator().manual_seed(3))
    b = op.corrupt(y, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # the same draw by hand
    eps = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(a, y + 0.2 * eps)
    noise = (a - y).flatten()
    assert abs(float(noise.std()) - 0.2) < 0.01 and abs(float(noise.mean())) < 0.01
    assert torch.equal(op.apply(y), y) and torch.equal(Identity().apply(y), y)
    assert corruption("denoise0.4", scale=2.0).operator(y).sigma == pytest.approx(0.8)  # type: ignore[attr-defined]


def test_box_mask_zeroes_exactly_the_square() -> None:
    y = _images(1, 2, 5, 5)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    mask[0, 0, 1:3, 2:4] = 0
    out = BoxMask(mask).apply(y)
    for ch in range(2):
        for i in range(5):
            for j in range(5):
                want = 0.0 if (1 <= i < 3 and 2 <= j < 4) else float(y[0, ch, i, j])
                assert float(out[0, ch, i, j]) == want


@pytest.mark.parametrize(("width", "side"), [(64, 20), (32, 10), (25, 8), (8, 2)])
def test_inpainting_square_side_and_centre_range(width: int, side: int) -> None:
    inp = Inpainting()
    assert inp.side(width, width) == side
    y = torch.ones(400, 1, width, width, dtype=torch.float64)
    op = inp.operator(y, torch.Generator().manual_seed(1))
    missing = 1 - op.mask[:, 0]
    assert bool((missing.sum((1, 2)) == side * side).all())
    rows = missing.amax(2)  # (B, H): rows that hold a hole
    cols = missing.amax(1)
    h = side // 2
    top = rows.argmax(1)
    left = cols.argmax(1)
    # contiguous square: its rows/cols are exactly [top, top + side)
    for r, t in zip(rows, top, strict=True):
        assert torch.equal(r.nonzero().flatten(), torch.arange(int(t), int(t) + side))
    centres = torch.cat([top, left]) + h
    assert int(centres.min()) == h and int(centres.max()) == width - h - 1  # uniform on [h, W−h)
    # corrupt == apply, and the whole square is 0
    _, obs = inp(y, torch.Generator().manual_seed(1))
    torch.testing.assert_close(obs, op.mask.expand_as(y))


def test_gaussian_kernel_and_blur_by_hand() -> None:
    k = gaussian_kernel(1.0, 3, torch.float64)
    w1 = math.exp(-0.5)
    w2 = math.exp(-1.0)
    total = 1 + 4 * w1 + 4 * w2
    assert float(k[1, 1]) == pytest.approx(1 / total)
    assert float(k[0, 1]) == pytest.approx(w1 / total)
    assert float(k[0, 0]) == pytest.approx(w2 / total)
    y = _images(2, 2, 5, 4)
    out = Blur(sigma=1.0, size=3).apply(y)
    # explicit zero-padded correlation
    want = torch.zeros_like(y)
    for b in range(2):
        for c in range(2):
            for i in range(5):
                for j in range(4):
                    s = 0.0
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            ii, jj = i + di, j + dj
                            if 0 <= ii < 5 and 0 <= jj < 4:
                                s += float(k[di + 1, dj + 1]) * float(y[b, c, ii, jj])
                    want[b, c, i, j] = s
    torch.testing.assert_close(out, want)
    # linear: A(a u + b v) = a A u + b A v
    v = _images(2, 2, 5, 4).flip(-1)
    torch.testing.assert_close(Blur().apply(2 * y - 3 * v), 2 * Blur().apply(y) - 3 * Blur().apply(v))


def test_mse_and_psnr_by_hand() -> None:
    a = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    b = a.clone()
    b[0, 0, 0, 0] = 0.2  # mse = 0.04 / 4 = 0.01 -> psnr = 20 dB on [0, 1]
    b[1] = 0.5  # mse = 0.25 -> psnr = 10 log10(4) = 6.0206 dB
    torch.testing.assert_close(mse(b, a), torch.tensor([0.01, 0.25], dtype=torch.float64))
    torch.testing.assert_close(psnr(b, a), torch.tensor([20.0, 10 * math.log10(4.0)], dtype=torch.float64))
    # [-1, 1] data: the same error on a doubled range is +6.02 dB
    torch.testing.assert_close(psnr(b, a, data_range=2.0) - psnr(b, a), torch.full((2,), 20 * math.log10(2.0), dtype=torch.float64))


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="odd"):
        Blur(size=4)
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption("deblur")
    with pytest.raises(ValueError, match="mask"):
        BoxMask(torch.ones(2, 2, 3, 3)).apply(torch.ones(2, 1, 3, 3))

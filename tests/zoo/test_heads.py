"""Heads: shapes with and without lead dimensions, and functional re-implementations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_zoo.heads import ImageHead, MDEQClassificationHead, PooledClassificationHead

from .test_mdeq import _gn


def _state(lead: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*lead, 4, 8, 8, generator=g, dtype=torch.float64),
        torch.randn(*lead, 8, 4, 4, generator=g, dtype=torch.float64),
    )


def test_image_head_matches_reference_and_keeps_lead_dims() -> None:
    torch.manual_seed(0)
    head = ImageHead((4, 8), out_channels=3, groups=2, activation="sigmoid").double()
    z = _state((2,))
    up = F.interpolate(z[1], size=(8, 8), mode="bilinear", align_corners=True)
    cat = torch.cat([z[0], up], dim=1)
    conv1, norm = head.mix[0], head.mix[1]
    h = F.relu(_gn(norm, F.conv2d(cat, conv1.weight, conv1.bias)))
    ref = torch.sigmoid(F.conv2d(h, head.out.weight, head.out.bias))
    out = head(z)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, ref)
    # Lead dims (B, S, ...) give the same numbers as the flattened batch.
    z5 = _state((2, 3))
    out5 = head(z5)
    flat = head(tuple(p.reshape(6, *p.shape[2:]) for p in z5))
    assert out5.shape == (2, 3, 3, 8, 8)
    torch.testing.assert_close(out5.reshape(flat.shape), flat)


def test_mdeq_classification_head_reference() -> None:
    torch.manual_seed(1)
    head = MDEQClassificationHead((4, 8), (2, 4), final_channels=8, num_classes=5, groups=2).double()
    z = _state((3,))

    def bottleneck(b: torch.nn.Module, x: Tensor) -> Tensor:
        c1, n1, _, c2, n2, _, c3, n3 = b.body
        y = F.relu(_gn(n1, F.conv2d(x, c1.weight)))
        y = F.relu(_gn(n2, F.conv2d(y, c2.weight, padding=1)))
        y = _gn(n3, F.conv2d(y, c3.weight))
        s = _gn(b.shortcut[1], F.conv2d(x, b.shortcut[0].weight))
        return F.relu(y + s)

    y0 = bottleneck(head.incre[0], z[0])  # (3, 8, 8, 8)
    d = head.down[0]
    down = F.conv2d(y0, d[0].weight, d[0].bias, stride=2, padding=1)
    y = bottleneck(head.incre[1], z[1]) + F.relu(_gn(d[1], down))
    f = head.final
    y = F.relu(_gn(f[1], F.conv2d(y, f[0].weight, f[0].bias))).mean(dim=(-2, -1))
    ref = y @ head.classifier.weight.T + head.classifier.bias
    torch.testing.assert_close(head(z), ref)
    assert head(_state((2, 3))).shape == (2, 3, 5)


def test_pooled_classification_head_reference() -> None:
    torch.manual_seed(2)
    head = PooledClassificationHead((4, 8), num_classes=3, groups=2, pool_size=4).double()
    assert head.grids == (4, 2)
    z = _state((2,))
    # 8×8 → 4×4 and 4×4 → 2×2 average pools are 2×2 block means.
    f0 = F.avg_pool2d(_gn(head.norms[0], z[0]), 2).flatten(1)
    f1 = F.avg_pool2d(_gn(head.norms[1], z[1]), 2).flatten(1)
    ref = torch.cat([f0, f1], 1) @ head.classifier.weight.T + head.classifier.bias
    torch.testing.assert_close(head(z), ref)
    assert head.classifier.in_features == 4 * 16 + 8 * 4

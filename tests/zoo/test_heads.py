"""Heads: shapes with and without lead dimensions, and functional re-implementations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_zoo.heads import (
    ImageHead,
    MDEQClassificationHead,
    PooledClassificationHead,
    TaskLinearHead,
    head_output,
)
from jiio_zoo.objectives import FewShotObjective

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


def _image_head_reference(head: ImageHead, z: tuple[Tensor, ...]) -> Tensor:
    """The head as MDEQ writes it: upsample every branch (torch's bilinear kernel), concatenate,
    1×1 conv + GN + ReLU, 1×1 conv, activation."""
    size = z[0].shape[-2:]
    ups = [z[0]] + [F.interpolate(p, size=size, mode="bilinear", align_corners=True) for p in z[1:]]
    conv1, norm = head.mix[0], head.mix[1]
    h = F.relu(_gn(norm, F.conv2d(torch.cat(ups, dim=1), conv1.weight, conv1.bias)))
    return torch.tanh(F.conv2d(h, head.out.weight, head.out.bias))


@pytest.mark.parametrize("sizes", [(8, 4, 2), (7, 4, 2), (28, 14, 7), (5, 5, 1)])
def test_image_head_reordered_merge_matches_upsample_cat_conv_with_gradients(sizes: tuple[int, ...]) -> None:
    """The head mixes each branch at its own resolution before upsampling it (the 1×1 conv
    and bilinear upsampling commute) with its own interpolation matrices: values and
    gradients (inputs and parameters) equal upsample → cat → conv, for odd sizes, a branch at
    the finest size and a 1×1 branch too."""
    torch.manual_seed(3)
    channels = (4, 8, 4)
    head = ImageHead(channels, out_channels=2, groups=2, activation="tanh", init_std=0.3).double()
    g = torch.Generator().manual_seed(4)
    z = tuple(
        torch.randn(3, c, s, s, generator=g, dtype=torch.float64, requires_grad=True)
        for c, s in zip(channels, sizes, strict=True)
    )
    probe = torch.randn(3, 2, sizes[0], sizes[0], generator=g, dtype=torch.float64)
    params = list(head.parameters())
    out, ref = head(z), _image_head_reference(head, z)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((out * probe).sum(), [*z, *params])
    want = torch.autograd.grad((ref * probe).sum(), [*z, *params])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


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


def test_task_linear_head_reference_and_lead_dims() -> None:
    torch.manual_seed(3)
    head = TaskLinearHead((4, 8), num_classes=3, groups=2, pool_size=4, dim=5, offset=2).double()
    with torch.no_grad():
        head.log_scale.fill_(0.3)
    z = _state((2, 6))  # 2 tasks of 6 images
    x = torch.randn(2, 2 + 3 * 5, dtype=torch.float64)
    f0 = F.avg_pool2d(_gn(head.norms[0], z[0].flatten(0, 1)), 2).flatten(1)
    f1 = F.avg_pool2d(_gn(head.norms[1], z[1].flatten(0, 1)), 2).flatten(1)
    emb = (torch.cat([f0, f1], 1) @ head.embed.weight.T + head.embed.bias).reshape(2, 6, 5)
    w = x[:, 2:].reshape(2, 3, 5)
    ref = torch.stack([emb[b] @ w[b].T for b in range(2)]) * torch.exp(torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(head_output(head, z, x), ref)
    torch.testing.assert_close(head(z), emb)
    assert head.input_size == 15
    with pytest.raises(ValueError, match=r"TaskLinearHead expects x of shape \(B, 17\), got \(2, 16\)"):
        head.classify(z, x[:, 1:])


def test_few_shot_objective_reads_the_classifier_in_x() -> None:
    """At ``w = 0`` every class is equally likely, so the support cross-entropy's gradient in
    ``w_k`` is ``exp(s)/S · Σ_i (1/K − [y_i = k]) e_i`` (closed form), and it is ``log K``."""
    torch.manual_seed(4)
    head = TaskLinearHead((4, 8), num_classes=3, groups=2, pool_size=2, dim=4, offset=1).double()
    z = _state((2, 5))
    y = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    support = 3
    x = torch.zeros(2, 1 + 12, dtype=torch.float64, requires_grad=True)
    loss = FewShotObjective(head, support)(z, x, y)
    torch.testing.assert_close(loss, torch.full((2,), torch.log(torch.tensor(3.0)).item(), dtype=torch.float64))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    emb = head(z)[:, :support].detach()
    onehot = F.one_hot(y[:, :support], 3).double()
    ref = torch.einsum("bsk,bsd->bkd", 1 / 3 - onehot, emb) / support  # exp(s) = 1 at init
    torch.testing.assert_close(grad[:, 1:].reshape(2, 3, 4), ref)
    assert float(grad[:, 0].abs().max()) == 0.0  # the FiLM code does not reach the head

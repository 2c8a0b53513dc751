"""Output heads ``h_θ(z)`` reading the MDEQ equilibrium (a tuple of per-branch maps).

Every head accepts branch tensors ``(B, *lead, C_i, H_i, W_i)`` and returns outputs with the same
leading dimensions (``lead`` is ``(S,)`` for meta-learning tasks, else ``()``).

- [`ImageHead`][jiio_zoo.heads.ImageHead] — MDEQ segmentation-style merge: upsample every branch to the finest
  resolution (bilinear, corners aligned), concatenate, 1×1 conv + GN + ReLU, 1×1 conv to the
  image channels, optional ``tanh``/``sigmoid`` (computed in an equivalent, cheaper order).
- [`MDEQClassificationHead`][jiio_zoo.heads.MDEQClassificationHead] — MDEQ classification head: per branch a bottleneck that
  widens to ``4·head_channels[i]``, stride-2 3×3 convs carrying the finer branches down and
  summing into the coarser ones, a 1×1 conv to ``final_channels``, global average pooling and a
  linear classifier.
- [`PooledClassificationHead`][jiio_zoo.heads.PooledClassificationHead] — per branch GN + average pooling to a
  ``ceil(pool_size/2^i)`` grid, concatenation, linear classifier (the meta-learning head).
- [`TaskLinearHead`][jiio_zoo.heads.TaskLinearHead] — the same pooled features, embedded in
  ``task_head_dim`` dimensions, classified by a linear map that is part of the optimised task
  vector ``x`` (a head that reads ``x``: see [`head_output`][jiio_zoo.heads.head_output]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core.state import State
from jiio_zoo._nn import conv, flatten_lead, group_norm, restore_lead

__all__ = [
    "Bottleneck",
    "Head",
    "ImageHead",
    "MDEQClassificationHead",
    "PooledClassificationHead",
    "TaskLinearHead",
    "head_output",
]


def _parts(z: State, n: int, name: str) -> tuple[list[Tensor], tuple[int, ...]]:
    parts = z if isinstance(z, tuple) else (z,)
    if len(parts) != n:
        raise ValueError(f"{name} expects {n} branch tensors, got {len(parts)}")
    flat, leads = zip(*(flatten_lead(p, 3) for p in parts), strict=True)
    if len(set(leads)) != 1:
        raise ValueError(f"{name}: branches have different leading shapes {sorted(set(leads))}")
    return list(flat), leads[0]


class Head(nn.Module):
    """Base class of the heads: ``forward(z) -> output`` with ``z`` the layer's state.

    A head whose output also depends on the optimised input (``reads_input = True``, e.g.
    [`TaskLinearHead`][jiio_zoo.heads.TaskLinearHead]) is called through
    [`head_output`][jiio_zoo.heads.head_output]``(head, z, x)``."""

    reads_input: bool = False

    def __call__(self, z: State) -> Tensor:
        out: Tensor = super().__call__(z)
        return out


class ImageHead(Head):
    """Merge all branches into an image ``(B, *lead, out_channels, H_0, W_0)``."""

    def __init__(
        self,
        channels: Sequence[int],
        out_channels: int,
        groups: int,
        activation: Literal["none", "tanh", "sigmoid"] = "none",
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if activation not in ("none", "tanh", "sigmoid"):
            raise ValueError(f"activation must be 'none', 'tanh' or 'sigmoid', got {activation!r}")
        self.channels = tuple(channels)
        total = sum(self.channels)
        self.activation = activation
        self.mix = nn.Sequential(
            conv(total, total, 1, bias=True, init_std=init_std),
            group_norm(groups, total),
            nn.ReLU(),
        )
        self.out = conv(total, out_channels, 1, bias=True, init_std=init_std)

    def forward(self, z: State) -> Tensor:
        # The same function as ``out(mix(cat(upsample_i(z_i))))``, computed in a cheaper order:
        # the 1×1 mixing conv is linear in each branch and commutes with the (linear, per
        # channel) bilinear upsampling, so each branch is mixed at its own resolution and then
        # upsampled, and the sum replaces the concatenation. The 1×1 convs are batched matrix
        # products and the upsampling two small matrix products (`_bilinear_aligned`):
        # on the CPU, about 3× cheaper forward and backward than upsample → cat → conv.
        parts, lead = _parts(z, len(self.channels), "ImageHead")
        n = int(parts[0].shape[0])
        size = (int(parts[0].shape[-2]), int(parts[0].shape[-1]))
        mix, norm = self._mix_conv, self.mix[1]
        weight = mix.weight.flatten(1)  # (C, ΣC_i)
        mixed: Tensor | None = None
        offset = 0
        for p, c in zip(parts, self.channels, strict=True):
            w = weight[:, offset : offset + c].expand(n, -1, -1)
            offset += c
            t = torch.bmm(w, p.flatten(2)).unflatten(2, p.shape[-2:])
            if t.shape[-2:] != size:
                t = _bilinear_aligned(t, size)
            mixed = t if mixed is None else mixed + t
        assert mixed is not None and mix.bias is not None
        h = F.relu(norm(mixed + mix.bias.view(-1, 1, 1)))
        out = self._out_conv
        assert out.bias is not None
        y = torch.bmm(out.weight.flatten(1).expand(n, -1, -1), h.flatten(2)) + out.bias.view(-1, 1)
        y = y.unflatten(2, size)
        if self.activation == "tanh":
            y = torch.tanh(y)
        elif self.activation == "sigmoid":
            y = torch.sigmoid(y)
        return restore_lead(y, lead)

    @property
    def _mix_conv(self) -> nn.Conv2d:
        conv1 = self.mix[0]
        assert isinstance(conv1, nn.Conv2d)
        return conv1

    @property
    def _out_conv(self) -> nn.Conv2d:
        assert isinstance(self.out, nn.Conv2d)
        return self.out


_INTERPOLATION: dict[tuple[int, int, torch.dtype, torch.device], Tensor] = {}


def _interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation with ``align_corners=True`` (output
    ``i`` samples input position ``i·(n_in − 1)/(n_out − 1)``), cached per size, dtype and device."""
    key = (n_in, n_out, dtype, device)
    a = _INTERPOLATION.get(key)
    if a is None:
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = torch.arange(n_out, dtype=torch.float64, device="cpu") * step
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        rows = torch.arange(n_out, device="cpu")
        m = torch.zeros(n_out, n_in, dtype=torch.float64, device="cpu")  # built on the CPU, then moved
        m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
        m.index_put_((rows, hi), frac, accumulate=True)
        a = m.to(dtype=dtype, device=device)
        _INTERPOLATION[key] = a
    return a


def _bilinear_aligned(t: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(t, size, mode="bilinear", align_corners=True)`` for ``t`` of shape
    ``(N, C, H, W)``, as ``A_H t A_Wᵀ``: bilinear interpolation is separable, and two small
    matrix products are several times cheaper on the CPU than the interpolation kernel,
    backward especially."""
    a_h = _interpolation_matrix(int(t.shape[-2]), size[0], t.dtype, t.device)
    a_w = _interpolation_matrix(int(t.shape[-1]), size[1], t.dtype, t.device)
    return torch.matmul(torch.matmul(a_h, t), a_w.mT)


class Bottleneck(nn.Module):
    """ResNet bottleneck ``C → h → h → 4h`` (1×1, 3×3, 1×1 convs with GN) plus a 1×1 + GN
    shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, groups: int, init_std: float) -> None:
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(
            conv(in_channels, planes, 1, init_std=init_std),
            group_norm(groups, planes),
            nn.ReLU(),
            conv(planes, planes, 3, init_std=init_std),
            group_norm(groups, planes),
            nn.ReLU(),
            conv(planes, out, 1, init_std=init_std),
            group_norm(groups, out),
        )
        self.shortcut = nn.Sequential(
            conv(in_channels, out, 1, init_std=init_std), group_norm(groups, out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class MDEQClassificationHead(Head):
    """MDEQ's classification head; returns logits ``(B, *lead, num_classes)``."""

    def __init__(
        self,
        channels: Sequence[int],
        head_channels: Sequence[int],
        final_channels: int,
        num_classes: int,
        groups: int,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if len(head_channels) != len(channels):
            raise ValueError(
                f"head_channels must have one entry per branch ({len(channels)}), got "
                f"{tuple(head_channels)}"
            )
        self.channels = tuple(channels)
        wide = [Bottleneck.expansion * h for h in head_channels]
        self.incre = nn.ModuleList(
            Bottleneck(c, h, groups, init_std) for c, h in zip(channels, head_channels, strict=True)
        )
        self.down = nn.ModuleList(
            nn.Sequential(
                conv(wide[i], wide[i + 1], 3, stride=2, bias=True, init_std=init_std),
                group_norm(groups, wide[i + 1]),
                nn.ReLU(),
            )
            for i in range(len(channels) - 1)
        )
        self.final = nn.Sequential(
            conv(wide[-1], final_channels, 1, bias=True, init_std=init_std),
            group_norm(groups, final_channels),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(final_channels, num_classes)

    def forward(self, z: State) -> Tensor:
        parts, lead = _parts(z, len(self.channels), "MDEQClassificationHead")
        y = self.incre[0](parts[0])
        for i, down in enumerate(self.down):
            y = self.incre[i + 1](parts[i + 1]) + down(y)
        y = self.final(y).mean(dim=(-2, -1))
        return restore_lead(self.classifier(y), lead)


class _PooledFeatures(Head):
    """Per-branch GN + average pooling to a ``ceil(pool_size / 2^i)`` square grid, concatenated:
    the features of the meta-learning heads."""

    def __init__(self, channels: Sequence[int], groups: int, pool_size: int) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.grids = tuple(max(1, math.ceil(pool_size / 2**i)) for i in range(len(self.channels)))
        self.norms = nn.ModuleList(group_norm(groups, c) for c in self.channels)
        self.features = sum(c * g * g for c, g in zip(self.channels, self.grids, strict=True))

    def pooled(self, z: State) -> tuple[Tensor, tuple[int, ...]]:
        """The ``(N, features)`` pooled features of the flattened batch, and its leading shape."""
        parts, lead = _parts(z, len(self.channels), type(self).__name__)
        feats = [
            F.adaptive_avg_pool2d(norm(p), g).flatten(1)
            for norm, p, g in zip(self.norms, parts, self.grids, strict=True)
        ]
        return torch.cat(feats, dim=1), lead


class PooledClassificationHead(_PooledFeatures):
    """Per-branch GN + average pooling to a ``ceil(pool_size / 2^i)`` square grid,
    concatenation and a linear classifier; returns logits ``(B, *lead, num_classes)``."""

    def __init__(
        self, channels: Sequence[int], num_classes: int, groups: int, pool_size: int = 1
    ) -> None:
        super().__init__(channels, groups, pool_size)
        self.classifier = nn.Linear(self.features, num_classes)

    def forward(self, z: State) -> Tensor:
        feats, lead = self.pooled(z)
        return restore_lead(self.classifier(feats), lead)


class TaskLinearHead(_PooledFeatures):
    """Pooled features of every branch (as [`PooledClassificationHead`][jiio_zoo.heads.PooledClassificationHead]) embedded
    in ``dim`` dimensions by a learned linear map; the classifier over that embedding is *task
    specific and part of the optimised input*: with ``x = [c; w]`` (``c`` the first ``offset``
    entries, the FiLM code; ``w`` the last ``num_classes · dim``), the logits of an image with
    embedding ``e`` are ``exp(s) · ⟨w_k, e⟩`` for a learned scalar ``s``.

    This is the few-shot setting's "task-specific parameters are the input" (paper B.1) carried
    to the last layer: at ``x = 0`` every logit is 0, and the first gradient step on the support
    cross-entropy moves ``w_k`` towards class ``k``'s support embeddings (minus their mean), so
    the inner problem starts from a prototype classifier and is convex in ``w`` for a fixed state.
    ``forward(z)`` returns the embeddings ``(B, *lead, dim)``; [`classify`][jiio_zoo.heads.TaskLinearHead.classify]
    the logits ``(B, *lead, num_classes)``.
    """

    reads_input = True

    def __init__(self, channels: Sequence[int], num_classes: int, groups: int, pool_size: int, dim: int,
                 offset: int) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim (the task head's embedding size) must be an int >= 1, got {dim!r}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset (where the classifier starts in x) must be an int >= 0, got {offset!r}")
        super().__init__(channels, groups, pool_size)
        self.num_classes = num_classes
        self.dim = dim
        self.offset = offset
        self.embed = nn.Linear(self.features, dim)
        self.log_scale = nn.Parameter(torch.zeros(()))

    @property
    def input_size(self) -> int:
        """Entries of ``x`` this head reads: ``num_classes · dim`` after ``offset``."""
        return self.num_classes * self.dim

    def forward(self, z: State) -> Tensor:
        feats, lead = self.pooled(z)
        return restore_lead(self.embed(feats), lead)

    def classify(self, z: State, x: Tensor) -> Tensor:
        """Logits ``(B, *lead, num_classes)`` of the state ``z`` under the task vectors ``x``
        ``(B, offset + num_classes · dim)``."""
        if x.ndim != 2 or x.shape[1] != self.offset + self.input_size:
            raise ValueError(f"TaskLinearHead expects x of shape (B, {self.offset + self.input_size}), "
                             f"got {tuple(x.shape)}")
        emb = self(z)
        w = x[:, self.offset :].reshape(x.shape[0], self.num_classes, self.dim)
        flat = emb.reshape(x.shape[0], -1, self.dim)
        logits = torch.einsum("bsd,bkd->bsk", flat, w) * self.log_scale.exp()
        return logits.reshape(*emb.shape[:-1], self.num_classes)


def head_output(head: Head, z: State, x: Tensor) -> Tensor:
    """``head(z)``, or ``head.classify(z, x)`` for a head that reads the optimised input."""
    if isinstance(head, TaskLinearHead):
        return head.classify(z, x)
    return head(z)

"""Multiscale deep equilibrium model (MDEQ, Bai et al. 2020) as a [`jiio_core.layer.Layer`][jiio_core.layer.Layer].

The cell ``f_θ(z, x)`` acts on a tuple of per-branch feature maps ``z_i`` of shape
``(B, C_i, H_i, W_i)`` with ``H_i = ceil(H / 2^i)``:

1. per branch, a residual block:

    ```
    u = ReLU(FiLM(GN(conv3×3_{C→E·C}(z_i))))       # FiLM only for meta-learning
    v = GN(drop(conv3×3_{E·C→C}(u)) + inj_i)
    b_i = GN(ReLU(v + z_i))
    ```

2. fusion into branch ``i``: ``Σ_j P_ij(b_j)`` with ``P_ii`` the identity, ``P_ij`` for a
   coarser ``j`` a 1×1 conv + GN + nearest upsampling, for a finer ``j`` ``(i−j)`` stride-2 3×3
   conv + GN steps with ReLU between them;
3. post-fusion ``GN(conv1×1(ReLU(·)))``.

Initialisation: convolutions ``N(0, init_std²)`` as MDEQ; the affine weight of the post-fusion
GroupNorm (the last operation of ``f``) starts at ``post_norm_init`` (MDEQ: 1). Because every
GroupNorm is scale invariant, that weight sets the scale of the state and hence of ``J_z f`` at
initialisation: with 1, plain damped iteration of a freshly initialised MDEQ does not converge
(spectral radius of the damped map above 1), with the default 0.25 it does (checked in
``tests/zoo/test_mdeq.py``); training may grow it.

Block convolutions and the post-fusion 1×1 convolutions carry weight normalisation; every
normalisation is a GroupNorm, so each sample is processed independently of the rest of the
batch. Variational dropout draws one per-sample, per-channel mask per solve
([`MDEQLayer.reset_dropout`][jiio_zoo.mdeq.MDEQLayer.reset_dropout], also called by `MDEQLayer.init_state` in training mode)
and keeps it for every iteration; it is the identity in eval mode.

[`MDEQLayer`][jiio_zoo.mdeq.MDEQLayer] owns an [`Injection`][jiio_zoo.injections.Injection], so ``forward(z, x)`` takes
the raw optimised input ``x`` and JIIO's vector-Jacobian products reach ``x`` through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core.layer import Layer
from jiio_core.state import State
from jiio_zoo._nn import conv, flatten_lead, group_norm, restore_lead
from jiio_zoo.injections import BranchInputs, BranchShape, Injection

__all__ = [
    "DownsamplePath",
    "MDEQCell",
    "MDEQLayer",
    "ResidualBlock",
    "UpsamplePath",
    "VariationalDropout2d",
    "branch_shapes",
]


def branch_shapes(
    channels: Sequence[int], image_size: int | tuple[int, int]
) -> tuple[BranchShape, ...]:
    """``(C_i, H_i, W_i)`` of each branch for a ``image_size`` input (sides halved, rounded up)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    shapes = []
    for c in channels:
        shapes.append((int(c), h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return tuple(shapes)


class VariationalDropout2d(nn.Module):
    """Dropout with one mask per sample and channel, fixed until [`reset`][jiio_zoo.mdeq.VariationalDropout2d.reset] draws another.

    Active only in training mode with ``p > 0``; the kept channels are scaled by ``1/(1−p)``.
    """

    def __init__(self, channels: int, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p!r}")
        self.channels = channels
        self.p = float(p)
        self.mask: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    def reset(
        self, batch: int, like: Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Draw a new ``(batch, C, 1, 1)`` mask with the dtype and device of ``like``."""
        keep = torch.rand(
            batch, self.channels, 1, 1, generator=generator, device=like.device, dtype=like.dtype
        ) >= self.p
        self.mask = keep.to(like.dtype) / (1.0 - self.p)

    def clear(self) -> None:
        self.mask = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        if self.mask is None:
            raise RuntimeError(
                "variational dropout is active (training mode, p > 0) but no mask was drawn: "
                "call layer.init_state(x) or layer.reset_dropout(batch) before iterating"
            )
        if self.mask.shape[0] != x.shape[0]:
            raise ValueError(
                f"dropout mask was drawn for batch {self.mask.shape[0]} but the state has batch "
                f"{x.shape[0]}; call reset_dropout with the new batch size"
            )
        return x * self.mask


class ResidualBlock(nn.Module):
    """One branch's residual block (see the module docstring), with optional FiLM."""

    def __init__(
        self,
        channels: int,
        expansion: int,
        groups: int,
        dropout: float,
        weight_norm: bool,
        init_std: float,
    ) -> None:
        super().__init__()
        wide = expansion * channels
        self.channels = channels
        self.wide = wide
        self.conv1 = conv(channels, wide, 3, init_std=init_std, weight_norm=weight_norm)
        self.gn1 = group_norm(groups, wide)
        self.conv2 = conv(wide, channels, 3, init_std=init_std, weight_norm=weight_norm)
        self.drop = VariationalDropout2d(channels, dropout)
        self.gn2 = group_norm(groups, channels)
        self.gn3 = group_norm(groups, channels)

    def forward(self, z: Tensor, injection: Tensor, film: Tensor | None = None) -> Tensor:
        u = self.gn1(self.conv1(z))
        if film is not None:
            scale, shift = film.chunk(2, dim=1)
            u = u * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
        u = F.relu(u)
        v = self.gn2(self.drop(self.conv2(u)) + injection)
        out: Tensor = self.gn3(F.relu(v + z))
        return out

    def __call__(self, z: Tensor, injection: Tensor, film: Tensor | None = None) -> Tensor:
        out: Tensor = super().__call__(z, injection, film)
        return out


class UpsamplePath(nn.Module):
    """Coarser branch ``j`` → finer branch ``i``: 1×1 conv + GN, then nearest upsampling."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, init_std: float) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels, 1, init_std=init_std)
        self.gn = group_norm(groups, out_channels)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.gn(self.conv(x)), size=size, mode="nearest")


class DownsamplePath(nn.Sequential):
    """Finer branch ``j`` → coarser branch ``i``: ``i−j`` stride-2 3×3 conv + GN steps with ReLU
    between them (intermediate steps keep ``C_j`` channels, the last one outputs ``C_i``)."""

    def __init__(
        self, in_channels: int, out_channels: int, steps: int, groups: int, init_std: float
    ) -> None:
        layers: list[nn.Module] = []
        for k in range(steps):
            last = k == steps - 1
            out = out_channels if last else in_channels
            layers += [
                conv(in_channels, out, 3, stride=2, init_std=init_std),
                group_norm(groups, out),
            ]
            if not last:
                layers.append(nn.ReLU())
        super().__init__(*layers)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        del size
        for layer in self:
            x = layer(x)
        return x


class MDEQCell(nn.Module):
    """The MDEQ transformation on per-branch maps given per-branch injections.

    ``forward(z, inputs)`` with ``z[i]`` and ``inputs.maps[i]`` of shape ``(N, C_i, H_i, W_i)``
    and ``inputs.film`` ``None`` or per branch ``(N, 2·E·C_i)``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        *,
        expansion: int = 5,
        groups: int = 8,
        dropout: float = 0.0,
        weight_norm: bool = True,
        init_std: float = 0.01,
        post_norm_init: float = 0.25,
    ) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"channels must be a non-empty sequence of ints >= 1, got {channels!r}"
            )
        self.expansion = expansion
        n = len(self.channels)
        self.blocks = nn.ModuleList(
            ResidualBlock(c, expansion, groups, dropout, weight_norm, init_std)
            for c in self.channels
        )
        fuse: list[nn.ModuleList] = []
        for i in range(n):
            row: list[nn.Module] = []
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(UpsamplePath(self.channels[j], self.channels[i], groups, init_std))
                else:
                    row.append(
                        DownsamplePath(self.channels[j], self.channels[i], i - j, groups, init_std)
                    )
            fuse.append(nn.ModuleList(row))
        self.fuse = nn.ModuleList(fuse)
        self.post = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                conv(c, c, 1, init_std=init_std, weight_norm=weight_norm),
                group_norm(groups, c),
            )
            for c in self.channels
        )
        with torch.no_grad():
            for seq in self.post:
                assert isinstance(seq, nn.Sequential)
                norm = seq[2]
                assert isinstance(norm, nn.GroupNorm)
                norm.weight.fill_(post_norm_init)

    @property
    def num_branches(self) -> int:
        return len(self.channels)

    def dropouts(self) -> list[VariationalDropout2d]:
        return [m for m in self.modules() if isinstance(m, VariationalDropout2d)]

    def forward(self, z: Sequence[Tensor], inputs: BranchInputs) -> tuple[Tensor, ...]:
        n = self.num_branches
        film = inputs.film
        blocks = [
            block(z[i], inputs.maps[i], None if film is None else film[i])
            for i, block in enumerate(self.blocks)
        ]
        out = []
        for i in range(n):
            size = (int(blocks[i].shape[-2]), int(blocks[i].shape[-1]))
            total = blocks[i]
            row = self.fuse[i]
            assert isinstance(row, nn.ModuleList)
            for j in range(n):
                if j != i:
                    total = total + row[j](blocks[j], size)
            out.append(self.post[i](total))
        return tuple(out)


class MDEQLayer(Layer):
    """MDEQ as a JIIO layer: ``forward(z, x)`` computes ``f_θ(z, injection(x))``.

    ``z`` is a tuple of per-branch maps ``(B, *lead, C_i, H_i, W_i)`` (``lead`` is ``()`` except
    for [`FiLMInjection`][jiio_zoo.injections.FiLMInjection], where it is ``(S,)``: ``S`` context images
    per task). `init_state` returns zeros and, in training mode with dropout, draws new
    dropout masks. Fixed per-sample conditioning (a clean image, context images) is the solve's
    ``context`` ([`jiio_core.context`][jiio_core.context]): ``forward`` and ``init_state`` take it as an
    argument and hand it to the injection on every call; the layer stores none.
    """

    def __init__(self, cell: MDEQCell, injection: Injection) -> None:
        super().__init__()
        if tuple(s[0] for s in injection.shapes) != cell.channels:
            raise ValueError(
                f"injection branch channels {tuple(s[0] for s in injection.shapes)} do not match "
                f"the cell's channels {cell.channels}"
            )
        self.cell = cell
        self.injection = injection

    @property
    def shapes(self) -> tuple[BranchShape, ...]:
        """``(C_i, H_i, W_i)`` of each branch."""
        return self.injection.shapes

    def reset_dropout(
        self, batch: int, like: Tensor | None = None, generator: torch.Generator | None = None
    ) -> None:
        """Draw new variational-dropout masks for ``batch`` samples (flattened lead dims
        included); a no-op for dropout rate 0."""
        if like is None:
            like = next(self.parameters())
        for d in self.cell.dropouts():
            if d.p > 0.0:
                d.reset(batch, like, generator)

    def init_state(self, x: Tensor, context: Any = None) -> tuple[Tensor, ...]:
        lead = (int(x.shape[0]), *self.injection.lead_shape(x, context))
        if self.training:
            self.reset_dropout(math.prod(lead), like=x)
        return tuple(
            torch.zeros(*lead, *s, dtype=x.dtype, device=x.device) for s in self.shapes
        )

    def forward(self, z: State, x: Tensor, context: Any = None) -> tuple[Tensor, ...]:
        parts = z if isinstance(z, tuple) else (z,)
        if len(parts) != len(self.shapes):
            raise ValueError(
                f"MDEQLayer expects a state of {len(self.shapes)} branch tensors, got {len(parts)}"
            )
        inputs = self.injection(x, context)
        flat_z: list[Tensor] = []
        flat_maps: list[Tensor] = []
        lead: tuple[int, ...] = ()
        for i, (p, m, s) in enumerate(zip(parts, inputs.maps, self.shapes, strict=True)):
            if tuple(p.shape[-3:]) != s or p.shape[0] != x.shape[0]:
                raise ValueError(
                    f"state branch {i} must have shape (B={x.shape[0]}, ..., "
                    f"{', '.join(map(str, s))}), got {tuple(p.shape)}"
                )
            if m.shape != p.shape:
                raise ValueError(
                    f"injection branch {i} has shape {tuple(m.shape)} but the state has "
                    f"{tuple(p.shape)}"
                )
            fz, lead = flatten_lead(p, 3)
            flat_z.append(fz)
            flat_maps.append(flatten_lead(m, 3)[0])
        film = inputs.film
        group = math.prod(lead[1:])
        if film is not None and group > 1:
            film = tuple(f.repeat_interleave(group, dim=0) for f in film)
        out = self.cell(flat_z, BranchInputs(tuple(flat_maps), film))
        return tuple(restore_lead(o, lead) for o in out)

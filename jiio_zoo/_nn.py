"""Small building blocks shared by the zoo modules (convolutions, GroupNorm, lead dimensions)."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


def conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    bias: bool = False,
    init_std: float | None = None,
    weight_norm: bool = False,
) -> nn.Module:
    """A ``kernel×kernel`` convolution with "same" padding (``kernel // 2``).

    ``init_std`` draws the weight (and bias) from ``N(0, init_std²)`` as MDEQ does; ``None``
    keeps PyTorch's default. ``weight_norm`` reparametrises the weight as ``g · v/‖v‖`` per
    output channel (``torch.nn.utils.parametrizations.weight_norm``, ``dim=0``), initialised so
    that the effective weight is unchanged.
    """
    layer = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=bias
    )
    if init_std is not None:
        nn.init.normal_(layer.weight, 0.0, init_std)
        if layer.bias is not None:
            nn.init.normal_(layer.bias, 0.0, init_std)
    if weight_norm:
        wrapped: nn.Module = _weight_norm(layer, name="weight", dim=0)
        return wrapped
    return layer


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """Affine GroupNorm; ``groups`` must divide ``channels`` (checked with a clear message)."""
    if channels % groups:
        raise ValueError(
            f"GroupNorm groups={groups} must divide the number of channels, got {channels}"
        )
    return nn.GroupNorm(groups, channels, affine=True)


def flatten_lead(t: Tensor, trailing: int) -> tuple[Tensor, tuple[int, ...]]:
    """Merge all dimensions before the last ``trailing`` ones into one batch dimension.

    Returns the reshaped tensor and the merged leading shape (to restore with
    `restore_lead`).
    """
    if t.ndim < trailing + 1:
        raise ValueError(
            f"expected a tensor with at least {trailing + 1} dims (batch first), "
            f"got shape {tuple(t.shape)}"
        )
    lead = tuple(t.shape[: t.ndim - trailing])
    return t.reshape(math.prod(lead), *t.shape[t.ndim - trailing :]), lead


def restore_lead(t: Tensor, lead: tuple[int, ...]) -> Tensor:
    """Inverse of `flatten_lead` for a tensor whose first dimension is ``prod(lead)``."""
    return t.reshape(*lead, *t.shape[1:])

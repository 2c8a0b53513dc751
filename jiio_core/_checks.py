"""Input validation shared by the public entry points.

Every error names the argument, the offending value (or a summary of it) and what was expected.
These checks run once per call, outside solver loops, so their host syncs are acceptable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def check_tensor(
    name: str,
    value: object,
    *,
    ndim_min: int | None = None,
    ndim: int | None = None,
    batch: int | None = None,
    floating: bool = True,
    like: Tensor | None = None,
    finite: bool = True,
) -> Tensor:
    """Validate ``value`` as a tensor and return it.

    ``like`` requires the same dtype and device as that tensor; ``batch`` requires the
    leading dimension to equal it.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if ndim_min is not None and value.ndim < ndim_min:
        raise ValueError(
            f"{name} must have at least {ndim_min} dimension(s) (batch first), got shape {tuple(value.shape)}"
        )
    if batch is not None and (value.ndim == 0 or value.shape[0] != batch):
        raise ValueError(
            f"{name} must have batch size {batch} in dimension 0, got shape {tuple(value.shape)}"
        )
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if like is not None:
        if value.dtype != like.dtype:
            raise TypeError(f"{name} must have dtype {like.dtype} (like the batch), got {value.dtype}")
        if value.device != like.device:
            raise ValueError(f"{name} must be on device {like.device} (like the batch), got {value.device}")
    if finite and value.is_floating_point():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(
                f"{name} must be finite, but it holds {count} NaN/Inf value(s) (shape {tuple(value.shape)})"
            )
    return value


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_unit_interval(name: str, value: float, *, closed_low: bool = False) -> None:
    low_ok = value >= 0 if closed_low else value > 0
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not low_ok or value > 1:
        interval = "[0, 1]" if closed_low else "(0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_same_batch(names: Sequence[str], tensors: Sequence[Tensor]) -> int:
    sizes = {n: int(t.shape[0]) for n, t in zip(names, tensors, strict=True)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes disagree: {sizes}")
    return next(iter(sizes.values()))


def finite_rows(t: Tensor) -> Tensor:
    """``(B,)`` mask of the rows of a ``(B, N)`` tensor holding no NaN/Inf, in one pass: a row's
    sum is non-finite exactly when the row holds NaN or ±Inf (or its finite values overflow
    the dtype, which the divergence tests would flag anyway)."""
    out: Tensor = torch.isfinite(t.detach().sum(dim=1))
    return out

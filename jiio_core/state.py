"""Structured states (a tensor or a tuple of tensors, batch first) packed to ``(B, N)``.

Multiscale DEQs carry one feature map per resolution; the solvers work on one flat vector per
sample. [`StateSpec`][jiio_core.state.StateSpec] remembers the shapes so that a packed state can be unpacked again.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import attrs
import torch
from torch import Tensor

State: TypeAlias = Tensor | tuple[Tensor, ...]
"""A layer's hidden state: one batch-first tensor, or a tuple of them (e.g. multiscale)."""


@attrs.frozen
class StateSpec:
    """Shapes (without the batch dimension) of the parts of a structured state."""

    shapes: tuple[tuple[int, ...], ...]
    is_tuple: bool

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """Number of scalars per sample once packed."""
        return sum(self.sizes)

    @classmethod
    def of(cls, state: State) -> StateSpec:
        parts = state if isinstance(state, tuple) else (state,)
        if len(parts) == 0:
            raise ValueError("state must hold at least one tensor, got an empty tuple")
        for i, p in enumerate(parts):
            if not isinstance(p, Tensor):
                raise TypeError(f"state part {i} must be a torch.Tensor, got {type(p).__name__}")
        batch = parts[0].shape[0] if parts[0].ndim > 0 else None
        for i, p in enumerate(parts):
            if p.ndim < 2 or p.shape[0] != batch:
                raise ValueError(
                    f"state part {i} must be batch first with at least 2 dims and batch {batch}, "
                    f"got shape {tuple(p.shape)}"
                )
        return cls(shapes=tuple(tuple(p.shape[1:]) for p in parts), is_tuple=isinstance(state, tuple))

    def pack(self, state: State) -> Tensor:
        """Flatten ``state`` to ``(B, numel)``."""
        parts = state if isinstance(state, tuple) else (state,)
        if len(parts) != len(self.shapes):
            raise ValueError(f"state has {len(parts)} parts, expected {len(self.shapes)}")
        for i, (p, s) in enumerate(zip(parts, self.shapes, strict=True)):
            if tuple(p.shape[1:]) != s:
                raise ValueError(
                    f"state part {i} has shape {tuple(p.shape)}, expected (B, {', '.join(map(str, s))})"
                )
        batches = [int(p.shape[0]) for p in parts]
        if len(set(batches)) > 1:
            raise ValueError(f"state parts must share the batch size, got batch sizes {batches}")
        flat = [p.reshape(p.shape[0], -1) for p in parts]
        return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)

    def unpack(self, flat: Tensor) -> State:
        """Inverse of [`pack`][jiio_core.state.StateSpec.pack] (views where possible)."""
        if flat.ndim != 2 or flat.shape[1] != self.numel:
            raise ValueError(f"packed state must have shape (B, {self.numel}), got {tuple(flat.shape)}")
        batch = flat.shape[0]
        chunks = torch.split(flat, list(self.sizes), dim=1)
        parts = tuple(c.reshape(batch, *s) for c, s in zip(chunks, self.shapes, strict=True))
        return parts if self.is_tuple else parts[0]


def pack(state: State) -> tuple[Tensor, StateSpec]:
    """Pack a structured state and return it with its spec."""
    spec = StateSpec.of(state)
    return spec.pack(state), spec

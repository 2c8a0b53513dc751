"""The Jacobian penalty's randomness in the trainers: seeded by ``(seed, step)`` and split by
rows of the global batch, so resumed and data-parallel runs draw what one uninterrupted process
draws (paper A.1: Hutchinson estimate of ``‖∂f/∂z‖_F² / N``)."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core import Layer, State, StateSpec

__all__ = ["PenaltyDraw", "penalty_seed"]


def penalty_seed(seed: int, step: int) -> int:
    """The 63-bit seed of step ``step``'s Jacobian-penalty randomness in a run seeded ``seed``:
    a function of ``(seed, step)`` alone (resumed and data-parallel runs draw what a single
    uninterrupted run draws; torch's global stream is left alone)."""
    digest = hashlib.blake2b(f"jiio-jacobian:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@attrs.frozen
class PenaltyDraw:
    """The randomness of one step's Jacobian penalty on this shard: the step's ``seed``, and the
    shard's rows ``[start, start + B)`` of a global batch of ``total`` samples (``None``: the
    batch is the whole global batch).

    At an equilibrium ([`penalty`][jiio_tasks.penalty.PenaltyDraw.penalty]) the probes are drawn for the whole global batch from a
    generator seeded ``seed`` and this shard takes its rows, so a sample's estimate does not
    depend on the split; in a single process the draws are exactly those of
    ``hutchinson_jacobian_norm(layer, z, x, probes=probes, generator=Generator().manual_seed(seed))``.
    A joint solve's random iterate ([`joint_generator`][jiio_tasks.penalty.PenaltyDraw.joint_generator]) is drawn per shard."""

    seed: int
    start: int = 0
    total: int | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ValueError(f"PenaltyDraw.seed must be an int in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.start, int) or isinstance(self.start, bool) or self.start < 0:
            raise ValueError(f"PenaltyDraw.start must be an int >= 0, got {self.start!r}")
        if self.total is not None and (not isinstance(self.total, int) or isinstance(self.total, bool)
                                       or self.total <= self.start):
            raise ValueError(f"PenaltyDraw.total must be None or an int > start={self.start}, got {self.total!r}")

    @classmethod
    def from_global_stream(cls) -> PenaltyDraw:
        """A draw seeded from torch's global stream (for calls outside a trainer)."""
        return cls(int(torch.randint(0, 2**62, ())))

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator on ``device`` seeded ``seed`` (the equilibrium probes)."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def joint_generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator on ``device`` for a joint solve's random iterate and probes on this
        shard (seeded ``seed + start``: ``seed`` itself in a single process)."""
        return torch.Generator(device=device).manual_seed((self.seed + self.start) % 2**63)

    def penalty(self, layer: Layer, z: State, x: Tensor, *, probes: int, context: Any = None) -> Tensor:
        """Per-sample Hutchinson estimate of ``‖∂f(z, x)/∂z‖_F² / N`` (``z``, ``x`` constants;
        differentiable in the layer's parameters when grad mode is on), with this shard's rows
        of the global batch's probes. ``context``: the batch's context, passed to the layer as
        by the solves ([`jiio_core.context`][jiio_core.context])."""
        if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
            raise ValueError(f"probes must be an int >= 1, got {probes!r}")
        spec = StateSpec.of(z)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            zf = spec.pack(z).detach().requires_grad_()
            batch = zf.shape[0]
            total = batch if self.total is None else self.total
            if self.start + batch > total:
                raise ValueError(f"a shard of {batch} samples from row {self.start} does not fit a "
                                 f"global batch of {total}")
            fz = spec.pack(layer(spec.unpack(zf), x.detach(), context))
            gen = self.generator(fz.device)
            acc = torch.zeros(batch, dtype=zf.dtype, device=zf.device)
            for i in range(probes):
                eps = torch.randn((total, fz.shape[1]), dtype=fz.dtype, device=fz.device, generator=gen)
                (vjp,) = torch.autograd.grad(fz, zf, eps[self.start : self.start + batch],
                                             create_graph=create_graph,
                                             retain_graph=i < probes - 1 or create_graph)
                acc = acc + (vjp * vjp).sum(1)
        return acc / (probes * spec.numel)

"""Amortised warm starts: a per-example cache of the latents a training run has solved for.

Training a decoder through JIIO solves every image's latent from ``x = 0`` at every step,
although the same image's solution from its previous visit is usually a far better start
(the decoder has moved only a little since). [`LatentCache`][jiio_tasks.imaging.warmstart.LatentCache] keeps, for every example of
the training split (keyed by its index in the split), the latent ``x*`` of its last solve and
the step it was solved at; the next solve of that example starts there
(``JointProblem.solve(y, x0)``). An entry older than ``max_age`` steps is not used (the
decoder may have moved too far for it to help); ``None`` keeps entries forever.

With augmentation (random flips of the training faces) an entry is the latent of the view
drawn last time, not necessarily of this view: still a start, which the solve refines.

With ``state_size`` (``--warm-start-state``) the cache also keeps each example's equilibrium
state ``z*`` (packed, ``state_size`` numbers), and the next solve starts ``z`` there too instead
of at the layer's initial state: without it the DEQ block starts from scratch even when ``x``
starts at its old optimum.

The cache is part of the run's state (saved and restored with it, so a killed and resumed run
is bit-identical to an uninterrupted one) and identical on every rank of a data-parallel run
(every rank stores the whole global batch's latents, gathered from the shards).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core.validators import int_in, optional

__all__ = ["LatentCache"]


@attrs.define
class LatentCache:
    """Latents of ``size`` training examples, each of shape ``x_shape``, with the step each was
    stored at (``-1``: never)."""

    size: int = attrs.field(validator=int_in(1))
    x_shape: tuple[int, ...]
    max_age: int | None = attrs.field(default=None, validator=optional(int_in(0)))
    dtype: torch.dtype = torch.float32
    state_size: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    """Also keep each example's packed equilibrium state (this many numbers); ``None``: ``x`` only."""
    x: Tensor = attrs.field(init=False)
    z: Tensor | None = attrs.field(init=False)
    stamp: Tensor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # on the CPU whatever the model's device: the cache can be large; rows move per batch
        self.x = torch.zeros(self.size, *self.x_shape, dtype=self.dtype, device="cpu")
        self.z = (None if self.state_size is None
                  else torch.zeros(self.size, self.state_size, dtype=self.dtype, device="cpu"))
        self.stamp = torch.full((self.size,), -1, dtype=torch.long, device="cpu")

    def _check(self, index: Tensor) -> Tensor:
        if index.ndim != 1 or index.dtype != torch.long:
            raise ValueError(f"index must be a 1-D int64 tensor, got shape {tuple(index.shape)} {index.dtype}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.size):
            raise ValueError(f"index must lie in [0, {self.size}), got values in "
                             f"[{int(index.min())}, {int(index.max())}]")
        return index.cpu()

    def lookup(self, index: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Starting latents ``(B, *x_shape)`` for the examples ``index`` at ``step`` (zeros
        where there is no usable entry) and the ``(B,)`` mask of the usable entries."""
        index = self._check(index)
        stamp = self.stamp[index]
        hit = stamp >= 0
        if self.max_age is not None:
            hit &= (step - stamp) <= self.max_age
        x0 = self.x[index] * hit.reshape(-1, *([1] * len(self.x_shape))).to(self.dtype)
        return x0, hit

    def lookup_state(self, index: Tensor, step: int) -> Tensor:
        """Cached packed states ``(B, state_size)`` for ``index`` (zeros where
        [`lookup`][jiio_tasks.imaging.warmstart.LatentCache.lookup] finds no usable entry: use the mask it returns)."""
        if self.z is None:
            raise ValueError("this cache keeps no states (state_size=None)")
        index = self._check(index)
        _, hit = self.lookup(index, step)
        return self.z[index] * hit.unsqueeze(1).to(self.dtype)

    def store(self, index: Tensor, x: Tensor, step: int, z: Tensor | None = None) -> None:
        """Remember ``x`` (``(B, *x_shape)``, detached, moved to the CPU) and, for a cache with
        states, the packed states ``z`` ``(B, state_size)``, for ``index`` at ``step``; a repeated
        index keeps its last row."""
        index = self._check(index)
        if tuple(x.shape) != (index.numel(), *self.x_shape):
            raise ValueError(f"x must have shape {(index.numel(), *self.x_shape)}, got {tuple(x.shape)}")
        if (z is None) != (self.z is None):
            raise ValueError("store needs z (B, state_size) exactly when the cache keeps states "
                             f"(state_size={self.state_size}), got {'no z' if z is None else 'a z'}")
        if self.z is not None and z is not None:
            if tuple(z.shape) != (index.numel(), self.state_size):
                raise ValueError(f"z must have shape {(index.numel(), self.state_size)}, got {tuple(z.shape)}")
            self.z[index] = z.detach().to("cpu", self.dtype)
        self.x[index] = x.detach().to("cpu", self.dtype)
        self.stamp[index] = step

    def state(self) -> dict[str, Any]:
        """Plain tensors for the run's state (read back by `restore`)."""
        out = {"x": self.x.clone(), "stamp": self.stamp.clone()}
        if self.z is not None:
            out["z"] = self.z.clone()
        return out

    def restore(self, state: Mapping[str, Any]) -> None:
        x, stamp = state["x"], state["stamp"]
        if tuple(x.shape) != tuple(self.x.shape) or tuple(stamp.shape) != tuple(self.stamp.shape):
            raise ValueError(f"the saved latent cache has shape {tuple(x.shape)}, this run's is {tuple(self.x.shape)} "
                             "(another data set or model?)")
        z = state.get("z")
        if (z is None) != (self.z is None) or (z is not None and self.z is not None and z.shape != self.z.shape):
            raise ValueError("the saved latent cache " + ("keeps no states" if z is None else
                             f"keeps states of shape {tuple(z.shape)}") + ", this run's "
                             + ("keeps none" if self.z is None else f"keeps {tuple(self.z.shape)}"))
        self.x = x.to(self.dtype).clone()
        self.z = None if z is None else z.to(self.dtype).clone()
        self.stamp = stamp.to(torch.long).clone()

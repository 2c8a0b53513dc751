"""The DEQ cell ``f_θ(z, x)``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from jiio_core.state import State


class Layer(nn.Module, ABC):
    """An input-injected equilibrium layer ``z ↦ f_θ(z, x)``.

    Subclasses implement :meth:`forward` and :meth:`init_state`. The state may be a single
    batch-first tensor or a tuple of them (multiscale); it must keep its shapes under
    ``forward``. Each sample must be processed independently of the others in the batch
    (no batch norm), since the inner problems are solved per sample.
    """

    @abstractmethod
    def forward(self, z: State, x: Tensor) -> State:
        """One application of the cell: returns ``f_θ(z, x)`` with the shapes of ``z``."""

    @abstractmethod
    def init_state(self, x: Tensor) -> State:
        """The initial state ``z₀`` for input ``x`` (usually zeros)."""

    def __call__(self, z: State, x: Tensor) -> State:  # typed wrapper around nn.Module.__call__
        out: State = super().__call__(z, x)
        return out

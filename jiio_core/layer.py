"""The DEQ cell ``f_θ(z, x)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from jiio_core.context import accepts_context, missing_context, requires_context
from jiio_core.state import State


class Layer(nn.Module, ABC):
    """An input-injected equilibrium layer ``z ↦ f_θ(z, x)``.

    Subclasses implement [`forward`][jiio_core.layer.Layer.forward] and [`init_state`][jiio_core.layer.Layer.init_state]. The state may be a single
    batch-first tensor or a tuple of them (multiscale); it must keep its shapes under
    ``forward``. Each sample must be processed independently of the others in the batch
    (no batch norm), since the inner problems are solved per sample.

    Per-batch context ([`jiio_core.context`][jiio_core.context]): a layer conditioned on fixed per-batch data
    (a clean image, a task's images) declares a ``context`` parameter, e.g.
    ``forward(self, z, x, context=None)`` (and ``init_state(self, x, context=None)`` if the
    initial state depends on it); the solves then pass the ``context=`` they were given on
    every call. A layer that declares none is called as ``forward(z, x)``, unchanged.
    """

    @abstractmethod
    def forward(self, z: State, x: Tensor) -> State:
        """One application of the cell: returns ``f_θ(z, x)`` with the shapes of ``z``."""

    @abstractmethod
    def init_state(self, x: Tensor) -> State:
        """The initial state ``z₀`` for input ``x`` (usually zeros)."""

    @property
    def takes_context(self) -> bool:
        """Whether [`forward`][jiio_core.layer.Layer.forward] declares a ``context`` parameter."""
        return accepts_context(self.forward)

    def __call__(self, z: State, x: Tensor, context: Any = None) -> State:
        """``forward(z, x)``, with ``context=context`` if ``forward`` declares it (else the
        context is not passed)."""
        if context is None and requires_context(self.forward):
            raise missing_context(f"{type(self).__name__}.forward")
        if context is None or not self.takes_context:
            out: State = super().__call__(z, x)
        else:
            out = super().__call__(z, x, context=context)
        return out

    def initial_state(self, x: Tensor, context: Any = None) -> State:
        """``init_state(x)``, with ``context=context`` if ``init_state`` declares it."""
        if context is None and requires_context(self.init_state):
            raise missing_context(f"{type(self).__name__}.init_state")
        if context is None or not accepts_context(self.init_state):
            return self.init_state(x)
        init: Any = self.init_state
        out: State = init(x, context=context)
        return out

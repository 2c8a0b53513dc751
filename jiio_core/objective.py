"""The inner loss ``ℓ(z, x, y)`` minimised over ``x``."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from jiio_core.context import accepts_context, missing_context, requires_context
from jiio_core.prox import NonSmooth
from jiio_core.state import State


class Relation(enum.Enum):
    """How the outer (training) loss relates to the inner loss ``ℓ``.

    ``SAME``: the outer loss is ``ℓ`` itself (generative modelling, eq. 20).
    ``NEGATED``: the outer loss is ``-ℓ`` (adversarial training, eq. 26: the adversary minimises
    ``-CE``, training minimises ``CE``).
    ``OTHER``: any other outer loss (supervised inverse problems, meta-learning); only the
    ``ImplicitKKT``, ``FixedInput`` and ``Unrolled`` gradients apply.
    """

    SAME = "same"
    NEGATED = "negated"
    OTHER = "other"

    @property
    def sign(self) -> float:
        """Outer loss = ``sign · ℓ`` for ``SAME``/``NEGATED``."""
        if self is Relation.OTHER:
            raise ValueError("Relation.OTHER has no sign: the outer loss is not ±ℓ")
        return 1.0 if self is Relation.SAME else -1.0


class InnerObjective(nn.Module, ABC):
    """Per-sample inner loss, to be minimised over the input ``x``.

    Subclass and implement [`forward`][jiio_core.objective.InnerObjective.forward] returning a ``(B,)`` tensor: the loss of each
    sample, which must depend only on that sample's ``z``, ``x`` and ``y``. The objective is an
    ``nn.Module`` so that it can own trainable parts (an output head ``h_θ``). Set the class
    attribute ``relation`` to say how the training loss relates to it.

    Per-batch context ([`jiio_core.context`][jiio_core.context]): an objective that reads fixed per-batch data
    (a measurement operator) declares a ``context`` parameter, ``forward(self, z, x, y,
    context=None)``, and receives the solve's ``context=``; one that declares none is called as
    ``forward(z, x, y)``, unchanged.

    Non-smooth part ([`jiio_core.prox`][jiio_core.prox]): an objective whose input term is non-smooth (an
    L1 penalty, a total-variation prior, a sign constraint) returns it from [`nonsmooth`][jiio_core.objective.InnerObjective.nonsmooth]
    instead of writing it into [`forward`][jiio_core.objective.InnerObjective.forward]; the solver then takes proximal-gradient x-steps
    on ``s·ℓ + g``.
    """

    relation: Relation = Relation.SAME

    @abstractmethod
    def forward(self, z: State, x: Tensor, y: Any) -> Tensor:
        """Per-sample loss, shape ``(B,)``."""

    def loss_scale(self, y: Any) -> float | Tensor:
        """How many terms [`forward`][jiio_core.objective.InnerObjective.forward] averages over per sample (a float, or a ``(B,)``
        tensor): ``ℓ · loss_scale(y)`` is the loss written as a *sum* over its terms.

        The joint solver measures the x-step and the μ- and x-blocks of the KKT residual on
        that sum, so a damping ``α_x`` means the same whether a loss averages or sums (the
        paper's code summed over pixels: a per-pixel mean over ``D`` values declares ``D``).
        The default, ``1.0``, treats the loss as a sum already.
        """
        del y
        return 1.0

    def nonsmooth(self) -> NonSmooth | None:
        """The non-smooth part ``g(x)`` of the objective, with its proximal operator, or
        ``None`` (the default: the objective is [`forward`][jiio_core.objective.InnerObjective.forward] alone).

        ``g`` is in the units of the *summed* loss ``loss_scale(y)·ℓ`` (for a loss that is a sum,
        ``L1(0.1)`` adds ``0.1·‖x‖₁`` to it); the solve minimises ``s·ℓ + g`` over the
        constraint set, reports ``ℓ + g/s`` as its cost, and keeps ``ℓ`` alone in
        ``JointSolution.loss`` (``total_loss`` adds ``g/s``). It must not depend on ``θ``.
        """
        return None

    @property
    def takes_context(self) -> bool:
        """Whether [`forward`][jiio_core.objective.InnerObjective.forward] declares a ``context`` parameter."""
        return accepts_context(self.forward)

    def __call__(self, z: State, x: Tensor, y: Any, context: Any = None) -> Tensor:
        """``forward(z, x, y)``, with ``context=context`` if ``forward`` declares it."""
        if context is None and requires_context(self.forward):
            raise missing_context(f"{type(self).__name__}.forward")
        if context is None or not self.takes_context:
            out: Tensor = super().__call__(z, x, y)
        else:
            out = super().__call__(z, x, y, context=context)
        return out

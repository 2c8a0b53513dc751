"""Inner objectives of the generative and inverse-problem tasks (eq. 20, 22, 24).

* Generation (eq. 20): ``ℓ = mean((h(z) − y)²)``, outer loss = inner loss (``Relation.SAME``),
  so [`jiio_core.AdjointShortcut`][jiio_core.outer.AdjointShortcut] gives the exact gradient.
* Unsupervised inverse problems (eq. 22): ``ℓ = mean((ŷ − A h(z))²)`` for a measurement ``A``.
* Supervised inverse problems (eq. 24): the same inner loss, but the training loss compares
  ``h(z*)`` with the *clean* image, so the relation is ``OTHER`` and the exact gradient is
  [`jiio_core.ImplicitKKT`][jiio_core.outer.ImplicitKKT] (the shortcut is available as a biased, measured option).

Losses are means over pixels per sample (not sums), so ``μ*`` is the adjoint of a per-sample
mean loss; each declares the pixel count as its ``loss_scale``, so the solver's step sizes are
those of the paper's summed loss.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from jiio_core.objective import InnerObjective, Relation
from jiio_core.state import State
from jiio_tasks.imaging.operators import Identity, Measurement
from jiio_zoo.heads import Head

__all__ = ["MeasurementObjective"]


class MeasurementObjective(InnerObjective):
    """``ℓ(z, x, ŷ) = mean((ŷ − A h(z))²)`` per sample (eq. 22).

    ``A`` is the solve's context ([`jiio_core.context`][jiio_core.context]) when it varies per batch (the
    inpainting mask, a seeded noise draw): ``problem.solve(observed, context=operator)``;
    without a context it is the fixed ``operator`` given here (default: the identity). ``y`` is
    the observation ``ŷ`` ``(B, C, H, W)``. With ``A = I`` this is the generative loss of
    eq. 20.
    """

    def __init__(
        self, head: Head, operator: Measurement | None = None, relation: Relation = Relation.SAME
    ) -> None:
        super().__init__()
        self.head = head
        self.operator: Measurement = Identity() if operator is None else operator
        self.relation = relation

    def forward(self, z: State, x: Tensor, y: Any, context: Measurement | None = None) -> Tensor:
        del x
        if not isinstance(y, Tensor):
            raise TypeError(f"MeasurementObjective expects the observation tensor as y, got {type(y).__name__}")
        operator = self.operator if context is None else context
        if not isinstance(operator, Measurement):
            raise TypeError(
                f"MeasurementObjective's context must be the batch's Measurement operator, got {type(operator).__name__}"
            )
        out = operator.apply(self.head(z))
        if out.shape != y.shape:
            raise ValueError(
                f"MeasurementObjective: A h(z) has shape {tuple(out.shape)} but the observation "
                f"has shape {tuple(y.shape)}"
            )
        return (out - y).pow(2).reshape(y.shape[0], -1).mean(dim=1)

    def loss_scale(self, y: Any) -> float:
        """A mean over the observation's values: ``ℓ · numel(one observation)`` is the summed
        squared error, the paper's cost (so the config's ``α_x`` is the paper's)."""
        if not isinstance(y, Tensor):
            raise TypeError(f"MeasurementObjective expects the observation tensor as y, got {type(y).__name__}")
        return float(y[0].numel())

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

import torch
from torch import Tensor

from jiio_core.objective import InnerObjective, Relation
from jiio_core.state import State
from jiio_tasks.imaging.operators import Identity, Measurement
from jiio_zoo.heads import Head

__all__ = ["MeasurementObjective", "smoothed_tv"]


def smoothed_tv(images: Tensor, eps: float = 1e-3) -> Tensor:
    """Isotropic total variation of ``(B, C, H, W)`` images smoothed at ``eps`` (differentiable
    everywhere): ``Σ sqrt(Δ_h² + Δ_v² + eps²) − eps`` over pixels and channels (forward
    differences, Neumann boundary), per sample, divided by the number of values."""
    dh = torch.nn.functional.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1))
    dv = torch.nn.functional.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    tv = torch.sqrt(dh * dh + dv * dv + eps * eps) - eps
    return tv.reshape(images.shape[0], -1).mean(dim=1)


class MeasurementObjective(InnerObjective):
    """``ℓ(z, x, ŷ) = mean((ŷ − A h(z))²)`` per sample (eq. 22), plus ``tv_weight ·``
    [`smoothed_tv`][jiio_tasks.imaging.objectives.smoothed_tv]``(h(z))`` when ``tv_weight > 0``: a
    total-variation prior on the reconstruction (in the same per-value units, so that the
    weight does not depend on the image size). TV acts on ``h(z)``, not on the input ``x``, so
    it is smoothed and enters the smooth part of the loss (a prox of
    [`jiio_core.prox`][jiio_core.prox] applies to ``x`` only).

    ``A`` is the solve's context ([`jiio_core.context`][jiio_core.context]) when it varies per batch (the
    inpainting mask, a seeded noise draw): ``problem.solve(observed, context=operator)``;
    without a context it is the fixed ``operator`` given here (default: the identity). ``y`` is
    the observation ``ŷ`` ``(B, C, H, W)``. With ``A = I`` this is the generative loss of
    eq. 20.
    """

    def __init__(
        self, head: Head, operator: Measurement | None = None, relation: Relation = Relation.SAME, *,
        tv_weight: float = 0.0, tv_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if not (isinstance(tv_weight, (int, float)) and not isinstance(tv_weight, bool) and tv_weight >= 0):
            raise ValueError(f"tv_weight must be a number >= 0, got {tv_weight!r}")
        if not (isinstance(tv_eps, (int, float)) and not isinstance(tv_eps, bool) and tv_eps > 0):
            raise ValueError(f"tv_eps must be a number > 0, got {tv_eps!r}")
        self.head = head
        self.operator: Measurement = Identity() if operator is None else operator
        self.relation = relation
        self.tv_weight = float(tv_weight)
        self.tv_eps = float(tv_eps)

    def forward(self, z: State, x: Tensor, y: Any, context: Measurement | None = None) -> Tensor:
        del x
        if not isinstance(y, Tensor):
            raise TypeError(f"MeasurementObjective expects the observation tensor as y, got {type(y).__name__}")
        operator = self.operator if context is None else context
        if not isinstance(operator, Measurement):
            raise TypeError(
                f"MeasurementObjective's context must be the batch's Measurement operator, got {type(operator).__name__}"
            )
        image = self.head(z)
        out = operator.apply(image)
        if out.shape != y.shape:
            raise ValueError(
                f"MeasurementObjective: A h(z) has shape {tuple(out.shape)} but the observation "
                f"has shape {tuple(y.shape)}"
            )
        loss = (out - y).pow(2).reshape(y.shape[0], -1).mean(dim=1)
        if self.tv_weight:
            loss = loss + self.tv_weight * smoothed_tv(image, self.tv_eps) * (image[0].numel() / y[0].numel())
        return loss

    def loss_scale(self, y: Any) -> float:
        """A mean over the observation's values: ``ℓ · numel(one observation)`` is the summed
        squared error, the paper's cost (so the config's ``α_x`` is the paper's)."""
        if not isinstance(y, Tensor):
            raise TypeError(f"MeasurementObjective expects the observation tensor as y, got {type(y).__name__}")
        return float(y[0].numel())

"""Ready inner objectives ``ℓ(z, x, y)`` for the zoo heads (one per task family).

Each returns a per-sample ``(B,)`` loss and declares its [`Relation`][jiio_core.objective.Relation]
to the training loss. They own the head, so ``objective.parameters()`` include ``h_θ``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_core.objective import InnerObjective, Relation
from jiio_core.state import State
from jiio_zoo.heads import Head, head_output

__all__ = ["AdversarialObjective", "FewShotObjective", "ReconstructionObjective"]


class ReconstructionObjective(InnerObjective):
    """Mean squared error between ``h(z)`` and the target, per sample.

    ``y`` is the target ``(B, ...)`` or a pair ``(target, mask)`` with a ``mask`` broadcastable
    to the target (1 = observed): ``ℓ = Σ mask·(h(z) − target)² / numel(target sample)``, the
    paper's ``‖A h(z) − A y‖²`` for a masking operator ``A`` (inpainting), averaged. The default
    relation is ``SAME`` (generative modelling, unsupervised inverse problems); pass
    ``Relation.OTHER`` for supervised inverse problems whose training loss compares with the
    clean image.
    """

    def __init__(self, head: Head, relation: Relation = Relation.SAME) -> None:
        super().__init__()
        self.head = head
        self.relation = relation

    def forward(self, z: State, x: Tensor, y: Any) -> Tensor:
        del x
        target, mask = (y, None) if isinstance(y, Tensor) else y
        out = self.head(z)
        if out.shape != target.shape:
            raise ValueError(
                f"ReconstructionObjective: head output {tuple(out.shape)} and target "
                f"{tuple(target.shape)} differ in shape"
            )
        err = (out - target).pow(2)
        if mask is not None:
            err = err * mask
        return err.reshape(err.shape[0], -1).mean(dim=1)

    def loss_scale(self, y: Any) -> float:
        """A mean over the target's values: ``ℓ · numel(one target)`` is the summed error."""
        target = y if isinstance(y, Tensor) else y[0]
        return float(target[0].numel())


class AdversarialObjective(InnerObjective):
    """``ℓ = −CE(h(z), y)`` per sample: the adversary minimises it, training minimises ``CE``
    (``Relation.NEGATED``, eq. 26). ``y`` holds integer class labels ``(B,)``."""

    relation = Relation.NEGATED

    def __init__(self, head: Head) -> None:
        super().__init__()
        self.head = head

    def forward(self, z: State, x: Tensor, y: Any) -> Tensor:
        del x
        return -F.cross_entropy(self.head(z), y, reduction="none")


class FewShotObjective(InnerObjective):
    """Cross-entropy on each task's first ``support`` samples (eq. 29, inner problem).

    The head returns logits ``(B, S, K)`` for ``S`` context images per task (support first,
    then query; a head that reads the task vector, [`TaskLinearHead`][jiio_zoo.heads.TaskLinearHead], gets ``x`` too); ``y`` holds labels ``(B, S)`` (query labels are ignored here). The outer loss
    is the query cross-entropy, so the relation is ``OTHER``.
    """

    relation = Relation.OTHER

    def __init__(self, head: Head, support: int) -> None:
        super().__init__()
        if not isinstance(support, int) or support < 1:
            raise ValueError(f"support must be an int >= 1, got {support!r}")
        self.head = head
        self.support = support

    def forward(self, z: State, x: Tensor, y: Any) -> Tensor:
        logits = head_output(self.head, z, x)
        if logits.ndim != 3 or logits.shape[1] < self.support:
            raise ValueError(
                f"FewShotObjective expects logits (B, S >= {self.support}, K), got "
                f"{tuple(logits.shape)}"
            )
        s = self.support
        ce = F.cross_entropy(
            logits[:, :s].reshape(-1, logits.shape[-1]), y[:, :s].reshape(-1), reduction="none"
        )
        return torch.mean(ce.reshape(logits.shape[0], s), dim=1)

    def loss_scale(self, y: Any) -> float:
        """A mean over the ``support`` samples of each task."""
        return float(self.support)

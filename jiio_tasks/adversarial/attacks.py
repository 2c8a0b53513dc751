"""L2 attacks on a zoo DEQ classifier: JIIO (joint solve over ``δ``) and PGD.

Both attack the same ``ZooModel`` in eval mode and return adversarial images inside the
L2 ball of radius ``eps`` around the clean images *and* inside the pixel range [0, 1]:
[`finalize`][jiio_tasks.adversarial.attacks.finalize] rescales ``δ`` into the ball and then clamps ``clean + δ`` to [0, 1]; the
clamp moves every pixel towards its clean value (the clean image is in [0, 1]), so it never
leaves the ball again.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_core.constraint import Box, Intersection, L2Ball
from jiio_core.damping import Damping
from jiio_core.deq import DEQSolver
from jiio_core.outer import AdjointShortcut
from jiio_core.problem import JointProblem, JointSolution
from jiio_zoo.model import ZooModel
from jiio_zoo.objectives import AdversarialObjective
from jiio_zoo.recipe import deq_solver, settings

__all__ = [
    "AttackResult",
    "JIIOAttack",
    "PGDAttack",
    "deq_logits",
    "finalize",
    "pixel_ball",
    "random_ball",
]


def _per_sample_norm(t: Tensor) -> Tensor:
    out: Tensor = torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)
    return out


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def pixel_ball(clean: Tensor, eps: float) -> Intersection:
    """The feasible set of ``δ``: ``‖δ‖₂ ≤ eps`` and ``0 ≤ clean + δ ≤ 1`` (box last, so the
    pixel range holds exactly after every projection)."""
    return Intersection((L2Ball(radius=float(eps)), Box(lo=-clean, hi=1.0 - clean)))


def finalize(clean: Tensor, delta: Tensor, eps: float) -> Tensor:
    """The adversarial image ``clamp(clean + Π_ball(δ), 0, 1)``: inside both sets exactly."""
    norm = _per_sample_norm(delta)
    scale = torch.clamp(eps / torch.clamp(norm, min=torch.finfo(delta.dtype).tiny), max=1.0)
    return torch.clamp(clean + delta * _bcast(scale, delta), 0.0, 1.0)


def random_ball(shape: tuple[int, ...], eps: float, *, dtype: torch.dtype = torch.float32,
                generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """Points uniform over the volume of the L2 ball of radius ``eps`` (one per row):
    a Gaussian direction with radius ``eps · U^(1/d)``. The numbers are drawn on the
    generator's device (CPU without one), so a seed gives the same points everywhere, and the
    result is moved to ``device`` (default: where they were drawn)."""
    d = math.prod(shape[1:])
    where = generator.device if generator is not None else torch.device("cpu")
    direction = torch.randn(shape, dtype=dtype, generator=generator, device=where)
    direction = direction / _bcast(_per_sample_norm(direction).clamp(min=1e-12), direction)
    u = torch.rand(shape[0], dtype=dtype, generator=generator, device=where)
    out = direction * _bcast(eps * u.pow(1.0 / d), direction)
    return out if device is None else out.to(device)


@contextlib.contextmanager
def evaluating(model: ZooModel) -> Iterator[None]:
    """Eval mode for the duration; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def deq_logits(model: ZooModel, images: Tensor, deq: DEQSolver, clean: Tensor | None = None) -> Tensor:
    """``h(z*(images))`` with the implicit backward pass; with ``clean`` (the injection's
    context), ``images`` is a perturbation of ``clean``."""
    sol = deq.solve(model.layer, images, context=clean)
    out: Tensor = model.head(sol.z)
    return out


def default_deq(model: ZooModel) -> DEQSolver:
    """The config's DEQ solver ([`jiio_zoo.recipe.deq_solver`][jiio_zoo.recipe.deq_solver])."""
    return deq_solver(model)


@attrs.frozen(eq=False)
class AttackResult:
    """Adversarial images, their per-sample cross-entropy and whether they are misclassified,
    and the wall-clock seconds the attack took."""

    images: Tensor
    loss: Tensor
    wrong: Tensor
    seconds: float
    solution: JointSolution | None = None


def _score(model: ZooModel, adv: Tensor, labels: Tensor, deq: DEQSolver) -> tuple[Tensor, Tensor]:
    with torch.no_grad(), evaluating(model):
        logits = deq_logits(model, adv, deq)
    return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(1) != labels


@attrs.frozen
class PGDAttack:
    """PGD-L2: ``δ ← clamp(Π_ball(δ + α g/‖g‖))`` for ``steps`` steps, ``g = ∇_δ CE`` through
    the DEQ (forward fixed point + implicit backward); optional random start uniform over the
    ball's volume; step size ``α = rel_step · eps`` (2.5·eps/steps by default)."""

    eps: float
    steps: int = 20
    rel_step: float | None = None
    random_start: bool = False

    @property
    def step_size(self) -> float:
        rel = 2.5 / self.steps if self.rel_step is None else self.rel_step
        return rel * self.eps

    def perturb(self, model: ZooModel, clean: Tensor, labels: Tensor, deq: DEQSolver | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """The adversarial images (the last iterate, like the usual PGD)."""
        deq = default_deq(model) if deq is None else deq
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with evaluating(model):
                if self.random_start:
                    delta = random_ball(tuple(clean.shape), self.eps, dtype=clean.dtype, generator=generator,
                                        device=clean.device)
                else:
                    delta = torch.zeros_like(clean)
                adv = finalize(clean, delta, self.eps)
                for _ in range(self.steps):
                    x = adv.detach().requires_grad_()
                    with torch.enable_grad():
                        loss = F.cross_entropy(deq_logits(model, x, deq), labels, reduction="sum")
                        (g,) = torch.autograd.grad(loss, x)
                    g = g / _bcast(_per_sample_norm(g).clamp(min=torch.finfo(g.dtype).tiny), g)
                    adv = finalize(clean, adv.detach() - clean + self.step_size * g, self.eps)
        finally:
            for p in params:
                p.requires_grad_(True)
        return adv.detach()

    def __call__(self, model: ZooModel, clean: Tensor, labels: Tensor, deq: DEQSolver | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        deq = default_deq(model) if deq is None else deq
        t0 = time.perf_counter()
        adv = self.perturb(model, clean, labels, deq, generator)
        seconds = time.perf_counter() - t0
        loss, wrong = _score(model, adv, labels, deq)
        return AttackResult(adv, loss, wrong, seconds)


@attrs.frozen
class JIIOAttack:
    """JIIO: minimise ``−CE(h(z), y)`` over ``δ`` jointly with ``z = f(z, clean + δ)`` (eq. 26),
    inside [`pixel_ball`][jiio_tasks.adversarial.attacks.pixel_ball], with the config's solve recipe ([`jiio_zoo.recipe`][jiio_zoo.recipe]: its
    accelerator, memory, x-step kind, damping and late ``α_x``). ``memory`` and ``damping``
    override the config's when given."""

    eps: float
    iterations: int = 40
    memory: int | None = None
    damping: Damping | None = None

    def problem(self, model: ZooModel, shortcut_refine: int = 0, jacobian_penalty: bool = False) -> JointProblem:
        """The joint problem; ``jacobian_penalty`` adds the config's Jacobian penalty at a random
        iterate (``JointSolution.jacobian_penalty``, for training)."""
        overrides: dict[str, object] = {"tol": 0.0}
        if self.memory is not None:
            overrides["memory"] = self.memory
        if self.damping is not None:
            d = self.damping
            overrides.update(damping=(d.z, d.mu, d.x), x_late=d.x_late, switch_at=d.switch_at)
        return settings(model.config, iterations=self.iterations, **overrides).problem(
            model.layer,
            AdversarialObjective(model.head),
            outer=AdjointShortcut(refine_steps=shortcut_refine),
            x_shape=model.x_shape,
            jacobian_penalty=jacobian_penalty,
        )

    def solve(self, model: ZooModel, clean: Tensor, labels: Tensor, *, jacobian_penalty: bool = False,
              generator: torch.Generator | None = None) -> JointSolution:
        """The joint solution with δ as ``x`` (differentiable in θ by the adjoint shortcut when
        grad is enabled); the clean batch is the solve's context (the image seen is
        ``clean + δ``). ``jacobian_penalty``: also the Jacobian penalty at a random iterate,
        drawn with ``generator`` (default: torch's global stream)."""
        problem = self.problem(model, jacobian_penalty=jacobian_penalty)
        return problem.solve(labels, torch.zeros_like(clean), context=clean,
                             constraint=pixel_ball(clean, self.eps), generator=generator)

    def perturb(self, model: ZooModel, clean: Tensor, labels: Tensor) -> tuple[Tensor, JointSolution]:
        with torch.no_grad(), evaluating(model):
            sol = self.solve(model, clean, labels)
        return finalize(clean, sol.x.detach(), self.eps), sol

    def __call__(self, model: ZooModel, clean: Tensor, labels: Tensor, deq: DEQSolver | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        del generator
        deq = default_deq(model) if deq is None else deq
        t0 = time.perf_counter()
        adv, sol = self.perturb(model, clean, labels)
        seconds = time.perf_counter() - t0
        loss, wrong = _score(model, adv, labels, deq)
        return AttackResult(adv, loss, wrong, seconds, sol)

"""The paper's comparison methods: a DEQ as a differentiable function, and input optimisation
by SGD / Adam / PGD on top of it (each step = a full forward and backward fixed-point solve)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core._checks import check_tensor, instance_of, int_at_least, number_above
from jiio_core.accelerators import Accelerator, AndersonII
from jiio_core.constraint import Constraint, Unconstrained
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.outer import BackwardStats, implicit_backward
from jiio_core.solver import LowestResidual, Status, StepOutput, fixed_point
from jiio_core.state import State, StateSpec


@attrs.frozen(eq=False)
class DEQSolution:
    """``z*`` (differentiable in ``θ`` and ``x`` by implicit differentiation) and solve stats."""

    z: State
    residual: Tensor
    iterations: Tensor
    status: Tensor
    backward: BackwardStats

    @property
    def converged(self) -> Tensor:
        return self.status == Status.CONVERGED


@attrs.frozen
class DEQSolver:
    """Forward fixed-point solve of ``z = f(z, x)`` with an implicit (IFT) backward pass."""

    accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=10), validator=instance_of(Accelerator)
    )
    max_iter: int = attrs.field(default=50, validator=int_at_least(1))
    tol: float = attrs.field(default=1e-4, validator=number_above(0.0, inclusive=True))
    backward_accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=10), validator=instance_of(Accelerator)
    )
    backward_max_iter: int = attrs.field(default=50, validator=int_at_least(1))
    backward_tol: float = attrs.field(default=1e-4, validator=number_above(0.0, inclusive=True))
    throw: bool = False

    def solve(self, layer: Layer, x: Tensor, z0: State | None = None) -> DEQSolution:
        """Equilibrium of ``layer`` at input ``x``; gradients reach ``θ`` and ``x``."""
        check_tensor("x", x, ndim_min=1)
        with torch.no_grad():
            z_init = layer.init_state(x) if z0 is None else z0
            spec = StateSpec.of(z_init)
            xd = x.detach()

            def step(zf: Tensor, k: int) -> StepOutput:
                fz = spec.pack(layer(spec.unpack(zf), xd))
                return StepOutput(value=fz, residual=torch.linalg.vector_norm(fz - zf, dim=1))

            res = fixed_point(
                step,
                spec.pack(z_init),
                self.accelerator,
                max_iter=self.max_iter,
                tol=self.tol,
                selection=LowestResidual(),
            )
        stats = BackwardStats()
        zf = res.v
        if torch.is_grad_enabled():
            zl = res.v.detach().requires_grad_()
            zf = spec.pack(layer(spec.unpack(zl), x))
            implicit_backward(
                zf,
                zl,
                accelerator=self.backward_accelerator,
                max_iter=self.backward_max_iter,
                tol=self.backward_tol,
                stats=stats,
                throw=self.throw,
            )
        return DEQSolution(
            z=spec.unpack(zf),
            residual=res.residual,
            iterations=res.iterations,
            status=res.status,
            backward=stats,
        )


class InputOptimizer(ABC):
    """A first-order method for ``x`` (per-sample, elementwise state)."""

    @abstractmethod
    def make(self, x: Tensor) -> torch.optim.Optimizer | None:
        """A torch optimizer over the leaf ``x``, or ``None`` for a hand-written step."""

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        """Hand-written update (used when :meth:`make` returns ``None``)."""
        raise NotImplementedError


@attrs.frozen
class SGD(InputOptimizer):
    lr: float = attrs.field(validator=number_above(0.0))
    momentum: float = attrs.field(default=0.0, validator=number_above(0.0, inclusive=True))

    def make(self, x: Tensor) -> torch.optim.Optimizer:
        return torch.optim.SGD([x], lr=self.lr, momentum=self.momentum)


@attrs.frozen
class Adam(InputOptimizer):
    lr: float = attrs.field(validator=number_above(0.0))

    def make(self, x: Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam([x], lr=self.lr)


@attrs.frozen
class PGD(InputOptimizer):
    """Projected gradient descent with per-sample normalised steps ``x − η g/‖g‖`` (as L2
    adversarial attacks) or plain steps ``x − η g``."""

    step_size: float = attrs.field(validator=number_above(0.0))
    normalized: bool = True

    def make(self, x: Tensor) -> None:
        return None

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        if self.normalized:
            norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
            norm = norm.clamp(min=torch.finfo(grad.dtype).tiny).view(-1, *([1] * (grad.ndim - 1)))
            grad = grad / norm
        return x - self.step_size * grad


@attrs.frozen(eq=False)
class InputOptimizationResult:
    """Best ``x`` per sample over the run and the loss history ``(steps, B)``."""

    x: Tensor
    loss: Tensor
    trace: Tensor
    forward_iterations: Tensor
    """Total forward fixed-point evaluations per sample over all steps."""


def optimize_input(
    layer: Layer,
    objective: InnerObjective,
    y: Any,
    x0: Tensor,
    method: InputOptimizer,
    steps: int,
    *,
    deq: DEQSolver | None = None,
    constraint: Constraint | None = None,
) -> InputOptimizationResult:
    """Minimise ``ℓ(z*(x), x, y)`` over ``x ∈ C`` by ``steps`` steps of ``method``, each with a
    full DEQ forward solve and implicit backward solve. Parameters of ``layer``/``objective``
    receive no gradient. Returns the best iterate of each sample."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    check_tensor("x0", x0, ndim_min=1)
    deq = DEQSolver() if deq is None else deq
    constraint = Unconstrained() if constraint is None else constraint
    constraint.validate(x0)
    params = [p for m in (layer, objective) for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        x = constraint.project(x0.detach()).clone().requires_grad_()
        opt = method.make(x)
        batch = x.shape[0]
        trace = torch.full((steps, batch), math.nan, dtype=x.dtype, device=x.device)
        best_x = x.detach().clone()
        best = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
        fwd = torch.zeros(batch, dtype=torch.int64, device=x.device)
        for k in range(steps):
            with torch.enable_grad():
                sol = deq.solve(layer, x)
                loss = objective(sol.z, x, y)
                (grad,) = torch.autograd.grad(loss.sum(), x)
            fwd += sol.iterations
            ld = loss.detach()
            trace[k] = ld
            better = ld < best
            best = torch.where(better, ld, best)
            best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
            with torch.no_grad():
                if opt is None:
                    new = method.step(x.detach(), grad)
                else:
                    x.grad = grad
                    opt.step()
                    new = x.detach()
                x.copy_(constraint.project(new))
        # the final iterate has not been evaluated yet
        with torch.no_grad():
            sol = deq.solve(layer, x.detach())
            ld = objective(sol.z, x.detach(), y)
            fwd += sol.iterations
            better = ld < best
            best = torch.where(better, ld, best)
            best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
    finally:
        for p in params:
            p.requires_grad_(True)
    return InputOptimizationResult(x=best_x, loss=best, trace=trace, forward_iterations=fwd)

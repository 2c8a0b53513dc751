"""The paper's comparison methods: input optimisation by SGD / Adam / PGD over a DEQ, each step
a full forward and backward fixed-point solve by [`DEQSolver`][jiio_core.deq.DEQSolver] (the DEQ as a
differentiable function lives in [`jiio_core.deq`][jiio_core.deq])."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from jiio_core._checks import check_tensor
from jiio_core.constraint import Constraint, Unconstrained
from jiio_core.context import require_taker
from jiio_core.deq import CellFn, DEQSolver, cell_takes_context
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.validators import number_in


class InputOptimizer(ABC):
    """A first-order method for ``x`` (per-sample, elementwise state)."""

    @abstractmethod
    def make(self, x: Tensor) -> torch.optim.Optimizer | None:
        """A torch optimizer over the leaf ``x``, or ``None`` for a hand-written step."""

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        """Hand-written update (used when [`make`][jiio_core.baselines.InputOptimizer.make] returns ``None``)."""
        raise NotImplementedError


@attrs.frozen
class SGD(InputOptimizer):
    lr: float = attrs.field(validator=number_in(0.0, low_open=True))
    momentum: float = attrs.field(default=0.0, validator=number_in(0.0))

    def make(self, x: Tensor) -> torch.optim.Optimizer:
        return torch.optim.SGD([x], lr=self.lr, momentum=self.momentum)


@attrs.frozen
class Adam(InputOptimizer):
    lr: float = attrs.field(validator=number_in(0.0, low_open=True))

    def make(self, x: Tensor) -> torch.optim.Optimizer:
        return torch.optim.Adam([x], lr=self.lr)


@attrs.frozen
class PGD(InputOptimizer):
    """Projected gradient descent with per-sample normalised steps ``x − η g/‖g‖`` (as L2
    adversarial attacks) or plain steps ``x − η g``."""

    step_size: float = attrs.field(validator=number_in(0.0, low_open=True))
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
    """Best ``x`` per sample over the run and the loss history ``(steps, B)``.

    Cost of the run, over all ``steps`` (each a forward solve, a graph evaluation and a backward
    solve) and the final evaluation of the last iterate (a forward solve only)."""

    x: Tensor
    loss: Tensor
    trace: Tensor
    forward_iterations: Tensor
    """Total forward fixed-point evaluations per sample over all steps."""
    f_evaluations: int
    """Total batch evaluations of ``f``: the forward solves' plus one graph evaluation per step."""
    backward_iterations: Tensor
    """Total backward fixed-point (VJP) evaluations per sample over all steps."""
    vjp_evaluations: int
    """Total batch VJPs through ``f``: the backward solves' plus one per step carrying the
    adjoint on to ``x``."""


def optimize_input(
    layer: Layer | CellFn,
    objective: InnerObjective,
    y: Any,
    x0: Tensor,
    method: InputOptimizer,
    steps: int,
    *,
    deq: DEQSolver | None = None,
    constraint: Constraint | None = None,
    z_shape: tuple[int, ...] | None = None,
    context: Any = None,
) -> InputOptimizationResult:
    """Minimise ``ℓ(z*(x), x, y)`` over ``x ∈ C`` by ``steps`` steps of ``method``, each with a
    full DEQ forward solve and implicit backward solve. Parameters of ``layer``/``objective``
    receive no gradient. ``layer`` may be a plain function ``f(z, x) -> z``, with ``z_shape``
    (see [`DEQSolver.solve`][jiio_core.deq.DEQSolver.solve]). ``context``: the batch's context ([`jiio_core.context`][jiio_core.context]),
    handed to the layer and the objective wherever they declare it, as by
    [`JointProblem.solve`][jiio_core.problem.JointProblem.solve]. Returns the best iterate
    of each sample. An objective with a non-smooth part ([`jiio_core.prox`][jiio_core.prox]) is refused
    (``ValueError``): these methods follow gradients only."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    layer_takes = cell_takes_context(layer)
    require_taker(context, {type(layer).__name__: layer_takes, type(objective).__name__: objective.takes_context},
                  "optimize_input")
    layer_context = context if layer_takes else None
    check_tensor("x0", x0, ndim_min=1)
    if objective.nonsmooth() is not None:
        raise ValueError(
            f"optimize_input follows the gradient of {type(objective).__name__}.forward only and would "
            f"ignore its non-smooth part {type(objective.nonsmooth()).__name__}; for a subgradient "
            "baseline write g into forward (and return None from nonsmooth())"
        )
    deq = DEQSolver() if deq is None else deq
    constraint = Unconstrained() if constraint is None else constraint
    constraint.validate(x0)
    modules = [m for m in (layer, objective) if isinstance(m, nn.Module)]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
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
        bwd = torch.zeros(batch, dtype=torch.int64, device=x.device)
        f_evals = vjp_evals = 0
        for k in range(steps):
            with torch.enable_grad():
                sol = deq.solve(layer, x, z_shape=z_shape, context=layer_context)
                loss = objective(sol.z, x, y, context)
                (grad,) = torch.autograd.grad(loss.sum(), x)
            fwd += sol.iterations
            f_evals += sol.f_evaluations
            vjp_evals += sol.vjp_evaluations
            if sol.backward.total_iterations is not None:
                bwd += sol.backward.total_iterations
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
            sol = deq.solve(layer, x.detach(), z_shape=z_shape, context=layer_context)
            ld = objective(sol.z, x.detach(), y, context)
            fwd += sol.iterations
            f_evals += sol.f_evaluations
            better = ld < best
            best = torch.where(better, ld, best)
            best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
    finally:
        for p in params:
            p.requires_grad_(True)
    return InputOptimizationResult(
        x=best_x,
        loss=best,
        trace=trace,
        forward_iterations=fwd,
        f_evaluations=f_evals,
        backward_iterations=bwd,
        vjp_evaluations=vjp_evals,
    )

"""The paper's comparison methods: a DEQ as a differentiable function, and input optimisation
by SGD / Adam / PGD on top of it (each step = a full forward and backward fixed-point solve)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs
import torch
from torch import Tensor, nn

from jiio_core._checks import check_tensor, instance_of, int_at_least, number_above
from jiio_core.accelerators import Accelerator, AndersonII
from jiio_core.constraint import Constraint, Unconstrained
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.outer import BackwardStats, implicit_backward
from jiio_core.solver import FixedPointResult, LowestResidual, Status, StepOutput, fixed_point
from jiio_core.state import State, StateSpec

CellFn: TypeAlias = Callable[[State, Tensor], State]
"""A plain function ``f(z, x) -> z`` with the shapes of ``z`` (batch first, samples independent)."""


@attrs.define
class DEQBackwardStats(BackwardStats):
    """:class:`~jiio_core.outer.BackwardStats` that also counts vector-Jacobian products.

    ``iterations``/``residual``/``status`` describe the last backward solve (one per backward
    pass through the solution); the counts add up over all of them.
    """

    evaluations: int = 0
    """Batch VJP evaluations ``uᵀ ∂f/∂z`` made by the backward fixed-point solves (every sample
    of the batch is multiplied on each, frozen ones included). Each backward pass then makes one
    more VJP through ``f``, carrying the solution ``u`` on to ``θ`` and ``x`` (see
    :attr:`vjp_evaluations`)."""
    total_iterations: Tensor | None = None
    """``(B,)`` VJP evaluations each sample needed, summed over the backward solves."""

    def record(self, res: FixedPointResult) -> None:
        super().record(res)
        self.evaluations += res.iterations_run
        its = res.iterations
        self.total_iterations = its if self.total_iterations is None else self.total_iterations + its

    @property
    def vjp_evaluations(self) -> int:
        """All batch VJPs through ``f`` so far: the solves' plus one per backward pass."""
        return self.evaluations + self.calls


@attrs.frozen(eq=False)
class DEQSolution:
    """``z*`` (differentiable in ``θ`` and ``x`` by implicit differentiation) and solve stats.

    Evaluation counts: the forward solve evaluates ``f`` on the whole batch ``evaluations``
    times (``= min(max_iter, check_every · ⌈max(iterations) / check_every⌉)``: the driver tests
    for stopping every ``check_every`` evaluations and keeps evaluating frozen samples at their
    best iterate until then); ``iterations`` says how many of those each sample needed. With
    autograd on, :meth:`DEQSolver.solve` evaluates ``f`` once more at ``z*`` to attach the graph
    (``graph_evaluations``). The backward counts fill in when autograd runs the backward pass.
    """

    z: State
    residual: Tensor
    iterations: Tensor
    """``(B,)`` evaluations of ``f`` each sample needed in the forward solve."""
    status: Tensor
    backward: DEQBackwardStats
    evaluations: int
    """Batch evaluations of ``f`` made by the forward fixed-point solve."""
    graph_evaluations: int
    """Differentiable evaluations of ``f`` at ``z*`` (1 with autograd on, else 0)."""

    @property
    def converged(self) -> Tensor:
        return self.status == Status.CONVERGED

    @property
    def f_evaluations(self) -> int:
        """All batch evaluations of ``f``: the forward solve's plus the graph's."""
        return self.evaluations + self.graph_evaluations

    @property
    def backward_evaluations(self) -> int:
        """Batch VJPs made by the backward fixed-point solve(s) so far (0 before backward)."""
        return self.backward.evaluations

    @property
    def vjp_evaluations(self) -> int:
        """All batch VJPs through ``f`` so far, including one per backward pass that carries
        the adjoint on to ``θ`` and ``x``."""
        return self.backward.vjp_evaluations


@attrs.frozen
class DEQSolver:
    """Forward fixed-point solve of ``z = f(z, x)`` with an implicit (IFT) backward pass.

    ``f`` is a :class:`~jiio_core.layer.Layer` or a plain function ``f(z, x) -> z``. The forward
    solve stops when every sample has converged (``‖f(z) − z‖ ≤ tol · max(1, ‖z‖)``), tested
    every ``check_every`` evaluations (each test is one host sync), or after ``max_iter``.
    """

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
    check_every: int = attrs.field(default=5, validator=int_at_least(1))
    """Forward-solve evaluations between stopping tests."""

    def solve(
        self,
        f: Layer | CellFn,
        x: Tensor,
        z0: State | None = None,
        *,
        z_shape: tuple[int, ...] | None = None,
    ) -> DEQSolution:
        """Equilibrium of ``f`` at input ``x``; gradients reach ``x`` and ``f``'s parameters.

        The initial state is ``z0`` if given, else ``f.init_state(x)`` for a
        :class:`~jiio_core.layer.Layer`, else zeros of shape ``(B, *z_shape)`` with ``x``'s
        dtype and device (a plain function has no ``init_state``, so it needs ``z0`` or
        ``z_shape``).
        """
        check_tensor("x", x, ndim_min=1)
        with torch.no_grad():
            z_init = _initial_state(f, x, z0, z_shape)
            spec = StateSpec.of(z_init)
            xd = x.detach()

            def step(zf: Tensor, k: int) -> StepOutput:
                fz = spec.pack(f(spec.unpack(zf), xd))
                return StepOutput(value=fz, residual=torch.linalg.vector_norm(fz - zf, dim=1))

            res = fixed_point(
                step,
                spec.pack(z_init),
                self.accelerator,
                max_iter=self.max_iter,
                tol=self.tol,
                selection=LowestResidual(),
                check_every=self.check_every,
            )
        stats = DEQBackwardStats()
        zf = res.v
        graph_evaluations = 0
        if torch.is_grad_enabled():
            zl = res.v.detach().requires_grad_()
            zf = spec.pack(f(spec.unpack(zl), x))
            graph_evaluations = 1
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
            evaluations=res.iterations_run,
            graph_evaluations=graph_evaluations,
        )


def _initial_state(f: object, x: Tensor, z0: State | None, z_shape: tuple[int, ...] | None) -> State:
    """``z0``, ``f.init_state(x)`` or zeros ``(B, *z_shape)``, validated (once per solve)."""
    if not callable(f):
        raise TypeError(f"f must be a jiio_core.Layer or a callable f(z, x) -> z, got {type(f).__name__}")
    batch = x.shape[0]
    if z_shape is not None:
        ok = isinstance(z_shape, tuple) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in z_shape
        )
        if not ok or len(z_shape) == 0:
            raise ValueError(
                f"z_shape must be a non-empty tuple of ints >= 1 (the state's shape without the "
                f"batch dimension), got {z_shape!r}"
            )
    if z0 is not None:
        parts = z0 if isinstance(z0, tuple) else (z0,)
        for p in parts:
            check_tensor("z0", p, ndim_min=2, batch=batch)
        if z_shape is not None and (isinstance(z0, tuple) or tuple(z0.shape[1:]) != z_shape):
            got = [tuple(p.shape[1:]) for p in parts]
            raise ValueError(f"z_shape={z_shape!r} does not match z0's per-sample shape(s) {got}")
        return z0
    if isinstance(f, Layer):
        if z_shape is not None:
            raise ValueError(
                f"z_shape={z_shape!r} given with a Layer ({type(f).__name__}), whose init_state "
                "sets the initial state; pass z0 to override it"
            )
        return f.init_state(x)
    if z_shape is None:
        raise ValueError(
            f"a plain callable f ({type(f).__name__}) has no init_state: pass z0 (the initial "
            "state, batch first) or z_shape (zeros of shape (B, *z_shape)), got neither"
        )
    return torch.zeros(batch, *z_shape, dtype=x.dtype, device=x.device)


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
) -> InputOptimizationResult:
    """Minimise ``ℓ(z*(x), x, y)`` over ``x ∈ C`` by ``steps`` steps of ``method``, each with a
    full DEQ forward solve and implicit backward solve. Parameters of ``layer``/``objective``
    receive no gradient. ``layer`` may be a plain function ``f(z, x) -> z``, with ``z_shape``
    (see :meth:`DEQSolver.solve`). Returns the best iterate of each sample."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    check_tensor("x0", x0, ndim_min=1)
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
                sol = deq.solve(layer, x, z_shape=z_shape)
                loss = objective(sol.z, x, y)
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
            sol = deq.solve(layer, x.detach(), z_shape=z_shape)
            ld = objective(sol.z, x.detach(), y)
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

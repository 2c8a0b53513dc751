"""The plain DEQ solve: ``z*(x) = f(z*(x), x)`` as a differentiable function of ``x`` and ``θ``.

[`DEQSolver`][jiio_core.deq.DEQSolver] runs the forward fixed-point solve (any
[`Accelerator`][jiio_core.accelerators.Accelerator], through [`fixed_point`][jiio_core.solver.fixed_point]) and
attaches an implicit-function-theorem backward pass ([`with_implicit_backward`][jiio_core.outer.with_implicit_backward]);
its [`DEQSolution`][jiio_core.deq.DEQSolution] and [`DEQBackwardStats`][jiio_core.deq.DEQBackwardStats] count the evaluations of ``f`` and the
vector-Jacobian products both passes made. It is the forward model of the paper's gradient
baselines ([`jiio_core.baselines`][jiio_core.baselines]) and of evaluating a trained model at a fixed input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

import attrs
import torch
from torch import Tensor

from jiio_core._checks import check_tensor
from jiio_core.accelerators import Accelerator, AndersonII
from jiio_core.context import accepts_context
from jiio_core.layer import Layer
from jiio_core.outer import BackwardStats, with_implicit_backward
from jiio_core.solver import FixedPointResult, LowestResidual, Status, StepOutput, fixed_point
from jiio_core.state import State, StateSpec
from jiio_core.validators import instance_of, int_in, number_in

__all__ = ["CellFn", "DEQBackwardStats", "DEQSolution", "DEQSolver", "cell_takes_context"]

CellFn: TypeAlias = Callable[[State, Tensor], State]
"""A plain function ``f(z, x) -> z`` with the shapes of ``z`` (batch first, samples independent);
one that receives a batch's context declares it: ``f(z, x, context=None) -> z``."""


@attrs.define
class DEQBackwardStats(BackwardStats):
    """[`BackwardStats`][jiio_core.outer.BackwardStats] that also counts vector-Jacobian products.

    ``iterations``/``residual``/``status`` describe the last backward solve (one per backward
    pass through the solution); the counts add up over all of them.
    """

    evaluations: int = 0
    """Batch VJP evaluations ``uᵀ ∂f/∂z`` made by the backward fixed-point solves (every sample
    of the batch is multiplied on each, frozen ones included). Each backward pass then makes one
    more VJP through ``f``, carrying the solution ``u`` on to ``θ`` and ``x`` (see
    [`vjp_evaluations`][jiio_core.deq.DEQBackwardStats.vjp_evaluations])."""
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
    autograd on, [`DEQSolver.solve`][jiio_core.deq.DEQSolver.solve] evaluates ``f`` once more at ``z*`` to attach the graph
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

    ``f`` is a [`Layer`][jiio_core.layer.Layer] or a plain function ``f(z, x) -> z``. The forward
    solve stops when every sample has converged (``‖f(z) − z‖ ≤ tol · max(1, ‖z‖)``), tested
    every ``check_every`` evaluations (each test is one host sync), or after ``max_iter``.
    A solver is a value: it keeps nothing between solves, and a batch's context
    ([`jiio_core.context`][jiio_core.context]) is an argument of [`solve`][jiio_core.deq.DEQSolver.solve].
    """

    accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=10), validator=instance_of(Accelerator)
    )
    max_iter: int = attrs.field(default=50, validator=int_in(1))
    tol: float = attrs.field(default=1e-4, validator=number_in(0.0))
    backward_accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=10), validator=instance_of(Accelerator)
    )
    backward_max_iter: int = attrs.field(default=50, validator=int_in(1))
    backward_tol: float = attrs.field(default=1e-4, validator=number_in(0.0))
    throw: bool = False
    check_every: int = attrs.field(default=5, validator=int_in(1))
    """Forward-solve evaluations between stopping tests."""

    def solve(
        self,
        f: Layer | CellFn,
        x: Tensor,
        z0: State | None = None,
        *,
        context: Any = None,
        z_shape: tuple[int, ...] | None = None,
    ) -> DEQSolution:
        """Equilibrium of ``f`` at input ``x``; gradients reach ``x`` and ``f``'s parameters.

        The initial state is ``z0`` if given, else ``f.init_state(x)`` for a
        [`Layer`][jiio_core.layer.Layer], else zeros of shape ``(B, *z_shape)`` with ``x``'s
        dtype and device (a plain function has no ``init_state``, so it needs ``z0`` or
        ``z_shape``). ``context`` ([`jiio_core.context`][jiio_core.context]) is passed to every evaluation of
        ``f`` in the forward solve and the backward pass, as ``f(z, x, context=context)``;
        ``f`` must then declare a ``context`` parameter.
        """
        check_tensor("x", x, ndim_min=1)
        with torch.no_grad():
            z_init = _initial_state(f, x, z0, z_shape, context)
            cell = _bind(f, context)
            spec = StateSpec.of(z_init)
            xd = x.detach()

            def step(zf: Tensor, k: int) -> StepOutput:
                fz = spec.pack(cell(spec.unpack(zf), xd))
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
            graph_evaluations = 1
            zf = with_implicit_backward(
                spec.pack(cell(spec.unpack(zl), x)),
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


def cell_takes_context(f: Layer | CellFn) -> bool:
    """Whether ``f`` (a [`Layer`][jiio_core.layer.Layer] or a plain function) declares a
    ``context`` parameter."""
    return f.takes_context if isinstance(f, Layer) else accepts_context(f)


def _bind(f: Layer | CellFn, context: Any) -> CellFn:
    """``(z, x) ↦ f(z, x)`` with ``context`` passed on every call (``f`` itself if none): a
    per-solve closure, nothing set on ``f``."""
    if context is None:
        return f
    if not cell_takes_context(f):
        what = f"{type(f).__name__}.forward" if isinstance(f, Layer) else f"f ({type(f).__name__})"
        raise TypeError(
            f"DEQSolver.solve got a context ({type(context).__name__}), but {what} takes none: "
            "declare a `context` parameter (f(z, x, context=None)) to receive it, or pass none"
        )
    if isinstance(f, Layer):
        layer = f
        return lambda z, x: layer(z, x, context)
    fn = cast(Callable[..., State], f)
    return lambda z, x: fn(z, x, context=context)


def _initial_state(
    f: object, x: Tensor, z0: State | None, z_shape: tuple[int, ...] | None, context: Any = None
) -> State:
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
        return f.initial_state(x, context)
    if z_shape is None:
        raise ValueError(
            f"a plain callable f ({type(f).__name__}) has no init_state: pass z0 (the initial "
            "state, batch first) or z_shape (zeros of shape (B, *z_shape)), got neither"
        )
    return torch.zeros(batch, *z_shape, dtype=x.dtype, device=x.device)

"""The solve recipe: one value that turns solver settings into the objects of a solve.

[`SolveSettings`][jiio_core.recipe.SolveSettings] holds every knob of a JIIO solve and of the plain DEQ solves around it
(accelerator kind and memory, damping and its schedule, thresholds, selection, the backward
solves of the implicit outer gradients, the Jacobian penalty's probes). Its ``make_*`` methods
build the strategy objects and [`SolveSettings.problem`][jiio_core.recipe.SolveSettings.problem] composes a
[`JointProblem`][jiio_core.problem.JointProblem]. Everything that solves (trainers, evaluators,
benchmarks, the CLI) builds its solvers through one of these, so a setting means one thing
everywhere. ``jiio_zoo.recipe`` maps a zoo config onto it.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from jiio_core.accelerators import Accelerator, AndersonI, AndersonII, Broyden, Picard
from jiio_core.constraint import Constraint
from jiio_core.damping import Damping
from jiio_core.deq import DEQSolver
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.outer import AdjointShortcut, FixedInput, ImplicitKKT, OuterGradient, Unrolled
from jiio_core.problem import JointProblem
from jiio_core.regularizer import JacobianPenalty
from jiio_core.solver import CostResidualTradeoff, LowestCost, LowestResidual, Selection
from jiio_core.validators import instance_of, int_in, number_in, one_of, optional

AcceleratorKind = Literal["picard", "anderson1", "anderson2", "broyden"]
ACCELERATORS: tuple[str, ...] = ("picard", "anderson1", "anderson2", "broyden")
XStep = Literal["gradient", "normalized"]
SelectionKind = Literal["tradeoff", "residual", "cost"]
OuterKind = Literal["shortcut", "kkt", "fixed-input", "unrolled"]
OUTER_GRADIENTS: tuple[str, ...] = ("shortcut", "kkt", "fixed-input", "unrolled")


def _damping_triple(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = isinstance(value, tuple) and len(value) == 3
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)  # type: ignore[attr-defined]
    if not ok:
        raise ValueError(
            f"{type(inst).__name__}.{attribute.name} must be a tuple (alpha_z, alpha_mu, alpha_x) "
            f"of numbers, got {value!r}"
        )


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen(kw_only=True)
class SolveSettings:
    """Every setting of a JIIO solve and of the DEQ solves around it.

    Units are those of [`jiio_core.augmented`][jiio_core.augmented]: ``α_x`` multiplies the gradient of the
    *summed* loss (the objective's ``loss_scale``) for ``x_step="gradient"``, or is the length
    of the step along the normalised gradient for ``x_step="normalized"``; ``tol`` bounds the
    largest relative block residual. ``switch_at`` is the (0-based) iteration from which
    ``x_late`` replaces ``α_x``; it is used as given, whatever ``max_iter`` is (a solve shorter
    than ``switch_at`` never switches).
    """

    accelerator: AcceleratorKind = attrs.field(default="anderson1", validator=one_of(*ACCELERATORS))
    memory: int = attrs.field(default=20, validator=int_in(1))
    """History length of Anderson, or the rank of Broyden's inverse Jacobian."""
    damping: tuple[float, float, float] = attrs.field(
        default=(0.8, 0.6, 0.01), converter=_to_tuple, validator=_damping_triple
    )
    x_late: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    switch_at: int | None = attrs.field(default=None, validator=optional(int_in(0)))
    x_step: XStep = attrs.field(default="gradient", validator=one_of("gradient", "normalized"))
    max_iter: int = attrs.field(default=100, validator=int_in(1))
    tol: float = attrs.field(default=1e-4, validator=number_in(0.0))
    equilibrium_tol: float = attrs.field(default=1e-3, validator=number_in(0.0, low_open=True))
    selection: SelectionKind = attrs.field(default="tradeoff", validator=one_of("tradeoff", "residual", "cost"))
    balance_blocks: bool = attrs.field(default=False, validator=instance_of(bool))
    """Anderson weighs the ``z``, ``μ`` and ``x`` blocks of the joint residual alike
    ([`Accelerator.init_blocks`][jiio_core.accelerators.Accelerator.init_blocks]); ``False`` (default): the
    Euclidean metric. Measured on training data: fewer iterations to a loose optimum
    (``faces_gen_small``: 20 → 16 to Adam-40's loss; ``digits_adv_small``: 35 → 30 to PGD-20's
    success), but less robust late in a solve (held-out faces degraded after 64 iterations;
    Anderson-II failed to converge on a small problem solved to 1e-13): opt in per solve."""
    balance_until: int | None = attrs.field(default=None, validator=optional(int_in(0)))
    """With ``balance_blocks``: weigh the blocks alike in the first ``balance_until`` Anderson
    updates only, then the Euclidean metric (``None``: throughout; see
    [`AndersonI.balance_until`][jiio_core.accelerators.AndersonI.balance_until])."""
    check_every: int = attrs.field(default=5, validator=int_in(1))
    forward_max_iter: int = attrs.field(default=50, validator=int_in(1))
    """Budget of a plain DEQ forward solve ([`deq_solver`][jiio_core.recipe.SolveSettings.deq_solver], [`JointProblem.equilibrium`][jiio_core.problem.JointProblem.equilibrium])."""
    forward_tol: float = attrs.field(default=1e-5, validator=number_in(0.0))
    backward_max_iter: int = attrs.field(default=50, validator=int_in(1))
    """Budget of the backward linear solves (implicit outer gradients, the DEQ's backward)."""
    backward_tol: float = attrs.field(default=1e-5, validator=number_in(0.0))
    jacobian_probes: int = attrs.field(default=2, validator=int_in(1))
    jacobian_start: int = attrs.field(default=15, validator=int_in(0))
    """The penalty's iterate is drawn from ``[min(jacobian_start, max_iter // 2), max_iter)``."""

    def __attrs_post_init__(self) -> None:
        Damping(*self.damping, x_late=self.x_late, switch_at=self.switch_at)  # validates the values

    def evolve(self, **changes: Any) -> SolveSettings:
        """A copy with some fields changed (validated like the constructor)."""
        return attrs.evolve(self, **changes)

    def make_accelerator(self) -> Accelerator[Any]:
        if self.accelerator == "picard":
            return Picard()
        if self.accelerator == "anderson1":
            return AndersonI(memory=self.memory, balance_until=self.balance_until)
        if self.accelerator == "anderson2":
            return AndersonII(memory=self.memory, balance_until=self.balance_until)
        return Broyden(memory=self.memory)

    def make_damping(self) -> Damping:
        return Damping(*self.damping, x_late=self.x_late, switch_at=self.switch_at)

    def make_selection(self) -> Selection:
        if self.selection == "tradeoff":
            return CostResidualTradeoff()
        if self.selection == "residual":
            return LowestResidual()
        return LowestCost()

    def make_outer(self, kind: OuterKind | OuterGradient = "shortcut") -> OuterGradient:
        """The outer gradient named ``kind`` (or ``kind`` itself), its backward solves set from
        ``backward_max_iter``/``backward_tol`` with Anderson-II of the same memory."""
        if isinstance(kind, OuterGradient):
            return kind
        if kind == "shortcut":
            return AdjointShortcut()
        if kind == "unrolled":
            return Unrolled()
        acc = AndersonII(memory=self.memory)
        if kind == "kkt":
            return ImplicitKKT(accelerator=acc, max_iter=self.backward_max_iter, tol=self.backward_tol)
        if kind == "fixed-input":
            return FixedInput(accelerator=acc, max_iter=self.backward_max_iter, tol=self.backward_tol)
        raise ValueError(f"outer must be one of {', '.join(map(repr, OUTER_GRADIENTS))} or an OuterGradient, got {kind!r}")

    def make_jacobian_penalty(self) -> JacobianPenalty:
        return JacobianPenalty(probes=self.jacobian_probes, start=min(self.jacobian_start, self.max_iter // 2))

    def problem(
        self,
        layer: Layer,
        objective: InnerObjective,
        *,
        constraint: Constraint | None = None,
        outer: OuterKind | OuterGradient = "shortcut",
        x_shape: tuple[int, ...] | None = None,
        jacobian_penalty: bool = False,
        throw: bool = False,
    ) -> JointProblem:
        """The [`JointProblem`][jiio_core.problem.JointProblem] these settings describe."""
        return JointProblem(
            layer,
            objective,
            constraint,
            accelerator=self.make_accelerator(),
            damping=self.make_damping(),
            outer=self.make_outer(outer),
            max_iter=self.max_iter,
            tol=self.tol,
            x_shape=x_shape,
            selection=self.make_selection(),
            normalized_x_step=self.x_step == "normalized",
            jacobian_penalty=self.make_jacobian_penalty() if jacobian_penalty else None,
            check_every=self.check_every,
            equilibrium_tol=self.equilibrium_tol,
            balance_blocks=self.balance_blocks,
            throw=throw,
        )

    def deq_solver(self, *, max_iter: int | None = None, tol: float | None = None) -> DEQSolver:
        """A plain DEQ forward solve (implicit backward) with the same accelerator kind."""
        return DEQSolver(
            accelerator=self.make_accelerator(),
            max_iter=self.forward_max_iter if max_iter is None else max_iter,
            tol=self.forward_tol if tol is None else tol,
            backward_accelerator=AndersonII(memory=self.memory),
            backward_max_iter=self.backward_max_iter,
            backward_tol=self.backward_tol,
            check_every=self.check_every,
        )

"""``JointProblem``: a layer, an inner objective, a constraint and solver strategies, composed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from jiio_core._checks import check_positive, check_tensor
from jiio_core.accelerators import Accelerator, AndersonII
from jiio_core.augmented import AugmentedMap
from jiio_core.constraint import Constraint, Unconstrained
from jiio_core.context import require_taker
from jiio_core.damping import Damping
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective, Relation
from jiio_core.outer import AdjointShortcut, BackwardStats, OuterContext, OuterGradient, Unrolled
from jiio_core.regularizer import JacobianPenalty, hutchinson_jacobian_norm
from jiio_core.solver import CostResidualTradeoff, Selection, Status, StepOutput, Trace, fixed_point
from jiio_core.state import State, StateSpec


class SolveError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when some samples diverged."""


@attrs.frozen(eq=False)
class Equilibrium:
    """The DEQ re-solved at a fixed input: [`JointProblem.equilibrium`][jiio_core.problem.JointProblem.equilibrium]'s result."""

    z: State
    """``z*(x)``, solved to the requested tolerance."""
    loss: Tensor
    """``ℓ(z*(x), x, y)`` per sample."""
    residual: Tensor
    """``(B,)`` relative residual ``‖f(z, x) − z‖ / max(1, ‖z‖)`` at ``z``."""
    iterations: Tensor
    status: Tensor
    """``int8`` [`Status`][jiio_core.solver.Status] codes of the forward solve."""


@attrs.frozen(eq=False)
class JointSolution:
    """Result of [`JointProblem.solve`][jiio_core.problem.JointProblem.solve]; every per-sample quantity has shape ``(B,)``.

    Which of ``x``, ``z``, ``mu``, ``loss`` carry gradients to ``θ`` depends on the
    problem's [`OuterGradient`][jiio_core.outer.OuterGradient] (see its docs); the others are detached.
    """

    x: Tensor
    """Optimised input ``x*``, always projected onto the constraint set."""
    z: State
    """Equilibrium state ``z*`` (same structure as the layer's state)."""
    mu: Tensor
    """Adjoint ``μ*`` of each sample's own loss, packed ``(B, N_z)``."""
    loss: Tensor
    """Inner loss ``ℓ(z*, x*, y)`` per sample, at the returned iterate ``(z*, x*)``. It is the
    loss of the input ``x*`` only where [`at_equilibrium`][jiio_core.problem.JointSolution.at_equilibrium] holds; elsewhere ``z*`` is not
    yet ``x*``'s equilibrium: use [`JointProblem.equilibrium`][jiio_core.problem.JointProblem.equilibrium] for the loss of ``x*``."""
    kkt_residual: Tensor
    """KKT residual (eq. 14) at the returned iterate: the largest of the relative block
    residuals ``r_z, r_μ, r_x`` (see [`kkt_blocks`][jiio_core.problem.JointSolution.kkt_blocks]); a sample converged when it is
    ``≤ tol``."""
    iterations: Tensor
    """Augmented-map evaluations spent on each sample."""
    status: Tensor
    """``int8`` [`Status`][jiio_core.solver.Status] codes."""
    trace: Trace
    """Per-iteration KKT residual and cost, ``(iterations_run, B)``, for plots."""
    relation: Relation
    jacobian_penalty: Tensor | None = None
    """Hutchinson ``‖J_z‖_F²/N`` at a random iterate, when the problem asks for it."""
    backward: BackwardStats = attrs.field(factory=BackwardStats)
    """Convergence of the backward solve, filled when autograd runs it."""
    kkt_blocks: Tensor | None = None
    """``(B, 3)``: the relative residuals ``(r_z, r_μ, r_x)`` of the DEQ, adjoint and
    x-stationarity blocks at the returned iterate ([`jiio_core.augmented`][jiio_core.augmented] defines them)."""
    equilibrium_tol: float = math.inf
    """The bound on ``r_z`` under which the returned iterate counts as at equilibrium."""
    nonsmooth: Tensor | None = None
    """``g(x*)`` per sample, the objective's non-smooth part ([`jiio_core.prox`][jiio_core.prox]) in the
    units of the summed loss ``s·ℓ``; ``None`` without one. Differentiable where ``x`` is."""
    loss_scale: Tensor | float = 1.0
    """``s``, the objective's ``loss_scale(y)`` for this batch."""

    @property
    def total_loss(self) -> Tensor:
        """``ℓ + g(x*)/s`` per sample, the objective the solve minimised, in ``ℓ``'s units
        ([`loss`][jiio_core.problem.JointSolution.loss] itself without a non-smooth part)."""
        if self.nonsmooth is None:
            return self.loss
        s = self.loss_scale
        return self.loss + self.nonsmooth / (s.reshape(-1) if isinstance(s, Tensor) else s)

    @property
    def at_equilibrium(self) -> Tensor:
        """``(B,)`` bool: is ``z*`` the equilibrium of ``x*`` to within ``equilibrium_tol``
        (so that [`loss`][jiio_core.problem.JointSolution.loss] is the loss of the returned input)?"""
        if self.kkt_blocks is None:
            return torch.ones_like(self.status, dtype=torch.bool)
        return self.kkt_blocks[:, 0] <= self.equilibrium_tol

    @property
    def converged(self) -> Tensor:
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> Tensor:
        return self.status == Status.DIVERGED

    @property
    def outer_loss(self) -> Tensor:
        """``±loss`` per the objective's relation (``-loss`` for adversarial training)."""
        return self.relation.sign * self.loss

    def summary(self) -> str:
        """One line: counts of each status and the residual range (syncs with the device)."""
        counts = {s.name.lower(): int((self.status == s).sum()) for s in Status}
        res = self.kkt_residual
        off = int((~self.at_equilibrium).sum())
        return (
            f"JointSolution(batch={res.shape[0]}, {counts}, not at equilibrium {off}, kkt_residual in "
            f"[{float(res.min()):.3g}, {float(res.max()):.3g}], iterations max "
            f"{int(self.iterations.max())})"
        )


def _batch_of(y: Any) -> int | None:
    if isinstance(y, Tensor) and y.ndim > 0:
        return int(y.shape[0])
    if isinstance(y, (tuple, list)):
        for item in y:
            b = _batch_of(item)
            if b is not None:
                return b
    return None


def _tensors_of(y: Any, name: str = "y") -> Iterator[tuple[str, Tensor]]:
    if isinstance(y, Tensor):
        yield name, y
    elif isinstance(y, (tuple, list)):
        for i, item in enumerate(y):
            yield from _tensors_of(item, f"{name}[{i}]")


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


class JointProblem(nn.Module):
    """Joint inference and input optimisation (eq. 11) for one layer and one inner loss.

    Solves, per sample, ``min_{x ∈ C} ℓ(z*(x), x, y)`` with ``z*(x) = f_θ(z*(x), x)`` by
    iterating the augmented map on ``v = (z, μ, x)`` with ``accelerator``, and makes the
    result differentiable in ``θ`` as ``outer`` says. It is an ``nn.Module`` holding the layer
    and the objective, so ``problem.parameters()`` are all of ``θ``. Per-batch conditioning is
    an argument of each call (``solve(y, context=c)``, [`jiio_core.context`][jiio_core.context]): the problem,
    its layer and its objective keep no state between solves.

    Args:
        layer: the DEQ cell ``f_θ``.
        objective: the per-sample inner loss ``ℓ`` (its ``relation`` says how the outer loss
            relates to it).
        constraint: feasible set of ``x`` (may be overridden per call in [`solve`][jiio_core.problem.JointProblem.solve]).
        accelerator: fixed-point accelerator for the augmented iteration.
        damping: ``(α_z, α_μ, α_x)`` and its schedule.
        outer: how ``θ`` gets its gradient.
        max_iter: augmented-map evaluations at most.
        tol: a sample converges when its KKT residual (the largest relative block residual,
            see [`jiio_core.augmented`][jiio_core.augmented]) is ``≤ tol``.
        x_shape: shape of one sample's input, used when ``solve`` gets no ``x0`` (zeros).
        selection: rule picking each sample's returned iterate (default: the paper's
            cost/residual trade-off).
        normalized_x_step: use ``J_xᵀμ / ‖J_xᵀμ‖`` as the x-direction (the original adversarial
            code's normalised step).
        jacobian_penalty: compute the Jacobian regulariser at a random iterate.
        check_every: iterations between stopping tests (each is one host sync).
        divergence_factor: a sample diverges when its residual exceeds this many times its
            first residual (or turns NaN/Inf).
        equilibrium_tol: an iterate is *at equilibrium* when its DEQ block's relative residual
            ``r_z ≤ equilibrium_tol``; selection returns such an iterate whenever the solve
            produced one, and [`JointSolution.at_equilibrium`][jiio_core.problem.JointSolution.at_equilibrium] says per sample whether it did.
        balance_blocks: start the accelerator with the block layout ``(z, μ, x)`` of the
            augmented state ([`Accelerator.init_blocks`][jiio_core.accelerators.Accelerator.init_blocks]): Anderson
            then weighs the three blocks' residuals alike in its mixing coefficients, whatever
            their units (``μ`` is the adjoint of a loss whose scale is arbitrary, ``x`` has far
            fewer entries than ``z``). ``False`` (default): the plain Euclidean metric on ``v``.
            It pays early (fewer iterations to a loose optimum on the zoo's Anderson-I
            problems) and can cost late (more iterations, or none converging, on small problems
            solved to 1e-13; see [`jiio_core.recipe.SolveSettings.balance_blocks`][jiio_core.recipe.SolveSettings.balance_blocks]).
        throw: raise [`SolveError`][jiio_core.problem.SolveError] if any sample diverges (and make backward solves raise
            on failure); otherwise the status reports it.
    """

    def __init__(
        self,
        layer: Layer,
        objective: InnerObjective,
        constraint: Constraint | None = None,
        accelerator: Accelerator[Any] | None = None,
        damping: Damping | None = None,
        outer: OuterGradient | None = None,
        max_iter: int = 100,
        tol: float = 1e-4,
        *,
        x_shape: tuple[int, ...] | None = None,
        selection: Selection | None = None,
        normalized_x_step: bool = False,
        jacobian_penalty: JacobianPenalty | None = None,
        check_every: int = 5,
        divergence_factor: float = 1e6,
        equilibrium_tol: float = 1e-3,
        balance_blocks: bool = False,
        throw: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a jiio_core.Layer, got {type(layer).__name__}")
        if not isinstance(objective, InnerObjective):
            raise TypeError(f"objective must be a jiio_core.InnerObjective, got {type(objective).__name__}")
        constraint = Unconstrained() if constraint is None else constraint
        accelerator = AndersonII(memory=10) if accelerator is None else accelerator
        damping = Damping() if damping is None else damping
        outer = AdjointShortcut() if outer is None else outer
        selection = CostResidualTradeoff() if selection is None else selection
        for name, value, kind in (
            ("constraint", constraint, Constraint),
            ("accelerator", accelerator, Accelerator),
            ("damping", damping, Damping),
            ("outer", outer, OuterGradient),
            ("selection", selection, Selection),
        ):
            if not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if jacobian_penalty is not None and not isinstance(jacobian_penalty, JacobianPenalty):
            raise TypeError(
                f"jacobian_penalty must be a JacobianPenalty or None, got {type(jacobian_penalty).__name__}"
            )
        if outer.requires_relation and objective.relation is Relation.OTHER:
            raise ValueError(
                f"outer={type(outer).__name__} is exact only when the outer loss is ±ℓ, but "
                f"{type(objective).__name__}.relation is Relation.OTHER; use ImplicitKKT, "
                "FixedInput or Unrolled"
            )
        outer.check_objective(objective)
        if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        if not isinstance(equilibrium_tol, (int, float)) or not equilibrium_tol > 0:
            raise ValueError(f"equilibrium_tol must be a number > 0, got {equilibrium_tol!r}")
        if not isinstance(divergence_factor, (int, float)) or not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be a number > 1, got {divergence_factor!r}")
        if x_shape is not None and (
            not isinstance(x_shape, tuple) or not all(isinstance(s, int) and s > 0 for s in x_shape)
        ):
            raise ValueError(f"x_shape must be a tuple of positive ints, got {x_shape!r}")
        self.layer = layer
        self.objective = objective
        self.constraint = constraint
        self.accelerator = accelerator
        self.damping = damping
        self.outer = outer
        self.max_iter = _check_int("max_iter", max_iter, 1)
        self.tol = float(tol)
        self.x_shape = x_shape
        self.selection = selection
        self.normalized_x_step = bool(normalized_x_step)
        self.jacobian_penalty = jacobian_penalty
        self.check_every = _check_int("check_every", check_every, 1)
        self.divergence_factor = float(divergence_factor)
        self.equilibrium_tol = float(equilibrium_tol)
        self.balance_blocks = bool(balance_blocks)
        self.throw = bool(throw)

    def _reference(self) -> tuple[torch.dtype, torch.device] | None:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
        return None

    def _initial_x(self, y: Any, x0: Tensor | None) -> Tensor:
        ref = self._reference()
        if x0 is None:
            if self.x_shape is None:
                raise ValueError("solve needs x0 when the problem was built without x_shape")
            batch = _batch_of(y)
            if batch is None:
                raise ValueError("cannot infer the batch size from y (no tensor in it); pass x0 explicitly")
            if ref is None:
                first = next((t for _, t in _tensors_of(y) if t.is_floating_point()), None)
                ref = (
                    (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))
                )
            return torch.zeros(batch, *self.x_shape, dtype=ref[0], device=ref[1])
        check_tensor("x0", x0, ndim_min=1, finite=False)  # finiteness last: it syncs with x0's device
        if self.x_shape is not None and tuple(x0.shape[1:]) != self.x_shape:
            raise ValueError(
                f"x0 must have shape (B, {', '.join(map(str, self.x_shape))}) to match x_shape, "
                f"got {tuple(x0.shape)}"
            )
        if ref is not None:
            if x0.dtype != ref[0]:
                raise TypeError(f"x0 must have dtype {ref[0]} (the parameters'), got {x0.dtype}")
            if x0.device != ref[1]:
                raise ValueError(f"x0 must be on device {ref[1]} (the parameters'), got {x0.device}")
        check_tensor("x0", x0)
        return x0

    def _check_y(self, y: Any, x: Tensor) -> None:
        for name, t in _tensors_of(y):
            if t.ndim == 0 or t.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{name} must have batch size {x.shape[0]} in dimension 0 (like x), "
                    f"got shape {tuple(t.shape)}"
                )
            if t.device != x.device:
                raise ValueError(f"{name} must be on device {x.device}, got {t.device}")
            if t.is_floating_point():
                check_tensor(name, t, like=x)

    def solve(
        self,
        y: Any,
        x0: Tensor | None = None,
        *,
        context: Any = None,
        constraint: Constraint | None = None,
        z0: State | None = None,
        generator: torch.Generator | None = None,
    ) -> JointSolution:
        """Solve the joint problem for the batch ``y`` (a tensor or a tuple of tensors, batch
        first), starting from ``x0`` (zeros of ``x_shape`` if ``None``) and ``z0``
        (``layer.init_state(x0)`` if ``None``); ``μ`` starts at zero.

        ``context`` is this batch's fixed conditioning ([`jiio_core.context`][jiio_core.context]: a clean
        image, a task's images, a measurement operator), handed to the layer and the objective
        wherever they declare a ``context`` parameter, on every evaluation of this solve and of
        its backward pass, and kept nowhere after it. ``constraint`` overrides the problem's
        constraint for this call (e.g. an ``L2Ball`` centred on this batch). ``generator``
        drives the random iterate of the Jacobian penalty.
        """
        self._check_context(context)
        x0 = self._initial_x(y, x0)
        self._check_y(y, x0)
        constraint = self.constraint if constraint is None else constraint
        if not isinstance(constraint, Constraint):
            raise TypeError(f"constraint must be a Constraint, got {type(constraint).__name__}")
        constraint.validate(x0)
        with torch.no_grad():
            x0p = constraint.project(x0.detach())
            z_init = self.layer.initial_state(x0p, context) if z0 is None else z0
        spec = StateSpec.of(z_init)
        if z0 is not None:
            first = z_init[0] if isinstance(z_init, tuple) else z_init
            if first.shape[0] != x0.shape[0]:
                raise ValueError(
                    f"z0 must have batch size {x0.shape[0]} (like x0), got shape {tuple(first.shape)}"
                )
        amap = AugmentedMap(
            layer=self.layer,
            objective=self.objective,
            constraint=constraint,
            damping=self.damping,
            z_spec=spec,
            x_shape=tuple(x0.shape[1:]),
            normalized_x_step=self.normalized_x_step,
            loss_scale=self._loss_scale(y, x0),
            equilibrium_tol=self.equilibrium_tol,
            context=context,
        )
        v0 = amap.pack(z_init, torch.zeros(x0.shape[0], spec.numel, dtype=x0.dtype, device=x0.device), x0p)
        unrolled = isinstance(self.outer, Unrolled) and torch.is_grad_enabled()
        jp = self.jacobian_penalty
        kwargs: dict[str, Any] = {
            "max_iter": self.max_iter,
            "tol": self.tol,
            "selection": self.selection,
            "check_every": self.check_every,
            "divergence_factor": self.divergence_factor,
            "sample_from": None if jp is None else jp.start,
            "generator": generator,
            "blocks": (spec.numel, spec.numel, amap.nx) if self.balance_blocks else None,
        }
        grad_ctx = torch.enable_grad() if unrolled else torch.no_grad()
        with grad_ctx:
            res = fixed_point(amap.step(y, create_graph=unrolled), v0.detach(), self.accelerator, **kwargs)
        if self.throw and bool((res.status == Status.DIVERGED).any()):
            bad = (res.status == Status.DIVERGED).nonzero().flatten().tolist()
            raise SolveError(
                f"the joint solve diverged for samples {bad} (NaN/Inf or residual growth > "
                f"{self.divergence_factor:g}x); best finite iterates are in the solution when throw=False"
            )
        stats = BackwardStats()
        # accelerators mix iterates, so an evaluated x can sit slightly outside C (and dom g):
        # return Π_C(x) (with g: the projection onto C ∩ dom g)
        zf, mu, xf = amap.split(res.v)
        v_star = torch.cat([zf, mu, amap.prox_step(amap.unpack_x(xf), 0.0).reshape(xf.shape)], dim=1)
        ctx = OuterContext(amap=amap, y=y, v_star=v_star, final_iter=res.iterations_run - 1, stats=stats)
        att = self.outer.attach(ctx, throw=self.throw)
        penalty = None
        if jp is not None and res.sampled is not None:
            zs, _, xs = amap.split(res.sampled)
            penalty = hutchinson_jacobian_norm(
                self.layer, spec.unpack(zs), amap.unpack_x(xs), context=context, probes=jp.probes,
                generator=generator,
            )
        return JointSolution(
            x=att.x,
            z=att.z,
            mu=att.mu,
            loss=att.loss,
            kkt_residual=res.residual,
            iterations=res.iterations,
            status=res.status,
            trace=res.trace,
            relation=self.objective.relation,
            jacobian_penalty=penalty,
            backward=stats,
            kkt_blocks=res.blocks,
            equilibrium_tol=self.equilibrium_tol,
            nonsmooth=None if amap.nonsmooth is None else amap.nonsmooth.value(att.x),
            loss_scale=amap.loss_scale,
        )

    def _check_context(self, context: Any) -> None:
        require_taker(
            context,
            {type(self.layer).__name__: self.layer.takes_context,
             type(self.objective).__name__: self.objective.takes_context},
            "JointProblem",
        )

    def _loss_scale(self, y: Any, x: Tensor) -> Tensor | float:
        s = self.objective.loss_scale(y)
        name = f"{type(self.objective).__name__}.loss_scale(y)"
        if isinstance(s, Tensor):
            if s.shape not in ((), (x.shape[0],)):
                raise ValueError(f"{name} must be a float or a ({x.shape[0]},) tensor, got shape {tuple(s.shape)}")
            s = s.to(dtype=x.dtype, device=x.device)
            if not bool((torch.isfinite(s) & (s > 0)).all()):
                raise ValueError(f"{name} must be finite and > 0 for every sample, got {s}")
            return s
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {s!r}")
        return float(s)

    @torch.no_grad()
    def equilibrium(
        self,
        y: Any,
        x: Tensor,
        *,
        context: Any = None,
        tol: float = 1e-6,
        max_iter: int = 500,
        z0: State | None = None,
    ) -> Equilibrium:
        """Re-solve the DEQ at the fixed input ``x`` (e.g. a solution's ``x``) to the relative
        residual ``tol`` and return the loss there: the honest score of an input, whatever
        iterate the joint solve returned. Uses the problem's accelerator; no gradients.
        ``context``: the batch's context, as in [`solve`][jiio_core.problem.JointProblem.solve] (pass the same one)."""
        self._check_context(context)
        check_tensor("x", x, ndim_min=1)
        self._check_y(y, x)
        check_positive("tol", tol, allow_zero=True)
        _check_int("max_iter", max_iter, 1)
        z_init = self.layer.initial_state(x, context) if z0 is None else z0
        spec = StateSpec.of(z_init)

        def step(zf: Tensor, k: int) -> StepOutput:
            fz = spec.pack(self.layer(spec.unpack(zf), x, context))
            rel = torch.linalg.vector_norm(fz - zf, dim=1) / torch.linalg.vector_norm(zf, dim=1).clamp(min=1.0)
            return StepOutput(value=fz, residual=rel, relative=True)

        res = fixed_point(step, spec.pack(z_init), self.accelerator, max_iter=max_iter, tol=tol,
                          check_every=self.check_every, divergence_factor=self.divergence_factor)
        z = spec.unpack(res.v)
        return Equilibrium(z=z, loss=self.objective(z, x, y, context), residual=res.residual,
                           iterations=res.iterations, status=res.status)

    def forward(self, y: Any, x0: Tensor | None = None, *, context: Any = None) -> JointSolution:
        """Same as [`solve`][jiio_core.problem.JointProblem.solve]."""
        return self.solve(y, x0, context=context)

"""How the parameters ``θ`` get their gradient through a solved joint problem.

Each strategy turns the converged ``v* = (z*, μ*, x*)`` into outputs that autograd can
differentiate with respect to ``θ`` (the parameters of the layer and of the objective):

* [`AdjointShortcut`][jiio_core.outer.AdjointShortcut] — eq. 19: for an outer loss equal to ``±ℓ``, ``dℓ*/dθ = ∂ℓ/∂θ +
  μ*ᵀ ∂f/∂θ``. Only ``loss`` is differentiable; no extra solve.
* [`ImplicitKKT`][jiio_core.outer.ImplicitKKT] — eq. 16–17: implicit differentiation of the whole augmented fixed point,
  so ``z``, ``μ``, ``x`` and ``loss`` are all differentiable and any outer loss works (double
  backward through the layer).
* [`FixedInput`][jiio_core.outer.FixedInput] — the implicit function theorem through the DEQ at the fixed ``x*``
  (``dx*/dθ`` ignored, as the paper did for meta-learning); ``z`` and ``loss`` differentiable.
* [`Unrolled`][jiio_core.outer.Unrolled] — plain autograd through every iteration (memory grows with the iteration
  count; for checking the others).

Every strategy evaluates the layer and the objective through the solve's
[`AugmentedMap`][jiio_core.augmented.AugmentedMap] (``amap.f``, ``amap.loss``), so the per-batch context
of the solve ([`jiio_core.context`][jiio_core.context]) is the one its backward pass differentiates through.

With a non-smooth part ``g`` of the objective ([`jiio_core.prox`][jiio_core.prox]; ``g`` never depends on
``θ``): [`Unrolled`][jiio_core.outer.Unrolled] differentiates through every prox; [`ImplicitKKT`][jiio_core.outer.ImplicitKKT] through the
prox at the solution, with its (generalised) Jacobian, and refuses a prox that declares none
(``implicit_jacobian`` false); [`AdjointShortcut`][jiio_core.outer.AdjointShortcut] is exact for the
optimal value ``ℓ + g(x*)/s`` (``JointSolution.total_loss``); [`FixedInput`][jiio_core.outer.FixedInput] is unchanged.

Backward linear solves record their per-sample convergence in [`BackwardStats`][jiio_core.outer.BackwardStats]; a
backward solve that fails is reported there (and raised with ``throw=True``), never returned
as a silent zero.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core.accelerators import Accelerator, AndersonII
from jiio_core.augmented import AugmentedMap
from jiio_core.objective import InnerObjective
from jiio_core.prox import NonSmooth
from jiio_core.solver import FixedPointResult, Status, StepOutput, fixed_point
from jiio_core.state import State
from jiio_core.validators import instance_of, int_in, number_in


class BackwardSolveError(RuntimeError):
    """A backward (adjoint) linear solve did not converge and ``throw=True`` was asked."""


@attrs.define
class BackwardStats:
    """Filled in when autograd runs the backward solve of an implicit strategy."""

    residual: Tensor | None = None
    iterations: Tensor | None = None
    status: Tensor | None = None
    calls: int = 0

    def record(self, res: FixedPointResult) -> None:
        self.residual = res.residual
        self.iterations = res.iterations
        self.status = res.status
        self.calls += 1

    @property
    def converged(self) -> Tensor | None:
        return None if self.status is None else self.status == Status.CONVERGED


@attrs.frozen(eq=False)
class Attached:
    z: State
    x: Tensor
    mu: Tensor
    loss: Tensor


@attrs.frozen(eq=False)
class OuterContext:
    """What a strategy needs from the solved problem (the per-batch context of the solve, if
    any, travels in ``amap``: every layer and objective evaluation goes through it)."""

    amap: AugmentedMap
    y: Any
    v_star: Tensor
    final_iter: int
    stats: BackwardStats


def _detached(ctx: OuterContext) -> Attached:
    amap = ctx.amap
    zf, mu, xf = amap.split(ctx.v_star.detach())
    z = amap.z_spec.unpack(zf)
    x = amap.unpack_x(xf)
    return Attached(z=z, x=x, mu=mu, loss=amap.loss(z, x, ctx.y).detach())


def with_implicit_backward(
    output: Tensor,
    wrt: Tensor,
    *,
    accelerator: Accelerator[Any],
    max_iter: int,
    tol: float,
    stats: BackwardStats,
    throw: bool,
) -> Tensor:
    """``output = G(wrt)`` again (the same values), with the implicit-function-theorem gradient:
    use the returned tensor downstream.

    During backward, the cotangent ``g`` reaching the returned tensor is replaced by the solution
    ``u`` of ``u = g + (∂G/∂wrt)ᵀ u`` before it flows on into ``output``'s graph, so that the
    gradient reaching the parameters is ``uᵀ ∂G/∂θ = gᵀ (I − ∂G/∂v)⁻¹ ∂G/∂θ``. A gradient that
    reaches ``output`` itself, not through the returned tensor, is left as it is.

    The hook sits on the returned tensor (a view of ``output``), whose graph node lies
    downstream of ``output``'s, so the hook's reference to ``output`` (for the vector–Jacobian
    products) forms no cycle. A hook registered on ``output`` itself that refers to ``output``
    would be a cycle through autograd's C++ graph that Python's garbage collector cannot see:
    every solve's graph, with its saved activations, would stay in memory for good.
    """

    for name, t in (("output", output), ("wrt", wrt)):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise ValueError(f"{name} must be a tensor that requires grad (built with autograd on), got "
                             f"{type(t).__name__}{'' if not isinstance(t, Tensor) else ' without requires_grad'}")
    if output.shape != wrt.shape:
        raise ValueError(f"output must have wrt's shape {tuple(wrt.shape)} (output = G(wrt)), got {tuple(output.shape)}")

    def hook(g: Tensor) -> Tensor:
        def step(u: Tensor, k: int) -> StepOutput:
            (vjp,) = torch.autograd.grad(output, wrt, u, retain_graph=True, allow_unused=True)
            new = g if vjp is None else vjp + g
            return StepOutput(value=new, residual=torch.linalg.vector_norm(new - u, dim=1))

        with torch.no_grad():
            res = fixed_point(step, g.detach(), accelerator, max_iter=max_iter, tol=tol)
        stats.record(res)
        if throw and not bool(res.converged.all()):
            bad = (~res.converged).nonzero().flatten().tolist()
            raise BackwardSolveError(
                f"backward solve did not converge for samples {bad} "
                f"(residuals {res.residual[bad].tolist()}, max_iter={max_iter}, tol={tol})"
            )
        return res.v

    out = output.view_as(output)
    out.register_hook(hook)
    return out


class OuterGradient(ABC):
    """Strategy producing θ-differentiable outputs from a solved problem."""

    requires_relation: bool = False
    """True if the strategy is only exact when the outer loss is ``±ℓ``."""

    @abstractmethod
    def attach(self, ctx: OuterContext, *, throw: bool) -> Attached:
        """Differentiable ``z, x, μ, loss`` at the solution."""

    def check_objective(self, objective: InnerObjective) -> None:
        """Raise ``ValueError`` if this strategy cannot differentiate a problem with this
        objective (called when a [`JointProblem`][jiio_core.problem.JointProblem] is built)."""
        del objective


@attrs.frozen
class AdjointShortcut(OuterGradient):
    """Eq. 19: re-use ``μ*`` as the adjoint; exact for outer loss ``= ±ℓ`` at a solved problem.

    ``loss`` is the Lagrangian ``ℓ(z*, x*, y) + μ*ᵀ (f(z*, x*) − z*)`` with ``z*, x*, μ*``
    detached: its value is ``ℓ`` (up to the residual) and its θ-gradient is
    ``∂ℓ/∂θ + μ*ᵀ ∂f/∂θ``. The envelope theorem makes the ``x*`` dependence vanish, also on the
    boundary of a constraint. Use ``solution.outer_loss`` for the negated case. With a
    non-smooth part ``g`` ([`jiio_core.prox`][jiio_core.prox]) the same gradient is that of the optimal value
    ``ℓ + g(x*)/s`` (``solution.total_loss``), not of ``ℓ`` alone: ``∇_xℓ`` does not vanish at
    a non-smooth optimum. ``refine_steps`` polishes ``μ*`` by that many adjoint iterations at
    the solution (the original code's "μ* as warm start" variant).
    """

    refine_steps: int = attrs.field(default=0, validator=int_in(0))
    refine_accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=10), validator=instance_of(Accelerator)
    )

    requires_relation = True

    def attach(self, ctx: OuterContext, *, throw: bool) -> Attached:
        if not torch.is_grad_enabled():
            return _detached(ctx)
        amap = ctx.amap
        zf, mu, xf = amap.split(ctx.v_star.detach())
        x = amap.unpack_x(xf)
        if self.refine_steps > 0:
            mu = self._refine(ctx, zf, mu, x)
        z = amap.z_spec.unpack(zf)
        fz = amap.z_spec.pack(amap.f(z, x))
        loss = amap.loss(z, x, ctx.y) + (mu * (fz - zf)).sum(1)
        return Attached(z=z, x=x, mu=mu, loss=loss)

    def _refine(self, ctx: OuterContext, zf: Tensor, mu: Tensor, x: Tensor) -> Tensor:
        amap = ctx.amap
        with torch.enable_grad():
            zl = zf.detach().requires_grad_()
            z = amap.z_spec.unpack(zl)
            fz = amap.z_spec.pack(amap.f(z, x))
            (gl,) = torch.autograd.grad(amap.loss(z, x, ctx.y).sum(), zl, retain_graph=True)

            def step(m: Tensor, k: int) -> StepOutput:
                (vjp,) = torch.autograd.grad(fz, zl, m, retain_graph=True)
                new = vjp + gl
                return StepOutput(value=new, residual=torch.linalg.vector_norm(new - m, dim=1))

            with torch.no_grad():
                res = fixed_point(step, mu, self.refine_accelerator, max_iter=self.refine_steps, tol=0.0)
        return res.v.detach()


@attrs.frozen
class _ImplicitSolve(OuterGradient):
    """Settings of the backward linear solve shared by the implicit strategies."""

    accelerator: Accelerator[Any] = attrs.field(
        factory=lambda: AndersonII(memory=20), validator=instance_of(Accelerator)
    )
    max_iter: int = attrs.field(default=200, validator=int_in(1))
    tol: float = attrs.field(default=1e-6, validator=number_in(0.0))

    def _implicit(self, output: Tensor, wrt: Tensor, ctx: OuterContext, throw: bool) -> Tensor:
        return with_implicit_backward(
            output,
            wrt,
            accelerator=self.accelerator,
            max_iter=self.max_iter,
            tol=self.tol,
            stats=ctx.stats,
            throw=throw,
        )


@attrs.frozen
class ImplicitKKT(_ImplicitSolve):
    """Eq. 16–17: implicit differentiation of the augmented fixed point ``v* = G(v*)``.

    Works for any outer loss computed from ``z``, ``x`` (and ``μ``). The backward pass solves
    ``u = g + (∂G/∂v)ᵀ u`` with ``accelerator``; ``G`` contains a vector-Jacobian product, so
    this differentiates the layer twice. The x-block uses the plain (not normalised) projected
    gradient step, which has the same fixed points.

    With a non-smooth part the map contains its prox, differentiated by autograd (a generalised
    Jacobian at kinks; ``TotalVariation2D`` through its inner sweeps); a prox that declares no
    such Jacobian (``implicit_jacobian`` false) is refused with ``ValueError``, when the
    problem is built.
    """

    def check_objective(self, objective: InnerObjective) -> None:
        _refuse_without_jacobian(objective.nonsmooth())

    def attach(self, ctx: OuterContext, *, throw: bool) -> Attached:
        if not torch.is_grad_enabled():
            return _detached(ctx)
        amap = ctx.amap
        _refuse_without_jacobian(amap.nonsmooth)
        v = ctx.v_star.detach().requires_grad_()
        ev = amap.evaluate(v, ctx.y, ctx.final_iter, create_graph=True, normalized=False)
        out = self._implicit(ev.value, v, ctx, throw)
        zf, mu, xf = amap.split(out)
        z = amap.z_spec.unpack(zf)
        x = amap.unpack_x(xf)
        return Attached(z=z, x=x, mu=mu, loss=amap.loss(z, x, ctx.y))


def _refuse_without_jacobian(g: NonSmooth | None) -> None:
    if g is not None and not g.implicit_jacobian:
        raise ValueError(
            f"ImplicitKKT cannot differentiate through the prox of {type(g).__name__}: it declares "
            "no Jacobian that autograd follows (implicit_jacobian = False); use AdjointShortcut or "
            "FixedInput, which do not differentiate the prox, or set implicit_jacobian = True if "
            "autograd through its prox is exact"
        )


@attrs.frozen
class FixedInput(_ImplicitSolve):
    """Implicit differentiation through the DEQ ``z* = f(z*, x*)`` at the fixed ``x*``
    (``dx*/dθ`` ignored). Exact for outer losses whose total derivative through ``x*``
    vanishes or is deliberately dropped (the paper's meta-learning)."""

    def attach(self, ctx: OuterContext, *, throw: bool) -> Attached:
        if not torch.is_grad_enabled():
            return _detached(ctx)
        amap = ctx.amap
        zf, mu, xf = amap.split(ctx.v_star.detach())
        x = amap.unpack_x(xf)
        zl = zf.detach().requires_grad_()
        fz = self._implicit(amap.z_spec.pack(amap.f(amap.z_spec.unpack(zl), x)), zl, ctx, throw)
        z = amap.z_spec.unpack(fz)
        return Attached(z=z, x=x, mu=mu, loss=amap.loss(z, x, ctx.y))


@attrs.frozen
class Unrolled(OuterGradient):
    """Backpropagation through every solver iteration (all updates recorded by autograd).

    Memory grows linearly with the number of iterations; meant for checking the implicit
    strategies and for short solves.
    """

    def attach(self, ctx: OuterContext, *, throw: bool) -> Attached:
        amap = ctx.amap
        zf, mu, xf = amap.split(ctx.v_star)
        z = amap.z_spec.unpack(zf)
        x = amap.unpack_x(xf)
        return Attached(z=z, x=x, mu=mu, loss=amap.loss(z, x, ctx.y))

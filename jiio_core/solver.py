"""The fixed-point driver shared by every solve in jiio: JIIO, plain DEQ, backward solves.

[`fixed_point`][jiio_core.solver.fixed_point] iterates a batched map ``v ↦ G(v)`` on packed states ``(B, N)`` with an
[`Accelerator`][jiio_core.accelerators.Accelerator], keeps the best iterate of each sample according to a
[`Selection`][jiio_core.solver.Selection] rule, freezes samples that have converged or diverged, and reports a status per
sample. The only host syncs are the stopping test, every ``check_every`` iterations.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core._checks import check_positive, finite_rows
from jiio_core.accelerators import Accelerator
from jiio_core.validators import int_in, number_in


class Status(enum.IntEnum):
    """Per-sample outcome of a solve (stored as ``int8`` in ``status`` tensors)."""

    CONVERGED = 0
    """The residual fell below the tolerance."""
    MAX_ITER = 1
    """The iteration budget ran out first; the best iterate is returned."""
    DIVERGED = 2
    """The iteration produced NaN/Inf or blew up; the last good best iterate is returned."""


@attrs.frozen
class StepOutput:
    """What one evaluation of the map returns, per sample."""

    value: Tensor
    """``G(v)``, shape ``(B, N)``."""
    residual: Tensor
    """``(B,)`` convergence measure at ``v``: absolute, compared with ``tol · max(1, ‖v‖)``,
    unless ``relative`` (then compared with ``tol`` as it is)."""
    cost: Tensor | None = None
    """``(B,)`` objective at ``v``, used by cost-aware [`Selection`][jiio_core.solver.Selection] rules."""
    relative: bool = False
    """``residual`` is already scaled to the problem (the joint map's per-block residual)."""
    blocks: Tensor | None = None
    """``(B, K)`` parts of the residual (the joint map's ``r_z, r_μ, r_x``), kept in the trace."""
    feasible: Tensor | None = None
    """``(B,)`` bool: may ``v`` be returned as a solution (the joint map: the DEQ block is at
    equilibrium)? A feasible iterate always replaces an infeasible best one and is never
    replaced by an infeasible one; the [`Selection`][jiio_core.solver.Selection] rule ranks iterates alike in this."""


Step = Callable[[Tensor, int], StepOutput]
"""``step(v, k)`` evaluates the map at ``v`` on iteration ``k``."""


class Selection(ABC):
    """Rule deciding, per sample, whether the iterate just evaluated replaces the best so far."""

    uses_cost: bool = False

    @abstractmethod
    def better(
        self, k: int, residual: Tensor, cost: Tensor, best_residual: Tensor, best_cost: Tensor
    ) -> Tensor:
        """Boolean ``(B,)`` mask of samples whose new iterate should be kept."""


@attrs.frozen
class LowestResidual(Selection):
    """Keep the iterate with the smallest residual (plain fixed-point solves)."""

    def better(
        self, k: int, residual: Tensor, cost: Tensor, best_residual: Tensor, best_cost: Tensor
    ) -> Tensor:
        return residual < best_residual


@attrs.frozen
class LowestCost(Selection):
    """Keep the iterate with the lowest cost, whatever its residual (paper C.3's rule)."""

    uses_cost = True

    def better(
        self, k: int, residual: Tensor, cost: Tensor, best_residual: Tensor, best_cost: Tensor
    ) -> Tensor:
        return cost < best_cost


@attrs.frozen
class CostResidualTradeoff(Selection):
    """The paper's heuristic (A.2): replace the best iterate if the residual improves, or during
    the first ``warmup`` iterations, or if the cost improves while the residual stays within
    ``slack`` times the best iterate's residual."""

    warmup: int = attrs.field(default=10, validator=int_in(0))
    slack: float = attrs.field(default=1.3, validator=number_in(1.0))

    uses_cost = True

    def better(
        self, k: int, residual: Tensor, cost: Tensor, best_residual: Tensor, best_cost: Tensor
    ) -> Tensor:
        improves = residual < best_residual
        if k < self.warmup:
            return torch.ones_like(improves)
        return improves | ((cost < best_cost) & (residual <= self.slack * best_residual))


@attrs.frozen(eq=False)
class Trace:
    """Per-iteration history, ``(iterations_run, B)`` each (NaN where a sample was frozen)."""

    residual: Tensor
    cost: Tensor
    blocks: Tensor | None = None
    """``(iterations_run, B, K)`` parts of the residual, when the map reports them."""


@attrs.frozen(eq=False)
class FixedPointResult:
    """Outcome of [`fixed_point`][jiio_core.solver.fixed_point]."""

    v: Tensor
    """Best iterate per sample, ``(B, N)``."""
    residual: Tensor
    """``(B,)`` residual at ``v``."""
    cost: Tensor
    """``(B,)`` cost at ``v`` (NaN when the map reports none)."""
    iterations: Tensor
    """``(B,)`` number of map evaluations spent on each sample."""
    status: Tensor
    """``(B,)`` int8 [`Status`][jiio_core.solver.Status] codes."""
    trace: Trace
    sampled: Tensor | None = None
    """One iterate per sample drawn uniformly from those evaluated at or after
    ``sample_from`` (for regularisers at a random iterate), if requested; ``v`` for a sample
    that had no such evaluation."""
    blocks: Tensor | None = None
    """``(B, K)`` parts of the residual at ``v``, when the map reports them."""
    feasible: Tensor | None = None
    """``(B,)`` bool: was ``v`` feasible (see [`StepOutput.feasible`][jiio_core.solver.StepOutput.feasible]), when reported."""

    @property
    def converged(self) -> Tensor:
        return self.status == Status.CONVERGED

    @property
    def iterations_run(self) -> int:
        return int(self.trace.residual.shape[0])


def fixed_point(
    step: Step,
    v0: Tensor,
    accelerator: Accelerator[Any],
    *,
    max_iter: int,
    tol: float,
    selection: Selection | None = None,
    check_every: int = 5,
    divergence_factor: float = 1e6,
    sample_from: int | None = None,
    generator: torch.Generator | None = None,
    blocks: tuple[int, ...] | None = None,
) -> FixedPointResult:
    """Iterate ``step`` from ``v0`` and return the best iterate of each sample.

    A sample converges when ``residual ≤ tol · max(1, ‖v‖)`` (``residual ≤ tol`` when the
    step reports a relative residual); it diverges when the map returns
    NaN/Inf, its residual exceeds ``divergence_factor`` times its first residual, or its iterate's
    norm exceeds ``divergence_factor · max(1, ‖v₀‖, ‖G(v₀)‖)`` (without this, an accelerator step
    that blows ``v`` up would pass the relative convergence test). Converged and
    diverged samples are frozen at their best iterate; the loop stops when none is active
    (tested every ``check_every`` iterations) or after ``max_iter`` evaluations.

    ``blocks``: the packed state is consecutive blocks of these widths, in different units
    (JIIO's ``(z, μ, x)``); the accelerator is started with
    [`Accelerator.init_blocks`][jiio_core.accelerators.Accelerator.init_blocks] (Anderson then balances the blocks
    in its inner products).

    Runs with autograd if the caller enables it and ``v0``/``step`` carry graphs (used by
    [`Unrolled`][jiio_core.outer.Unrolled]): every update is out of place in that case.
    """
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    check_positive("tol", tol, allow_zero=True)
    if not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    if v0.ndim != 2:
        raise ValueError(f"v0 must be packed to (B, N), got shape {tuple(v0.shape)}")
    selection = selection if selection is not None else LowestResidual()
    batch = v0.shape[0]
    dev, dt = v0.device, v0.dtype
    inf = torch.full((batch,), math.inf, device=dev, dtype=dt)
    best_v, best_res, best_cost = v0, inf, inf.clone()
    first_res = inf.clone()
    size_ref = inf.clone()
    active = torch.ones(batch, dtype=torch.bool, device=dev)
    status = torch.full((batch,), int(Status.MAX_ITER), dtype=torch.int8, device=dev)
    iterations = torch.zeros(batch, dtype=torch.int64, device=dev)
    trace_res = torch.full((max_iter, batch), math.nan, device=dev, dtype=dt)
    trace_cost = torch.full((max_iter, batch), math.nan, device=dev, dtype=dt)
    sampled: Tensor | None = None
    trace_blocks: Tensor | None = None
    best_blocks: Tensor | None = None
    best_feasible = torch.zeros(batch, dtype=torch.bool, device=dev)
    reports_feasible = False
    seen = torch.zeros(batch, device=dev, dtype=dt)
    state = accelerator.init(v0) if blocks is None else accelerator.init_blocks(v0, blocks)
    v = v0
    run = 0
    for k in range(max_iter):
        out = step(v, k)
        has_cost = out.cost is not None
        if not has_cost and selection.uses_cost:
            raise ValueError(
                f"selection={type(selection).__name__} ranks iterates by cost, but step returned "
                "StepOutput.cost=None; return a (B,) cost or use LowestResidual"
            )
        res = out.residual
        cost = out.cost if out.cost is not None else torch.zeros_like(res)
        finite = torch.isfinite(res) & torch.isfinite(cost) & finite_rows(out.value)
        v_norm = torch.linalg.vector_norm(v.detach(), dim=1)
        if k == 0:
            first_res = torch.where(finite, res, inf).detach()
            g0_norm = torch.linalg.vector_norm(out.value.detach(), dim=1)
            size_ref = torch.clamp(torch.maximum(v_norm, torch.where(finite, g0_norm, v_norm)), min=1.0)
        blown = res.detach() > divergence_factor * torch.clamp(first_res, min=torch.finfo(dt).tiny)
        blown = blown | (v_norm > divergence_factor * size_ref)
        diverged = active & (~finite | blown)
        ok = active & ~diverged
        if out.relative:
            conv = ok & (res.detach() <= tol)
        else:
            conv = ok & (res.detach() <= tol * torch.clamp(v_norm, min=1.0))
        ranked = selection.better(k, res.detach(), cost.detach(), best_res, best_cost)
        if out.feasible is not None:
            reports_feasible = True
            feas = out.feasible.detach()
            ranked = (feas & ~best_feasible) | ((feas == best_feasible) & ranked)
            better = ok & (conv | ranked)
            best_feasible = torch.where(better, feas, best_feasible)
        else:
            better = ok & (conv | ranked)
        bmask = better.unsqueeze(1)
        if torch.is_grad_enabled() and (v.requires_grad or best_v.requires_grad):
            best_v = torch.where(bmask, v, best_v)  # out of place, for autograd (Unrolled)
        else:  # in place: no new (B, N) tensor per iteration (v0 is the caller's: copied once)
            best_v = torch.where(bmask, v, best_v, out=best_v if best_v is not v0 else torch.empty_like(v0))
        best_res = torch.where(better, res.detach(), best_res)
        best_cost = torch.where(better, cost.detach(), best_cost)
        if out.blocks is not None:
            blk = out.blocks.detach()
            if trace_blocks is None or best_blocks is None:
                trace_blocks = torch.full((max_iter, *blk.shape), math.nan, device=dev, dtype=dt)
                best_blocks = torch.full_like(blk, math.nan)
            best_blocks = torch.where(bmask, blk, best_blocks)
            trace_blocks[k] = torch.where(active.unsqueeze(1), blk, math.nan)
        if sample_from is not None and k >= sample_from:
            seen = seen + ok.to(dt)
            draw = torch.rand(batch, device=dev, dtype=dt, generator=generator)
            take = (ok & (draw * seen < 1.0)).unsqueeze(1)  # reservoir sampling, size 1
            sampled = torch.where(take, v.detach(), sampled if sampled is not None else v.detach())
        status = torch.where(conv, int(Status.CONVERGED), status)
        status = torch.where(diverged, int(Status.DIVERGED), status).to(torch.int8)
        iterations = torch.where(active, k + 1, iterations)
        trace_res[k] = torch.where(active, res.detach(), math.nan)
        if has_cost:  # stays NaN when the map reports no cost, like FixedPointResult.cost
            trace_cost[k] = torch.where(active, cost.detach(), math.nan)
        active = ok & ~conv
        run = k + 1
        if run == max_iter:
            break
        v_next, state = accelerator.update(state, v, out.value, active)
        # frozen samples sit at their best iterate (finite), so they cannot poison the batch
        v = torch.where(active.unsqueeze(1), v_next, best_v)
        if run % check_every == 0 and not bool(active.any()):
            break
    if sample_from is not None:
        # samples with no evaluation at or after sample_from (the loop stopped or converged
        # first) fall back to their returned iterate
        never = (seen == 0).unsqueeze(1)
        sampled = best_v.detach() if sampled is None else torch.where(never, best_v.detach(), sampled)
    return FixedPointResult(
        v=best_v,
        residual=best_res,
        cost=best_cost if has_cost else torch.full_like(best_cost, math.nan),
        iterations=iterations,
        status=status,
        trace=Trace(
            residual=trace_res[:run],
            cost=trace_cost[:run],
            blocks=None if trace_blocks is None else trace_blocks[:run],
        ),
        sampled=sampled,
        blocks=best_blocks,
        feasible=best_feasible if reports_feasible else None,
    )

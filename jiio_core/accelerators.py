"""Batched fixed-point accelerators: damped Picard, Anderson (type I and II), Broyden.

An accelerator proposes the next point to evaluate from the current point ``v`` and its image
``G(v)``; the driver ([`jiio_core.solver.fixed_point`][jiio_core.solver.fixed_point]) does everything else. All work is
per sample: each sample has its own mixing coefficients, and a sample whose small linear system
is singular or non-finite falls back to a plain step ``G(v)`` without affecting the others.
No host syncs happen here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

import attrs
import torch
from torch import Tensor

from jiio_core._checks import finite_rows
from jiio_core.validators import int_in, number_in, optional

S = TypeVar("S")


class Accelerator(ABC, Generic[S]):
    """Strategy for the next iterate of a batched fixed-point iteration ``v = G(v)``."""

    @abstractmethod
    def init(self, v0: Tensor) -> S:
        """Fresh solver state for a batch starting at ``v0`` (``(B, N)``)."""

    def init_blocks(self, v0: Tensor, blocks: tuple[int, ...]) -> S:
        """Fresh state for a packed state made of consecutive blocks of ``blocks`` columns each
        (e.g. JIIO's ``(z, μ, x)``), whose units may differ. Accelerators that measure
        residuals with an inner product (Anderson) then weigh each block's residual to the same
        size ([`balanced_weights`][jiio_core.accelerators.balanced_weights]); the default ignores the layout."""
        check_blocks(blocks, v0.shape[1])
        return self.init(v0)

    @abstractmethod
    def update(self, state: S, v: Tensor, gv: Tensor, active: Tensor) -> tuple[Tensor, S]:
        """Next point to evaluate, given ``v``, ``G(v)`` and the ``(B,)`` mask of samples still
        iterating (inactive samples' proposals are ignored by the driver)."""


def check_blocks(blocks: tuple[int, ...], n: int) -> tuple[int, ...]:
    """``blocks`` as a tuple of positive ints summing to ``n`` (the packed state's width)."""
    ok = isinstance(blocks, tuple) and len(blocks) > 0
    ok = ok and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)
    if not ok or sum(blocks) != n:
        raise ValueError(f"blocks must be a tuple of positive ints summing to the state width {n}, got {blocks!r}")
    return blocks


def balanced_weights(f: Tensor, blocks: tuple[int, ...]) -> Tensor:
    """``(B, K)`` squared weights ``w_k² = ‖f‖² / (K ‖f_k‖²)`` of the ``K`` blocks of the
    residual ``f`` (``(B, N)``): every block of the weighted residual has the same norm, and
    together they keep ``f``'s norm. Up to that one number per sample (which no Anderson
    coefficient depends on, but which keeps the weighted products at the size of the plain
    ones), the metric does not depend on the units of any block: scaling one block of the state
    by ``c`` leaves every weighted inner product unchanged. A block whose residual is below
    ``√eps`` times the whole residual's norm is weighed as if it were that size (no division by
    a vanishing norm)."""
    sq = _blockwise_sq(f, blocks)
    total = sq.sum(1, keepdim=True)
    floor = (torch.finfo(f.dtype).eps * total).clamp(min=torch.finfo(f.dtype).tiny)
    return total / (len(blocks) * torch.maximum(sq, floor))


def _blockwise_products(left: Tensor, right: Tensor, blocks: tuple[int, ...]) -> Tensor:
    """``(B, K, k, n)``: ``left (B, k, N) @ right (B, n, N)ᵀ`` restricted to each block's columns."""
    lefts, rights = left.split(blocks, dim=2), right.split(blocks, dim=2)
    return torch.stack([a @ b.mT for a, b in zip(lefts, rights, strict=True)], dim=1)


def _blockwise_sq(x: Tensor, blocks: tuple[int, ...]) -> Tensor:
    """``(B, K)`` squared norms of the blocks of ``x (B, N)``."""
    return torch.stack([_sq_norm(p) for p in x.split(blocks, dim=1)], dim=1)


def _sq_norm(x: Tensor) -> Tensor:
    """``(B,)`` squared norms of the rows of ``x``: one reduction without a ``(B, N)`` temporary,
    except under autograd, where ``‖x‖²`` as a dot product keeps the derivative ``2x`` finite at
    ``x = 0`` (a secant pair stored as zeros)."""
    sq: Tensor = torch.linalg.vecdot(x, x) if _needs_graph(x) else torch.linalg.vector_norm(x, dim=1).square()
    return sq


def _needs_graph(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _write(buf: Tensor, slot: int, value: Tensor, graph: bool, dim: int = 1) -> Tensor:
    """``buf[:, slot] = value`` (along ``dim``), out of place when autograd must see through it."""
    if graph:
        idx = torch.tensor([slot], device=buf.device)
        return buf.index_copy(dim, idx, value.unsqueeze(dim))
    buf.select(dim, slot).copy_(value)
    return buf


def _informative(delta: Tensor, v: Tensor, gv: Tensor, factor: float = 16.0) -> Tensor:
    """``(B,)`` mask: is the secant difference ``delta`` above the rounding noise of ``v, G(v)``?"""
    eps = torch.finfo(v.dtype).eps
    noise = factor * eps * (torch.linalg.vector_norm(v, dim=1) + torch.linalg.vector_norm(gv, dim=1))
    informative: Tensor = torch.linalg.vector_norm(delta, dim=1) > noise
    return informative


@attrs.frozen
class Picard(Accelerator[None]):
    """Damped fixed-point iteration ``v⁺ = (1 − β) v + β G(v)``."""

    beta: float = attrs.field(default=1.0, validator=number_in(0.0, 1.0, low_open=True))

    def init(self, v0: Tensor) -> None:
        return None

    def update(self, state: None, v: Tensor, gv: Tensor, active: Tensor) -> tuple[Tensor, None]:
        if self.beta == 1.0:
            return gv, None
        return v + self.beta * (gv - v), None


@attrs.define
class AndersonState:
    """Ring buffers of the last ``m`` secant differences and their Gram: ``dg`` holds
    ``ΔG = ΔV + βΔF`` (``G(v) = v + f``; with β = 1 the differences of the map's values), the
    columns of the update's correction, and ``df`` holds ``ΔF``; ``ΔV = ΔG − βΔF``.

    With a block layout ([`Accelerator.init_blocks`][jiio_core.accelerators.Accelerator.init_blocks]) the Gram and the squared norms are
    kept per block (a leading ``K`` axis after the batch), so that each update can weigh the
    blocks anew."""

    dg: Tensor  # (B, m, N)  Δv_i + βΔf_i
    df: Tensor  # (B, m, N)  Δf_i, f = G(v) - v
    gram: Tensor  # (B, [K,] m, m)  type II: <Δf_i, Δf_j>; type I: <Δv_i, Δf_j>
    dx_sq: Tensor  # (B, [K,] m)  ‖Δv_i‖²
    df_sq: Tensor  # (B, [K,] m)  ‖Δf_i‖²
    prev_v: Tensor | None = None
    prev_f: Tensor | None = None
    count: int = 0
    blocks: tuple[int, ...] | None = None
    work: Tensor | None = None
    """No-graph path: ``(2, B, 4, N)`` workspace, allocated at the first update and used in
    turn (``turn``): rows ``[Δv, Δf, f, proposal]``. Reusing it instead of allocating per update
    keeps the CPU allocator from handing pages back to the OS and faulting them in again every
    iteration (which also slowed the map evaluations between updates). The buffer of the last
    update holds ``prev_f`` and the returned proposal, so both stay valid until the update
    after next."""
    turn: int = 0


@attrs.frozen
class _Anderson(Accelerator[AndersonState]):
    memory: int = attrs.field(default=5, validator=int_in(1))
    beta: float = attrs.field(default=1.0, validator=number_in(0.0, 1.0, low_open=True))
    ridge: float = attrs.field(default=1e-8, validator=number_in(0.0))
    """Tikhonov term relative to the Gram matrix's scale (mean of its diagonal)."""
    balance_until: int | None = attrs.field(default=None, validator=optional(int_in(0)))
    """With a block layout ([`init_blocks`][jiio_core.accelerators.Accelerator.init_blocks]): weigh the
    blocks alike only in the first ``balance_until`` updates, then use the plain Euclidean metric
    (the per-block Gram is kept either way, so the switch is free); ``None``: throughout."""

    type_one = False

    def init(self, v0: Tensor) -> AndersonState:
        b, n = v0.shape
        m = self.memory
        kw: dict[str, Any] = {"device": v0.device, "dtype": v0.dtype}
        return AndersonState(
            dg=torch.zeros(b, m, n, **kw),
            df=torch.zeros(b, m, n, **kw),
            gram=torch.zeros(b, m, m, **kw),
            dx_sq=torch.zeros(b, m, **kw),
            df_sq=torch.zeros(b, m, **kw),
        )

    def init_blocks(self, v0: Tensor, blocks: tuple[int, ...]) -> AndersonState:
        """As `init`, with the inner products of the secant equations taken in the
        block-balanced metric: every update weighs block ``k`` by ``1/‖f_k‖²`` (relative to
        the whole) at the current residual ``f`` ([`balanced_weights`][jiio_core.accelerators.balanced_weights]), so each block
        counts alike in the mixing coefficients whatever its units or size. One block is the
        plain method. With autograd (an unrolled solve) the weights are held constant: the
        metric is a choice of each step, not part of the map."""
        check_blocks(blocks, v0.shape[1])
        b, n = v0.shape
        m, k = self.memory, len(blocks)
        kw: dict[str, Any] = {"device": v0.device, "dtype": v0.dtype}
        return AndersonState(
            dg=torch.zeros(b, m, n, **kw),
            df=torch.zeros(b, m, n, **kw),
            gram=torch.zeros(b, k, m, m, **kw),
            dx_sq=torch.zeros(b, k, m, **kw),
            df_sq=torch.zeros(b, k, m, **kw),
            blocks=blocks,
        )

    def update(
        self, state: AndersonState, v: Tensor, gv: Tensor, active: Tensor
    ) -> tuple[Tensor, AndersonState]:
        graph = _needs_graph(v, gv)
        beta = self.beta
        work: Tensor | None = None
        if graph:
            f = gv - v
        else:
            # The no-graph path works in the state's workspace, filled in place (no stacking
            # copy, no per-update allocation): rows [Δv, Δf, f] are the probes (type II reads
            # [Δf, f]), row 3 the proposal. f is kept as the next update's prev_f: the next
            # update writes the other buffer.
            if state.work is None or state.work.shape[1:] != (v.shape[0], 4, v.shape[1]):
                state.work = torch.empty(2, v.shape[0], 4, v.shape[1], device=v.device, dtype=v.dtype)
            work = state.work[state.turn]
            state.turn ^= 1
            f = torch.sub(gv, v, out=work[:, 2])
        # β = 1 without autograd: the plain step is G(v) itself (v + f up to rounding)
        plain = gv if beta == 1.0 and not graph else v + beta * f
        if state.prev_v is None or state.prev_f is None:
            state.prev_v, state.prev_f = v, f
            return plain, state
        m = self.memory
        slot = state.count % m
        # The history keeps ΔG = ΔV + βΔF (the columns of the correction, one pass instead of
        # two) and ΔF; type I's inner products with ΔV are recovered as ΔGᵀ· − βΔFᵀ·.
        # A secant pair whose ΔF is rounding noise carries no information: store it as zeros,
        # which gives it a zero coefficient (per sample).
        if work is None:  # out of place, for autograd (Unrolled)
            dxi = v - state.prev_v
            dfi = f - state.prev_f
            usable = _informative(dfi, v, gv).unsqueeze(1)
            dxi = torch.where(usable, dxi, 0.0)
            dfi = torch.where(usable, dfi, 0.0)
            state.df = _write(state.df, slot, dfi, graph)
            probes = torch.stack((dxi, dfi, f) if self.type_one else (dfi, f), dim=1)
        else:
            probes = work[:, :3]
            dxi, dfi = probes[:, 0], probes[:, 1]
            torch.sub(v, state.prev_v, out=dxi)
            torch.sub(f, state.prev_f, out=dfi)
            usable = _informative(dfi, v, gv)
            probes[:, :2].mul_(usable.view(-1, 1, 1))
            state.df[:, slot].copy_(dfi)
            if not self.type_one:
                probes = probes[:, 1:]
        blocks = state.blocks
        if blocks is None:
            dx_sq_new, df_sq_new = _sq_norm(dxi), _sq_norm(dfi)
        else:
            dx_sq_new, df_sq_new = _blockwise_sq(dxi, blocks), _blockwise_sq(dfi, blocks)
        last = state.dx_sq.ndim - 1  # the slot axis of the (B, [K,] m) squared norms
        state.dx_sq = _write(state.dx_sq, slot, dx_sq_new, graph, dim=last)
        state.df_sq = _write(state.df_sq, slot, df_sq_new, graph, dim=last)
        state.count += 1
        n = min(state.count, m)
        # One new row and column of the Gram matrix and the right-hand side, O(B·m·N). The
        # history buffers (B, m, N) are the large, memory-bound operands: each is read once
        # through a batched matrix product taking all its probes at once (row vectors times the
        # transposed buffer, (B, k, N) @ (B, N, n): about twice as fast on CPU as the buffer
        # times column vectors). Slot `slot` is always among the first n, so everything is
        # sliced to the filled slots. (With blocks: the same products per block, (B, K, ...).)
        df_n = state.df[:, :n]
        # type I: <Δv_new, Δf_j>, <Δf_new, Δf_i>, <f, Δf_i>; type II: <Δf_new, Δf_i>, <f, Δf_i>
        on_df = probes @ df_n.mT if blocks is None else _blockwise_products(probes, df_n, blocks)
        if graph:
            state.dg = _write(state.dg, slot, dxi + beta * dfi, graph)
        else:
            torch.add(dxi, dfi, alpha=beta, out=state.dg[:, slot])
        dg_n = state.dg[:, :n]
        if self.type_one:
            # <Δf_new, Δv_i> and <f, Δv_i> with Δv_i = Δg_i − βΔf_i
            pair = probes[:, 1:]
            on_dg = pair @ dg_n.mT if blocks is None else _blockwise_products(pair, dg_n, blocks)
            row = on_df.select(-2, 0)
            col = on_dg.select(-2, 0) - beta * on_df.select(-2, 1)
            rhs = on_dg.select(-2, 1) - beta * on_df.select(-2, 2)
        else:
            row = col = on_df.select(-2, 0)
            rhs = on_df.select(-2, 1)
        gram = state.gram
        if graph:  # out of place, for autograd (Unrolled)
            row_m = torch.nn.functional.pad(row, (0, m - n))  # (B, [K,] m), zero for unfilled slots
            col_m = torch.nn.functional.pad(col, (0, m - n))
            onehot = torch.zeros(m, device=v.device, dtype=v.dtype)
            onehot[slot] = 1.0
            keep = 1.0 - onehot
            gram = gram * keep.view(m, 1) * keep.view(1, m)
            gram = gram + onehot.view(m, 1) * row_m.unsqueeze(-2) + col_m.unsqueeze(-1) * onehot.view(1, m)
            gram = gram - onehot.view(m, 1) * onehot.view(1, m) * row[..., slot, None, None]
        else:
            gram[..., slot, :n] = row
            gram[..., :n, slot] = col
        state.gram = gram
        state.prev_v, state.prev_f = v, f

        a = gram[..., :n, :n]
        dx_sq, df_sq = state.dx_sq[..., :n], state.df_sq[..., :n]
        if blocks is not None and self.balance_until is not None and state.count > self.balance_until:
            # past the balanced phase: the Euclidean metric is the unweighted sum over blocks
            a, rhs = a.sum(1), rhs.sum(1)
            dx_sq, df_sq = dx_sq.sum(1), df_sq.sum(1)
        elif blocks is not None:  # the block-balanced metric at the current residual
            # a choice of metric held constant by autograd (the unrolled derivative): its own
            # derivative is of the size 1/‖f‖ and would not vanish as the iteration converges
            w2 = balanced_weights(f.detach(), blocks)  # (B, K)
            a = (a * w2[..., None, None]).sum(1)
            rhs = (rhs * w2[..., None]).sum(1)
            dx_sq, df_sq = (dx_sq * w2[..., None]).sum(1), (df_sq * w2[..., None]).sum(1)
        scale = torch.sqrt(dx_sq.mean(1) * df_sq.mean(1)) if self.type_one else df_sq.mean(1)
        tiny = torch.finfo(v.dtype).tiny
        lam = (self.ridge * scale + tiny).view(-1, 1, 1)
        eye = torch.eye(n, device=v.device, dtype=v.dtype)
        gamma, info = torch.linalg.solve_ex(a + lam * eye, rhs.unsqueeze(-1))
        gamma = gamma.squeeze(-1)
        ok = (info == 0) & torch.isfinite(gamma).all(1)
        gamma = torch.where(ok.unsqueeze(1), gamma, torch.zeros_like(gamma))
        # γᵀ(ΔV + βΔF) = γᵀΔG: one pass over one buffer
        if work is None:
            proposal = plain - torch.bmm(gamma.unsqueeze(1), dg_n).squeeze(1)
            good = ok & finite_rows(proposal)
            return torch.where(good.unsqueeze(1), proposal, plain), state
        proposal = work[:, 3]  # the correction, then the proposal, in the workspace: no new (B, N)
        torch.bmm(gamma.unsqueeze(1), dg_n, out=proposal.unsqueeze(1))
        torch.sub(plain, proposal, out=proposal)
        good = ok & finite_rows(proposal)
        return torch.where(good.unsqueeze(1), proposal, plain, out=proposal), state


@attrs.frozen
class AndersonI(_Anderson):
    """Type-I ("good") Anderson acceleration (Fang & Saad): ``γ = (ΔVᵀΔF)⁻¹ ΔVᵀ f``,
    ``v⁺ = v + βf − (ΔV + βΔF) γ``. Fast but less stable; the paper's choice for generative,
    inverse and adversarial problems."""

    type_one = True


@attrs.frozen
class AndersonII(_Anderson):
    """Type-II ("bad") Anderson acceleration, the usual DEQ solver: ``γ = argmin ‖f − ΔF γ‖``,
    ``v⁺ = v + βf − (ΔV + βΔF) γ``. Smoother; the paper's choice for meta-learning."""


@attrs.define
class BroydenState:
    """Low-rank inverse Jacobian ``H = −I + U Vᵀ`` of ``g(v) = G(v) − v``."""

    u: Tensor  # (B, m, N)
    vt: Tensor  # (B, m, N)
    prev_v: Tensor | None = None
    prev_g: Tensor | None = None
    count: int = 0


@attrs.frozen
class Broyden(Accelerator[BroydenState]):
    """ "Good" Broyden's method on the root problem ``G(v) − v = 0`` with unit steps and a
    limited-memory inverse Jacobian ``H = −I + Σ uᵢvᵢᵀ``. When ``memory`` rank-one updates are
    stored, the approximation restarts from ``−I`` (dropping only the oldest update would leave
    the later ones, which were computed relative to it, inconsistent). A sample whose update
    denominator is tiny skips that update."""

    memory: int = attrs.field(default=20, validator=int_in(1))

    def init(self, v0: Tensor) -> BroydenState:
        b, n = v0.shape
        z = torch.zeros(b, self.memory, n, device=v0.device, dtype=v0.dtype)
        return BroydenState(u=z, vt=z.clone())

    @staticmethod
    def _lowrank(left: Tensor, right: Tensor, x: Tensor, n: int) -> Tensor:
        """``−x + Lᵀ (R x)`` for ``(B, m, N)`` buffers ``L``, ``R`` restricted to their first
        ``n`` rows: two batched matrix products, each reading its buffer once, with only
        ``(B, n)`` and ``(B, N)`` intermediates."""
        if n == 0:
            return -x
        coef = x.unsqueeze(1) @ right[:, :n].mT  # (B, 1, n); row form: faster on CPU than R x
        return torch.baddbmm(x.unsqueeze(1), coef, left[:, :n], beta=-1.0).squeeze(1)

    @classmethod
    def _h(cls, state: BroydenState, x: Tensor, n: int) -> Tensor:
        """``H x = −x + U (Vᵀ x)``."""
        return cls._lowrank(state.u, state.vt, x, n)

    @classmethod
    def _ht(cls, state: BroydenState, x: Tensor, n: int) -> Tensor:
        """``Hᵀ x = −x + V (Uᵀ x)``."""
        return cls._lowrank(state.vt, state.u, x, n)

    def update(
        self, state: BroydenState, v: Tensor, gv: Tensor, active: Tensor
    ) -> tuple[Tensor, BroydenState]:
        g = gv - v
        graph = _needs_graph(v, gv)
        m = self.memory
        if state.count == m:  # restart from H = -I
            # no need to clear the buffers: every product reads only the first `count` slots
            # and slot `count` is written before it is read
            state.count = 0
        if state.prev_v is not None and state.prev_g is not None:
            n = state.count
            dv = v - state.prev_v
            dg = g - state.prev_g
            vt_new = self._ht(state, dv, n)  # (Δvᵀ H)ᵀ
            den = (vt_new * dg).sum(1)
            num = dv - self._h(state, dg, n)
            size = torch.linalg.vector_norm(vt_new, dim=1) * torch.linalg.vector_norm(dg, dim=1)
            ok = (den.abs() > 1e-10 * size) & torch.isfinite(den) & (size > 0) & _informative(dg, v, gv)
            safe = torch.where(ok, den, torch.ones_like(den))
            u_new = torch.where(ok.unsqueeze(1), num / safe.unsqueeze(1), 0.0)
            vt_new = torch.where(ok.unsqueeze(1), vt_new, 0.0)
            slot = state.count
            state.u = _write(state.u, slot, u_new, graph)
            state.vt = _write(state.vt, slot, vt_new, graph)
            state.count += 1
        state.prev_v, state.prev_g = v, g
        n = state.count
        proposal = v - self._h(state, g, n)
        good = finite_rows(proposal)
        return torch.where(good.unsqueeze(1), proposal, gv), state

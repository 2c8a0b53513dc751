"""Micro-benchmark of one Anderson update (type I and II) at the faces-decoder size.

Compares the current :meth:`jiio_core.accelerators._Anderson.update` (history kept as ΔG = ΔV + βΔF
and ΔF, each buffer read once per product by batched matrix products, no ``(B, m, N)``
temporaries) with the earlier einsum formulation, kept below as :func:`old_update` (ΔV and ΔF
buffers; it materialises ``ΔV + βΔF`` and reads the buffers through ``einsum``). Both run on the same full history (``n = m``), each timed call being one update on a
fresh ``(v, G(v))`` pair, old and new calls interleaved so that load from other processes hits
both alike; the report is the median (and quartiles, min, max) of ``--repeats`` calls after
``--warmup`` calls. Before timing, the two versions are checked to agree in float64 (relative
1e-12) over a run that wraps the ring buffer.

Run: ``python benchmarks/bench_anderson_update.py [--batch 16 --dim 28700 --memory 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jiio_core.accelerators import AndersonI, AndersonII, _Anderson, _informative, _write


@dataclass
class OldState:
    """The einsum version's history: ΔV and ΔF buffers, the Gram and the squared norms."""

    dx: Tensor
    df: Tensor
    gram: Tensor
    dx_sq: Tensor
    df_sq: Tensor
    prev_v: Tensor | None = None
    prev_f: Tensor | None = None
    count: int = 0


def old_init(acc: _Anderson, v0: Tensor) -> OldState:
    b, n = v0.shape
    m = acc.memory
    return OldState(dx=v0.new_zeros(b, m, n), df=v0.new_zeros(b, m, n), gram=v0.new_zeros(b, m, m),
                    dx_sq=v0.new_zeros(b, m), df_sq=v0.new_zeros(b, m))


def old_update(acc: _Anderson, state: OldState, v: Tensor, gv: Tensor, active: Tensor) -> tuple[Tensor, OldState]:
    """The einsum update as it was before the rewrite (no-graph path only)."""
    f = gv - v
    plain = v + acc.beta * f
    if state.prev_v is None or state.prev_f is None:
        state.prev_v, state.prev_f = v, f
        return plain, state
    m = acc.memory
    slot = state.count % m
    dxi = v - state.prev_v
    dfi = f - state.prev_f
    usable = _informative(dfi, v, gv).unsqueeze(1)
    dxi = torch.where(usable, dxi, torch.zeros_like(dxi))
    dfi = torch.where(usable, dfi, torch.zeros_like(dfi))
    state.dx = _write(state.dx, slot, dxi, False)
    state.df = _write(state.df, slot, dfi, False)
    state.dx_sq = _write(state.dx_sq, slot, (dxi * dxi).sum(1), False)
    state.df_sq = _write(state.df_sq, slot, (dfi * dfi).sum(1), False)
    state.count += 1
    n = min(state.count, m)
    if acc.type_one:
        row = torch.einsum("bn,bmn->bm", dxi, state.df)
        col = torch.einsum("bmn,bn->bm", state.dx, dfi)
    else:
        row = torch.einsum("bn,bmn->bm", dfi, state.df)
        col = row
    gram = state.gram
    gram[:, slot, :] = row
    gram[:, :, slot] = col
    state.prev_v, state.prev_f = v, f
    a = gram[:, :n, :n]
    if acc.type_one:
        rhs = torch.einsum("bmn,bn->bm", state.dx[:, :n], f)
        scale = torch.sqrt(state.dx_sq[:, :n].mean(1) * state.df_sq[:, :n].mean(1))
    else:
        rhs = torch.einsum("bmn,bn->bm", state.df[:, :n], f)
        scale = state.df_sq[:, :n].mean(1)
    lam = (acc.ridge * scale + torch.finfo(v.dtype).tiny).view(-1, 1, 1)
    eye = torch.eye(n, device=v.device, dtype=v.dtype)
    gamma, info = torch.linalg.solve_ex(a + lam * eye, rhs.unsqueeze(-1))
    gamma = gamma.squeeze(-1)
    ok = (info == 0) & torch.isfinite(gamma).all(1)
    gamma = torch.where(ok.unsqueeze(1), gamma, torch.zeros_like(gamma))
    correction = torch.einsum("bm,bmn->bn", gamma, state.dx[:, :n] + acc.beta * state.df[:, :n])
    proposal = plain - correction
    good = ok & torch.isfinite(proposal).all(1)
    return torch.where(good.unsqueeze(1), proposal, plain), state


def _pairs(count: int, b: int, n: int, dtype: torch.dtype, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` pairs ``(v, G(v))`` of a mildly contractive random map (generic histories)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    v = torch.randn(b, n, dtype=dtype, generator=gen)
    for _ in range(count):
        gv = 0.5 * v + torch.randn(b, n, dtype=dtype, generator=gen)
        out.append((v, gv))
        v = gv + 0.1 * torch.randn(b, n, dtype=dtype, generator=gen)
    return out


def agreement(cls: type[_Anderson], memory: int, seed: int) -> float:
    """Largest relative difference between the old and new proposals (float64, ring wraps)."""
    b, n = 4, 300
    acc = cls(memory=memory, beta=0.7)
    active = torch.ones(b, dtype=torch.bool)
    s_old, s_new = old_init(acc, torch.zeros(b, n, dtype=torch.float64)), acc.init(torch.zeros(b, n, dtype=torch.float64))
    worst = 0.0
    for v, gv in _pairs(3 * memory, b, n, torch.float64, seed):
        p_old, s_old = old_update(acc, s_old, v, gv, active)
        p_new, s_new = acc.update(s_new, v, gv, active)
        worst = max(worst, float(torch.linalg.vector_norm(p_new - p_old) / torch.linalg.vector_norm(p_old)))
    return worst


def bench(cls: type[_Anderson], args: argparse.Namespace) -> dict[str, list[float]]:
    """Timed updates of both versions, interleaved (old, new, old, new, ...) so that load from
    other processes affects both alike."""
    b, n, m = args.batch, args.dim, args.memory
    acc = cls(memory=m)
    active = torch.ones(b, dtype=torch.bool)
    pairs = _pairs(m + 4, b, n, torch.float32, args.seed)
    versions: dict[str, Any] = {"old": old_update, "new": type(acc).update}
    inits: dict[str, Any] = {"old": old_init, "new": type(acc).init}
    states = {}
    for name, fn in versions.items():
        state = inits[name](acc, torch.zeros(b, n))
        for v, gv in pairs[: m + 1]:  # fill the history: n = m from now on
            _, state = fn(acc, state, v, gv, active)
        states[name] = state
    times: dict[str, list[float]] = {name: [] for name in versions}
    for i in range(args.warmup + args.repeats):
        v, gv = pairs[m + 1 + i % 3]
        for name, fn in versions.items():
            t0 = time.perf_counter()
            _, states[name] = fn(acc, states[name], v, gv, active)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def _fmt(ts: list[float]) -> str:
    ms = sorted(1e3 * t for t in ts)
    q = statistics.quantiles(ms, n=4)
    return f"median {statistics.median(ms):7.2f} ms  (IQR {q[0]:.2f}-{q[2]:.2f}, min {ms[0]:.2f}, max {ms[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dim", type=int, default=28_700)
    parser.add_argument("--memory", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 20:
        raise SystemExit(f"--repeats must be >= 20 for a meaningful median, got {args.repeats}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, "
          f"B={args.batch}, N={args.dim}, m={args.memory}, {args.repeats} timed updates each")
    results: dict[str, Any] = {}
    for cls in (AndersonI, AndersonII):
        err = agreement(cls, memory=5, seed=args.seed)
        print(f"{cls.__name__}: old vs new proposals, float64, max relative difference {err:.2e}")
        if err > 1e-12:
            raise SystemExit(f"{cls.__name__}: old and new updates disagree ({err:.2e} > 1e-12)")
        times = bench(cls, args)
        results[cls.__name__] = times
        for name, ts in times.items():
            print(f"  {name}: {_fmt(ts)}")
        speed = statistics.median(times["old"]) / statistics.median(times["new"])
        print(f"  speed-up (median old / median new): {speed:.2f}x")


if __name__ == "__main__":
    main()

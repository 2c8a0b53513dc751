"""The driver's bookkeeping on scripted maps: which iterate each :class:`Selection` keeps, the
trace, per-sample iteration counts and the reservoir-sampled iterate.

The scripted map is ``G(v) = v + 1`` from ``v0 = 0`` with Picard, so the iterate evaluated on
iteration ``k`` is ``k`` (in every coordinate) and the returned ``v`` tells which one was kept;
residual and cost per iteration and sample are read from a script.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import Tensor

from jiio_core import (
    CostResidualTradeoff,
    FixedPointResult,
    LowestCost,
    LowestResidual,
    Picard,
    Selection,
    Status,
    StepOutput,
    fixed_point,
)

DT = torch.float64


class Script:
    """Step returning scripted ``residual[k][b]`` and ``cost[k][b]``; records evaluations."""

    def __init__(self, residual: list[list[float]], cost: list[list[float]] | None) -> None:
        self.residual = torch.tensor(residual, dtype=DT)  # (K, B)
        self.cost = None if cost is None else torch.tensor(cost, dtype=DT)
        self.calls = 0

    def __call__(self, v: Tensor, k: int) -> StepOutput:
        self.calls += 1
        return StepOutput(
            value=v + 1.0,
            residual=self.residual[k].clone(),
            cost=None if self.cost is None else self.cost[k].clone(),
        )


def run(
    residual: list[list[float]],
    cost: list[list[float]] | None,
    selection: Selection | None = None,
    *,
    tol: float = 0.0,
    check_every: int = 1,
    n: int = 2,
    **kw: object,
) -> tuple[FixedPointResult, Script]:
    step = Script(residual, cost)
    b = len(residual[0])
    res = fixed_point(
        step,
        torch.zeros(b, n, dtype=DT),
        Picard(),
        max_iter=len(residual),
        tol=tol,
        selection=selection,
        check_every=check_every,
        **kw,  # type: ignore[arg-type]
    )
    return res, step


def kept(res: FixedPointResult) -> list[int]:
    v = res.v
    assert bool((v == v[:, :1]).all())
    return [int(i) for i in v[:, 0].tolist()]


def columns(*seqs: list[float]) -> list[list[float]]:
    """Per-sample sequences → the ``(K, B)`` layout of :class:`Script`."""
    return [list(row) for row in zip(*seqs, strict=True)]


# an independent statement of each rule, from its documentation (paper A.2 for the trade-off)
def reference_choice(rule: Selection, res: list[float], cost: list[float]) -> int:
    best, best_r, best_c = 0, math.inf, math.inf
    for k, (r, c) in enumerate(zip(res, cost, strict=True)):
        if isinstance(rule, LowestResidual):
            take = r < best_r
        elif isinstance(rule, LowestCost):
            take = c < best_c
        else:
            assert isinstance(rule, CostResidualTradeoff)
            take = k < rule.warmup or r < best_r or (c < best_c and r <= rule.slack * best_r)
        if take:
            best, best_r, best_c = k, r, c
    return best


RES_A = [5.0, 4.0, 3.0, 2.0, 1.5, 1.9, 1.0, 1.2, 1.05]
COST_A = [9.0, 8.0, 7.0, 0.5, 5.0, 1.0, 4.0, 3.0, 2.0]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (LowestResidual(), 6),  # smallest residual 1.0
        (LowestCost(), 3),  # smallest cost 0.5, whatever its residual
        (CostResidualTradeoff(warmup=0, slack=1.3), 8),  # 4 (r 1.5) → 5 (r 1.9 ≤ 1.95, cheaper) → 6 → 8
        (CostResidualTradeoff(warmup=0, slack=1.1), 8),  # 5 rejected (1.9 > 1.65); 8: 1.05 ≤ 1.1
        (CostResidualTradeoff(warmup=0, slack=1.0), 6),  # no slack: lowest residual
        (CostResidualTradeoff(warmup=20, slack=1.3), 8),  # warm-up longer than the run: last iterate
        (CostResidualTradeoff(warmup=4, slack=1.0), 6),
    ],
)
def test_selection_rules_on_a_hand_made_sequence(rule: Selection, expected: int) -> None:
    assert reference_choice(rule, RES_A, COST_A) == expected  # the reference agrees with the comment
    res, step = run(columns(RES_A), columns(COST_A), rule)
    assert kept(res) == [expected]
    assert res.residual.tolist() == [RES_A[expected]]
    assert res.cost.tolist() == [COST_A[expected]]
    assert res.status.tolist() == [Status.MAX_ITER]
    assert step.calls == len(RES_A)


def test_tradeoff_replaces_best_residual_with_the_cheaper_iterate() -> None:
    """After a cost-driven replacement the slack is measured from the *new* best residual."""
    res_seq = [1.0, 1.25, 1.5, 1.6]
    cost_seq = [4.0, 3.0, 2.0, 1.0]
    rule = CostResidualTradeoff(warmup=0, slack=1.3)
    # 1 (1.25 ≤ 1.3) → 2 (1.5 ≤ 1.625) → 3 (1.6 ≤ 1.95)
    assert reference_choice(rule, res_seq, cost_seq) == 3
    res, _ = run(columns(res_seq), columns(cost_seq), rule)
    assert kept(res) == [3]


@pytest.mark.parametrize(
    "rule",
    [LowestResidual(), LowestCost(), CostResidualTradeoff(), CostResidualTradeoff(warmup=3, slack=1.5)],
)
def test_selection_rules_per_sample_on_random_sequences(rule: Selection) -> None:
    rng = random.Random(0)
    b, k = 32, 25
    res_seqs = [[math.exp(rng.uniform(-3, 1)) for _ in range(k)] for _ in range(b)]
    cost_seqs = [[rng.uniform(0, 10) for _ in range(k)] for _ in range(b)]
    res, _ = run(columns(*res_seqs), columns(*cost_seqs), rule)
    assert kept(res) == [reference_choice(rule, r, c) for r, c in zip(res_seqs, cost_seqs, strict=True)]


def test_a_converged_iterate_is_kept_whatever_the_rule() -> None:
    """Sample 0 converges at k = 3 with a worse cost than k = 1: convergence wins (LowestCost
    would otherwise keep k = 1). Sample 1 never converges."""
    res_seq = columns([3.0, 2.0, 1.0, 0.0, 0.5, 0.5], [3.0, 2.0, 1.0, 0.9, 0.8, 0.7])
    cost_seq = columns([5.0, 0.1, 4.0, 9.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    res, _ = run(res_seq, cost_seq, LowestCost())
    assert kept(res) == [3, 5]
    assert res.status.tolist() == [Status.CONVERGED, Status.MAX_ITER]
    assert res.iterations.tolist() == [4, 6]
    assert res.cost.tolist() == [9.0, 0.5]


def test_tolerance_is_relative_to_the_iterate_norm() -> None:
    """``residual ≤ tol · max(1, ‖v‖)``: here ‖v_k‖ = k·√4 = 2k."""
    seq = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # residual 1 on every iteration
    res, _ = run(columns(seq), None, tol=0.2, n=4)  # converges once 0.2 · 2k ≥ 1, i.e. k = 3
    assert res.status.tolist() == [Status.CONVERGED]
    assert kept(res) == [3]
    res, _ = run(columns([0.5, 0.5, 0.5]), None, tol=0.6, n=4)  # k = 0: ‖v‖ = 0, scale 1
    assert kept(res) == [0]


# --------------------------------------------------------------------------- trace and counts


def test_trace_shapes_nan_for_frozen_samples_and_iterations() -> None:
    r0 = [4.0, 3.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]  # converges at k = 2
    r1 = [4.0, 3.0, 2.0, 1.5, 1.2, 0.0, 9.0, 9.0, 9.0, 9.0]  # converges at k = 5
    r2 = [4.0, 3.0, 2.0, 1.0, math.nan, 1.0, 1.0, 1.0, 1.0, 1.0]  # NaN at k = 4: diverged
    r3 = [4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # never
    costs = [[float(k + b) for b in range(4)] for k in range(10)]
    res, step = run(columns(r0, r1, r2, r3), costs, LowestResidual(), check_every=1)
    assert res.status.tolist() == [
        Status.CONVERGED,
        Status.CONVERGED,
        Status.DIVERGED,
        Status.MAX_ITER,
    ]
    assert res.iterations.tolist() == [3, 6, 5, 10]
    assert res.iterations.dtype == torch.int64
    assert kept(res) == [2, 5, 3, 0]
    assert step.calls == 10 and res.iterations_run == 10
    trace = res.trace
    assert tuple(trace.residual.shape) == (10, 4) and tuple(trace.cost.shape) == (10, 4)
    expected = torch.tensor(columns(r0, r1, r2, r3), dtype=DT)
    for b, n_active in enumerate([3, 6, 5, 10]):
        # the diverging evaluation is recorded (NaN here), then the sample is frozen
        torch.testing.assert_close(trace.residual[:n_active, b], expected[:n_active, b], equal_nan=True)
        torch.testing.assert_close(trace.cost[:n_active, b], torch.tensor(costs, dtype=DT)[:n_active, b])
        assert bool(torch.isnan(trace.residual[n_active:, b]).all())
        assert bool(torch.isnan(trace.cost[n_active:, b]).all())


def test_early_stop_with_check_every() -> None:
    r = [[4.0, 3.0], [0.0, 1.0], [9.0, 0.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]
    res, step = run(r, None, check_every=2)
    assert res.iterations.tolist() == [2, 3]
    assert step.calls == 4  # all frozen after 3 evaluations; the next stopping test is at 4
    assert tuple(res.trace.residual.shape) == (4, 2)
    res, step = run(r, None, check_every=1)
    assert step.calls == 3


def test_divergence_by_residual_growth() -> None:
    r0 = [1.0, 10.0, 1e5, 2e6, 1.0]  # > 1e6 × the first residual at k = 3
    r1 = [1.0, 0.9, 0.8, 0.7, 0.6]
    res, _ = run(columns(r0, r1), None, divergence_factor=1e6)
    assert res.status.tolist() == [Status.DIVERGED, Status.MAX_ITER]
    assert kept(res) == [0, 4]
    assert res.iterations.tolist() == [4, 5]


def test_no_cost_reported() -> None:
    res, _ = run(columns([3.0, 2.0, 1.0]), None)
    assert bool(torch.isnan(res.cost).all())
    assert bool(torch.isnan(res.trace.cost).all())
    with pytest.raises(ValueError, match=r"selection=LowestCost ranks iterates by cost, but step returned"):
        run(columns([3.0, 2.0, 1.0]), None, LowestCost())
    with pytest.raises(ValueError, match=r"selection=CostResidualTradeoff ranks iterates by cost"):
        run(columns([3.0, 2.0, 1.0]), None, CostResidualTradeoff())


# --------------------------------------------------------------------------- reservoir sampling


def _chi_square(counts: Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampled_iterate_is_uniform_over_iterates_from_sample_from() -> None:
    b, k, start = 6000, 12, 4
    res, _ = run([[1.0] * b] * k, None, n=1, sample_from=start, generator=torch.Generator().manual_seed(0))
    sampled = res.sampled
    assert sampled is not None and sampled.shape == (b, 1)
    idx = sampled[:, 0].long()
    assert bool((sampled[:, 0] == idx.to(DT)).all())
    assert int(idx.min()) >= start and int(idx.max()) <= k - 1
    counts = torch.bincount(idx - start, minlength=k - start).to(DT)
    # 7 degrees of freedom: the 99.99 % quantile is about 29.9
    assert _chi_square(counts) < 30.0, counts
    # every iterate can be drawn, and not just the first or the last one
    assert bool((counts > 0).all())


def test_sampled_iterate_respects_convergence_and_late_start() -> None:
    """Sample 0 converges at k = 6: draws from [3, 6]. Sample 1 converges at k = 1, before
    ``sample_from``: its returned iterate. Sample 2 runs to the end: draws from [3, 9]."""
    b_rep, k, start = 3000, 10, 3
    r0 = [1.0] * 6 + [0.0] + [9.0] * 3
    r1 = [1.0, 0.0] + [9.0] * 8
    r2 = [1.0] * 10
    seqs = [r0, r1, r2] * b_rep
    res, _ = run(columns(*seqs), None, n=1, sample_from=start, generator=torch.Generator().manual_seed(1))
    idx = res.sampled[:, 0].long().view(b_rep, 3)
    assert int(idx[:, 0].min()) >= start and int(idx[:, 0].max()) <= 6
    assert bool((idx[:, 1] == 1).all())
    assert int(idx[:, 2].min()) >= start and int(idx[:, 2].max()) <= k - 1
    c0 = torch.bincount(idx[:, 0] - start, minlength=4).to(DT)
    c2 = torch.bincount(idx[:, 2] - start, minlength=7).to(DT)
    assert _chi_square(c0) < 21.1  # 3 dof, 99.99 %
    assert _chi_square(c2) < 27.9  # 6 dof, 99.99 %


def test_sampled_iterate_defaults_and_determinism() -> None:
    seq = columns(*[[1.0] * 8] * 50)
    res, _ = run(seq, None)
    assert res.sampled is None
    a, _ = run(seq, None, sample_from=2, generator=torch.Generator().manual_seed(5))
    b, _ = run(seq, None, sample_from=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.sampled, b.sampled)
    # a start beyond the budget: the returned iterate
    c, _ = run(seq, None, sample_from=8)
    assert torch.equal(c.sampled, c.v)

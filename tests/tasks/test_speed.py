"""jiio_tasks.speed: the fair-comparison procedure on functions whose answers are known."""

from __future__ import annotations

import math

import pytest

from jiio_tasks.speed import compare, first_stable_k, interior_sweep, paired_ratio


def test_interior_sweep_extends_the_grid_until_the_best_is_inside() -> None:
    calls: list[float] = []

    def score(lr: float) -> float:  # minimum at lr = 3.2, far right of the grid
        calls.append(lr)
        return (math.log2(lr) - math.log2(3.2)) ** 2

    best, scores = interior_sweep(score, (0.1, 0.2, 0.4))
    assert best == pytest.approx(3.2)
    assert min(scores) < best < max(scores)  # interior
    assert sorted(scores) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4])
    # diverged settings count as +inf, never as the best
    best, scores = interior_sweep(lambda lr: math.nan if lr > 0.3 else -lr, (0.1, 0.2, 0.4))
    assert best == pytest.approx(0.2) and scores[0.4] == math.inf
    with pytest.raises(ValueError, match="grid"):
        interior_sweep(score, ())


def test_first_stable_k_needs_every_later_count_below() -> None:
    assert first_stable_k({5: 2.0, 10: 0.9, 15: 1.1, 20: 0.8, 30: 0.7}, 1.0) == 20
    assert first_stable_k({5: 2.0, 10: 1.5}, 1.0) is None
    assert first_stable_k({5: 0.5, 10: 0.4}, 1.0) == 5


def test_paired_ratio_and_compare(capsys: pytest.CaptureFixture[str]) -> None:
    def spin(n: int) -> int:
        return sum(i * i for i in range(n))

    r = paired_ratio(lambda: spin(200_000), lambda: spin(20_000), repeats=3, warmup=0)
    assert len(r.ratios) == 3 and min(r.ratios) <= r.median <= max(r.ratios) and r.median > 2

    # baseline: "loss" 1/lr for lr <= 1, worse beyond; JIIO's loss after k iterations: 10/k
    def baseline(lr: float) -> float:
        spin(50_000)
        return 1 / lr if lr <= 1 else lr

    def jiio(k: int) -> float:
        spin(1_000 * k)
        return 10 / k

    out = compare(baseline, jiio, lambda x: x, step_sizes=(0.25, 0.5), iterations=(2, 5, 10, 20, 40),
                  repeats=2, progress=True)
    assert out["baseline_step_size"] == 1.0 and out["baseline_loss"] == 1.0
    assert out["jiio_iterations_to_baseline_loss"] == 10  # 10/k <= 1 from k = 10 on
    assert out["ratio_min"] <= out["ratio_median"] <= out["ratio_max"]
    assert "fair comparison" in capsys.readouterr().err  # the progress bar goes to stderr

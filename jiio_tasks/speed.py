"""The fair speed comparison every JIIO-vs-baseline figure uses (benchmarks and the CLI alike).

The procedure, so that a speed-up cannot come from a kinder measurement:

1. **Score at equilibrium.** Each method is scored by the loss of the input it *returns*, at the
   DEQ equilibrium of that input re-solved tightly (never at an intermediate joint iterate).
2. **Tune the baseline.** The baseline's step size is swept on a grid that is extended (×2 or
   ÷2) until the best value is interior ([`interior_sweep`][jiio_tasks.speed.interior_sweep]).
3. **Equal quality.** JIIO's iteration count ``k*`` is the smallest of the tried counts from
   which on its score stays at or below the baseline's ([`first_stable_k`][jiio_tasks.speed.first_stable_k]).
4. **CPU time with spread.** Both runs are timed by process CPU time (``time.process_time``:
   not inflated by other jobs on a shared machine), interleaved over ``repeats`` pairs; the
   ratio is reported as the median with its min–max over the pairs ([`paired_ratio`][jiio_tasks.speed.paired_ratio]).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from jiio_tasks.progress import progress_bar

T = TypeVar("T")

__all__ = ["PairedRatio", "first_stable_k", "interior_sweep", "paired_ratio"]


def interior_sweep(
    score: Callable[[float], float],
    grid: Sequence[float],
    *,
    factor: float = 2.0,
    max_extensions: int = 6,
) -> tuple[float, dict[float, float]]:
    """Minimise ``score`` over step sizes: the ``grid`` first, then extended by ``factor`` past
    whichever end holds the best value, until the best is interior (or ``max_extensions``
    extra values were tried). Non-finite scores count as +inf (a diverged setting). Returns the
    best value and every score tried."""
    if not grid or any(not (isinstance(g, (int, float)) and g > 0) for g in grid):
        raise ValueError(f"grid must be a non-empty sequence of positive numbers, got {grid!r}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    scores: dict[float, float] = {}

    def run(v: float) -> None:
        s = float(score(v))
        scores[v] = s if math.isfinite(s) else math.inf

    for v in sorted(set(float(g) for g in grid)):
        run(v)
    for _ in range(max_extensions):
        values = sorted(scores)
        best = min(values, key=lambda v: scores[v])
        if best == values[0]:
            run(values[0] / factor)
        elif best == values[-1]:
            run(values[-1] * factor)
        else:
            break
    best = min(scores, key=lambda v: scores[v])
    return best, dict(sorted(scores.items()))


def first_stable_k(scores: dict[int, float], target: float) -> int | None:
    """The smallest ``k`` whose score and every larger tried ``k``'s score are ``≤ target``."""
    found: int | None = None
    for k in sorted(scores, reverse=True):
        if scores[k] <= target:
            found = k
        else:
            break
    return found


@attrs.frozen
class PairedRatio:
    """CPU seconds of two methods over interleaved repeats and the ratio ``baseline / jiio``."""

    baseline_seconds: tuple[float, ...]
    jiio_seconds: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(b / j for b, j in zip(self.baseline_seconds, self.jiio_seconds, strict=True))

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline_cpu_seconds": list(self.baseline_seconds),
            "jiio_cpu_seconds": list(self.jiio_seconds),
            "baseline_cpu_median": statistics.median(self.baseline_seconds),
            "jiio_cpu_median": statistics.median(self.jiio_seconds),
            "ratio_median": self.median,
            "ratio_min": min(self.ratios),
            "ratio_max": max(self.ratios),
        }

    def summary(self) -> str:
        return f"{self.median:.1f}x (min {min(self.ratios):.1f}, max {max(self.ratios):.1f}, {len(self.ratios)} repeats)"


def cpu_seconds(fn: Callable[[], T]) -> tuple[float, T]:
    """Process CPU time of one call of ``fn`` and its result."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def paired_ratio(
    baseline: Callable[[], Any],
    jiio: Callable[[], Any],
    *,
    repeats: int = 3,
    warmup: int = 1,
    on_pair: Callable[[], None] | None = None,
) -> PairedRatio:
    """Time ``baseline`` and ``jiio`` alternately, ``repeats`` times each after ``warmup``
    untimed calls of both, by process CPU time. ``on_pair`` (e.g. a progress bar's tick) is
    called after each of the ``warmup + repeats`` pairs, outside the timed calls."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        baseline()
        jiio()
        if on_pair is not None:
            on_pair()
    b, j = [], []
    for _ in range(repeats):
        b.append(cpu_seconds(baseline)[0])
        j.append(cpu_seconds(jiio)[0])
        if on_pair is not None:
            on_pair()
    return PairedRatio(tuple(b), tuple(j))


def compare(
    baseline: Callable[[float], Any],
    jiio: Callable[[int], Any],
    score: Callable[[Any], float],
    *,
    step_sizes: Sequence[float],
    iterations: Sequence[int],
    repeats: int = 3,
    reference: tuple[float, dict[float, float]] | None = None,
    time_it: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """The whole procedure for one problem.

    ``baseline(step_size)`` runs the baseline and returns the input it found; ``jiio(k)`` runs
    a JIIO solve of ``k`` iterations and returns its input; ``score(input)`` is the loss at that
    input's tight equilibrium. The step size is swept from ``step_sizes`` ([`interior_sweep`][jiio_tasks.speed.interior_sweep],
    or taken from ``reference``: an earlier result's ``(best, scores)``), ``k*`` is
    [`first_stable_k`][jiio_tasks.speed.first_stable_k] over ``iterations``, and both are timed by [`paired_ratio`][jiio_tasks.speed.paired_ratio]
    (skipped with ``time_it=False`` or when JIIO never reaches the baseline's score).
    ``progress`` shows a bar on stderr ([`jiio_tasks.progress.progress_bar`][jiio_tasks.progress.progress_bar]), one tick
    per run: the step sizes of the grid (raised when the sweep extends it), the JIIO counts and
    the ``1 + repeats`` timed pairs (dropped when the timing is skipped)."""
    grid = len(set(float(s) for s in step_sizes)) if reference is None else 0
    timed = 1 + repeats if time_it else 0
    bar = progress_bar(grid + len(set(iterations)) + timed, "fair comparison", enabled=progress, unit="run")
    baseline_runs = 0

    def run_baseline(arg: float) -> Any:
        nonlocal baseline_runs
        baseline_runs += 1
        if baseline_runs > grid:  # interior_sweep extended the grid
            bar.total += 1
        bar.set_postfix_str(f"baseline step {arg:g}")
        out = baseline(arg)
        bar.update()
        return out

    def run_jiio(k: int) -> Any:
        bar.set_postfix_str(f"JIIO iterations {k}")
        out = jiio(k)
        bar.update()
        return out

    try:
        if reference is None:
            best, sweep = interior_sweep(lambda a: score(run_baseline(a)), step_sizes)
        else:
            best, sweep = reference
        scores = {k: float(score(run_jiio(k))) for k in sorted(set(iterations))}
        target = sweep[best]
        k_star = first_stable_k(scores, target)
        out: dict[str, Any] = {
            "baseline_step_size": best,
            "baseline_sweep": {f"{k:g}": v for k, v in sweep.items()},
            "baseline_loss": target,
            "jiio_scores": {str(k): v for k, v in scores.items()},
            "jiio_iterations_to_baseline_loss": k_star,
            "reference": (best, sweep),
        }
        if k_star is not None and time_it:
            bar.set_postfix_str(f"timing baseline vs JIIO-{k_star}")
            ratio = paired_ratio(lambda: baseline(best), lambda: jiio(k_star), repeats=repeats,
                                 on_pair=bar.update)
            out.update({"jiio_loss": scores[k_star], **ratio.as_dict()})
        else:
            bar.total = bar.n  # no timing: done
    finally:
        bar.close()
    return out


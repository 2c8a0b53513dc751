"""Inner loop of DEQ meta-learning: JIIO versus Adam over the task vector, time to an equal
support loss (paper Appendix B.1, Table 7), on the trained ``glyphs_meta_small`` model.

Both inner loops see the same batch of meta-test tasks (support images only) and minimise the
same inner loss (support cross-entropy + ``reg · ‖x‖²``) from ``x = 0``; every loss compared
is re-evaluated at the DEQ equilibrium of the returned ``x``. Adam's steps are each a full DEQ
forward solve and implicit backward solve. Two definitions of "equal loss":

(a) the paper's: the target is Adam-``--adam-steps``'s loss; ``k*`` is the fewest JIIO
    iterations (over a grid up to ``--max-iter``) from which on JIIO's equilibrium loss stays at
    or below it ([`jiio_tasks.speed.first_stable_k`][jiio_tasks.speed.first_stable_k], as for the inversion benchmark); Adam-N and
    JIIO-``k*`` are then timed alternately ([`jiio_tasks.speed.paired_ratio`][jiio_tasks.speed.paired_ratio]); no ratio if JIIO
    does not get there;
(b) JIIO's working point: the target is the loss of JIIO with the config's iterations (as in
    meta-training), and Adam's trace gives the steps it needs to reach it.

Adam's learning rate (unless ``--adam-lr`` is given) is chosen on ``--val-tasks`` meta-*train*
tasks (a fixed seeded draw, never the test tasks): Adam-``--adam-steps``'s mean support loss at
equilibrium, over a grid extended until the best rate is interior
([`jiio_tasks.speed.interior_sweep`][jiio_tasks.speed.interior_sweep]).

Times are process CPU time (CUDA: wall time after a synchronize), the median of ``--repeats`` runs after one warm-up run, and every ratio comes with its min–max over the repeats. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` above the memory in use before the run; on CPU (Linux)
the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) above the
resident size just before the run, in a fresh process per row.

Run: ``python benchmarks/bench_meta_inner.py`` (``--weights`` for another checkpoint).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _common as C
import attrs
import torch
from torch import Tensor

import jiio_zoo
from jiio_tasks.meta.splits import meta_test_tasks, meta_train_tasks
from jiio_tasks.meta.tasks import TaskBatch, collate
from jiio_tasks.meta.train import (
    InnerSettings,
    MetaTrainConfig,
    adam_inner,
    jiio_inner,
    support_loss,
)
from jiio_tasks.speed import first_stable_k, interior_sweep, paired_ratio
from jiio_zoo.model import ZooModel


def _setup(args: argparse.Namespace) -> tuple[ZooModel, TaskBatch]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = jiio_zoo.load("glyphs_meta_small", weights=args.weights, device=args.device)
    model.eval()
    cfg = MetaTrainConfig(eval_tasks=args.tasks)
    test = meta_test_tasks(config=cfg.config, ways=cfg.ways, shots=cfg.shots, query_shots=cfg.query_shots,
                           count=cfg.eval_tasks)
    batch = collate([test[i] for i in range(args.tasks)])
    return model, TaskBatch(batch.images.to(args.device), batch.labels.to(args.device), batch.support)


def _choose_adam_lr(model: ZooModel, args: argparse.Namespace) -> tuple[float, dict[float, float]]:
    """Adam's learning rate with the lowest mean support loss (at equilibrium) after
    ``--adam-steps`` steps on ``--val-tasks`` meta-train tasks."""
    cfg = MetaTrainConfig()
    stream = meta_train_tasks(config=cfg.config, ways=cfg.ways, shots=cfg.shots, query_shots=cfg.query_shots,
                              seed=10_000 + args.seed)
    val = collate([stream.sample() for _ in range(args.val_tasks)])
    val = TaskBatch(val.images.to(args.device), val.labels.to(args.device), val.support)

    def score(lr: float) -> float:
        inner = InnerSettings(adam_steps=args.adam_steps, adam_lr=lr)
        with torch.no_grad():
            x = adam_inner(model, val, inner).x
        return float(support_loss(model, val, x, inner).mean())

    return interior_sweep(score, [0.03, 0.1, 0.3])


def _run(model: ZooModel, batch: TaskBatch, method: str, inner: InnerSettings) -> Tensor:
    """The task vectors found by one inner loop."""
    if method == "jiio":
        return jiio_inner(model, batch, inner).x
    with torch.no_grad():
        return adam_inner(model, batch, inner).x


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Tensor], repeats: int, device: str) -> tuple[list[float], Tensor]:
    """Every repeat's seconds after one warm-up call: process CPU time on the CPU, wall time
    after a synchronize on CUDA."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        out = fn()
        _sync(device)
        times.append(clock() - start)
    return times, out


def _spread(num: list[float], den: list[float]) -> tuple[float, float]:
    """Min and max of the per-repeat ratios ``num[i] / den[i]``."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    return min(ratios), max(ratios)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_memory(model: ZooModel, batch: TaskBatch, method: str, inner: InnerSettings, device: str) -> str:
    """Peak memory of one inner-loop run above what was in use just before it."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _run(model, batch, method, inner)
        return f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.1f} MiB (CUDA allocated)"
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "n/a"
    start = _status_kib("VmRSS")
    _run(model, batch, method, inner)
    peak = _status_kib("VmHWM")
    if start is None or peak is None:
        return "n/a"
    return f"{(peak - start) / 1024:.1f} MiB (CPU peak RSS above start, fresh process)"


def _memory_in_child(args: argparse.Namespace, method: str, inner: InnerSettings) -> str:
    """On CPU, measure in a fresh process, so that heap kept by earlier runs does not hide it."""
    if args.device.startswith("cuda"):
        model, batch = _setup(args)
        return _peak_memory(model, batch, method, inner, args.device)
    cmd = [sys.executable, __file__, "--tasks", str(args.tasks), "--threads", str(args.threads),
           "--seed", str(args.seed), "--adam-steps", str(inner.adam_steps), "--adam-lr", str(inner.adam_lr),
           "--memory-only", method, "--max-iter", str(inner.iterations or args.max_iter)]
    if args.weights is not None:
        cmd += ["--weights", str(args.weights)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return out[-1] if out else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--tasks", type=int, default=10, help="meta-test tasks in the batch")
    parser.add_argument("--adam-steps", type=int, default=20)
    parser.add_argument("--adam-lr", type=float, default=None,
                        help="Adam's learning rate (default: swept on --val-tasks meta-train tasks)")
    parser.add_argument("--val-tasks", type=int, default=10, help="meta-train tasks for the Adam lr sweep")
    parser.add_argument("--max-iter", type=int, default=200, help="most JIIO iterations scored")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the results here (default benchmarks/results/meta-<device>.json)")
    parser.add_argument("--memory-only", choices=("jiio", "adam"), default=None,
                        help=argparse.SUPPRESS)  # internal: one run (JIIO: --max-iter iterations)
    args = parser.parse_args()
    model, batch = _setup(args)
    sweep: dict[float, float] = {}
    if args.adam_lr is None and args.memory_only is None:
        args.adam_lr, sweep = _choose_adam_lr(model, args)
        print("Adam lr sweep on meta-train tasks (support loss after "
              f"{args.adam_steps} steps): " + ", ".join(f"{k:g}: {v:.4f}" for k, v in sorted(sweep.items()))
              + f" -> {args.adam_lr:g}")
    base = InnerSettings(adam_steps=args.adam_steps, adam_lr=args.adam_lr or 0.1)
    if args.memory_only is not None:
        print(_peak_memory(model, batch, args.memory_only, attrs.evolve(base, iterations=args.max_iter),
                           args.device))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    print(f"glyphs_meta_small, {args.tasks} meta-test tasks (5-way 1-shot), inner loss = support CE + "
          f"{base.reg} ‖x‖², from x = 0")

    rows: list[tuple[str, float, float, str, InnerSettings]] = []
    times: dict[str, list[float]] = {}

    def measure(label: str, method: str, inner: InnerSettings) -> tuple[float, float]:
        runs, x = _timed(lambda: _run(model, batch, method, inner), args.repeats, args.device)
        seconds = statistics.median(runs)
        times[label] = runs
        loss = float(support_loss(model, batch, x, base).mean())
        rows.append((label, loss, seconds, method, inner))
        return seconds, loss

    # (a) the paper's Table 7: the target is Adam-N's support loss; k* = the fewest JIIO
    # iterations from which on (over the grid) JIIO's equilibrium support loss stays at or below
    # it (jiio_tasks.speed.first_stable_k); then Adam-N and JIIO-k* timed alternately
    def jiio_run(k: int) -> Tensor:
        return _run(model, batch, "jiio", attrs.evolve(base, iterations=k))

    def adam_run() -> Tensor:
        return _run(model, batch, "adam", base)

    target = float(support_loss(model, batch, adam_run(), base).mean())
    grid = [k for k in (5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200) if k <= args.max_iter]
    scores = {k: float(support_loss(model, batch, jiio_run(k), base).mean()) for k in grid}
    k = first_stable_k(scores, target)
    print("JIIO-k support loss at equilibrium: " + ", ".join(f"{i}: {v:.4f}" for i, v in scores.items()))
    ratio_a: float | None = None
    spread_a = (math.nan, math.nan)
    if k is not None:
        k_star: int = k
        pair = paired_ratio(adam_run, lambda: jiio_run(k_star), repeats=args.repeats)
        ratio_a, spread_a = pair.median, (min(pair.ratios), max(pair.ratios))
        times[f"Adam, {args.adam_steps} steps"] = list(pair.baseline_seconds)
        times[f"JIIO, {k} iterations"] = list(pair.jiio_seconds)
        rows.append((f"Adam, {args.adam_steps} steps", target, statistics.median(pair.baseline_seconds), "adam", base))
        rows.append((f"JIIO, {k} iterations", scores[k], statistics.median(pair.jiio_seconds), "jiio",
                     attrs.evolve(base, iterations=k)))
    else:
        measure(f"Adam, {args.adam_steps} steps", "adam", base)
        k = args.max_iter
        measure(f"JIIO, {k} iterations", "jiio", attrs.evolve(base, iterations=k))
    adam_time = rows[0][2]

    # (b) JIIO's working point: the target is JIIO-k0's support loss (k0: the config's
    # iterations, as in training); Adam steps to reach it, from Adam-N's trace
    k0 = model.config.solver.jiio_iterations
    jiio0_time, target_b = measure(f"JIIO, {k0} iterations", "jiio", attrs.evolve(base, iterations=k0))
    with torch.no_grad():
        trace = adam_inner(model, batch, base).trace
    hits = (torch.cummin(trace, dim=0).values.mean(dim=1) <= target_b).nonzero()
    steps = int(hits[0]) + 1 if hits.numel() else args.adam_steps
    while True:
        adam_b = attrs.evolve(base, adam_steps=steps)
        with torch.no_grad():
            got = float(support_loss(model, batch, _run(model, batch, "adam", adam_b), base).mean())
        if got <= target_b or steps >= args.adam_steps:
            break
        steps += 1
    adam_b_time, got = measure(f"Adam, {steps} steps", "adam", adam_b)
    ratio_b = adam_b_time / jiio0_time if got <= target_b else None
    spread_b = _spread(times[f"Adam, {steps} steps"], times[f"JIIO, {k0} iterations"])

    print(f"{'inner loop':<22} {'support loss':>12} {'seconds':>9}  peak memory")
    table = ["| inner loop | support loss | time | peak memory |", "|---|---|---|---|"]
    mems: dict[str, float] = {}
    row_data: list[dict[str, object]] = []
    for label, loss, seconds, method, settings in rows:
        mem = "—" if args.no_memory else _memory_in_child(args, method, settings)
        print(f"{label:<22} {loss:>12.4f} {seconds:>9.3f}  {mem}")
        table.append(f"| {label} | {loss:.4f} | {seconds * 1e3:,.0f} ms | {mem} |")
        row_data.append({"label": label, "method": method, "support_loss": loss, "seconds": seconds, "memory": mem})
        if mem.split(" ")[0].replace(".", "", 1).isdigit():
            mems[method] = max(mems.get(method, 0.0), float(mem.split(" ")[0]) * 2**20)
    print(f"(Adam steps: a DEQ solve of {base.deq_iterations} iterations and an implicit backward each; "
          f"JIIO after {max(scores)} iterations: {scores[max(scores)]:.4f})")
    if ratio_a is None:
        print(f"(a) JIIO does NOT reach Adam-{args.adam_steps}'s support loss {target:.4f} within "
              f"{args.max_iter} iterations: no ratio")
    else:
        print(f"(a) equal loss = Adam-{args.adam_steps}'s {target:.4f}: JIIO needs {k} iterations; "
              f"Adam/JIIO time ratio {ratio_a:.2f}x")
    if ratio_b is None:
        print(f"(b) Adam does not reach JIIO-{k0}'s support loss {target_b:.4f} in {args.adam_steps} steps")
    else:
        print(f"(b) equal loss = JIIO-{k0}'s {target_b:.4f}: Adam needs {steps} steps; "
              f"Adam/JIIO time ratio {ratio_b:.2f}x")
    summary = [
        f"`glyphs_meta_small` ({'shipped weights' if args.weights is None else args.weights}), {args.tasks} "
        f"meta-test tasks (5-way 1-shot), inner loss = support cross-entropy + {base.reg}·‖x‖² from x = 0; "
        f"Adam's lr {base.adam_lr:g}" + (f" (swept on {args.val_tasks} meta-train tasks)" if sweep else "") + "; "
        "every loss re-evaluated at the DEQ equilibrium of the returned task vector. Peak memory: peak "
        "resident set above the start, each row in a fresh process (CPU).",
        "",
        *table,
        "",
        f"(a) the paper's definition, time to Adam-{args.adam_steps}'s support loss {target:.4f}: "
        + (f"JIIO needs {k} iterations, **{ratio_a:.2f}×** faster ({spread_a[0]:.2f}–{spread_a[1]:.2f} "
           "over the repeats)." if ratio_a is not None else
           f"JIIO does **not** reach it within {args.max_iter} iterations, so there is no ratio."),
        "",
        f"(b) at JIIO's working point (JIIO-{k0}, as in meta-training; support loss {target_b:.4f}): "
        + (f"Adam needs {steps} steps, JIIO is **{ratio_b:.2f}×** faster." if ratio_b is not None else
           f"Adam does not reach it in {args.adam_steps} steps."),
    ]
    speedup = ratio_a if ratio_a is not None else None
    result = {
        "tasks": args.tasks, "adam_steps": args.adam_steps, "adam_lr": base.adam_lr,
        "adam_lr_sweep": {str(k): v for k, v in sorted(sweep.items())}, "val_tasks": args.val_tasks,
        "adam_seconds": adam_time, "adam_loss": target,
        "jiio_iterations_to_adam_loss": k if ratio_a is not None else None,
        "jiio_scores": {str(i): v for i, v in scores.items()},
        "speedup": speedup, "speedup_at_jiio_working_point": ratio_b,
        "speedup_min": spread_a[0] if ratio_a is not None else None,
        "speedup_max": spread_a[1] if ratio_a is not None else None,
        "speedup_at_jiio_working_point_min": spread_b[0] if ratio_b is not None else None,
        "speedup_at_jiio_working_point_max": spread_b[1] if ratio_b is not None else None,
        "repeats": args.repeats, "seconds_per_repeat": times,
        "adam_peak_bytes": mems.get("adam"), "jiio_peak_bytes": mems.get("jiio"),
        "memory_ratio": (mems["jiio"] / mems["adam"]) if "jiio" in mems and mems.get("adam") else None,
        "jiio_working_point_iterations": k0, "adam_steps_to_jiio_working_point": steps,
        "rows": row_data, "table_markdown": "\n".join(table),
        "summary_markdown": "\n".join(summary),
    }
    C.write("meta", args, torch.device(args.device), result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

"""Robust evaluation (Table 5) and the JIIO-vs-PGD attack speed benchmark ([`bench`][jiio_tasks.adversarial.evaluate.bench])."""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_core.deq import DEQSolver
from jiio_tasks.adversarial.attacks import JIIOAttack, PGDAttack, default_deq, deq_logits, evaluating
from jiio_tasks.adversarial.splits import held_out_digits
from jiio_tasks.adversarial.train import METHODS, accuracy
from jiio_tasks.progress import progress_bar
from jiio_tasks.runs import RunDir
from jiio_tasks.speed import PairedRatio, cpu_seconds, first_stable_k, interior_sweep, paired_ratio
from jiio_zoo.checkpoint import load_model
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import deq_solver

COLUMNS = ("clean", "pgd", "jiio")


def load_run(path: str | Path) -> tuple[ZooModel, dict[str, Any]]:
    """The trained model of a run directory and its resolved training config."""
    run = RunDir.existing(path)
    metrics = run.read_metrics()
    if "config" not in metrics or not (run.root / "model.pt").is_file():
        raise FileNotFoundError(f"{run.root} is not a finished adversarial run (no config/model.pt)")
    return load_model(run.root / "model.pt"), dict(metrics["config"])


def table(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{train method: {attack: {mean, std, n}}}`` over the given per-run results (each with
    ``method`` and the accuracy columns, in percent)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        out[method] = {}
        for col in COLUMNS:
            vals = [float(r[col]) for r in rows]
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out[method][col] = {"mean": statistics.fmean(vals), "std": std, "n": float(len(vals))}
    return out


def markdown(grid: dict[str, dict[str, dict[str, float]]], eps: float) -> str:
    lines = [
        f"Robust accuracy (%), L2 eps = {eps:g}; mean ± std over seeds",
        "",
        "| train \\ attack | clean | PGD-20 | JIIO |",
        "|---|---|---|---|",
    ]
    for method, cols in grid.items():
        cells = [f"{cols[c]['mean']:.1f} ± {cols[c]['std']:.1f}" for c in COLUMNS]
        lines.append(f"| {method} (n={int(cols['clean']['n'])}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


EVAL_BATCH = 100
"""Images attacked at a time by [`evaluate_runs`][jiio_tasks.adversarial.evaluate.evaluate_runs] (as by ``train.robust_accuracies``)."""


def _robust_accuracies(model: ZooModel, images: Tensor, labels: Tensor, eps: float, *, pgd_steps: int = 20,
                       jiio_iterations: int = 40, seed: int = 0, progress: Any = None) -> dict[str, float]:
    """Clean, PGD-``pgd_steps`` and JIIO-``jiio_iterations`` accuracy (fractions; the columns of
    Table 5), the same numbers as [`jiio_tasks.adversarial.train.robust_accuracies`][jiio_tasks.adversarial.train.robust_accuracies], computed
    [`EVAL_BATCH`][jiio_tasks.adversarial.evaluate.EVAL_BATCH] images at a time so that ``progress`` (a bar of
    [`jiio_tasks.progress.progress_bar`][jiio_tasks.progress.progress_bar], or ``None``) ticks once per batch and attack."""
    g = torch.Generator().manual_seed(seed)
    attacks: dict[str, JIIOAttack | PGDAttack | None] = {
        "clean": None, "pgd": PGDAttack(eps, steps=pgd_steps), "jiio": JIIOAttack(eps, iterations=jiio_iterations)}
    out: dict[str, float] = {}
    for column, attack in attacks.items():
        correct = 0
        for start in range(0, len(labels), EVAL_BATCH):
            x, y = images[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
            gen = g if column == "pgd" else None
            correct += round(accuracy(model, x, y, attack, batch=EVAL_BATCH, generator=gen) * len(y))
            if progress is not None:
                progress.set_postfix_str(column)
                progress.update()
        out[column] = correct / max(1, len(labels))
    return out


def evaluate_runs(runs: Sequence[str], out: str | Path, size: int = 500, pgd_steps: int = 20,
                  jiio_iterations: int | None = None, eps: float | None = None, *,
                  progress: bool = False) -> dict[str, Any]:
    """Evaluate every run on the fixed held-out subset of ``size`` test images
    ([`jiio_tasks.adversarial.splits.held_out_digits`][jiio_tasks.adversarial.splits.held_out_digits]) with clean, PGD-``pgd_steps`` and
    JIIO-``jiio_iterations`` (default: each run's config's ``jiio_iterations``); write ``robust.json`` and
    ``robust.md`` under ``out``. ``progress`` shows a bar on stderr (one tick per batch of
    [`EVAL_BATCH`][jiio_tasks.adversarial.evaluate.EVAL_BATCH] images, attack and run)."""
    results: list[dict[str, Any]] = []
    used_eps = 0.0
    loaded = []  # every run and its data first: a missing run or data root fails before any work
    for path in runs:
        model, cfg = load_run(path)
        x, y = held_out_digits(model, size, data=cfg["data"], data_root=cfg.get("data_root"))
        loaded.append((path, model, cfg, x, y))
    total = sum(len(COLUMNS) * math.ceil(len(y) / EVAL_BATCH) for *_, y in loaded)
    with progress_bar(total, "eval adversarial", enabled=progress, unit="batch") as bar:
        for path, model, cfg, x, y in loaded:
            e = float(eps if eps is not None else cfg["eps"])
            used_eps = e
            bar.set_description(f"eval adversarial {Path(path).name}")
            k = jiio_iterations if jiio_iterations is not None else model.config.solver.jiio_iterations
            acc = _robust_accuracies(model, x, y, e, pgd_steps=pgd_steps, jiio_iterations=k, progress=bar)
            results.append({"run": str(path), "method": cfg["method"], "seed": cfg["seed"], "jiio_iterations": k,
                            **{k: 100.0 * v for k, v in acc.items()}})
    grid = table(results)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    payload = {"eps": used_eps, "size": size, "runs": results, "table": grid}
    (dest / "robust.json").write_text(json.dumps(payload, indent=2), encoding="utf8")
    (dest / "robust.md").write_text(markdown(grid, used_eps), encoding="utf8")
    return payload


PGD_STEPS_GRID: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 14, 20, 28, 40)
"""PGD step counts [`bench`][jiio_tasks.adversarial.evaluate.bench] sweeps (each at its best step size)."""

JIIO_ITERATIONS_GRID: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120)
"""JIIO iteration counts [`bench`][jiio_tasks.adversarial.evaluate.bench] scores to find ``k*``."""

REL_STEP_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0)
"""PGD-k's first step-size grid, as multiples of its default ``rel_step = 2.5 / k``; the sweep
extends it (×2 or ÷2) until the best is interior ([`jiio_tasks.speed.interior_sweep`][jiio_tasks.speed.interior_sweep])."""

SCORE_MAX_ITER = 300
SCORE_TOL = 1e-6


def tight_deq(model: ZooModel) -> DEQSolver:
    """The tight DEQ solve every attack is scored with (``max_iter`` 300, ``tol`` 1e-6)."""
    return deq_solver(model, max_iter=SCORE_MAX_ITER, tol=SCORE_TOL)


def attack_score(model: ZooModel, images: Tensor, labels: Tensor, deq: DEQSolver) -> dict[str, Any]:
    """``success`` (fraction of ``images`` misclassified), mean cross-entropy ``ce`` at the DEQ
    equilibrium of ``images`` solved by ``deq``, and ``unconverged``: samples whose solve did
    not reach its tolerance."""
    with torch.no_grad(), evaluating(model):
        sol = deq.solve(model.layer, images)
        logits = model.head(sol.z)
    wrong = int((logits.argmax(1) != labels).sum())
    return {"success": wrong / int(labels.shape[0]), "ce": float(F.cross_entropy(logits, labels)),
            "unconverged": int((~sol.converged).sum())}


def sweep_objective(success: float, ce: float, batch: int) -> float:
    """What PGD's step-size sweep minimises: ``−success``, ties broken by the larger CE. The
    CE term (CE rounded to 1e-4, so float noise is a tie, mapped into [0, 1/(2·batch)))
    is below half a sample, so it never outweighs a difference in success."""
    c = round(max(float(ce), 0.0), 4)
    return -(float(success) + c / (1.0 + c) / (2.0 * batch))


def _int_grid(name: str, values: object) -> list[int]:
    ok = isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    if not ok:
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {values!r}")
    assert isinstance(values, (list, tuple))
    return sorted({int(v) for v in values})


def _check_bench_args(images: Tensor, labels: Tensor, eps: float, pgd_steps: int,
                      rel_step_factors: Sequence[float], repeats: int, warmup: int) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W), got {got}")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0] \
            or labels.shape[0] == 0:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor (N,) with N = images.shape[0] = {images.shape[0]} >= 1, "
                         f"got {got}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 1:
        raise ValueError(f"pgd_steps must be an int >= 1, got {pgd_steps!r}")
    if not isinstance(rel_step_factors, (list, tuple)) or not rel_step_factors or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0)
            for f in rel_step_factors):
        raise ValueError(f"rel_step_factors must be a non-empty sequence of finite numbers > 0, "
                         f"got {rel_step_factors!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")


def bench(
    model: ZooModel,
    images: Tensor,
    labels: Tensor,
    eps: float,
    out: str | Path | None = None,
    *,
    pgd_steps: int = 20,
    pgd_grid: Sequence[int] = PGD_STEPS_GRID,
    jiio_iterations: Sequence[int] = JIIO_ITERATIONS_GRID,
    rel_step_factors: Sequence[float] = REL_STEP_FACTORS,
    repeats: int = 3,
    warmup: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """JIIO vs the cheapest PGD-k at equal attack success, by the fair procedure of
    [`jiio_tasks.speed`][jiio_tasks.speed]; writes ``bench.json`` and ``attack_loss_vs_time.png`` under
    ``out`` (if given) and returns the numbers.

    - **Score**: success (fraction misclassified) and mean CE of the images an attack
      returns, at their DEQ equilibrium re-solved tightly ([`tight_deq`][jiio_tasks.adversarial.evaluate.tight_deq]); samples whose
      solve did not converge are counted (``unconverged``).
    - **PGD**: for every ``k`` in ``pgd_grid`` (plus ``pgd_steps``), ``PGDAttack(eps, steps=k,
      rel_step=r)`` with ``r`` swept from ``rel_step_factors · 2.5/k`` by
      [`interior_sweep`][jiio_tasks.speed.interior_sweep], maximising success (ties: larger CE).
      PGD's inner solves use the config's DEQ solver ([`default_deq`][jiio_tasks.adversarial.attacks.default_deq]).
    - **Target** = the best success of PGD-``pgd_steps`` over its step sizes. The baseline is
      the cheapest PGD-k: the smallest ``k`` whose best success is ≥ the target.
    - **JIIO**: ``JIIOAttack(eps, iterations=k)`` for ``k`` in ``jiio_iterations``; ``k*`` is
      the smallest ``k`` from which on (over the tried counts) success stays ≥ the target
      ([`first_stable_k`][jiio_tasks.speed.first_stable_k]), ``None`` if there is none.
    - **Time**: the baseline and JIIO-``k*`` by process CPU time, ``repeats`` interleaved pairs
      after ``warmup`` ([`paired_ratio`][jiio_tasks.speed.paired_ratio]): the ratio PGD/JIIO as the
      median with min–max; both also in units of one plain DEQ forward solve of the clean batch
      (config's solver, median CPU time of ``repeats`` solves).

    The per-setting CPU times in ``pgd_sweep`` / ``jiio_sweep`` (the PNG's x axis) are single
    runs; only the paired timing gives the ratio. ``progress`` shows a bar on stderr
    ([`jiio_tasks.progress.progress_bar`][jiio_tasks.progress.progress_bar]) with one tick per attack run (its total grows when
    a step-size sweep is extended) and per timed pair or forward solve.
    """
    _check_bench_args(images, labels, eps, pgd_steps, rel_step_factors, repeats, warmup)
    ks = sorted(set(_int_grid("pgd_grid", pgd_grid)) | {pgd_steps})
    jks = _int_grid("jiio_iterations", jiio_iterations)
    eps = float(eps)
    model.eval()
    batch = int(labels.shape[0])
    deq = default_deq(model)
    scorer = tight_deq(model)
    clean = attack_score(model, images, labels, scorer)
    planned = sum(len({float(f * 2.5 / k) for f in rel_step_factors}) for k in ks)
    timing = 2 * (warmup + repeats)  # the PGD/JIIO pairs (or PGD alone), then the forward solves
    bar = progress_bar(planned + len(jks) + timing, "bench adversarial", enabled=progress, unit="run")

    def pgd_sweep(k: int) -> dict[str, Any]:
        tried: dict[float, dict[str, Any]] = {}
        grid = len({float(f * 2.5 / k) for f in rel_step_factors})

        def objective(rel: float) -> float:
            if len(tried) >= grid:  # interior_sweep extends the step-size grid
                bar.total += 1
            attack = PGDAttack(eps, steps=k, rel_step=rel)
            secs, adv = cpu_seconds(lambda: attack.perturb(model, images, labels, deq))
            s = attack_score(model, adv, labels, scorer)
            tried[rel] = {"rel_step": rel, "step_size": attack.step_size, "cpu_seconds": secs, **s}
            bar.set_postfix_str(f"PGD-{k} rel_step {rel:.3g}: success {s['success']:.3f}")
            bar.update(1)
            return sweep_objective(s["success"], s["ce"], batch)

        best, _ = interior_sweep(objective, [f * 2.5 / k for f in rel_step_factors])
        rels = sorted(tried)
        return {"steps": k, **tried[best], "interior": rels[0] < best < rels[-1],
                "tried": [tried[r] for r in rels]}

    pgd_rows = [pgd_sweep(k) for k in ks]
    by_k = {r["steps"]: r for r in pgd_rows}
    target = float(by_k[pgd_steps]["success"])
    base = next(r for r in pgd_rows if r["success"] >= target)  # PGD-pgd_steps itself qualifies

    jiio_rows: list[dict[str, Any]] = []
    for k in jks:
        attack = JIIOAttack(eps, iterations=k)
        secs, (adv, _) = cpu_seconds(functools.partial(attack.perturb, model, images, labels))
        s = attack_score(model, adv, labels, scorer)
        jiio_rows.append({"iterations": k, "cpu_seconds": secs, **s})
        bar.set_postfix_str(f"JIIO-{k}: success {s['success']:.3f}")
        bar.update(1)
    k_star = first_stable_k({r["iterations"]: -r["success"] for r in jiio_rows}, -target)

    bar.set_postfix_str("timing PGD vs JIIO" if k_star is not None else "timing PGD")
    pgd_attack = PGDAttack(eps, steps=base["steps"], rel_step=base["rel_step"])

    def pgd_run() -> Tensor:
        return pgd_attack.perturb(model, images, labels, deq)

    def forward_run() -> Tensor:
        with torch.no_grad(), evaluating(model):
            return deq_logits(model, images, deq)

    def cpu_times(run: Callable[[], Any]) -> list[float]:
        """``warmup`` untimed runs, then the CPU seconds of ``repeats`` runs (a tick each)."""
        for _ in range(warmup):
            run()
            bar.update(1)
        times = []
        for _ in range(repeats):
            times.append(cpu_seconds(run)[0])
            bar.update(1)
        return times

    ratio: PairedRatio | None = None
    if k_star is not None:
        jiio_attack = JIIOAttack(eps, iterations=k_star)
        ratio = paired_ratio(pgd_run, lambda: jiio_attack.perturb(model, images, labels),
                             repeats=repeats, warmup=warmup, on_pair=bar.update)
        pgd_times = list(ratio.baseline_seconds)
    else:
        pgd_times = cpu_times(pgd_run)
    bar.set_postfix_str("timing the forward solve")
    fwd_times = cpu_times(forward_run)
    bar.close()

    fwd = statistics.median(fwd_times)
    pgd_cpu = statistics.median(pgd_times)
    jiio_row = None if k_star is None else next(r for r in jiio_rows if r["iterations"] == k_star)
    result: dict[str, Any] = {
        "eps": eps,
        "batch": batch,
        "scoring": f"success and mean CE at the DEQ equilibrium of the returned images, re-solved "
                   f"with max_iter {SCORE_MAX_ITER}, tol {SCORE_TOL:g}",
        "target_definition": f"best success of PGD-{pgd_steps} over its step-size sweep",
        "timing": f"process CPU seconds, {repeats} interleaved repeats after {warmup} warm-up",
        "clean_ce": clean["ce"],
        "clean_error": clean["success"],
        "clean_unconverged": clean["unconverged"],
        "reference_pgd_steps": pgd_steps,
        "target_success": target,
        "pgd_grid": ks,
        "pgd_sweep": pgd_rows,
        "pgd_steps": base["steps"],
        "pgd_rel_step": base["rel_step"],
        "pgd_step_size": base["step_size"],
        "pgd_step_interior": base["interior"],
        "pgd_success": base["success"],
        "pgd_ce": base["ce"],
        "pgd_cpu_seconds": pgd_times,
        "pgd_seconds": pgd_cpu,
        "jiio_sweep": jiio_rows,
        "jiio_iterations": k_star,
        "jiio_success": None if jiio_row is None else jiio_row["success"],
        "jiio_ce": None if jiio_row is None else jiio_row["ce"],
        "jiio_cpu_seconds": None if ratio is None else list(ratio.jiio_seconds),
        "jiio_seconds": None if ratio is None else statistics.median(ratio.jiio_seconds),
        "ratio_median": None if ratio is None else ratio.median,
        "ratio_min": None if ratio is None else min(ratio.ratios),
        "ratio_max": None if ratio is None else max(ratio.ratios),
        "equal_success": None if ratio is None else {
            "jiio_iterations": k_star, "jiio_seconds": statistics.median(ratio.jiio_seconds),
            "speedup": ratio.median},
        "forward_solve_cpu_seconds": fwd_times,
        "forward_solve_seconds": fwd,
        "pgd_over_forward": pgd_cpu / fwd,
        "jiio_over_forward": None if ratio is None else statistics.median(ratio.jiio_seconds) / fwd,
        "unconverged_max": max([clean["unconverged"]]
                               + [t["unconverged"] for r in pgd_rows for t in r["tried"]]
                               + [r["unconverged"] for r in jiio_rows]),
    }
    if out is not None:
        dest = Path(out)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf8")
        plot_bench(result, dest / "attack_loss_vs_time.png")
    return result


def bench_summary(r: dict[str, Any]) -> str:
    """The lines the CLI and the benchmark script print for a [`bench`][jiio_tasks.adversarial.evaluate.bench] result."""
    lines = [
        f"clean: error {r['clean_error']:.3f}, CE {r['clean_ce']:.3f} ({r['batch']} images, eps {r['eps']:g}; "
        f"{r['scoring']})",
        f"target success = {r['target_definition']} = {r['target_success']:.3f}",
        "PGD-k at its best step size: " + ", ".join(
            f"{p['steps']}: {p['success']:.3f}" + ("" if p["interior"] else " (best step not interior)")
            for p in r["pgd_sweep"]),
        "JIIO-k: " + ", ".join(f"{j['iterations']}: {j['success']:.3f}" for j in r["jiio_sweep"]),
        f"cheapest PGD at the target: PGD-{r['pgd_steps']}, rel_step {r['pgd_rel_step']:.4g} (step size "
        f"{r['pgd_step_size']:.4g}), success {r['pgd_success']:.3f}, CE {r['pgd_ce']:.3f}, "
        f"{r['pgd_seconds']:.2f} CPU s = {r['pgd_over_forward']:.1f} forward solves",
    ]
    if r["jiio_iterations"] is None:
        lines.append(f"JIIO never stays at the target success within {r['jiio_sweep'][-1]['iterations']} "
                     "iterations: no ratio")
    else:
        lines += [
            f"JIIO k* = {r['jiio_iterations']}: success {r['jiio_success']:.3f}, CE {r['jiio_ce']:.3f}, "
            f"{r['jiio_seconds']:.2f} CPU s = {r['jiio_over_forward']:.1f} forward solves",
            f"CPU-time ratio PGD-{r['pgd_steps']} / JIIO-{r['jiio_iterations']}: {r['ratio_median']:.2f}x "
            f"(min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}, {len(r['pgd_cpu_seconds'])} repeats)",
        ]
    lines.append(f"one DEQ forward solve of the clean batch (config's solver): {r['forward_solve_seconds']:.3f} CPU s")
    if r["unconverged_max"]:
        lines.append(f"warning: up to {r['unconverged_max']} of {r['batch']} samples did not converge in a "
                     "scoring solve")
    return "\n".join(lines)


def plot_bench(r: dict[str, Any], path: Path) -> None:
    """Success and CE at equilibrium vs CPU seconds (one run each) of PGD-k at its best step
    size and of JIIO-k; the target success and the two compared settings marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((axes[0], "success", "success (fraction misclassified)"),
                           (axes[1], "ce", "mean cross-entropy")):
        pgd = [(p["cpu_seconds"], p[key]) for p in r["pgd_sweep"]]
        jiio = [(j["cpu_seconds"], j[key]) for j in r["jiio_sweep"]]
        ax.plot(*zip(*pgd, strict=True), "o-", ms=4, label="PGD-k, best step size")
        ax.plot(*zip(*jiio, strict=True), "s-", ms=4, label="JIIO-k")
        base = next(p for p in r["pgd_sweep"] if p["steps"] == r["pgd_steps"])
        ax.plot([base["cpu_seconds"]], [base[key]], "o", ms=10, mfc="none", color="C0",
                label=f"PGD-{r['pgd_steps']} (cheapest at target)")
        if r["jiio_iterations"] is not None:
            j = next(j for j in r["jiio_sweep"] if j["iterations"] == r["jiio_iterations"])
            ax.plot([j["cpu_seconds"]], [j[key]], "s", ms=10, mfc="none", color="C1",
                    label=f"JIIO-{r['jiio_iterations']} (k*)")
        if key == "success":
            ax.axhline(r["target_success"], color="gray", lw=0.6, ls="--",
                       label=f"target: best PGD-{r['reference_pgd_steps']}")
        ax.set_xlabel("CPU seconds (one run)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"L2 attack, eps {r['eps']:g}, {r['batch']} images; scored at a tight equilibrium", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

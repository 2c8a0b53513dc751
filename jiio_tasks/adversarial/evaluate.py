"""Robust evaluation (Table 5) and the JIIO-vs-PGD attack benchmark."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jiio_tasks.adversarial.attacks import JIIOAttack, PGDAttack, default_deq, deq_logits, evaluating
from jiio_tasks.adversarial.train import METHODS, eval_subset, fit_images, load_split, robust_accuracies
from jiio_tasks.runs import RunDir
from jiio_zoo.checkpoint import load_model
from jiio_zoo.model import ZooModel

COLUMNS = ("clean", "pgd", "jiio")


def load_run(path: str | Path) -> tuple[ZooModel, dict[str, Any]]:
    """The trained model of a run directory and its resolved training config."""
    run = RunDir(path)
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


def evaluate_runs(runs: Sequence[str], out: str | Path, size: int = 500, pgd_steps: int = 20,
                  jiio_iterations: int = 40, eps: float | None = None) -> dict[str, Any]:
    """Evaluate every run on a fixed random subset of ``size`` test images; write ``robust.json`` and
    ``robust.md`` under ``out``."""
    results: list[dict[str, Any]] = []
    used_eps = 0.0
    for path in runs:
        model, cfg = load_run(path)
        e = float(eps if eps is not None else cfg["eps"])
        used_eps = e
        x, y = load_split(cfg["data"], "test", cfg.get("data_root"))
        x, y = eval_subset(fit_images(x, model), y, size)
        acc = robust_accuracies(model, x, y, e, pgd_steps=pgd_steps, jiio_iterations=jiio_iterations)
        results.append({"run": str(path), "method": cfg["method"], "seed": cfg["seed"],
                        **{k: 100.0 * v for k, v in acc.items()}})
    grid = table(results)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    payload = {"eps": used_eps, "size": size, "runs": results, "table": grid}
    (dest / "robust.json").write_text(json.dumps(payload, indent=2), encoding="utf8")
    (dest / "robust.md").write_text(markdown(grid, used_eps), encoding="utf8")
    return payload


def bench(model: ZooModel, images: torch.Tensor, labels: torch.Tensor, eps: float, out: str | Path,
          pgd_steps: int = 20, jiio_iterations: Sequence[int] = (10, 20, 40, 80)) -> dict[str, Any]:
    """Time PGD-``pgd_steps`` and JIIO (several iteration budgets) on the same batch; write
    the attack loss vs wall-clock PNG and ``bench.json``; return the numbers."""
    deq = default_deq(model)

    def ce(adv: torch.Tensor) -> float:
        with torch.no_grad(), evaluating(model):
            return float(F.cross_entropy(deq_logits(model, adv, deq), labels))

    def acc(adv: torch.Tensor) -> float:
        with torch.no_grad(), evaluating(model):
            return float((deq_logits(model, adv, deq).argmax(1) == labels).float().mean())

    pgd_curve = [(0.0, ce(images))]
    for k in (1, 2, 5, 10, pgd_steps):
        if k > pgd_steps:
            continue
        t0 = time.perf_counter()
        adv = PGDAttack(eps, steps=k).perturb(model, images, labels, deq)
        pgd_curve.append((time.perf_counter() - t0, ce(adv)))
    pgd_final = pgd_curve[-1]
    pgd_adv_acc = acc(adv)
    jiio_curve = [(0.0, ce(images))]
    jiio_acc = 1.0
    for it in jiio_iterations:
        t0 = time.perf_counter()
        jadv, _ = JIIOAttack(eps, iterations=it).perturb(model, images, labels)
        jiio_curve.append((time.perf_counter() - t0, ce(jadv)))
        jiio_acc = acc(jadv)
    jiio_final = jiio_curve[-1]
    result = {
        "eps": eps,
        "batch": int(labels.shape[0]),
        "pgd_steps": pgd_steps,
        "jiio_iterations": int(jiio_iterations[-1]),
        "pgd_seconds": pgd_final[0],
        "jiio_seconds": jiio_final[0],
        "time_ratio_pgd_over_jiio": pgd_final[0] / max(jiio_final[0], 1e-12),
        "pgd_loss": pgd_final[1],
        "jiio_loss": jiio_final[1],
        "strength_ratio_jiio_over_pgd": jiio_final[1] / max(pgd_final[1], 1e-12),
        "pgd_accuracy": pgd_adv_acc,
        "jiio_accuracy": jiio_acc,
        "clean_loss": pgd_curve[0][1],
        "pgd_curve": pgd_curve,
        "jiio_curve": jiio_curve,
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*pgd_curve, strict=True), "o-", label=f"PGD (1..{pgd_steps} steps)")
    ax.plot(*zip(*jiio_curve, strict=True), "s-", label=f"JIIO ({', '.join(map(str, jiio_iterations))} its)")
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("mean cross-entropy at the attack")
    ax.legend()
    fig.tight_layout()
    fig.savefig(dest / "attack_loss_vs_time.png", dpi=100)
    plt.close(fig)
    return result

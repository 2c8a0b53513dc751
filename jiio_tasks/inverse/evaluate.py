"""Evaluation of the inverse-problem family (paper Table 4): median PSNR of the observation,
of unsupervised JIIO inversion with a generative decoder (eq. 22) and of supervised models
(eq. 24), on the held-out faces ([`jiio_tasks.imaging.splits.held_out_faces`][jiio_tasks.imaging.splits.held_out_faces])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jiio_tasks.imaging.data import from_model, to_model
from jiio_tasks.imaging.inversion import activation, infer, save_grid
from jiio_tasks.imaging.operators import CORRUPTIONS, corruption, psnr
from jiio_tasks.runs import RunDir
from jiio_zoo.model import ZooModel

__all__ = ["evaluate_inverse"]


def evaluate_inverse(
    model: ZooModel,
    images: Tensor,
    out: Path,
    *,
    supervised: dict[str, ZooModel] | None = None,
    tasks: tuple[str, ...] = CORRUPTIONS,
    iterations: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Median PSNR (data range [0, 1]) of each task: the corrupted observation itself, the
    unsupervised JIIO inversion with ``model`` (eq. 22) and, for tasks in ``supervised``, the
    supervised JIIO model (eq. 24). Corruptions are seeded (``seed``), the same for all rows.
    ``progress`` shows a bar on stderr per inversion (task and row)."""
    supervised = supervised or {}
    table: dict[str, dict[str, float]] = {}
    grids: list[Tensor] = []
    for task in tasks:
        row: dict[str, float] = {}
        runs = [("unsupervised", model)]
        if task in supervised:
            runs.append(("supervised", supervised[task]))
        for label, m in runs:
            act = activation(m)
            y = to_model(images, act)
            op, observed = corruption(task, 2.0 if act == "tanh" else 1.0)(y, torch.Generator().manual_seed(seed))
            _, recon, _ = infer(m, observed, op, iterations=iterations, progress=progress,
                                desc=f"{task}, {label}")
            recon01 = from_model(recon, act).clamp(0, 1)
            row[label] = float(psnr(recon01, images).median())
            if label == "unsupervised":
                obs01 = from_model(observed, act).clamp(0, 1)
                row["observed"] = float(psnr(obs01, images).median())
                grids += [obs01[:8], recon01[:8]]
        table[task] = row
    out.mkdir(parents=True, exist_ok=True)
    save_grid([images[:8], *grids], out / "inverse.png",
              "clean; then per task: observed, unsupervised JIIO (" + ", ".join(tasks) + ")")
    lines = ["| rows | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label in ("supervised", "unsupervised", "observed"):
        cells = [f"{table[t][label]:.2f}" if label in table[t] else "–" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    md = "Median PSNR (dB, data range [0, 1])\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(md, encoding="utf8")
    result = {"data_range": "[0, 1]", "iterations": iterations, "median_psnr": table, "table": md}
    RunDir(out).update(final=result)
    return result

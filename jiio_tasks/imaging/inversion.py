"""Latent inversion of a zoo decoder, shared by the generative and inverse families: JIIO
latents for observed images ([`infer`][jiio_tasks.imaging.inversion.infer], scored at the equilibrium of the returned latents),
decoding latents by a forward DEQ solve ([`decode_latents`][jiio_tasks.imaging.inversion.decode_latents]) and image grids
([`save_grid`][jiio_tasks.imaging.inversion.save_grid])."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.operators import Measurement
from jiio_tasks.imaging.problem import jiio_problem
from jiio_tasks.progress import progress_bar
from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import deq_solver

__all__ = ["activation", "decode_latents", "infer", "save_grid"]


def activation(model: ZooModel) -> str:
    """The decoder's output activation (``"tanh"``: images in [-1, 1]; else [0, 1])."""
    m = model.config.model
    return m.output_activation if isinstance(m, MDEQConfig) else "none"


def save_grid(rows: list[Tensor], path: Path, title: str | None = None) -> Path:
    """Rows of ``(N, C, H, W)`` [0, 1] images tiled into one PNG (1 px gaps)."""
    n = max(r.shape[0] for r in rows)
    c, h, w = rows[0].shape[1:]
    canvas = torch.ones(c, len(rows) * (h + 1) - 1, n * (w + 1) - 1)
    for i, row in enumerate(rows):
        for j, img in enumerate(row.detach().float().cpu().clamp(0, 1)):
            canvas[:, i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = img
    arr = canvas.permute(1, 2, 0).numpy()
    fig = plt.figure(figsize=(max(2.0, n * w / 24), max(1.0, len(rows) * h / 24) + (0.4 if title else 0)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.9 if title else 1.0))
    ax.imshow(arr[..., 0] if c == 1 else arr, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def infer(
    model: ZooModel,
    observed: Tensor,
    operator: Measurement | None = None,
    *,
    iterations: int | None = None,
    chunk: int = 16,
    x0: Tensor | None = None,
    tv_weight: float = 0.0,
    progress: bool = False,
    desc: str = "JIIO inversion",
) -> tuple[Tensor, Tensor, Tensor]:
    """JIIO latents for model-range observations: returns ``(x*, h(z*(x*)), ℓ*)`` (no grad),
    the image and loss at the DEQ equilibrium of the returned latents (re-solved to 1e-5).
    ``x0`` (``(B, *x_shape)``, default zeros) is the starting latent, e.g. an encoder's mean.
    ``tv_weight`` adds a total-variation prior on the reconstruction to the inner loss
    ([`MeasurementObjective`][jiio_tasks.imaging.objectives.MeasurementObjective]). ``progress`` shows a bar (stderr, labelled ``desc``) over the chunks of ``chunk`` images."""
    if x0 is not None and x0.shape != (observed.shape[0], *model.x_shape):
        raise ValueError(
            f"x0 must have shape {(observed.shape[0], *model.x_shape)}, got {tuple(x0.shape)}"
        )
    objective = MeasurementObjective(model.head, tv_weight=tv_weight)
    problem = jiio_problem(model, objective, iterations=iterations)
    xs, outs, losses = [], [], []
    model.eval()
    bar = progress_bar(math.ceil(observed.shape[0] / chunk), desc, enabled=progress, unit="chunk")
    with torch.no_grad():
        for start in range(0, observed.shape[0], chunk):
            part = observed[start : start + chunk]
            op = None if operator is None else operator.select(start, start + chunk)
            sol = problem.solve(part, None if x0 is None else x0[start : start + chunk].to(part.dtype), context=op)
            # scored at the equilibrium of the returned latents, not at the joint iterate
            eq = problem.equilibrium(part, sol.x, context=op, tol=1e-5, z0=sol.z)
            xs.append(sol.x)
            outs.append(model.decode(eq.z))
            losses.append(eq.loss)
            bar.update()
    bar.close()
    return torch.cat(xs), torch.cat(outs), torch.cat(losses)


def decode_latents(model: ZooModel, x: Tensor, *, chunk: int = 64, progress: bool = False) -> Tensor:
    """``h(z*(x))`` by a forward DEQ solve (model range), ``chunk`` latents at a time
    (``progress``: a bar on stderr over the chunks)."""
    deq = deq_solver(model, max_iter=4 * model.config.solver.forward_threshold, tol=1e-5)
    parts = x.split(chunk)
    out = []
    with torch.no_grad(), progress_bar(len(parts), "decoding latents", enabled=progress, unit="chunk") as bar:
        for part in parts:
            out.append(model.decode(deq.solve(model.layer, part).z))
            bar.update()
    return torch.cat(out)

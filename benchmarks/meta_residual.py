"""How far from equilibrium a meta-learning DEQ is (issue 11): the relative residual
``‖f(z) − z‖ / ‖z‖`` of the DEQ on meta-test tasks at the task vectors JIIO infers, after ``k``
iterations of the config's forward accelerator and of plain fixed-point iteration.

For each checkpoint (``--weights``, default the shipped ``glyphs_meta_small``): ``--tasks`` fixed
meta-test tasks (``meta_test_tasks``, 5-way 1-shot, 2 query images per class); JIIO with the
config's settings on the support images gives ``x*``; the DEQ over each task's support *and*
query images is then solved at ``x*`` from the layer's initial state with the config's
accelerator (Anderson, memory as configured, no early stop) for ``--iterations`` and, separately,
iterated plainly (``z ← f(z)``). Reported per ``k``: the median and largest residual over the
tasks. A contractive map drives both to zero; a map that only Anderson can solve leaves the plain
iteration's residual high.

Run: ``python benchmarks/meta_residual.py [--weights A.pt,B.pt] [--tasks 30]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch

import jiio_zoo
from jiio_core.deq import DEQSolver
from jiio_core.state import StateSpec
from jiio_tasks.meta.splits import meta_test_tasks
from jiio_tasks.meta.tasks import collate
from jiio_tasks.meta.train import InnerSettings, jiio_inner
from jiio_zoo.checkpoint import load_model
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import settings


def _relative(model: ZooModel, z: Any, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    spec = StateSpec.of(z)
    fz = model.layer(z, x, images)
    a, b = spec.pack(fz), spec.pack(z)
    return torch.linalg.vector_norm(a - b, dim=1) / torch.linalg.vector_norm(a, dim=1)


def residuals(model: ZooModel, tasks: int, iterations: list[int]) -> dict[str, Any]:
    model.eval()
    tb = collate(list(meta_test_tasks(config=model.config.name, ways=5, shots=1, query_shots=2, count=tasks)))
    x = jiio_inner(model, tb, InnerSettings()).x
    out: dict[str, Any] = {"accelerated": {}, "plain": {}}
    acc = settings(model.config).make_accelerator()
    with torch.no_grad():
        for k in iterations:
            z = DEQSolver(accelerator=acc, max_iter=k, tol=0.0, check_every=k).solve(
                model.layer, x, context=tb.images).z
            rel = _relative(model, z, x, tb.images)
            out["accelerated"][str(k)] = {"median": float(rel.median()), "max": float(rel.max())}
        z = model.layer.initial_state(x, tb.images)
        for k in range(1, max(iterations) + 1):
            z = model.layer(z, x, tb.images)
            if k in iterations:
                rel = _relative(model, z, x, tb.images)
                out["plain"][str(k)] = {"median": float(rel.median()), "max": float(rel.max())}
    out["accelerator"] = type(acc).__name__
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--weights", default=None, help="comma-separated checkpoints (default: the shipped weights)")
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--iterations", default="15,30,60,100")
    args = parser.parse_args()
    device = C.setup(args)
    its = [int(k) for k in args.iterations.split(",")]
    paths = ["shipped"] if args.weights is None else args.weights.split(",")
    rows: dict[str, Any] = {}
    for path in paths:
        model = jiio_zoo.load("glyphs_meta_small") if path == "shipped" else load_model(path)
        rows[path] = residuals(model, args.tasks, its)
        for kind in ("accelerated", "plain"):
            print(path, kind, "  ".join(f"k={k}: {v['median']:.1e} (max {v['max']:.1e})"
                                         for k, v in rows[path][kind].items()))
    C.write("meta-residual", args, device, {"tasks": args.tasks, "iterations": its, "rows": rows},
            "python benchmarks/meta_residual.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Choose the meta-learner's JIIO ``α_x`` on meta-*train* tasks (issue 11, Table 7): for each
``α_x`` of a grid, the fewest JIIO iterations from which on the equilibrium support loss stays at
or below Adam-20's, on ``--tasks`` meta-train tasks (the seeded draw of
``bench_meta_inner.py``'s Adam learning-rate sweep), never the test tasks.

Both inner loops minimise the support cross-entropy + 0.01·‖x‖² from ``x = 0``; every loss is
re-evaluated at the DEQ equilibrium of the returned ``x`` (``support_loss``). Adam uses
``--adam-lr`` (0.03: ``bench_meta_inner.py``'s choice on the same tasks). The model is the
checkpoint's own config with only ``α_x`` replaced.

Run: ``python benchmarks/meta_alpha_sweep.py --weights CKPT [--alpha-x 1 2 3 4 6 8 12]``.
"""

from __future__ import annotations

import argparse
import sys

import _common as C
import attrs
import torch

from jiio_tasks.meta.splits import meta_train_tasks
from jiio_tasks.meta.tasks import collate
from jiio_tasks.meta.train import InnerSettings, MetaTrainConfig, adam_inner, jiio_inner, support_loss
from jiio_tasks.speed import first_stable_k
from jiio_zoo.checkpoint import load_model

ITERATIONS = (20, 30, 35, 40, 45, 50, 55, 60, 70, 80, 100, 120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--weights", required=True, help="a glyphs_meta_small checkpoint")
    parser.add_argument("--alpha-x", type=float, nargs="+", default=[1, 2, 3, 4, 6, 8, 12])
    parser.add_argument("--tasks", type=int, default=10, help="meta-train tasks")
    parser.add_argument("--adam-lr", type=float, default=0.03)
    parser.add_argument("--adam-steps", type=int, default=20)
    args = parser.parse_args()
    device = C.setup(args)
    model = load_model(args.weights).eval()
    cfg = MetaTrainConfig()
    stream = meta_train_tasks(config=cfg.config, ways=cfg.ways, shots=cfg.shots, query_shots=cfg.query_shots,
                              seed=10_000 + args.seed)
    tasks = collate([stream.sample() for _ in range(args.tasks)])
    inner = InnerSettings(adam_steps=args.adam_steps, adam_lr=args.adam_lr)
    with torch.no_grad():
        target = float(support_loss(model, tasks, adam_inner(model, tasks, inner).x, inner).mean())
    print(f"Adam-{args.adam_steps} (lr {args.adam_lr:g}) support loss: {target:.4f}", flush=True)
    base = model.config
    rows = {}
    for ax in args.alpha_x:
        model.config = attrs.evolve(base, solver=attrs.evolve(base.solver, damping=(*base.solver.damping[:2], ax)))
        scores = {}
        for k in ITERATIONS:
            x = jiio_inner(model, tasks, attrs.evolve(inner, iterations=k)).x
            scores[k] = float(support_loss(model, tasks, x, inner).mean())
        k_star = first_stable_k(scores, target)
        rows[f"{ax:g}"] = {"scores": {str(k): v for k, v in scores.items()}, "k_star": k_star}
        print(f"alpha_x {ax:g}: k* {k_star} | " + ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()), flush=True)
    C.write("meta-alpha-sweep", args, device, {
        "weights": str(args.weights), "trained_alpha_x": base.solver.damping[2], "tasks": args.tasks,
        "adam_steps": args.adam_steps, "adam_lr": args.adam_lr, "adam_loss": target, "rows": rows,
    }, "python benchmarks/meta_alpha_sweep.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Accelerator ablation (paper Fig. 4): Picard, Anderson I, Anderson II and Broyden on the same
JIIO latent-inversion problem (default: the pretrained ``faces_gen_small`` decoder, held-out
faces), cost vs iteration and vs wall-clock time, written as a PNG.

Every accelerator runs the same augmented map (the config's damping and late α_x switch) for
``--iterations`` iterations with the stopping test off; the cost is the batch mean of each
sample's best loss so far. Time per solve is the median of ``--repeats`` solves, spread evenly
over the iterations for the time axis. The table also gives, for each accelerator, the first
iteration (and time) at which it reaches Picard's final cost.

Run: ``python benchmarks/bench_accelerators.py [--png docs/img/accelerators.png]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _common as C
import torch
from bench_inversion import decoder_and_targets, running_best

from jiio_core import AndersonI, AndersonII, Broyden, LowestCost, Picard
from jiio_core.accelerators import Accelerator
from jiio_tasks.generative.objectives import MeasurementObjective
from jiio_tasks.generative.problem import jiio_problem

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faces_gen_small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--memory", type=int, default=None, help="Anderson/Broyden memory (default: the config's)")
    parser.add_argument("--png", type=Path, default=None, help="figure path (default docs/img/accelerators-<device>.png)")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)

    model, y = decoder_and_targets(args.model, args.batch, device)
    memory = args.memory or model.config.solver.anderson_memory
    accelerators: dict[str, Accelerator[Any]] = {
        "Picard": Picard(),
        "Anderson I": AndersonI(memory=memory),
        "Anderson II": AndersonII(memory=memory),
        "Broyden": Broyden(memory=memory),
    }
    problem = jiio_problem(model, MeasurementObjective(model.head), iterations=args.iterations, tol=0.0)
    problem.selection = LowestCost()
    curves: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for name, acc in accelerators.items():
        problem.accelerator = acc

        def run() -> Any:
            with torch.no_grad():
                return problem.solve(y)

        t, sol = C.timed(run, device, args.repeats, args.warmup)
        curves[name] = running_best(sol.trace.cost).tolist()
        seconds[name] = t
    target = curves["Picard"][-1]
    rows: dict[str, dict[str, Any]] = {}
    print(f"machine: {C.machine(device)}")
    print(f"{'accelerator':12s} {'final cost':>11s} {'ms/iter':>8s} {'iters to Picard final':>22s} {'seconds':>8s}")
    for name, curve in curves.items():
        per_iter = seconds[name] / len(curve)
        hit = next((i + 1 for i, c in enumerate(curve) if c <= target), None)
        rows[name] = {"final_cost": curve[-1], "seconds_per_solve": seconds[name], "ms_per_iteration": per_iter * 1e3,
                      "iterations_to_picard_final": hit,
                      "seconds_to_picard_final": None if hit is None else hit * per_iter}
        print(f"{name:12s} {curve[-1]:11.4e} {per_iter * 1e3:8.1f} {hit if hit else '-':>22} "
              f"{'' if hit is None else f'{hit * per_iter:8.2f}'}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, curve in curves.items():
        its = range(1, len(curve) + 1)
        a1.plot(its, curve, label=name)
        a2.plot([i * seconds[name] / len(curve) for i in its], curve, label=name)
    for ax, xl in ((a1, "iteration"), (a2, "wall-clock seconds")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("cost (MSE), best so far")
    a1.legend()
    fig.suptitle(f"JIIO accelerators: {args.model}, {args.batch} held-out images, {device.type}", fontsize=9)
    fig.tight_layout()
    png = args.png or DOCS_IMG / f"accelerators-{device.type}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"wrote {png}")
    C.write("accelerators", args, device,
            {"model": args.model, "batch": args.batch, "iterations": args.iterations, "memory": memory,
             "picard_final_cost": target, "rows": rows, "curves": curves, "png": str(png)},
            "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

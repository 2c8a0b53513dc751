"""Accelerator ablation (paper Fig. 4): Picard, Anderson I, Anderson II and Broyden on the same
JIIO latent-inversion problem (default: the pretrained ``faces_gen_small`` decoder, held-out
faces), cost vs iteration and vs wall-clock time, written as a PNG.

Every accelerator runs the same augmented map (the config's damping and late α_x switch) with
the stopping test off, for each iteration count of ``CHECKPOINTS`` up to ``--iterations``; each
solve is scored by the batch-mean MSE at the DEQ equilibrium of the latents it returns
(re-solved to a relative 1e-5), never at a joint iterate. Time per solve is the median of
``--repeats`` solves of ``--iterations``, spread evenly over the iterations for the time axis.
The table also gives, for each accelerator, the first iteration count (and time) at which it
reaches Picard's final score.

Run: ``python benchmarks/bench_accelerators.py [--png docs/img/accelerators.png]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _common as C
import torch

from jiio_tasks.imaging.data import to_model
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.problem import jiio_problem

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


CHECKPOINTS = (5, 10, 15, 20, 30, 40, 60, 80, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faces_gen_small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=100, help="largest iteration count scored")
    parser.add_argument("--memory", type=int, default=None, help="Anderson/Broyden memory (default: the config's)")
    parser.add_argument("--png", type=Path, default=None, help="figure path (default docs/img/accelerators-<device>.png)")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)

    model, faces = C.decoder_and_faces(args.model, args.batch, device)
    y = to_model(faces, model.config.model.output_activation)  # type: ignore[union-attr]
    memory = args.memory or model.config.solver.anderson_memory
    kinds = {"Picard": "picard", "Anderson I": "anderson1", "Anderson II": "anderson2", "Broyden": "broyden"}
    objective = MeasurementObjective(model.head)
    ks = [k for k in CHECKPOINTS if k < args.iterations] + [args.iterations]
    curves: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for name, kind in kinds.items():
        overrides = {"accelerator": kind, "memory": memory}
        curve = []
        for k in ks:
            problem = jiio_problem(model, objective, iterations=k, tol=0.0, overrides=overrides)
            with torch.no_grad():
                sol = problem.solve(y)
            # scored at the DEQ equilibrium of the returned latents, not at the joint iterate
            curve.append(float(problem.equilibrium(y, sol.x, tol=1e-5, max_iter=500).loss.mean()))
        full = jiio_problem(model, objective, iterations=args.iterations, tol=0.0, overrides=overrides)

        def run(problem: Any = full) -> Any:
            with torch.no_grad():
                return problem.solve(y)

        t, _ = C.timed(run, device, args.repeats, args.warmup)
        curves[name] = curve
        seconds[name] = t
    target = curves["Picard"][-1]
    rows: dict[str, dict[str, Any]] = {}
    print(f"machine: {C.machine(device)}")
    print(f"{'accelerator':12s} {'final MSE':>11s} {'ms/iter':>8s} {'iters to Picard final':>22s} {'seconds':>8s}")
    for name, curve in curves.items():
        per_iter = seconds[name] / args.iterations
        hit = next((k for k, c in zip(ks, curve, strict=True) if c <= target), None)
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
        a1.plot(ks, curve, "o-", ms=3, label=name)
        a2.plot([k * seconds[name] / args.iterations for k in ks], curve, "o-", ms=3, label=name)
    for ax, xl in ((a1, "JIIO iterations"), (a2, "wall-clock seconds")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("MSE at the equilibrium of x")
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
             "picard_final_cost": target, "rows": rows, "checkpoints": ks, "curves": curves, "png": str(png),
             "score": "per-pixel MSE at the DEQ equilibrium of the returned latents (tol 1e-5)"},
            "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

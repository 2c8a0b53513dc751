"""JIIO versus Adam over the DEQ on latent inversion with the core's small tanh DEQ (CPU).

The fair procedure of :mod:`jiio_tasks.speed` on :func:`jiio_tasks.demo.make_setup`'s decoder:
both methods scored by the mean loss at the DEQ equilibrium of the latents they return
(re-solved to a relative residual of 1e-5); Adam-``--adam-steps``'s learning rate swept until
the best is interior; ``k*`` = the fewest JIIO iterations from which on its score stays at or
below Adam's; CPU-time ratio over ``--repeats`` interleaved runs (median, min–max); for JIIO
with Anderson type I and type II.

Run: ``python benchmarks/bench_core_inversion.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch

from jiio_core import Adam, DEQSolver, optimize_input
from jiio_core.recipe import SolveSettings
from jiio_tasks.demo import make_setup
from jiio_tasks.speed import compare

ITERATIONS = (*range(5, 41, 5), 50, 60, 80, 100, 150, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--state", type=int, default=256)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--adam-steps", type=int, default=40)
    parser.add_argument("--adam-lrs", default="0.05,0.1,0.2,0.4", help="starting grid of Adam learning rates")
    parser.add_argument("--max-iter", type=int, default=200)
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)
    setup = make_setup(batch=args.batch, state=args.state, latent=args.latent, seed=args.seed)
    layer, objective = setup.layer.to(device), setup.objective.to(device)
    targets = setup.targets.to(device)
    x0 = torch.zeros(args.batch, args.latent, device=device)
    deq = DEQSolver(max_iter=50, tol=1e-5, backward_max_iter=50, backward_tol=1e-5)
    base = SolveSettings(damping=(0.8, 0.6, 0.008), tol=0.0)  # α_x ≈ 1/128: 1.0 on the mean
    scorer = base.problem(layer, objective, x_shape=(args.latent,))

    def score(x: torch.Tensor) -> float:
        return float(scorer.equilibrium(targets, x, tol=1e-5, max_iter=500).loss.mean())

    def adam(lr: float) -> torch.Tensor:
        x: torch.Tensor = optimize_input(layer, objective, targets, x0, Adam(lr=lr), args.adam_steps, deq=deq).x
        return x

    lrs = tuple(float(v) for v in args.adam_lrs.split(","))
    ks = [k for k in ITERATIONS if k < args.max_iter] + [args.max_iter]
    result: dict[str, Any] = {"batch": args.batch, "state": args.state, "latent": args.latent,
                              "adam_steps": args.adam_steps, "jiio": {}}
    reference = None
    print(f"machine: {C.machine(device)}")
    for name, kind in (("Anderson-I", "anderson1"), ("Anderson-II", "anderson2")):
        settings = base.evolve(accelerator=kind, memory=20)

        def jiio(k: int, settings: SolveSettings = settings) -> torch.Tensor:
            problem = settings.evolve(max_iter=k).problem(layer, objective, x_shape=(args.latent,))
            with torch.no_grad():
                x: torch.Tensor = problem.solve(targets, x0).x
            return x

        res = compare(adam, jiio, score, step_sizes=lrs, iterations=ks, repeats=args.repeats, reference=reference)
        reference = res.pop("reference")
        result["jiio"][name] = res
        result.update(adam_lr=res["baseline_step_size"], adam_lr_sweep=res["baseline_sweep"],
                      adam_loss=res["baseline_loss"])
        k = res["jiio_iterations_to_baseline_loss"]
        if k is None:
            print(f"JIIO {name}: never reached Adam's loss at equilibrium in {args.max_iter} iterations")
            continue
        print(f"Adam-{args.adam_steps} lr {res['baseline_step_size']:g} (sweep {res['baseline_sweep']}): "
              f"{res['baseline_loss']:.3e}; JIIO {name}: k* = {k}, {res['jiio_loss']:.3e}; CPU "
              f"{1e3 * res['baseline_cpu_median']:.0f} ms vs {1e3 * res['jiio_cpu_median']:.0f} ms -> "
              f"{res['ratio_median']:.1f}x (min {res['ratio_min']:.1f}, max {res['ratio_max']:.1f})")
    C.write("core_inversion", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

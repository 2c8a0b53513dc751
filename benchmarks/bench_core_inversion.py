"""Time-to-equal-loss of JIIO versus Adam over the DEQ (latent inversion, small tanh DEQ, CPU).

Adam runs ``--adam-steps`` steps (each a full DEQ forward solve and implicit backward solve);
its final mean loss is the target. JIIO's trace gives the first iteration ``k*`` at which the
batch-mean of each sample's best cost so far reaches that target; a JIIO solve with
``max_iter = k*`` is then timed on its own (median of ``--repeats``) and its final loss checked.
Prints both times and their ratio. Run: ``python benchmarks/bench_core_inversion.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch

from jiio_core import (
    Accelerator,
    Adam,
    AndersonI,
    AndersonII,
    Damping,
    DEQSolver,
    JointProblem,
    LowestCost,
    optimize_input,
)
from jiio_core.demo import make_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--state", type=int, default=256)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--adam-steps", type=int, default=40)
    parser.add_argument("--adam-lr", type=float, default=0.1)
    parser.add_argument("--max-iter", type=int, default=200)
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)
    setup = make_setup(batch=args.batch, state=args.state, latent=args.latent, seed=args.seed)
    layer, objective = setup.layer.to(device), setup.objective.to(device)
    targets = setup.targets.to(device)
    x0 = torch.zeros(args.batch, args.latent, device=device)
    deq = DEQSolver(max_iter=50, tol=1e-5, backward_max_iter=50, backward_tol=1e-5)

    def adam_run() -> Any:
        return optimize_input(layer, objective, targets, x0, Adam(lr=args.adam_lr), args.adam_steps, deq=deq)

    adam_time, adam = C.timed(adam_run, device, args.repeats, args.warmup)
    target = float(adam.loss.mean())
    adam_mem = C.peak_memory(adam_run, device)
    print(f"machine: {C.machine(device)}")
    print(
        f"Adam-{args.adam_steps} over DEQ: mean loss {target:.3e}, {adam_time * 1e3:.0f} ms "
        f"(forward evals per sample {int(adam.forward_iterations.float().mean())}), peak {C.mb(adam_mem)}"
    )
    result: dict[str, Any] = {"batch": args.batch, "state": args.state, "latent": args.latent,
                              "adam_steps": args.adam_steps, "adam_lr": args.adam_lr, "adam_seconds": adam_time,
                              "adam_loss": target, "adam_peak_bytes": adam_mem, "jiio": {}}

    for name, acc in (("Anderson-I", AndersonI(memory=20)), ("Anderson-II", AndersonII(memory=20))):

        def problem(max_iter: int, acc: Accelerator[Any] = acc) -> JointProblem:
            return JointProblem(
                layer,
                objective,
                accelerator=acc,
                damping=Damping(z=0.8, mu=0.6, x=1.0),
                max_iter=max_iter,
                tol=0.0,
                x_shape=(args.latent,),
                selection=LowestCost(),
            )

        with torch.no_grad():
            full = problem(args.max_iter).solve(targets, x0)
        best_so_far = torch.cummin(full.trace.cost, dim=0).values.mean(dim=1)
        hits = (best_so_far <= target).nonzero()
        if hits.numel() == 0:
            print(
                f"JIIO {name}: never reached Adam's loss in {args.max_iter} iterations "
                f"(best mean {float(best_so_far.min()):.3e})"
            )
            result["jiio"][name] = None
            continue
        k = int(hits[0]) + 1
        solver = problem(k)

        def jiio_run(solver: JointProblem = solver) -> Any:
            with torch.no_grad():
                return solver.solve(targets, x0)

        jiio_time, sol = C.timed(jiio_run, device, args.repeats, args.warmup)
        jiio_mem = C.peak_memory(jiio_run, device)
        result["jiio"][name] = {"iterations_to_target": k, "seconds": jiio_time, "loss": float(sol.loss.mean()),
                                "speedup": adam_time / jiio_time, "peak_bytes": jiio_mem,
                                "memory_ratio": None if not adam_mem or jiio_mem is None else jiio_mem / adam_mem}
        print(
            f"JIIO {name}: reaches it at iteration {k}: mean loss {float(sol.loss.mean()):.3e}, "
            f"{jiio_time * 1e3:.0f} ms -> Adam/JIIO time ratio {adam_time / jiio_time:.1f}x, peak {C.mb(jiio_mem)} "
            f"(final loss after {args.max_iter} iterations {float(full.loss.mean()):.3e})"
        )
    C.write("core_inversion", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

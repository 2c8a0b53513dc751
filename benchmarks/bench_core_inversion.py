"""Time-to-equal-loss of JIIO versus Adam over the DEQ (latent inversion, small tanh DEQ, CPU).

Adam runs ``--adam-steps`` steps (each a full DEQ forward solve and implicit backward solve);
its final mean loss is the target. JIIO's trace gives the first iteration ``k*`` at which the
batch-mean of each sample's best cost so far reaches that target; a JIIO solve with
``max_iter = k*`` is then timed on its own (median of ``--repeats``) and its final loss checked.
Prints both times and their ratio. Run: ``python benchmarks/bench_core_inversion.py``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    setup = make_setup(batch=args.batch, state=args.state, latent=args.latent, seed=args.seed)
    x0 = torch.zeros(args.batch, args.latent)
    deq = DEQSolver(max_iter=50, tol=1e-5, backward_max_iter=50, backward_tol=1e-5)

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        adam = optimize_input(
            setup.layer, setup.objective, setup.targets, x0, Adam(lr=args.adam_lr), args.adam_steps, deq=deq
        )
        times.append(time.perf_counter() - start)
    adam_time = statistics.median(times)
    target = float(adam.loss.mean())
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"Adam-{args.adam_steps} over DEQ: mean loss {target:.3e}, {adam_time * 1e3:.0f} ms "
        f"(forward evals per sample {int(adam.forward_iterations.float().mean())})"
    )

    for name, acc in (("Anderson-I", AndersonI(memory=20)), ("Anderson-II", AndersonII(memory=20))):

        def problem(max_iter: int, acc: Accelerator[Any] = acc) -> JointProblem:
            return JointProblem(
                setup.layer,
                setup.objective,
                accelerator=acc,
                damping=Damping(z=0.8, mu=0.6, x=1.0),
                max_iter=max_iter,
                tol=0.0,
                x_shape=(args.latent,),
                selection=LowestCost(),
            )

        with torch.no_grad():
            full = problem(args.max_iter).solve(setup.targets, x0)
        best_so_far = torch.cummin(full.trace.cost, dim=0).values.mean(dim=1)
        hits = (best_so_far <= target).nonzero()
        if hits.numel() == 0:
            print(
                f"JIIO {name}: never reached Adam's loss in {args.max_iter} iterations "
                f"(best mean {float(best_so_far.min()):.3e})"
            )
            continue
        k = int(hits[0]) + 1
        jtimes = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                sol = problem(k).solve(setup.targets, x0)
            jtimes.append(time.perf_counter() - start)
        jiio_time = statistics.median(jtimes)
        print(
            f"JIIO {name}: reaches it at iteration {k}: mean loss {float(sol.loss.mean()):.3e}, "
            f"{jiio_time * 1e3:.0f} ms -> Adam/JIIO time ratio {adam_time / jiio_time:.1f}x "
            f"(final loss after {args.max_iter} iterations {float(full.loss.mean()):.3e})"
        )


if __name__ == "__main__":
    main()

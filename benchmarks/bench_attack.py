"""L2 attack on a zoo DEQ classifier (paper Table 2): JIIO vs the *best* PGD-k at equal success.

Same model (default: the pretrained ``digits_adv_small``), same held-out batch (the fixed
subset of the embedded digits used by its test), same ε (default: the config's solver
epsilon), same machine. The comparison is :func:`jiio_tasks.adversarial.evaluate.bench`
(also ``jiio bench adversarial``), the fair procedure of :mod:`jiio_tasks.speed`:

- every attack is scored by success (fraction misclassified) and mean CE of the images it
  returns, at their DEQ equilibrium re-solved tightly (``max_iter`` 300, ``tol`` 1e-6);
- each PGD-k (``--pgd-grid``) runs at its best step size, swept until the best is interior;
- target = the best success of PGD-``--pgd-steps`` (20); the baseline is the cheapest PGD-k
  (smallest k) whose best success reaches it;
- JIIO's ``k*`` = the fewest of ``--jiio-iterations`` from which on its success stays at the target;
- the two are timed by process CPU time over ``--repeats`` interleaved pairs (ratio: median,
  min–max), and in units of one plain DEQ forward solve of the clean batch (config's solver).

This script adds the peak memory of one run of each (see ``_common``) and, with
``--profile``, where one JIIO-k* attack spends its time.

Run: ``python benchmarks/bench_attack.py [--threads 1] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C

from jiio_tasks.adversarial import JIIOAttack, PGDAttack
from jiio_tasks.adversarial.attacks import default_deq
from jiio_tasks.adversarial.evaluate import (
    JIIO_ITERATIONS_GRID,
    PGD_STEPS_GRID,
    REL_STEP_FACTORS,
    bench,
    bench_summary,
)
from jiio_tasks.adversarial.splits import held_out_digits
from jiio_zoo import load


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits_adv_small")
    parser.add_argument("--weights", default=None, help="checkpoint to attack instead of the shipped weights")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--eps", type=float, default=None, help="L2 radius (default: the config's solver epsilon)")
    parser.add_argument("--pgd-steps", type=int, default=20, help="reference PGD-N whose best success is the target")
    parser.add_argument("--pgd-grid", type=_ints, default=PGD_STEPS_GRID,
                        help=f"PGD step counts, comma-separated (default {','.join(map(str, PGD_STEPS_GRID))})")
    parser.add_argument("--rel-steps", type=_floats, default=REL_STEP_FACTORS,
                        help="first step-size grid as multiples of 2.5/k (default "
                        f"{','.join(map(str, REL_STEP_FACTORS))}); extended until the best is interior")
    parser.add_argument("--jiio-iterations", type=_ints, default=JIIO_ITERATIONS_GRID,
                        help=f"JIIO iteration counts (default {','.join(map(str, JIIO_ITERATIONS_GRID))})")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of one JIIO-k* attack")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (stderr)")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)

    model = load(args.model, weights=args.weights, device=device).eval()
    eps = float(args.eps if args.eps is not None else model.config.solver.epsilon)
    images, labels = held_out_digits(model, args.batch)
    images, labels = images.to(device), labels.to(device)
    print(f"machine: {C.machine(device)}")
    print(f"eps {eps:g} (config's solver epsilon: {model.config.solver.epsilon})")

    r = bench(model, images, labels, eps, pgd_steps=args.pgd_steps, pgd_grid=args.pgd_grid,
              jiio_iterations=args.jiio_iterations, rel_step_factors=args.rel_steps,
              repeats=args.repeats, warmup=args.warmup, progress=not args.no_progress)
    print(bench_summary(r))

    deq = default_deq(model)
    pgd = PGDAttack(eps, steps=r["pgd_steps"], rel_step=r["pgd_rel_step"])
    k_mem = r["jiio_iterations"] if r["jiio_iterations"] is not None else r["jiio_sweep"][-1]["iterations"]
    jiio = JIIOAttack(eps, iterations=int(k_mem))
    pgd_mem = C.peak_memory(lambda: pgd.perturb(model, images, labels, deq), device)
    jiio_mem = C.peak_memory(lambda: jiio.perturb(model, images, labels), device)
    result: dict[str, Any] = {
        "model": args.model, "weights": args.weights, **r,
        "pgd_peak_bytes": pgd_mem, "jiio_peak_bytes": jiio_mem, "jiio_memory_iterations": k_mem,
        "memory_ratio": None if not pgd_mem or jiio_mem is None else jiio_mem / pgd_mem,
    }
    print(f"peak memory: PGD-{r['pgd_steps']} {C.mb(pgd_mem)}, JIIO-{k_mem} {C.mb(jiio_mem)}")
    if args.profile:
        result["jiio_profile"] = C.profile_table(lambda: jiio.perturb(model, images, labels), device)
        print(result["jiio_profile"])
    C.write("attack", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

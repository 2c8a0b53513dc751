"""The joint solver's own overhead per iteration, relative to one evaluation of the augmented map.

One JIIO iteration = one evaluation of the augmented map (the layer ``f``, the loss, and one
vector-Jacobian product through both) + the solver's own work (accelerator update, selection,
bookkeeping). On ``faces_gen_small`` (16 held-out faces, the config's recipe) this script times,
by process CPU time over ``--repeats`` runs:

- ``map``: ``--iterations`` evaluations of the augmented map alone, at the iterates of a solve;
- ``solve``: a JIIO solve of ``--iterations`` iterations (stopping test off);

one of each per repeat, in alternating order, and reports the median over repeats of
``overhead = (solve − map) / map`` with its min–max (the target in issue 10: ≤ 25%), and the
minor page faults per map evaluation and per solve iteration (``--malloc-defaults`` measures
with glibc's malloc settings instead of ``jiio_tasks.allocator``'s).

Run: ``python benchmarks/bench_overhead.py``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from typing import Any

import _common as C
import torch

from jiio_core import StepOutput
from jiio_tasks.imaging.data import to_model
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.problem import jiio_problem
from jiio_tasks.speed import cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faces_gen_small")
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)
    model, faces = C.decoder_and_faces(args.model, args.faces, device)
    y = to_model(faces, model.config.model.output_activation)  # type: ignore[union-attr]
    problem = jiio_problem(model, MeasurementObjective(model.head), iterations=args.iterations, tol=0.0)

    # record the iterates of one solve, by wrapping the map's step
    iterates: list[torch.Tensor] = []
    import jiio_core.augmented as aug

    original = aug.AugmentedMap.step

    def recording(self: Any, yy: Any, *, create_graph: bool = False) -> Any:
        inner = original(self, yy, create_graph=create_graph)
        recording.amap = self  # type: ignore[attr-defined]

        def step(v: torch.Tensor, k: int) -> StepOutput:
            iterates.append(v.detach().clone())
            out: StepOutput = inner(v, k)
            return out

        return step

    aug.AugmentedMap.step = recording  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            problem.solve(y)
    finally:
        aug.AugmentedMap.step = original  # type: ignore[method-assign]
    amap = recording.amap  # type: ignore[attr-defined]

    def map_only() -> None:
        with torch.no_grad():
            for k, v in enumerate(iterates):
                amap.evaluate(v, y, k)

    def solve() -> None:
        with torch.no_grad():
            problem.solve(y)

    map_only(), solve()  # warm-up
    maps, solves = [], []
    faults = {"map": 0, "solve": 0}  # minor page faults (fresh pages taken from the kernel)

    def timed_run(name: str, fn: Any, into: list[float]) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        into.append(cpu_seconds(fn)[0])
        faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    for i in range(args.repeats):  # the order alternates, so that a drift in load hits both alike
        if i % 2:
            timed_run("solve", solve, solves)
            timed_run("map", map_only, maps)
        else:
            timed_run("map", map_only, maps)
            timed_run("solve", solve, solves)
    m, s = statistics.median(maps), statistics.median(solves)
    overheads = [(b - a) / a for a, b in zip(maps, solves, strict=True)]
    result = {"model": args.model, "faces": args.faces, "iterations": args.iterations, "repeats": args.repeats,
              "map_cpu_seconds": maps, "solve_cpu_seconds": solves,
              "ms_per_map_evaluation": 1e3 * m / args.iterations,
              "ms_per_iteration": 1e3 * s / args.iterations,
              "page_faults_per_map_evaluation": faults["map"] / (args.repeats * args.iterations),
              "page_faults_per_iteration": faults["solve"] / (args.repeats * args.iterations),
              "overhead_median": statistics.median(overheads), "overhead_min": min(overheads),
              "overhead_max": max(overheads)}
    print(f"machine: {C.machine(device)}")
    print(f"augmented map: {result['ms_per_map_evaluation']:.1f} ms/evaluation; solve: "
          f"{result['ms_per_iteration']:.1f} ms/iteration; solver overhead {100 * result['overhead_median']:.0f}% "
          f"(min {100 * result['overhead_min']:.0f}%, max {100 * result['overhead_max']:.0f}%); minor page faults "
          f"{result['page_faults_per_map_evaluation']:.0f} per map evaluation, "
          f"{result['page_faults_per_iteration']:.0f} per solve iteration")
    C.write("overhead", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

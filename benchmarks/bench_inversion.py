"""Latent inversion on a zoo MDEQ decoder (paper Table 3, Fig. 3): JIIO vs Adam over the DEQ.

Same model (default: the pretrained ``faces_gen_small``), same faces, same machine, by the fair
procedure of :mod:`jiio_tasks.speed` (implemented by
:func:`jiio_tasks.generative.evaluate.jiio_vs_adam`, which ``jiio eval generative`` also runs):

- every method is scored by the per-pixel MSE at the DEQ equilibrium of the latents it returns
  (re-solved to a relative residual of 1e-5), never at a joint iterate;
- Adam-N's learning rate is swept (the grid is extended until the best rate is interior);
- ``k*`` is the fewest JIIO iterations from which on JIIO's score stays at or below Adam's;
- Adam-N and JIIO-``k*`` are timed by process CPU time over ``--repeats`` interleaved runs:
  the ratio is the median with its min–max;
- one plain DEQ forward solve (the config's solver) at JIIO's latents puts both in units of
  inference; peak memory of one run of each (see ``_common``).

``--split train --alpha-x 0.01,0.02,...`` is the tuning mode: on the last ``--faces`` training
faces (the held-out faces are not touched) one Adam sweep is the reference and, for each
``α_x``, JIIO's equilibrium scores per iteration count and ``k*`` are printed (no timing).
``--x-late-ratio 0.3`` sets each late ``α_x`` to that ratio of ``α_x``; ``--overrides`` changes
other solve settings, e.g. ``'{"balance_blocks": false}'`` for the Euclidean Anderson metric.

Run: ``python benchmarks/bench_inversion.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import _common as C
import torch

from jiio_tasks.generative.evaluate import jiio_vs_adam
from jiio_tasks.imaging.data import to_model
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.problem import jiio_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faces_gen_small", help="zoo decoder (default faces_gen_small)")
    parser.add_argument("--faces", "--batch", type=int, default=16, dest="faces",
                        help="faces inverted at once (default 16)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="test: the first held-out faces; train: the last training faces (tuning)")
    parser.add_argument("--adam-steps", type=int, default=40)
    parser.add_argument("--adam-lrs", default="0.1,0.2,0.4,0.8",
                        help="starting grid of Adam learning rates (extended until the best is interior)")
    parser.add_argument("--max-iter", type=int, default=100, help="most JIIO iterations scored")
    parser.add_argument("--alpha-x", default=None,
                        help="comma-separated α_x values to compare (tuning); default: the config's")
    parser.add_argument("--x-late-ratio", type=float, default=None,
                        help="with --alpha-x: late α_x = this ratio × α_x (default: the config's late α_x)")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help='JSON of other SolveSettings fields for JIIO, e.g. \'{"balance_blocks": false}\'')
    parser.add_argument("--profile", action="store_true",
                        help="also record where one JIIO solve spends its time (torch.profiler, top ops)")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)
    model, faces = C.decoder_and_faces(args.model, args.faces, device, split=args.split)
    lrs = tuple(float(v) for v in args.adam_lrs.split(","))
    damping = model.config.solver.damping
    alphas = [damping[2]] if args.alpha_x is None else [float(v) for v in args.alpha_x.split(",")]
    runs: dict[str, Any] = {}
    reference = None
    for ax in alphas:
        overrides = {**args.overrides, "damping": (damping[0], damping[1], ax)}
        if args.x_late_ratio is not None:
            overrides["x_late"] = round(args.x_late_ratio * ax, 6)
        res = jiio_vs_adam(model, faces, iterations=args.max_iter, adam_steps=args.adam_steps, adam_lrs=lrs,
                           repeats=args.repeats, overrides=overrides, adam_reference=reference,
                           time_it=args.alpha_x is None)
        reference = res.pop("adam_reference")
        runs[f"{ax:g}"] = res
        k = res["jiio_iterations_to_adam_loss"]
        print(f"alpha_x {ax:g}: Adam-{args.adam_steps} lr {res['adam_lr']:g} (sweep {res['adam_lr_sweep']}) "
              f"loss {res['adam_loss']:.4e}; JIIO k* = {k}; scores {res['jiio_scores']}"
              + ("" if k is None or "ratio_median" not in res else f", loss {res['jiio_loss']:.4e}, speed-up {res['ratio_median']:.1f}x "
                 f"(min {res['ratio_min']:.1f}, max {res['ratio_max']:.1f}); JIIO = "
                 f"{res['jiio_in_forward_solves']:.1f} forward solves (min {res['jiio_in_forward_solves_min']:.1f}, "
                 f"max {res['jiio_in_forward_solves_max']:.1f}), Adam = {res['adam_in_forward_solves']:.1f}"),
              flush=True)
    result: dict[str, Any] = {"model": args.model, "faces": args.faces, "split": args.split,
                              "alpha_x": runs if args.alpha_x is not None else None}
    if args.alpha_x is None:
        res = runs[f"{alphas[0]:g}"]
        result.update(res)
        k = res["jiio_iterations_to_adam_loss"]
        if k is not None:
            y = to_model(faces, model.config.model.output_activation)  # type: ignore[union-attr]
            objective = MeasurementObjective(model.head)
            problem = jiio_problem(model, objective, iterations=k, tol=0.0, overrides=args.overrides)
            from jiio_core import Adam, optimize_input
            from jiio_zoo.recipe import deq_solver

            x0 = torch.zeros(y.shape[0], *model.x_shape, device=device)

            def adam_run() -> Any:
                return optimize_input(model.layer, objective, y, x0, Adam(res["adam_lr"]), args.adam_steps,
                                      deq=deq_solver(model))

            def jiio_run() -> Any:
                with torch.no_grad():
                    return problem.solve(y)

            adam_mem, jiio_mem = C.peak_memory(adam_run, device), C.peak_memory(jiio_run, device)
            result.update({"adam_peak_bytes": adam_mem, "jiio_peak_bytes": jiio_mem,
                           "memory_ratio": None if not adam_mem or jiio_mem is None else jiio_mem / adam_mem})
            print(f"peak memory: Adam {C.mb(adam_mem)}, JIIO {C.mb(jiio_mem)}")
            if args.profile:
                result["jiio_profile"] = C.profile_table(jiio_run, device)
                print(result["jiio_profile"])
    name = "inversion" if args.alpha_x is None else "inversion-alpha-sweep"
    print(f"machine: {C.machine(device)}")
    C.write(name, args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

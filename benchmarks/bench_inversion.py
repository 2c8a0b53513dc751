"""Latent inversion on a zoo MDEQ decoder (paper Table 3, Fig. 3): JIIO vs Adam over the DEQ.

Same model (default: the pretrained ``faces_gen_small``), same held-out batch, same machine.

- Adam-N: ``N`` Adam steps on the latent, each a full DEQ forward solve and an implicit
  backward solve (Anderson-I, the config's thresholds); its final batch-mean loss (each
  sample's best iterate) is the *target*.
- JIIO: one solve of ``--max-iter`` iterations gives the first iteration ``k*`` at which the
  batch mean of each sample's best cost so far reaches the target; a JIIO solve stopped at
  ``k*`` (same damping schedule, best-cost selection) is then timed on its own and its final
  loss checked against the target.
- The cost of one plain DEQ forward solve of the same layer (at JIIO's latents, to the
  config's forward threshold) puts the JIIO solve in units of inference.
- Peak memory of one Adam-N run and of one JIIO-``k*`` solve (see ``_common``).

Run: ``python benchmarks/bench_inversion.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _common as C
import torch

from jiio_core import Adam, AndersonI, DEQSolver, LowestCost, optimize_input
from jiio_tasks.data import EmbeddedFaces
from jiio_tasks.generative.data import to_model
from jiio_tasks.generative.objectives import MeasurementObjective
from jiio_tasks.generative.problem import image_shape, jiio_problem
from jiio_zoo import load
from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel


def running_best(cost: torch.Tensor) -> torch.Tensor:
    """Batch mean of each sample's best cost so far, per iteration (NaN = frozen → ignored)."""
    return torch.cummin(torch.nan_to_num(cost, nan=float("inf")), dim=0).values.mean(dim=1)


def decoder_and_targets(name: str, batch: int, device: torch.device) -> tuple[ZooModel, torch.Tensor]:
    """The pretrained zoo decoder ``name`` (eval mode) and the first ``batch`` held-out embedded
    faces in its output range, on ``device``."""
    model = load(name, device=device).eval()
    cfg = model.config.model
    if not isinstance(cfg, MDEQConfig):
        raise SystemExit(f"--model {name!r} is not an MDEQ decoder")
    _, h, _ = image_shape(model)
    faces = EmbeddedFaces("test", size=h).images
    if batch > len(faces):
        raise SystemExit(f"--batch {batch} exceeds the {len(faces)} held-out faces")
    return model, to_model(faces[:batch], cfg.output_activation).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faces_gen_small", help="zoo decoder (default faces_gen_small)")
    parser.add_argument("--batch", type=int, default=16, help="held-out images inverted at once (default 16)")
    parser.add_argument("--adam-steps", type=int, default=40)
    parser.add_argument("--adam-lrs", default="0.02,0.05,0.1,0.2",
                        help="Adam learning rates tried; the one with the lowest final loss is the baseline")
    parser.add_argument("--max-iter", type=int, default=100, help="JIIO iterations of the search run")
    parser.add_argument("--profile", action="store_true",
                        help="also record where one JIIO solve spends its time (torch.profiler, top ops)")
    C.add_common_args(parser)
    args = parser.parse_args()
    device = C.setup(args)

    model, y = decoder_and_targets(args.model, args.batch, device)
    objective = MeasurementObjective(model.head)
    s = model.config.solver
    deq = DEQSolver(accelerator=AndersonI(memory=s.anderson_memory), max_iter=s.forward_threshold,
                    backward_max_iter=s.backward_threshold)
    x0 = torch.zeros(y.shape[0], *model.x_shape, device=device)

    # --- Adam baseline: best learning rate of the sweep, then timed
    sweep: dict[str, float] = {}
    for lr in (float(v) for v in args.adam_lrs.split(",")):
        res = optimize_input(model.layer, objective, y, x0, Adam(lr), args.adam_steps, deq=deq)
        sweep[f"{lr:g}"] = float(res.loss.mean())
    best_lr = float(min(sweep, key=lambda k: sweep[k]))

    def adam_run() -> Any:
        return optimize_input(model.layer, objective, y, x0, Adam(best_lr), args.adam_steps, deq=deq)

    adam_s, adam = C.timed(adam_run, device, args.repeats, args.warmup)
    target = float(adam.loss.mean())
    adam_evals = float(adam.forward_iterations.float().mean())

    # --- JIIO: find k*, then time a solve stopped at k*
    problem = jiio_problem(model, objective, iterations=args.max_iter, tol=0.0)
    problem.selection = LowestCost()
    with torch.no_grad():
        full = problem.solve(y)
    curve = running_best(full.trace.cost)
    hits = (curve <= target).nonzero()
    result: dict[str, Any] = {
        "model": args.model, "batch": args.batch, "adam_steps": args.adam_steps, "adam_lr": best_lr,
        "adam_lr_sweep": sweep, "adam_seconds": adam_s, "adam_loss": target,
        "adam_forward_evals_per_sample": adam_evals,
        "jiio_max_iter": args.max_iter, "jiio_loss_at_max_iter": float(full.loss.mean()),
    }
    print(f"machine: {C.machine(device)}")
    print(f"Adam-{args.adam_steps} (lr {best_lr:g}; sweep {sweep}): loss {target:.4e}, {adam_s * 1e3:.0f} ms, "
          f"{adam_evals:.0f} forward evaluations per sample")
    if hits.numel() == 0:
        print(f"JIIO never reached Adam's loss in {args.max_iter} iterations (best {float(curve.min()):.4e})")
        result["jiio_iterations_to_target"] = None
    else:
        k = int(hits[0]) + 1
        problem.max_iter = k

        def jiio_run() -> Any:
            with torch.no_grad():
                return problem.solve(y)

        jiio_s, sol = C.timed(jiio_run, device, args.repeats, args.warmup)
        x_star = sol.x

        def forward_run() -> Any:
            with torch.no_grad():
                return deq.solve(model.layer, x_star)

        fwd_s, fwd = C.timed(forward_run, device, args.repeats, args.warmup)
        adam_mem = C.peak_memory(adam_run, device)
        jiio_mem = C.peak_memory(jiio_run, device)
        result.update({
            "jiio_iterations_to_target": k, "jiio_seconds": jiio_s, "jiio_loss": float(sol.loss.mean()),
            "speedup": adam_s / jiio_s, "forward_solve_seconds": fwd_s,
            "forward_solve_iterations": float(fwd.iterations.float().mean()),
            "jiio_over_forward": jiio_s / fwd_s, "adam_over_forward": adam_s / fwd_s,
            "adam_peak_bytes": adam_mem, "jiio_peak_bytes": jiio_mem,
            "memory_ratio": None if not adam_mem or jiio_mem is None else jiio_mem / adam_mem,
        })
        print(f"JIIO reaches it at iteration {k}: loss {float(sol.loss.mean()):.4e}, {jiio_s * 1e3:.0f} ms "
              f"-> Adam/JIIO {adam_s / jiio_s:.1f}x")
        print(f"one DEQ forward solve ({float(fwd.iterations.float().mean()):.0f} iterations): {fwd_s * 1e3:.0f} ms "
              f"-> JIIO = {jiio_s / fwd_s:.1f} forward solves, Adam = {adam_s / fwd_s:.1f}")
        if args.profile:
            result["jiio_profile"] = C.profile_table(jiio_run, device)
            print(result["jiio_profile"])
        print(f"peak memory: Adam {C.mb(adam_mem)}, JIIO {C.mb(jiio_mem)}"
              + ("" if result["memory_ratio"] is None else f" (JIIO/Adam {result['memory_ratio']:.2f})"))
    C.write("inversion", args, device, result, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

"""A total-variation prior on the reconstruction for inverse problems through the shipped
``faces_gen_small`` decoder (issue 12): held-out PSNR of unsupervised JIIO inversion with the
plain measurement loss and with ``+ λ·TV(h(z))`` (smoothed isotropic TV,
``jiio_tasks.imaging.objectives.smoothed_tv``).

Protocol: λ is chosen on the last ``--val`` training faces (median PSNR over a grid extended until
the best λ is interior); the held-out faces (``held_out_faces``, 20) are scored once with λ = 0
and once with the chosen λ. Corruptions are seeded (the same masks / noise for both rows). Every
reconstruction is the decoded DEQ equilibrium of the returned latents (``infer``). Reported: the
median PSNR of each row and the paired per-face difference (mean and a 95% t-interval).

Run: ``python benchmarks/tv_prior.py [--task inpaint] [--iterations 100]``.
"""

from __future__ import annotations

import argparse
import math
import statistics

import _common as C
import torch

import jiio_zoo
from jiio_tasks.imaging.data import from_model, to_model
from jiio_tasks.imaging.inversion import activation, infer
from jiio_tasks.imaging.operators import CORRUPTIONS, corruption, psnr
from jiio_tasks.imaging.problem import image_shape
from jiio_tasks.imaging.splits import held_out_faces, training_faces
from jiio_tasks.speed import interior_sweep

T_975 = {19: 2.093, 15: 2.131}  # Student t quantiles for the 95% interval (n - 1 degrees of freedom)


def psnrs(model: jiio_zoo.ZooModel, images: torch.Tensor, task: str, tv_weight: float, iterations: int,
          seed: int) -> torch.Tensor:
    act = activation(model)
    y = to_model(images, act)
    op, observed = corruption(task, 2.0 if act == "tanh" else 1.0)(y, torch.Generator().manual_seed(seed))
    _, recon, _ = infer(model, observed, op, iterations=iterations, tv_weight=tv_weight)
    return psnr(from_model(recon, act).clamp(0, 1), images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--task", choices=CORRUPTIONS, default="inpaint")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--val", type=int, default=16, help="training faces used to choose λ (default 16)")
    parser.add_argument("--grid", default="0.003,0.01,0.03,0.1", help="starting λ grid (extended until interior)")
    args = parser.parse_args()
    device = C.setup(args)
    model = jiio_zoo.load("faces_gen_small").to(device).eval()
    c, h, _ = image_shape(model)
    val = training_faces(size=h, channels=c)[-args.val:].to(device)
    test = held_out_faces(size=h, channels=c).to(device)

    def val_score(lam: float) -> float:  # minimised: minus the median validation PSNR
        return -float(psnrs(model, val, args.task, lam, args.iterations, args.seed).median())

    plain_val = -val_score(0.0)
    best, sweep = interior_sweep(val_score, [float(v) for v in args.grid.split(",")])
    val_rows = {f"{k:g}": -v for k, v in sorted(sweep.items())}
    print(f"validation ({args.val} training faces, {args.task}): λ = 0: {plain_val:.2f} dB; "
          + ", ".join(f"λ = {k}: {v:.2f} dB" for k, v in val_rows.items()) + f"; chosen λ = {best:g}")
    plain = psnrs(model, test, args.task, 0.0, args.iterations, args.seed)
    tv = psnrs(model, test, args.task, best, args.iterations, args.seed)
    diff = (tv - plain).tolist()
    n = len(diff)
    mean = statistics.fmean(diff)
    half = T_975.get(n - 1, 2.0) * statistics.stdev(diff) / math.sqrt(n)
    print(f"held-out ({n} faces, {args.task}, {args.iterations} JIIO iterations): plain {float(plain.median()):.2f} dB, "
          f"TV λ = {best:g} {float(tv.median()):.2f} dB (median); paired difference {mean:+.2f} dB "
          f"(95% CI {mean - half:+.2f} to {mean + half:+.2f})")
    C.write("tv-prior", args, device, {
        "model": "faces_gen_small (shipped weights)",
        "task": args.task,
        "iterations": args.iterations,
        "prior": "tv_weight * smoothed isotropic TV of h(z) (eps 1e-3), per value, added to the per-value MSE",
        "validation": {"faces": f"the last {args.val} embedded training faces", "plain_median_psnr": plain_val,
                       "tv_median_psnr": val_rows, "chosen_tv_weight": best},
        "held_out": {"faces": n, "plain_median_psnr": float(plain.median()), "tv_median_psnr": float(tv.median()),
                     "plain_psnr": plain.tolist(), "tv_psnr": tv.tolist(), "paired_difference_mean": mean,
                     "paired_difference_ci95": [mean - half, mean + half]},
    }, f"python benchmarks/tv_prior.py --task {args.task} --iterations {args.iterations} --val {args.val}")


if __name__ == "__main__":
    main()

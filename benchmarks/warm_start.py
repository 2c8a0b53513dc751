"""Amortised warm starts in generative training (issue 12): CPU time to the same held-out PSNR,
with and without the per-example latent cache (``--warm-start``, ``LatentCache``).

Protocol (decided before any run; nothing here was tuned on the held-out faces):
- a fresh ``faces_gen_small`` decoder per seed (the same initial weights and batch stream for
  every arm of a seed), trained with ``jiio_tasks.generative.train`` on the 80 embedded training
  faces, batch ``--batch-size``, the config's optimiser and Jacobian penalty;
- arms (``--arms``): ``cold40`` (the config's recipe: 40 JIIO iterations from ``x = 0``),
  ``cold20`` (20 iterations from ``x = 0``: is it the cache or just fewer iterations?),
  ``warm20`` / ``warm40`` (20 / 40 iterations from each example's latent of its previous visit,
  ``z`` from the layer's initial state) and ``warmz20`` (20 iterations from the cached latent
  *and* the cached equilibrium state, ``--warm-start-state``);
- training time is the process CPU time of the training steps only (the loop's ``clock`` is
  ``time.process_time``; one thread), so evaluation and checkpointing are not counted and other
  jobs on the machine do not inflate it;
- every ``--eval-every`` steps the decoder is scored on the 20 held-out faces by one fixed
  evaluator, whatever the arm: JIIO with the config's 40 iterations from ``x = 0``, each face
  decoded at the DEQ equilibrium of its returned latent; the score is the mean per-face PSNR;
- an arm stops after ``--cpu-minutes`` of training CPU time;
- the target of a seed is the PSNR ``cold40`` reaches by the end of its budget; each arm's time
  to target is the training CPU time at its first evaluation at or above it (none if never).
  The speed-up of an arm is ``cold40``'s time to target over the arm's.

``--reuse RESULTS.json`` takes the curves of arms already measured under the same settings (batch,
budget, evaluation interval, seeds) from an earlier results file instead of training them again.

Run: ``python benchmarks/warm_start.py [--seeds 0,1,2] [--cpu-minutes 4] [--eval-every 8]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
import torch

import jiio_zoo
from jiio_tasks.generative.train import TrainSettings, train
from jiio_tasks.imaging.data import from_model, to_model
from jiio_tasks.imaging.inversion import activation, infer
from jiio_tasks.imaging.operators import psnr
from jiio_tasks.imaging.problem import image_shape
from jiio_tasks.imaging.splits import held_out_faces, training_stream
from jiio_tasks.runs import RunDir

# arm: (warm start, iterations, cached state too)
ARMS = {"cold40": (False, 40, False), "cold20": (False, 20, False), "warm20": (True, 20, False),
        "warm40": (True, 40, False), "warmz20": (True, 20, True)}
CONFIG = "faces_gen_small"


def held_out_psnr(model: jiio_zoo.ZooModel, faces: torch.Tensor) -> float:
    """Mean per-face PSNR of the fixed evaluator (config's iterations from x = 0, at equilibrium)."""
    act = activation(model)
    with torch.random.fork_rng(devices=[]):
        _, recon, _ = infer(model, to_model(faces, act))
    model.train()
    return float(psnr(from_model(recon, act).clamp(0, 1), faces).mean())


def run_arm(arm: str, seed: int, args: argparse.Namespace, faces: torch.Tensor, root: Path) -> list[dict[str, float]]:
    warm, iterations, state = ARMS[arm]
    torch.manual_seed(seed)
    model = jiio_zoo.load(CONFIG, pretrained=False)
    c, h, _ = image_shape(model)
    source = training_stream(size=h, channels=c)
    run = RunDir(root / f"{arm}-seed{seed}")
    curve = [{"step": 0, "cpu_seconds": 0.0, "psnr": held_out_psnr(model, faces)}]
    steps = 0
    while curve[-1]["cpu_seconds"] < args.cpu_minutes * 60:
        steps += args.eval_every
        settings = TrainSettings(steps=steps, batch_size=args.batch_size, iterations=iterations, seed=seed,
                                 warm_start=warm, warm_start_state=state, save_every=args.eval_every)
        final = train(model, source, run, settings, progress=False, clock=time.process_time)
        curve.append({"step": steps, "cpu_seconds": float(final["train_seconds"]),
                      "psnr": held_out_psnr(model, faces)})
        print(f"  {arm} seed {seed}: step {steps:4d}  {curve[-1]['cpu_seconds']:7.1f} s  "
              f"{curve[-1]['psnr']:.2f} dB", flush=True)
    return curve


def time_to(curve: list[dict[str, float]], target: float) -> float | None:
    for point in curve:
        if point["psnr"] >= target:
            return point["cpu_seconds"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default="cold40,cold20,warm20")
    parser.add_argument("--cpu-minutes", type=float, default=4.0, help="training CPU budget per arm (minutes)")
    parser.add_argument("--eval-every", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="take already measured arms from this results file (same settings)")
    args = parser.parse_args()
    device = C.setup(args)
    arms = args.arms.split(",")
    if arms[0] != "cold40" or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms must start with cold40 and name arms of {sorted(ARMS)}, got {args.arms!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    faces = held_out_faces(size=32, channels=1)
    old: dict[str, Any] = {}
    if args.reuse is not None:
        prev = json.loads(args.reuse.read_text(encoding="utf8"))
        same = (prev["batch_size"], prev["cpu_minutes"], prev["eval_every"]) == (
            args.batch_size, args.cpu_minutes, args.eval_every)
        if not same or sorted(prev["curves"]) != sorted(str(s) for s in seeds):
            raise SystemExit(f"--reuse {args.reuse}: measured with other settings or seeds")
        old = prev["curves"]
    curves: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            curves[str(seed)] = {arm: (old[str(seed)][arm] if arm in old.get(str(seed), {})
                                       else run_arm(arm, seed, args, faces, Path(tmp))) for arm in arms}
    rows: dict[str, dict[str, Any]] = {}
    for seed, by_arm in curves.items():
        target = by_arm["cold40"][-1]["psnr"]
        times = {arm: time_to(c, target) for arm, c in by_arm.items()}
        rows[seed] = {"target_psnr": target, "time_to_target": times,
                      "speedup": {arm: (None if t is None or times["cold40"] is None else times["cold40"] / t)
                                  for arm, t in times.items()}}
    summary: dict[str, Any] = {}
    for arm in arms:
        ratios = [r["speedup"][arm] for r in rows.values()]
        done = [r for r in ratios if r is not None]
        summary[arm] = {"reached": f"{len(done)}/{len(ratios)}",
                        "speedup_mean": statistics.mean(done) if done else None,
                        "speedup_min": min(done) if done else None,
                        "speedup_max": max(done) if done else None}
    for arm, s in summary.items():
        print(f"{arm}: reached the cold40 target in {s['reached']} seeds; speed-up "
              + ("n/a" if s["speedup_mean"] is None else
                 f"{s['speedup_mean']:.2f}x ({s['speedup_min']:.2f}-{s['speedup_max']:.2f})"))
    command = "python benchmarks/warm_start.py " + " ".join(sys.argv[1:])
    C.write("warm-start", args, device, {
        "config": CONFIG, "batch_size": args.batch_size, "cpu_minutes": args.cpu_minutes,
        "eval_every": args.eval_every,
        "arms": {a: {"warm_start": ARMS[a][0], "iterations": ARMS[a][1], "warm_start_state": ARMS[a][2]}
                 for a in arms},
        "reused": None if args.reuse is None else str(args.reuse),
        "curves": curves, "per_seed": rows, "summary": summary,
    }, command)


if __name__ == "__main__":
    main()

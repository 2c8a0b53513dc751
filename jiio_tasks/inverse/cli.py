"""``jiio train inverse`` (supervised inverse training, eq. 24) and ``jiio eval inverse`` (median
PSNR of unsupervised and supervised inversion, Table 4). The embedded faces are the default
data; ``--data-root`` selects CelebA-64 from a local root (use a CelebA config)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jiio_tasks.imaging.arguments import (
    common_args,
    held_out,
    load_generator,
    run_training,
    settings_kwargs,
    setup,
    train_args,
)

__all__ = ["register"]


def register(commands: Any) -> None:
    from jiio_tasks.imaging.operators import CORRUPTIONS

    p = commands.train.add_parser("inverse", help="train a supervised JIIO inverse-problem model (eq. 24)")
    train_args(p, "faces_gen_small")
    p.add_argument("--task", choices=CORRUPTIONS, default="denoise0.2",
                   help="corruption to invert: Gaussian noise σ=0.2/0.4, inpainting or blur (default: %(default)s)")
    p.add_argument("--outer", choices=("kkt", "fixed-input"), default="kkt",
                   help="outer gradient. kkt: exact implicit gradient; fixed-input: ignores dx*/dθ (cheaper) "
                   "(default: %(default)s)")
    p.set_defaults(handler=_train_inverse)

    p = commands.eval.add_parser("inverse", help="median PSNR of unsupervised (and supervised) inversion")
    p.add_argument("--weights", required=True, help="generator checkpoint (unsupervised rows)")
    p.add_argument("--supervised", action="append", default=[], metavar="TASK=PATH",
                   help="a supervised checkpoint for TASK (repeatable)")
    p.add_argument("--out", required=True, help="directory for the metrics and PNGs")
    p.add_argument("--iterations", type=int, default=100, help="JIIO iterations at test time (default: %(default)s)")
    p.add_argument("--count", type=int, default=20, help="held-out images to use (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", choices=CORRUPTIONS, default=list(CORRUPTIONS),
                   help="corruptions to evaluate, one or more (default: all)")
    common_args(p)
    p.set_defaults(handler=_eval_inverse)


def _train_inverse(args: argparse.Namespace) -> int:
    from jiio_tasks.inverse.train import TrainSettings, train

    return run_training(args, train, TrainSettings(**settings_kwargs(args), task=args.task, outer=args.outer))


def _eval_inverse(args: argparse.Namespace) -> int:
    from jiio_tasks.inverse.evaluate import evaluate_inverse
    from jiio_zoo.checkpoint import load_model

    setup(args)
    model = load_generator(args.weights, weights=True)
    supervised = {}
    for item in args.supervised:
        task, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--supervised expects TASK=PATH, got {item!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"supervised weights {path} do not exist")
        supervised[task] = load_model(path)
    result = evaluate_inverse(model, held_out(model, args), Path(args.out), supervised=supervised,
                              tasks=tuple(args.tasks), iterations=args.iterations, seed=args.seed,
                              progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0

"""Command-line options and helpers that ``jiio ... generative`` and ``jiio ... inverse`` share:
the data and thread options, the training options, loading a decoder and its faces."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_HELP", "common_args", "held_out", "image_kwargs", "load_generator", "model_and_source",
           "run_training", "settings_kwargs", "setup", "train_args"]

CONFIG_HELP = "zoo config name or path to a .json config file (see `jiio config --help`"


def common_args(p: argparse.ArgumentParser) -> None:
    """``--data-root``, ``--threads``, ``--seed`` and ``--no-progress``."""
    p.add_argument("--data-root", default=None, help="CelebA root (default: the embedded faces; not accepted by train features)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small convolutions are slower with more on shared cores)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: torch's global seed, and the seed of training, corruptions and sampling "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (stderr)")


def train_args(p: argparse.ArgumentParser, default_config: str) -> None:
    """The options of ``jiio train generative|inverse`` (and `common_args`)."""
    p.add_argument("--config", default=default_config,
                   help=CONFIG_HELP + "); a fresh model is built from it (default: %(default)s)")
    p.add_argument("--run-dir", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--steps", type=int, required=True, help="total training steps, counted across resumes")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the config's value)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's value)")
    p.add_argument("--jac-reg", type=float, default=None, help="λ of the Jacobian penalty (default: config)")
    p.add_argument("--iterations", type=int, default=None, help="JIIO iterations per step (default: config)")
    p.add_argument("--save-every", type=int, default=10,
                   help="checkpoint the run every this many steps (and at the end) (default: %(default)s)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (same config)")
    p.add_argument("--warm-start", action="store_true",
                   help="start each image's JIIO solve from its latent of the previous visit (a per-example "
                   "cache saved with the run) instead of x = 0")
    p.add_argument("--warm-start-max-age", type=int, default=None, metavar="STEPS",
                   help="with --warm-start: ignore cached latents older than this many steps (default: never)")
    p.add_argument("--warm-start-state", action="store_true",
                   help="with --warm-start: also start each example's DEQ state from its cached equilibrium")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to train; under torchrun each process uses cuda:LOCAL_RANK (nccl) or the CPU "
                   "(gloo) (default: %(default)s)")
    common_args(p)


def setup(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (checked) and ``--seed`` to torch."""
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def load_generator(name_or_path: str, *, weights: bool) -> Any:
    """A checkpoint's model (``weights``) or a fresh zoo model of a config."""
    from jiio_zoo import load
    from jiio_zoo.checkpoint import load_model

    if weights:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist (train one with `jiio train generative`)")
        return load_model(path)
    return load(name_or_path, pretrained=False)


def image_kwargs(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the [`splits`][jiio_tasks.imaging.splits] functions for ``model``."""
    from jiio_tasks.imaging.problem import image_shape

    c, h, _ = image_shape(model)
    return {"size": h, "channels": c, "data_root": args.data_root}


def held_out(model: Any, args: argparse.Namespace) -> Any:
    """The ``--count`` held-out faces every ``jiio eval`` command scores on."""
    from jiio_tasks.imaging.splits import held_out_faces

    return held_out_faces(args.count, **image_kwargs(model, args))


def model_and_source(name_or_path: str, args: argparse.Namespace, *, weights: bool) -> Any:
    """The model and its training stream ([`training_stream`][jiio_tasks.imaging.splits.training_stream])."""
    from jiio_tasks.imaging.splits import training_stream

    model = load_generator(name_or_path, weights=weights)
    return model, training_stream(**image_kwargs(model, args))


def run_training(args: argparse.Namespace, train: Callable[..., dict[str, Any]], settings: Any) -> int:
    """The ``jiio train generative|inverse`` body: a fresh model of ``--config`` (optionally
    ``--init`` weights), its training stream, ``train(model, source, run, settings, ...)`` under
    ``torchrun`` or in one process, and the final metrics printed by the main rank."""
    from jiio_tasks.distributed import launched
    from jiio_tasks.runs import RunDir

    setup(args)
    model, source = model_and_source(args.config, args, weights=False)
    if args.init is not None:
        from jiio_zoo.checkpoint import load_into

        if not Path(args.init).is_file():
            raise FileNotFoundError(f"--init checkpoint {args.init} does not exist")
        load_into(model, args.init)
    with launched(args.device) as env:
        final = train(model, source, RunDir(args.run_dir), settings, progress=not args.no_progress, env=env)
    if env.is_main:
        print(json.dumps(final, indent=2))
    return 0


def settings_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The [`DecoderSettings`][jiio_tasks.imaging.training.DecoderSettings] fields from the common
    training options."""
    return {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr, "jac_reg": args.jac_reg,
            "iterations": args.iterations, "save_every": args.save_every, "seed": args.seed,
            "warm_start": args.warm_start, "warm_start_max_age": args.warm_start_max_age,
            "warm_start_state": args.warm_start_state}

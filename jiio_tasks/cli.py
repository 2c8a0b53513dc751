"""The ``jiio`` command: ``jiio train|eval|sample|bench <family> [options]`` and
``jiio config list|show``.

Each task family registers its own subcommands through a ``register(commands)`` function in
its ``cli`` module (listed in ``_FAMILIES``); this module only builds the top-level parser.
A family module that is missing is simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

import attrs

Handler = Callable[[argparse.Namespace], int]

_FAMILIES = (
    "jiio_tasks.generative.cli",
    "jiio_tasks.inverse.cli",
    "jiio_tasks.adversarial.cli",
    "jiio_tasks.meta.cli",
)


@attrs.define
class Commands:
    """The verb sub-parsers that family modules add their subcommands to."""

    train: argparse._SubParsersAction[argparse.ArgumentParser]
    eval: argparse._SubParsersAction[argparse.ArgumentParser]
    sample: argparse._SubParsersAction[argparse.ArgumentParser]
    bench: argparse._SubParsersAction[argparse.ArgumentParser]


def _config_list(args: argparse.Namespace) -> int:
    from jiio_zoo.configs import CONFIGS
    from jiio_zoo.registry import weights_status

    print(f"{'name':20s} {'task':12s} {'scale':6s} weights")
    for name, c in CONFIGS.items():
        print(f"{name:20s} {c.task:12s} {c.scale:6s} {weights_status(name)}")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from jiio_zoo.configs import get_config

    print(json.dumps(get_config(args.name).to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jiio",
        description="Joint inference and input optimisation for deep equilibrium models: train, "
        "evaluate, sample and benchmark the paper's task families.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="{train,eval,sample,bench,config}", required=True)
    subs = {}
    for verb, text in (
        ("train", "train a model of a task family"),
        ("eval", "evaluate a trained model"),
        ("sample", "draw samples / reconstructions from a trained model"),
        ("bench", "time JIIO against the gradient baselines"),
    ):
        p = verbs.add_parser(verb, help=text, description=text)
        subs[verb] = p.add_subparsers(dest="family", metavar="FAMILY", required=True)
    cfg = verbs.add_parser(
        "config", help="list the zoo configs or print one as JSON",
        description="Every --config option takes a zoo name or a path to a .json file: either a whole "
        "config (as printed by 'jiio config show NAME') or {\"base\": NAME, ...overrides}, e.g. "
        '{"base": "faces_gen_small", "name": "faces_wide", "model": {"channels": [16, 32]}}. '
        "Unknown keys are errors.",
    )
    cfg_sub = cfg.add_subparsers(dest="family", metavar="{list,show}", required=True)
    cfg_sub.add_parser("list", help="every zoo config: name, task, scale, and where its trained weights are (packaged, cache, none)").set_defaults(handler=_config_list)
    show = cfg_sub.add_parser("show", help="print a config (zoo name or .json path) as JSON")
    show.add_argument("name", help="zoo config name or path to a .json config file")
    show.set_defaults(handler=_config_show)
    commands = Commands(train=subs["train"], eval=subs["eval"], sample=subs["sample"], bench=subs["bench"])
    for name in _FAMILIES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue
            raise
        module.register(commands)
    return parser


#: ``(verb, family)`` pairs that run data-parallel under torchrun (docs/distributed.md).
DISTRIBUTED = {("train", "adversarial"), ("train", "generative"), ("train", "inverse"), ("train", "meta")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"'{args.verb} {args.family}' has no handler")
    world = os.environ.get("WORLD_SIZE", "1")
    if world not in ("", "1") and (args.verb, args.family) not in DISTRIBUTED:
        # N independent copies would each write the same run directory
        supported = ", ".join(f"'jiio {v} {f}'" for v, f in sorted(DISTRIBUTED))
        print(f"jiio: error: 'jiio {args.verb} {args.family}' does not run under torchrun "
              f"(WORLD_SIZE={world}); data-parallel runs: {supported}. Launch it as one process.",
              file=sys.stderr)
        return 2
    from jiio_tasks.allocator import keep_freed_memory
    from jiio_tasks.runs import RunError
    from jiio_zoo.checkpoint import CheckpointError

    keep_freed_memory()  # a CPU speed setting for the whole process (see jiio_tasks.allocator)

    try:
        return handler(args)
    except (FileNotFoundError, ValueError, RunError, CheckpointError) as err:
        # a user error (bad argument, missing/locked/corrupt run or file, bad config): one line
        print(f"jiio: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions: the message names the file
        print(f"jiio: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jiio: interrupted (the last saved state is intact; rerun the same command to resume)",
              file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

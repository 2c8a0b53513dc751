"""Meta-learning at an equal training budget (issue 11): the JIIO-trained DEQ, the same DEQ with
an Adam inner loop, the MAML CNN and learn2learn's Omniglot MAML recipe, each meta-trained for
the same CPU time and scored on the same fixed meta-test tasks.

Protocol:
- every method trains from a fresh network (seed ``--seed``) on meta-train tasks of the embedded
  glyphs (5-way 1-shot, 1 query image per class), until ``--cpu-minutes`` of training CPU time
  (process CPU time of the training steps only, one thread; the loop's ``clock`` is
  ``time.process_time``, so other jobs on the machine do not shorten anyone's budget);
- methods (``--methods``):
  - ``jiio``: ``glyphs_meta_small`` (its config: 20 JIIO iterations, Jacobian penalty λ = 0.5),
    4 tasks per step, the query DEQ with 15 forward / 10 backward iterations in training;
  - ``adam``: the same DEQ and settings with an Adam inner loop over the task vector (20 steps,
    lr 0.1: the best of 0.03 / 0.1 / 0.3 / 1 on 10 meta-train tasks at initialisation);
  - ``maml``: MAML on the small CNN (3 conv blocks, 32 channels), 1 step at lr 0.4, 4 tasks
    per step, Adam at 1e-3;
  - ``maml-l2l``: learn2learn's Omniglot example: ``OmniglotFC`` (256-128-64-64), 1 step at
    lr 0.5, 32 tasks per step, Adam at 3e-3;
- scoring: the mean query accuracy on the 100 fixed tasks of ``jiio eval meta``
  (``meta_test_tasks``: meta-test classes only, 2 query images per class), each method with its
  own inner loop at test time, and for the DEQ methods the median / largest relative residual
  ``‖f(z) − z‖ / ‖z‖`` of the query solves the accuracy was computed from (at most 30
  iterations, stopping at 1e-4);
- one seed per method (the CPU budget allows no more); the test tasks are scored once, after
  training; nothing was chosen by looking at them.

Run: ``python benchmarks/meta_budget.py [--cpu-minutes 10] [--out DIR]`` (``DIR/<method>/`` keeps
each run, e.g. the ``model.pt`` shipped as ``glyphs_meta_small``; the same command again resumes
or, for a finished run, only re-scores it). ``--methods jiio --reuse OLD.json`` re-measures one
method and keeps the other rows of an earlier result with the same budget, seed and test tasks
(each row records the date and command that measured it), e.g. after a change that touches
only the JIIO-trained DEQ.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
import attrs
import torch

from jiio_tasks.meta.evaluate import evaluate
from jiio_tasks.meta.splits import meta_test_tasks
from jiio_tasks.meta.train import InnerSettings, MetaTrainConfig, _model, train
from jiio_tasks.runs import RunDir

DEQ_INNER = InnerSettings(deq_iterations=15, backward_iterations=10)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "jiio": ("JIIO-trained DEQ (glyphs_meta_small)", dict(method="jiio", meta_batch=4, inner=DEQ_INNER)),
    "adam": ("same DEQ, Adam inner loop (20 steps)", dict(method="adam", meta_batch=4, inner=DEQ_INNER)),
    "maml": ("MAML, small CNN (1 step, lr 0.4)", dict(method="maml", meta_batch=4, maml_net="cnn")),
    "maml-l2l": ("MAML, learn2learn's Omniglot recipe (OmniglotFC, 1 step, lr 0.5, 32 tasks/step)",
                 dict(method="maml", meta_batch=32, maml_net="l2l-fc", maml_lr=0.5, lr=0.003)),
}


def run_method(key: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    label, over = METHODS[key]
    cfg = MetaTrainConfig(steps=1_000_000, seed=args.seed, query_shots=1, eval_tasks=args.train_eval_tasks,
                          max_minutes=args.cpu_minutes, log_every=10, save_every=100, **over)
    final = train(RunDir(root / key), cfg, progress=False, clock=time.process_time)
    # score on the fixed tasks of `jiio eval meta` (2 query images per class), test-time inner loop
    test_cfg = attrs.evolve(cfg, query_shots=2, inner=InnerSettings())
    model = _model(test_cfg)
    state = torch.load(root / key / "state.pt", map_location="cpu", weights_only=True)["modules"]["model"]
    model.load_state_dict(state)
    tasks = meta_test_tasks(config=cfg.config, ways=cfg.ways, shots=cfg.shots, query_shots=2, count=args.eval_tasks)
    torch.manual_seed(0)
    scores = evaluate(model, tasks, test_cfg)
    row = {"label": label, "settings": {k: (attrs.asdict(v) if attrs.has(type(v)) else v) for k, v in over.items()},
           "steps": final["steps_done"], "train_cpu_seconds": final["train_seconds"],
           "accuracy": scores["accuracy"], "inner_seconds": scores["inner_seconds"],
           "query_residual_median": scores.get("query_residual_median"),
           "query_residual_max": scores.get("query_residual_max"), "checkpoint": final.get("checkpoint")}
    print(f"{key:9s} {row['steps']:6d} steps {row['train_cpu_seconds']:7.0f} s  accuracy {100 * row['accuracy']:.1f} %"
          + ("" if row["query_residual_median"] is None else
             f"  residual median {row['query_residual_median']:.1e} max {row['query_residual_max']:.1e}"),
          flush=True)
    return row


def _reused_rows(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    """The rows of ``--reuse`` for the methods not run now, each marked with the date and command
    of the run that measured it; refused if that result used another budget, seed or task count."""
    if args.reuse is None:
        return {}
    old = json.loads(Path(args.reuse).read_text(encoding="utf8"))
    mine = {"cpu_minutes": args.cpu_minutes, "eval_tasks": args.eval_tasks, "seed": args.seed}
    theirs = {k: old.get(k) for k in mine}
    if theirs != mine:
        raise SystemExit(f"--reuse {args.reuse} was measured with {theirs}, this run with {mine}")
    return {k: {"date": old.get("date"), "command": old.get("command"), **row}
            for k, row in old["rows"].items() if k not in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--methods", default="jiio,adam,maml,maml-l2l")
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="training CPU budget per method")
    parser.add_argument("--eval-tasks", type=int, default=100, help="fixed meta-test tasks scored")
    parser.add_argument("--train-eval-tasks", type=int, default=20,
                        help="tasks of the trainer's own end-of-run score (not reported here)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier result whose rows of the methods not run now are kept")
    args = parser.parse_args()
    device = C.setup(args)
    keys = args.methods.split(",")
    if any(k not in METHODS for k in keys):
        raise SystemExit(f"--methods must name methods of {sorted(METHODS)}, got {args.methods!r}")
    reused = _reused_rows(args, keys)
    command = "python benchmarks/meta_budget.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        fresh = {k: {**run_method(k, args, root), "date": time.strftime("%Y-%m-%d"), "command": command} for k in keys}
    rows = {k: fresh[k] if k in fresh else reused[k] for k in METHODS if k in fresh or k in reused}
    table = ["| method | meta-training (CPU) | steps | meta-test accuracy | query DEQ residual (median / max) |",
             "|---|---:|---:|---:|---|"]
    for row in rows.values():
        res = ("—" if row["query_residual_median"] is None
               else f"{row['query_residual_median']:.1e} / {row['query_residual_max']:.1e}")
        table.append(f"| {row['label']} | {row['train_cpu_seconds'] / 60:.1f} min | {row['steps']:,} | "
                     f"{100 * row['accuracy']:.1f} % | {res} |")
    print("\n".join(table))
    C.write("meta-budget", args, device, {
        "cpu_minutes": args.cpu_minutes, "eval_tasks": args.eval_tasks, "seed": args.seed, "rows": rows,
        "reused_from": None if args.reuse is None else str(args.reuse), "summary_markdown": "\n".join(table),
    }, command)


if __name__ == "__main__":
    main()

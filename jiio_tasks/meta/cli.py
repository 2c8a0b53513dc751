"""``jiio train|eval meta``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jiio_tasks.runs import RunDir


def _config(args: argparse.Namespace) -> Any:
    from jiio_tasks.meta.train import InnerSettings, MetaTrainConfig

    return MetaTrainConfig(
        config=args.config, method=args.method, steps=args.steps, seed=args.seed,
        meta_batch=args.meta_batch, ways=args.ways, shots=args.shots, query_shots=args.query_shots,
        lr=args.lr, eval_tasks=args.eval_tasks, max_minutes=getattr(args, "max_minutes", None),
        inner=InnerSettings(iterations=args.iterations, reg=args.reg, adam_steps=args.adam_steps,
                            adam_lr=args.adam_lr, deq_iterations=args.deq_iterations,
                            backward_iterations=args.backward_iterations,
                            normalized_x_step=False if args.plain_x_step else None),
        maml_steps=args.maml_steps, maml_lr=args.maml_lr, maml_net=args.maml_net, jac_reg=getattr(args, "jac_reg", None),
        data=args.data, data_root=args.data_root,
    )


def _train(args: argparse.Namespace) -> int:
    import torch

    from jiio_tasks.meta.train import train

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from jiio_tasks.distributed import launched

    with launched("cpu") as env:  # torchrun: gloo data-parallel over tasks (DEQ methods)
        final = train(RunDir(args.run), _config(args), progress=not args.no_progress, env=env)
    if env.is_main:
        print(json.dumps(final))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from jiio_tasks.meta.evaluate import evaluate
    from jiio_tasks.meta.splits import meta_test_tasks
    from jiio_tasks.meta.train import _model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = _config(args)
    model = _model(cfg)
    RunDir.existing(args.run).load_model(model)
    torch.manual_seed(args.seed)
    tasks = meta_test_tasks(config=cfg.config, ways=cfg.ways, shots=cfg.shots, query_shots=cfg.query_shots,
                            count=cfg.eval_tasks, data=cfg.data, data_root=cfg.data_root)
    result = evaluate(model, tasks, cfg, progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", "--run", dest="run", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--config", default="glyphs_meta_small",
                   help="zoo config name or path to a .json config file (see `jiio config --help`); "
                   "its model must have --ways classes (default: %(default)s)")
    p.add_argument("--method", choices=("jiio", "jiio-kkt", "adam", "maml"), default="jiio",
                   help="jiio: JIIO inner loop, FixedInput outer gradient (drops dx*/dθ); jiio-kkt: joint "
                   "support+query JIIO solve, ImplicitKKT gradient; adam: Adam inner loop on the same DEQ; "
                   "maml: MAML on a small network (--maml-net) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (train: initialisation and the task stream; eval: the evaluation RNG) "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=200,
                   help="total meta-training steps, counted across resumes (unused by eval) (default: %(default)s)")
    p.add_argument("--meta-batch", type=int, default=8,
                   help="tasks per meta-training step (unused by eval) (default: %(default)s)")
    p.add_argument("--ways", type=int, default=5, help="classes per task (N-way) (default: %(default)s)")
    p.add_argument("--shots", type=int, default=1,
                   help="support images per class (K-shot) (default: %(default)s)")
    p.add_argument("--query-shots", type=int, default=2,
                   help="query images per class (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help="outer learning rate (of the config's optimiser, Adam; unused by eval) (default: the "
                   "config's value; 1e-3 for maml)")
    p.add_argument("--iterations", type=int, default=None, help="JIIO iterations (default: the config's)")
    p.add_argument("--reg", type=float, default=0.01,
                   help="weight of the ‖x‖² inner term (default: %(default)s)")
    p.add_argument("--plain-x-step", action="store_true",
                   help="JIIO steps x by α_x·J_xᵀμ even where the config's x_step is 'normalized' "
                   "(default: the config's x_step)")
    p.add_argument("--deq-iterations", type=int, default=30,
                   help="DEQ solver iterations of the query images' solve (and of each Adam step) "
                   "(default: %(default)s)")
    p.add_argument("--backward-iterations", type=int, default=None,
                   help="implicit backward of the query solve (default: the config's)")
    p.add_argument("--adam-steps", type=int, default=20,
                   help="inner Adam steps on x with --method adam, each a full DEQ solve (default: %(default)s)")
    p.add_argument("--adam-lr", type=float, default=0.1,
                   help="inner Adam learning rate with --method adam (default: %(default)s)")
    p.add_argument("--maml-steps", type=int, default=1,
                   help="inner adaptation steps with --method maml (default: %(default)s)")
    p.add_argument("--maml-lr", type=float, default=0.4,
                   help="inner (fast) learning rate with --method maml (default: %(default)s)")
    p.add_argument("--maml-net", choices=("cnn", "l2l-fc"), default="cnn",
                   help="network of --method maml: cnn (3 conv blocks, 32 channels) or l2l-fc (learn2learn's "
                   "OmniglotFC; its Omniglot example also uses --maml-lr 0.5 --lr 0.003 --meta-batch 32) "
                   "(default: %(default)s)")
    p.add_argument("--eval-tasks", type=int, default=100,
                   help="fixed meta-test tasks for the accuracy (default: %(default)s)")
    p.add_argument("--data", choices=("embedded", "omniglot"), default="embedded",
                   help="task source: the embedded glyphs, or Omniglot under --data-root (background set for "
                   "meta-training, evaluation set for meta-test tasks) (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="folder holding omniglot-py/ (with --data omniglot)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (stderr)")


def register(commands: Any) -> None:
    p = commands.train.add_parser("meta", help="few-shot meta-training (JIIO / Adam DEQ / MAML)")
    _common(p)
    p.add_argument("--jac-reg", type=float, default=None,
                   help="λ of the Jacobian penalty (Hutchinson estimate of ‖∂f/∂z‖_F²/N, paper A.1) added "
                   "to the outer loss of the DEQ methods (not maml); 0 turns it off (default: the config's "
                   "jac_reg)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (resumably) after this many minutes of training time (default: no limit)")
    p.set_defaults(handler=_train)
    e = commands.eval.add_parser("meta", help="meta-test accuracy of a trained run")
    _common(e)
    e.set_defaults(handler=_eval)

"""``jiio train|eval|bench adversarial``."""

from __future__ import annotations

import argparse
from typing import Any

from jiio_tasks.runs import RunDir


def _train(args: argparse.Namespace) -> int:
    from jiio_tasks.adversarial.train import AdvTrainConfig, train
    from jiio_tasks.distributed import launched

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    cfg = AdvTrainConfig(
        config=args.config, method=args.method, steps=args.steps, seed=args.seed, eps=args.eps,
        batch_size=args.batch_size, lr=args.lr, pgd_steps=args.pgd_steps,
        jiio_iterations=args.jiio_iterations, jiio_gradient=args.jiio_gradient,
        eval_size=args.eval_size, data=args.data, data_root=args.data_root,
        max_minutes=args.max_minutes, init=args.init, jac_reg=args.jac_reg,
        lr_schedule=args.lr_schedule, shift=args.shift,
    )
    # under torchrun: one data-parallel rank (see docs/distributed.md); else a single process
    with launched(args.device) as env:
        final = train(RunDir(args.run), cfg, progress=not args.no_progress, env=env)
    if env.is_main:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from jiio_tasks.adversarial.evaluate import evaluate_runs, markdown

    payload = evaluate_runs(args.runs, args.out, size=args.size, pgd_steps=args.pgd_steps,
                            jiio_iterations=args.jiio_iterations, eps=args.eps, progress=not args.no_progress)
    print(markdown(payload["table"], payload["eps"]), end="")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from jiio_tasks.adversarial.evaluate import bench, bench_summary, load_run
    from jiio_tasks.adversarial.splits import held_out_digits
    from jiio_zoo.registry import load

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg: dict[str, Any]
    if args.run is not None:
        model, cfg = load_run(args.run)
    else:
        torch.manual_seed(args.seed)
        model = load(args.config, pretrained=False)
        cfg = {"data": "embedded", "data_root": None, "eps": model.config.solver.epsilon}
    eps = float(args.eps if args.eps is not None else cfg["eps"])
    x, y = held_out_digits(model, args.size, data=cfg["data"], data_root=cfg.get("data_root"))
    kwargs: dict[str, Any] = {}
    if args.pgd_grid is not None:
        kwargs["pgd_grid"] = tuple(args.pgd_grid)
    r = bench(model, x, y, eps, args.out, pgd_steps=args.pgd_steps, jiio_iterations=tuple(args.jiio_iterations),
              repeats=args.repeats, progress=not args.no_progress, **kwargs)
    print(bench_summary(r))
    print(f"wrote {args.out}/bench.json and {args.out}/attack_loss_vs_time.png")
    return 0


_NO_PROGRESS = "hide progress bars (stderr)"
_CONFIG_HELP = "zoo config name or path to a .json config file (see `jiio config --help`; default: %(default)s)"


def register(commands: Any) -> None:
    p = commands.train.add_parser("adversarial", help="adversarial training (clean / PGD / JIIO)")
    p.add_argument("--config", default="digits_adv_small", help=_CONFIG_HELP)
    p.add_argument("--method", choices=("clean", "pgd", "jiio"), default="jiio",
                   help="adversary that builds each batch's training examples: none (clean), PGD "
                   "(--pgd-steps) or the JIIO attack (--jiio-iterations) (default: %(default)s)")
    p.add_argument("--run-dir", "--run", dest="run", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--steps", type=int, default=300,
                   help="total training steps (batches), counted across resumes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--eps", type=float, default=None,
                   help="L2 radius of the attacks on [0, 1] pixels (default: the config's solver epsilon)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch size, split over ranks under torchrun (default: the config's value)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the config's optimiser (Adam) (default: the config's value)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate over the run: constant, or cosine decay from --lr to 0 at --steps "
                   "(default: %(default)s)")
    p.add_argument("--shift", type=int, default=0,
                   help="translate each training image by a random whole number of pixels in "
                   "[-SHIFT, SHIFT] per axis, zero filled (default: %(default)s: none)")
    p.add_argument("--jac-reg", type=float, default=None,
                   help="λ of the Jacobian penalty (Hutchinson estimate of ‖∂f/∂z‖_F²/N, paper A.1) added "
                   "to the training loss; 0 turns it off (default: the config's jac_reg)")
    p.add_argument("--pgd-steps", type=int, default=10,
                   help="PGD iterations per batch with --method pgd (default: %(default)s)")
    p.add_argument("--jiio-iterations", type=int, default=None,
                   help="JIIO attack iterations per batch with --method jiio (default: the config's value)")
    p.add_argument("--jiio-gradient", choices=("examples", "shortcut"), default="examples",
                   help="JIIO training gradient: examples = backprop through a DEQ pass at the returned "
                   "examples (exact for them); shortcut = the paper's adjoint shortcut (eq. 19) "
                   "(default: %(default)s)")
    p.add_argument("--eval-size", type=int, default=200,
                   help="test images for the final clean/PGD/JIIO accuracies (default: %(default)s)")
    p.add_argument("--data", choices=("embedded", "embedded+mnist", "mnist", "cifar10"), default="embedded",
                   help="dataset: the embedded digits (no download); embedded+mnist: scored on the embedded "
                   "test digits, trained on the MNIST training set under --data-root less those digits "
                   "(59,000); or MNIST / CIFAR-10 from --data-root (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="local dataset root, required by --data embedded+mnist/mnist/cifar10 for training "
                   "(default: none)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (resumably) after this many minutes of training time (default: no limit)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (per process) (default: torch's own choice)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (gloo under torchrun) or cuda (cuda:LOCAL_RANK, nccl under torchrun) "
                   "(default: %(default)s)")
    p.add_argument("--init", default=None,
                   help="start a new run from this jiio_zoo checkpoint's weights (ignored when resuming; "
                   "default: a fresh initialisation)")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    p.set_defaults(handler=_train)

    e = commands.eval.add_parser("adversarial", help="robust-accuracy grid (Table 5) of trained runs")
    e.add_argument("runs", nargs="+", help="run directories written by `jiio train adversarial`")
    e.add_argument("--out", required=True, help="directory for robust.json and robust.md")
    e.add_argument("--size", type=int, default=500,
                   help="test images (a fixed random subset, the same for every run) (default: %(default)s)")
    e.add_argument("--pgd-steps", type=int, default=20, help="iterations of the PGD attack (default: %(default)s)")
    e.add_argument("--jiio-iterations", type=int, default=None,
                   help="iterations of the JIIO attack (default: each run's config's jiio_iterations)")
    e.add_argument("--eps", type=float, default=None,
                   help="L2 attack radius on [0, 1] pixels (default: each run's training eps)")
    e.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    e.set_defaults(handler=_eval)

    b = commands.bench.add_parser(
        "adversarial", help="JIIO attack vs the cheapest PGD-k at PGD-N's best success: CPU-time ratio",
        description="Scores every attack by success and CE at a tight DEQ equilibrium of its images; sweeps "
        "each PGD-k's step size until the best is interior; target = the best success of PGD-N "
        "(--pgd-steps); times the cheapest PGD-k reaching it against JIIO-k* (the fewest iterations "
        "from which on JIIO stays at the target) by CPU time over --repeats interleaved pairs.")
    b.add_argument("--run-dir", "--run", dest="run", default=None, help="a trained run directory (default: a fresh --config model)")
    b.add_argument("--config", default="digits_adv_small",
                   help="zoo config name or path to a .json config file (see `jiio config --help`) of the "
                   "freshly initialised model benchmarked without --run-dir (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0,
                   help="seed of the fresh --config model's initialisation (default: %(default)s)")
    b.add_argument("--eps", type=float, default=None,
                   help="L2 attack radius on [0, 1] pixels (default: the run's training eps, or the "
                   "config's solver epsilon)")
    b.add_argument("--size", type=int, default=100,
                   help="held-out test images in the attacked batch: the first of the fixed subset that "
                   "`jiio eval adversarial` uses (default: %(default)s)")
    b.add_argument("--pgd-steps", type=int, default=20,
                   help="N of the reference PGD-N: its best success (over step sizes) is the target "
                   "(default: %(default)s)")
    b.add_argument("--pgd-grid", type=int, nargs="+", default=None,
                   help="PGD step counts k to sweep, each at its best step size (--pgd-steps is added) "
                   "(default: 1 2 3 5 7 10 14 20 28 40)")
    b.add_argument("--jiio-iterations", type=int, nargs="+", default=[10, 20, 40, 80],
                   help="JIIO iteration counts to score; k* is the smallest of them from which on JIIO's "
                   "success stays at the target (default: %(default)s)")
    b.add_argument("--repeats", type=int, default=3,
                   help="interleaved timed pairs (PGD, JIIO) after one warm-up pair (default: %(default)s)")
    b.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice)")
    b.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    b.add_argument("--out", required=True, help="directory for bench.json and attack_loss_vs_time.png")
    b.set_defaults(handler=_bench)

"""``jiio train|eval|sample generative``, ``jiio train|eval inverse``, the baselines
(``jiio train|eval vae``, ``jiio train mdeq-vae``), the Fréchet feature net
(``jiio train features``) and the Table-1 comparison (``jiio eval table1``).

The embedded faces are the default data (no download); ``--data-root`` selects CelebA-64 from a
local root (use a CelebA config). Metrics are on [0, 1] images; Fréchet distances record their
feature space (Inception-v3 pool3 with ``--inception PATH``, else the shipped rotation net).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_CONFIG_HELP = "zoo config name or path to a .json config file (see `jiio config --help`"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="CelebA root (default: the embedded faces; not accepted by train features)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small convolutions are slower with more on shared cores)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: torch's global seed, and the seed of training, corruptions and sampling "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (stderr)")


def _train_args(p: argparse.ArgumentParser, default_config: str) -> None:
    p.add_argument("--config", default=default_config,
                   help=_CONFIG_HELP + "); a fresh model is built from it (default: %(default)s)")
    p.add_argument("--run-dir", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--steps", type=int, required=True, help="total training steps, counted across resumes")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the config's value)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's value)")
    p.add_argument("--jac-reg", type=float, default=None, help="λ of the Jacobian penalty (default: config)")
    p.add_argument("--iterations", type=int, default=None, help="JIIO iterations per step (default: config)")
    p.add_argument("--save-every", type=int, default=10,
                   help="checkpoint the run every this many steps (and at the end) (default: %(default)s)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (same config)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to train; under torchrun each process uses cuda:LOCAL_RANK (nccl) or the CPU "
                   "(gloo) (default: %(default)s)")
    _common(p)


def register(commands: Any) -> None:
    from jiio_tasks.generative.operators import CORRUPTIONS

    p = commands.train.add_parser("generative", help="train a decoder-only MDEQ with JIIO latents (eq. 20)")
    _train_args(p, "faces_gen_small")
    p.set_defaults(handler=_train_generative)

    p = commands.train.add_parser("inverse", help="train a supervised JIIO inverse-problem model (eq. 24)")
    _train_args(p, "faces_gen_small")
    p.add_argument("--task", choices=CORRUPTIONS, default="denoise0.2",
                   help="corruption to invert: Gaussian noise σ=0.2/0.4, inpainting or blur (default: %(default)s)")
    p.add_argument("--outer", choices=("kkt", "fixed-input"), default="kkt",
                   help="outer gradient. kkt: exact implicit gradient; fixed-input: ignores dx*/dθ (cheaper) "
                   "(default: %(default)s)")
    p.set_defaults(handler=_train_inverse)

    p = commands.train.add_parser("vae", help="train the baseline ConvVAE sized like a zoo decoder")
    p.add_argument("--config", default="faces_gen_small",
                   help="zoo decoder whose size and data to match: " + _CONFIG_HELP + ") (default: %(default)s)")
    p.add_argument("--match", choices=("decoder", "total"), default="decoder",
                   help="match the VAE's decoder (default) or whole VAE to the zoo decoder's parameter count")
    p.add_argument("--run-dir", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--steps", type=int, required=True, help="total training steps")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds of wall time (default: no limit)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--beta", type=float, default=1.0,
                   help="weight of the KL term in the negative ELBO (default: %(default)s)")
    _common(p)
    p.set_defaults(handler=_train_vae)

    p = commands.eval.add_parser("vae", help="held-out reconstruction of a trained baseline VAE")
    p.add_argument("--config", default="faces_gen_small",
                   help="the --config the VAE was trained with: " + _CONFIG_HELP + ") (default: %(default)s)")
    p.add_argument("--match", choices=("decoder", "total"), default="decoder",
                   help="the --match the VAE was trained with (default: %(default)s)")
    p.add_argument("--run-dir", required=True, help="the VAE's run directory")
    p.add_argument("--count", type=int, default=20, help="held-out images to reconstruct (default: %(default)s)")
    _common(p)
    p.set_defaults(handler=_eval_vae)

    p = commands.eval.add_parser("generative", help="held-out reconstruction and JIIO vs Adam inversion")
    p.add_argument("--weights", required=True, help="checkpoint (model.pt of a run)")
    p.add_argument("--out", required=True, help="directory for metrics.json and PNGs")
    p.add_argument("--iterations", type=int, default=100, help="JIIO iterations at test time (default: %(default)s)")
    p.add_argument("--adam-steps", type=int, default=40,
                   help="steps of the Adam latent-inversion baseline, each a full DEQ solve (default: %(default)s)")
    p.add_argument("--adam-lrs", type=_float_list, default=(0.1, 0.2, 0.4, 0.8),
                   help="comma-separated starting grid of the Adam baseline's learning rate; the grid "
                   "is extended until the best rate is interior (default: 0.1,0.2,0.4,0.8)")
    p.add_argument("--count", type=int, default=20, help="held-out images to use (default: %(default)s)")
    _common(p)
    p.set_defaults(handler=_eval_generative)

    p = commands.eval.add_parser("inverse", help="median PSNR of unsupervised (and supervised) inversion")
    p.add_argument("--weights", required=True, help="generator checkpoint (unsupervised rows)")
    p.add_argument("--supervised", action="append", default=[], metavar="TASK=PATH",
                   help="a supervised checkpoint for TASK (repeatable)")
    p.add_argument("--out", required=True, help="directory for the metrics and PNGs")
    p.add_argument("--iterations", type=int, default=100, help="JIIO iterations at test time (default: %(default)s)")
    p.add_argument("--count", type=int, default=20, help="held-out images to use (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", choices=CORRUPTIONS, default=list(CORRUPTIONS),
                   help="corruptions to evaluate, one or more (default: all)")
    _common(p)
    p.set_defaults(handler=_eval_inverse)

    p = commands.sample.add_parser(
        "generative", help="fit a post-hoc density (GMM or VAE) on inferred latents, sample, Fréchet distance")
    p.add_argument("--weights", required=True, help="JIIO-trained decoder checkpoint (model.pt of a run)")
    p.add_argument("--out", required=True, help="directory for samples.png and the metrics")
    p.add_argument("--density", choices=("gmm", "vae"), default="gmm",
                   help="post-hoc density on the JIIO latents: Gaussian mixture (default) or a small MLP VAE")
    p.add_argument("--components", type=int, default=5, help="GMM components (default: %(default)s)")
    p.add_argument("--count", type=int, default=16, help="samples in the grid (default: %(default)s)")
    p.add_argument("--frechet-samples", type=int, default=200,
                   help="samples for the Fréchet distance to the training images (0: skip it) "
                   "(default: %(default)s)")
    p.add_argument("--iterations", type=int, default=100,
                   help="JIIO iterations inferring the training latents (default: %(default)s)")
    _feature_args(p)
    _common(p)
    p.set_defaults(handler=_sample_generative)

    p = commands.train.add_parser(
        "mdeq-vae", help="train the MDEQ-VAE baseline (conv encoder + the zoo MDEQ decoder, ELBO)")
    p.add_argument("--config", default="faces_gen_small",
                   help="zoo decoder config (fresh weights): " + _CONFIG_HELP + ") (default: %(default)s)")
    p.add_argument("--run-dir", required=True, help="run directory (resumed if it holds a state)")
    p.add_argument("--steps", type=int, required=True, help="total training steps")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds of wall time (default: no limit)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--beta", type=float, default=1.0,
                   help="weight of the KL term in the negative ELBO (default: %(default)s)")
    p.add_argument("--jac-reg", type=float, default=None, help="λ of the Jacobian penalty (default: config)")
    p.add_argument("--encoder-width", type=int, default=16,
                   help="base channel width of the conv encoder (default: %(default)s)")
    _common(p)
    p.set_defaults(handler=_train_mdeq_vae)

    p = commands.train.add_parser(
        "features", help="train the rotation-prediction feature net used for Fréchet distances")
    p.add_argument("--out", required=True, help="weights file to write (shipped: jiio_tasks/data/embedded/faces_rotnet.pt)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3,
                   help="initial Adam learning rate, cosine-decayed (default: %(default)s)")
    _common(p)
    p.set_defaults(handler=_train_features)

    p = commands.eval.add_parser(
        "table1", help="Table-1-shaped comparison: JIIO decoder, ConvVAE, MDEQ-VAE (+ test-time JIIO)")
    p.add_argument("--weights", default=None, help="JIIO-trained decoder checkpoint (default: shipped faces_gen_small)")
    p.add_argument("--vae-run", default=None, help="run directory of `jiio train vae` (ConvVAE row; default: no such row)")
    p.add_argument("--vae-match", choices=("decoder", "total"), default="decoder",
                   help="the --match the ConvVAE was trained with (default: %(default)s)")
    p.add_argument("--mdeq-vae-run", default=None, help="run directory of `jiio train mdeq-vae` (MDEQ-VAE rows; default: none)")
    p.add_argument("--out", required=True, help="directory for the table, metrics and PNGs")
    p.add_argument("--iterations", type=int, default=100, help="JIIO iterations at test time (default: %(default)s)")
    p.add_argument("--samples", type=int, default=200,
                   help="generated images per Fréchet distance (default: %(default)s)")
    p.add_argument("--components", type=int, default=5, help="GMM components (default: %(default)s)")
    p.add_argument("--count", type=int, default=20, help="held-out images (default: %(default)s)")
    _feature_args(p)
    _common(p)
    p.set_defaults(handler=_eval_table1)


def _feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception", default=None, metavar="PATH",
                   help="torchvision Inception-v3 state dict: Fréchet distances become FID (pool3, 2048-d) "
                   "(default: none, use the rotation net)")
    p.add_argument("--rotnet", default=None, metavar="PATH",
                   help="rotation-net weights for the default feature space (default: the shipped faces_rotnet.pt)")


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def _load_generator(name_or_path: str, *, weights: bool) -> Any:
    """A checkpoint's model (``weights``) or a fresh zoo model of a config."""
    from jiio_zoo import load
    from jiio_zoo.checkpoint import load_model

    if weights:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist (train one with `jiio train generative`)")
        return load_model(path)
    return load(name_or_path, pretrained=False)


def _shape(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the :mod:`~jiio_tasks.generative.splits` functions for ``model``."""
    from jiio_tasks.generative.problem import image_shape

    c, h, _ = image_shape(model)
    return {"size": h, "channels": c, "data_root": args.data_root}


def _held_out(model: Any, args: argparse.Namespace) -> Any:
    """The ``--count`` held-out faces every ``jiio eval`` command scores on."""
    from jiio_tasks.generative.splits import held_out_faces

    return held_out_faces(args.count, **_shape(model, args))


def _model_and_source(name_or_path: str, args: argparse.Namespace, *, weights: bool) -> Any:
    """The model and its training stream (:func:`~jiio_tasks.generative.splits.training_stream`)."""
    from jiio_tasks.generative.splits import training_stream

    model = _load_generator(name_or_path, weights=weights)
    return model, training_stream(**_shape(model, args))


def _train(args: argparse.Namespace, mode: str) -> int:
    from jiio_tasks.generative.train import TrainSettings, train
    from jiio_tasks.runs import RunDir

    _setup(args)
    model, source = _model_and_source(args.config, args, weights=False)
    if args.init is not None:
        from jiio_zoo.checkpoint import load_into

        if not Path(args.init).is_file():
            raise FileNotFoundError(f"--init checkpoint {args.init} does not exist")
        load_into(model, args.init)
    settings = TrainSettings(
        steps=args.steps,
        mode=mode,  # type: ignore[arg-type]
        corruption=getattr(args, "task", "denoise0.2"),
        outer=getattr(args, "outer", "shortcut"),
        batch_size=args.batch_size,
        learning_rate=args.lr,
        jac_reg=args.jac_reg,
        iterations=args.iterations,
        save_every=args.save_every,
        seed=args.seed,
    )
    from jiio_tasks.distributed import launched

    with launched(args.device) as env:
        final = train(model, source, RunDir(args.run_dir), settings, progress=not args.no_progress, env=env)
    if env.is_main:
        print(json.dumps(final, indent=2))
    return 0


def _train_generative(args: argparse.Namespace) -> int:
    return _train(args, "generative")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _train_inverse(args: argparse.Namespace) -> int:
    return _train(args, "supervised")


def _eval_generative(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.evaluate import evaluate_generative

    _setup(args)
    model = _load_generator(args.weights, weights=True)
    result = evaluate_generative(
        model, _held_out(model, args), Path(args.out), iterations=args.iterations,
        adam_steps=args.adam_steps, adam_lrs=args.adam_lrs, progress=not args.no_progress,
    )
    print(json.dumps(result, indent=2))
    bench = result["jiio_vs_adam"]
    if bench.get("speedup") is not None:
        print(f"JIIO-{bench['jiio_iterations_to_adam_loss']} vs Adam-{bench['adam_steps']} (lr {bench['adam_lr']:g}), "
              f"both scored at equilibrium: {bench['speedup']:.1f}x CPU time (min {bench['ratio_min']:.1f}, "
              f"max {bench['ratio_max']:.1f})", file=sys.stderr)
    else:
        print(f"JIIO did not reach Adam-{bench['adam_steps']}'s loss at equilibrium within "
              f"{args.iterations} iterations: no speed-up", file=sys.stderr)
    return 0


def _eval_inverse(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.evaluate import evaluate_inverse
    from jiio_zoo.checkpoint import load_model

    _setup(args)
    model = _load_generator(args.weights, weights=True)
    supervised = {}
    for item in args.supervised:
        task, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--supervised expects TASK=PATH, got {item!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"supervised weights {path} do not exist")
        supervised[task] = load_model(path)
    result = evaluate_inverse(model, _held_out(model, args), Path(args.out), supervised=supervised,
                              tasks=tuple(args.tasks), iterations=args.iterations, seed=args.seed,
                              progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _sample_generative(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.evaluate import sample_generative
    from jiio_tasks.generative.features import feature_space
    from jiio_tasks.generative.splits import training_faces

    _setup(args)
    model = _load_generator(args.weights, weights=True)
    train_images = training_faces(**_shape(model, args))
    features = feature_space(args.inception, args.rotnet) if args.frechet_samples > 0 else None
    result = sample_generative(model, train_images, Path(args.out),
                               components=args.components, count=args.count,
                               iterations=args.iterations, seed=args.seed, density=args.density,
                               features=features, frechet_samples=max(args.frechet_samples, 2),
                               progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _train_mdeq_vae(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.mdeq_vae import MDEQVAE, train_mdeq_vae
    from jiio_tasks.runs import RunDir

    _setup(args)
    decoder, source = _model_and_source(args.config, args, weights=False)
    vae = MDEQVAE(decoder, encoder_width=args.encoder_width)
    final = train_mdeq_vae(vae, source, RunDir(args.run_dir), steps=args.steps, batch_size=args.batch_size,
                           learning_rate=args.lr, beta=args.beta, jac_reg=args.jac_reg,
                           seconds=args.seconds, progress=not args.no_progress,
                           describe={"parameters": sum(p.numel() for p in vae.parameters()),
                                     "decoder_parameters": sum(p.numel() for p in decoder.parameters())})
    print(json.dumps(final, indent=2))
    return 0


def _train_features(args: argparse.Namespace) -> int:
    import sys

    from jiio_tasks.generative.features import RotationNet, train_rotation_net
    from jiio_tasks.generative.splits import held_out_faces, training_stream

    if getattr(args, "data_root", None) is not None:
        raise ValueError(
            f"--data-root {args.data_root!r}: 'jiio train features' trains the shipped feature net on "
            "the embedded faces only; drop --data-root (for CelebA, pass Inception weights to "
            "'jiio sample generative --inception PATH' instead)"
        )
    _setup(args)
    train = training_stream(size=RotationNet.size, channels=1)
    test = held_out_faces(None, size=RotationNet.size, channels=1)
    command = "jiio " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("jiio") else ""
    result = train_rotation_net(train, test, args.out, steps=args.steps,
                                batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                                command=command, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _load_mdeq_vae(run_dir: str) -> Any:
    from jiio_tasks.generative.mdeq_vae import MDEQVAE
    from jiio_tasks.runs import RunDir
    from jiio_zoo import load

    run = RunDir.existing(run_dir, flag="--mdeq-vae-run")
    config = run.read_metrics().get("config", {})
    vae = MDEQVAE(load(config.get("decoder_config", "faces_gen_small"), pretrained=False),
                  encoder_width=int(config.get("encoder_width", 16)))
    run.load_model(vae)
    return vae


def _eval_table1(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.features import feature_space
    from jiio_tasks.generative.splits import training_faces
    from jiio_tasks.generative.table import generative_table
    from jiio_tasks.runs import RunDir
    from jiio_zoo import load
    from jiio_zoo.checkpoint import load_model

    _setup(args)
    if args.weights is None:
        model = load("faces_gen_small")
    else:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights} does not exist")
        model = load_model(args.weights)
    test = _held_out(model, args)
    train = training_faces(**_shape(model, args))
    conv = None
    if args.vae_run is not None:
        args.config, args.match = model.config.name, args.vae_match
        conv, _, _, _ = _vae_for(args)
        RunDir.existing(args.vae_run, flag="--vae-run").load_model(conv)
    mdeq = _load_mdeq_vae(args.mdeq_vae_run) if args.mdeq_vae_run is not None else None
    result = generative_table(test, train, feature_space(args.inception, args.rotnet), Path(args.out),
                              jiio=model, conv_vae=conv, mdeq_vae=mdeq, iterations=args.iterations,
                              samples=args.samples, components=args.components, seed=args.seed,
                              progress=not args.no_progress)
    print(result["table"])
    return 0


def _vae_for(args: argparse.Namespace) -> Any:
    from jiio_tasks.generative.problem import image_shape
    from jiio_tasks.generative.vae import ConvVAE
    from jiio_zoo import load
    from jiio_zoo.configs import MDEQConfig

    model = load(args.config, pretrained=False)
    c, h, _ = image_shape(model)
    cfg = model.config.model
    latent = cfg.latent_dim if isinstance(cfg, MDEQConfig) else 32
    target = sum(p.numel() for p in model.parameters())
    width = 1
    while True:
        vae = ConvVAE(h, c, latent, width)
        size = vae.decoder_parameters() if args.match == "decoder" else sum(p.numel() for p in vae.parameters())
        if size >= target:
            return vae, target, h, c
        width += 1


def _train_vae(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.splits import training_stream
    from jiio_tasks.generative.vae import train_vae
    from jiio_tasks.runs import RunDir

    _setup(args)
    vae, target, h, c = _vae_for(args)
    source = training_stream(size=h, channels=c, data_root=args.data_root)
    final = train_vae(vae, source, RunDir(args.run_dir), steps=args.steps, batch_size=args.batch_size,
                      learning_rate=args.lr, beta=args.beta, seconds=args.seconds, progress=not args.no_progress,
                      describe={"match": args.match, "zoo_parameters": target,
                                "vae_parameters": sum(p.numel() for p in vae.parameters()),
                                "vae_decoder_parameters": vae.decoder_parameters()})
    print(json.dumps(final, indent=2))
    return 0


def _eval_vae(args: argparse.Namespace) -> int:
    import torch

    from jiio_tasks.generative.operators import mse, psnr
    from jiio_tasks.generative.splits import held_out_faces
    from jiio_tasks.progress import progress_bar
    from jiio_tasks.runs import RunDir

    _setup(args)
    vae, _, h, c = _vae_for(args)
    run = RunDir.existing(args.run_dir)
    run.load_model(vae)
    images = held_out_faces(args.count, size=h, channels=c, data_root=args.data_root)
    vae.eval()
    parts, done = images.split(64), []
    with torch.no_grad(), progress_bar(len(parts), "VAE reconstruction", enabled=not args.no_progress,
                                       unit="chunk") as bar:
        for part in parts:
            done.append(vae.reconstruct(part))
            bar.update()
    recon = torch.cat(done)
    result = {"data_range": "[0, 1]", "images": int(images.shape[0]),
              "reconstruction_mse_mean": float(mse(recon, images).mean()),
              "reconstruction_psnr_mean": float(psnr(recon, images).mean()),
              "reconstruction_psnr_median": float(psnr(recon, images).median())}
    run.update(evaluation=result)
    print(json.dumps(result, indent=2))
    return 0

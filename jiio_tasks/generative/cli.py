"""``jiio train|eval|sample generative``, the baselines
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

from jiio_tasks.imaging.arguments import (
    CONFIG_HELP,
    common_args,
    held_out,
    image_kwargs,
    load_generator,
    model_and_source,
    run_training,
    settings_kwargs,
    setup,
    train_args,
)

__all__ = ["register"]



def register(commands: Any) -> None:

    p = commands.train.add_parser("generative", help="train a decoder-only MDEQ with JIIO latents (eq. 20)")
    train_args(p, "faces_gen_small")
    p.set_defaults(handler=_train_generative)

    p = commands.train.add_parser("vae", help="train the baseline ConvVAE sized like a zoo decoder")
    p.add_argument("--config", default="faces_gen_small",
                   help="zoo decoder whose size and data to match: " + CONFIG_HELP + ") (default: %(default)s)")
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
    common_args(p)
    p.set_defaults(handler=_train_vae)

    p = commands.eval.add_parser("vae", help="held-out reconstruction of a trained baseline VAE")
    p.add_argument("--config", default="faces_gen_small",
                   help="the --config the VAE was trained with: " + CONFIG_HELP + ") (default: %(default)s)")
    p.add_argument("--match", choices=("decoder", "total"), default="decoder",
                   help="the --match the VAE was trained with (default: %(default)s)")
    p.add_argument("--run-dir", required=True, help="the VAE's run directory")
    p.add_argument("--count", type=int, default=20, help="held-out images to reconstruct (default: %(default)s)")
    common_args(p)
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
    common_args(p)
    p.set_defaults(handler=_eval_generative)

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
    common_args(p)
    p.set_defaults(handler=_sample_generative)

    p = commands.train.add_parser(
        "mdeq-vae", help="train the MDEQ-VAE baseline (conv encoder + the zoo MDEQ decoder, ELBO)")
    p.add_argument("--config", default="faces_gen_small",
                   help="zoo decoder config (fresh weights): " + CONFIG_HELP + ") (default: %(default)s)")
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
    common_args(p)
    p.set_defaults(handler=_train_mdeq_vae)

    p = commands.train.add_parser(
        "features", help="train the rotation-prediction feature net used for Fréchet distances")
    p.add_argument("--out", required=True, help="weights file to write (shipped: jiio_tasks/data/embedded/faces_rotnet.pt)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3,
                   help="initial Adam learning rate, cosine-decayed (default: %(default)s)")
    common_args(p)
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
    common_args(p)
    p.set_defaults(handler=_eval_table1)


def _feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception", default=None, metavar="PATH",
                   help="torchvision Inception-v3 state dict: Fréchet distances become FID (pool3, 2048-d) "
                   "(default: none, use the rotation net)")
    p.add_argument("--rotnet", default=None, metavar="PATH",
                   help="rotation-net weights for the default feature space (default: the shipped faces_rotnet.pt)")


def _train_generative(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.train import TrainSettings, train

    return run_training(args, train, TrainSettings(**settings_kwargs(args)))


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _eval_generative(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.evaluate import evaluate_generative

    setup(args)
    model = load_generator(args.weights, weights=True)
    result = evaluate_generative(
        model, held_out(model, args), Path(args.out), iterations=args.iterations,
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


def _sample_generative(args: argparse.Namespace) -> int:
    from jiio_tasks.generative.evaluate import sample_generative
    from jiio_tasks.generative.features import feature_space
    from jiio_tasks.imaging.splits import training_faces

    setup(args)
    model = load_generator(args.weights, weights=True)
    train_images = training_faces(**image_kwargs(model, args))
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

    setup(args)
    decoder, source = model_and_source(args.config, args, weights=False)
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
    from jiio_tasks.imaging.splits import held_out_faces, training_stream

    if getattr(args, "data_root", None) is not None:
        raise ValueError(
            f"--data-root {args.data_root!r}: 'jiio train features' trains the shipped feature net on "
            "the embedded faces only; drop --data-root (for CelebA, pass Inception weights to "
            "'jiio sample generative --inception PATH' instead)"
        )
    setup(args)
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
    from jiio_tasks.generative.table import generative_table
    from jiio_tasks.imaging.splits import training_faces
    from jiio_tasks.runs import RunDir
    from jiio_zoo import load
    from jiio_zoo.checkpoint import load_model

    setup(args)
    if args.weights is None:
        model = load("faces_gen_small")
    else:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights} does not exist")
        model = load_model(args.weights)
    test = held_out(model, args)
    train = training_faces(**image_kwargs(model, args))
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
    from jiio_tasks.generative.vae import ConvVAE
    from jiio_tasks.imaging.problem import image_shape
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
    from jiio_tasks.generative.vae import train_vae
    from jiio_tasks.imaging.splits import training_stream
    from jiio_tasks.runs import RunDir

    setup(args)
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

    from jiio_tasks.imaging.operators import mse, psnr
    from jiio_tasks.imaging.splits import held_out_faces
    from jiio_tasks.progress import progress_bar
    from jiio_tasks.runs import RunDir

    setup(args)
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

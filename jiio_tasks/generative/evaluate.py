"""Evaluation of the generative family: held-out reconstruction, JIIO vs Adam latent inversion
(Fig. 3, Table 3), and sampling from a post-hoc density (Gaussian mixture or a
small VAE on the latents) with the Fréchet distance of the samples.

All metrics are on [0, 1] images (PSNR data range 1). Times are wall-clock seconds on the
machine that runs them; per-iteration times in the cost-vs-time curves are the run's total time
spread evenly over its iterations (each JIIO iteration is one augmented-map evaluation, each
Adam step one forward and one backward DEQ solve).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from jiio_core import Adam, optimize_input
from jiio_tasks.generative.density import fit_gmm, fit_latent_vae
from jiio_tasks.generative.features import FeatureSpace
from jiio_tasks.generative.frechet import frechet_distance, gaussian_stats
from jiio_tasks.imaging.data import from_model, to_model
from jiio_tasks.imaging.inversion import activation, decode_latents, infer, save_grid
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.operators import mse, psnr
from jiio_tasks.imaging.problem import jiio_problem
from jiio_tasks.progress import progress_bar
from jiio_tasks.runs import RunDir
from jiio_tasks.speed import compare, paired_ratio
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import deq_solver

__all__ = [
    "evaluate_generative",
    "fit_density",
    "image_frechet",
    "jiio_vs_adam",
    "sample_generative",
]


def _running_best(trace: Tensor) -> Tensor:
    """Per-sample best-so-far of a ``(T, B)`` cost trace (NaN = frozen sample: carried)."""
    out = trace.clone()
    best = torch.full_like(trace[0], math.inf)
    for k in range(trace.shape[0]):
        row = torch.where(torch.isnan(trace[k]), best, trace[k])
        best = torch.minimum(best, row)
        out[k] = best
    return out


JIIO_ITERATIONS: tuple[int, ...] = (*range(4, 33, 2), 36, 40, 48, 56, 64, 80, 100)
"""The JIIO iteration counts [`jiio_vs_adam`][jiio_tasks.generative.evaluate.jiio_vs_adam] scores (up to its ``iterations``)."""


def jiio_vs_adam(
    model: ZooModel,
    images: Tensor,
    *,
    iterations: int = 100,
    adam_steps: int = 40,
    adam_lrs: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
    repeats: int = 3,
    equilibrium_tol: float = 1e-5,
    plot: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    adam_reference: tuple[float, dict[float, float]] | None = None,
    time_it: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Latent inversion of ``images`` ([0, 1]) by JIIO and by Adam over the DEQ (each step a
    full forward and backward solve), compared by the fair procedure of
    [`jiio_tasks.speed`][jiio_tasks.speed]: both scored by the per-pixel MSE at the DEQ equilibrium of the
    latents they return (re-solved to ``equilibrium_tol``); Adam-``adam_steps``'s learning rate
    swept from ``adam_lrs`` until the best is interior; ``k*`` = the fewest JIIO iterations
    (of [`JIIO_ITERATIONS`][jiio_tasks.generative.evaluate.JIIO_ITERATIONS] up to ``iterations``) from which on JIIO's score stays at or
    below the best Adam's; both then timed by CPU time over ``repeats`` interleaved runs.
    The JIIO solve's cost is also given in plain DEQ forward solves (the config's solver, at
    JIIO's latents): JIIO-``k*`` and the forward solve timed alternately, at least 5 pairs, the
    median ratio with its min–max.
    ``overrides`` change JIIO's solve settings (see [`jiio_problem`][jiio_tasks.imaging.problem.jiio_problem]).
    ``adam_reference`` reuses the ``(adam_lr, adam_lr_sweep)`` of an earlier call on the same
    images (to compare several JIIO settings against one Adam sweep); ``time_it=False`` skips
    the timing (then only ``k*`` and the scores are returned)."""
    y = to_model(images, activation(model))
    model.eval()
    objective = MeasurementObjective(model.head)
    deq = deq_solver(model)
    x0 = torch.zeros(y.shape[0], *model.x_shape, dtype=y.dtype, device=y.device)
    scorer = jiio_problem(model, objective, iterations=1)

    def score(x: Tensor) -> float:
        return float(scorer.equilibrium(y, x, tol=equilibrium_tol, max_iter=500).loss.mean())

    def adam(lr: float) -> Tensor:
        x: Tensor = optimize_input(model.layer, objective, y, x0, Adam(lr), adam_steps, deq=deq).x
        return x

    def jiio(k: int) -> Tensor:
        with torch.no_grad():
            x: Tensor = jiio_problem(model, objective, iterations=k, tol=0.0, overrides=overrides).solve(y).x
        return x

    ks = [k for k in JIIO_ITERATIONS if k < iterations] + [iterations]
    cmp = compare(adam, jiio, score, step_sizes=adam_lrs, iterations=ks, repeats=repeats,
                  reference=adam_reference, time_it=time_it, progress=progress)
    k_star = cmp["jiio_iterations_to_baseline_loss"]
    jiio_scores = {int(k): v for k, v in cmp["jiio_scores"].items()}
    target = cmp["baseline_loss"]
    best_lr = cmp["baseline_step_size"]
    result: dict[str, Any] = {
        "images": int(y.shape[0]),
        "score": f"per-pixel MSE at the DEQ equilibrium of the returned latents (tol {equilibrium_tol:g})",
        "adam_steps": adam_steps,
        "adam_lr": best_lr,
        "adam_lr_sweep": cmp["baseline_sweep"],
        "adam_loss": target,
        "jiio_scores": cmp["jiio_scores"],
        "jiio_iterations_to_adam_loss": k_star,
        "adam_reference": cmp["reference"],
    }
    if "ratio_median" in cmp:
        x_star = jiio(k_star)
        # JIIO-k* against one plain forward solve at its latents, timed alternately (the pair's
        # ratio, so that drifts of the machine's speed between the two cancel)
        pair = paired_ratio(lambda: jiio(k_star), lambda: deq.solve(model.layer, x_star), repeats=max(repeats, 5))
        fwd = statistics.median(pair.jiio_seconds)
        result.update({
            "jiio_loss": cmp["jiio_loss"],
            **{k: v for k, v in cmp.items() if k.startswith(("baseline_cpu", "jiio_cpu", "ratio_"))},
            "speedup": cmp["ratio_median"],
            "forward_solve_cpu_seconds": fwd,
            "jiio_in_forward_solves": pair.median,
            "jiio_in_forward_solves_min": min(pair.ratios),
            "jiio_in_forward_solves_max": max(pair.ratios),
            "adam_in_forward_solves": cmp["baseline_cpu_median"] / fwd,
        })
    if plot is not None:
        per_iter = (result["jiio_cpu_median"] / k_star) if "speedup" in result else None
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if per_iter is not None:
            ax.plot([k * per_iter for k in jiio_scores], list(jiio_scores.values()), "o-", ms=3,
                    label="JIIO, k iterations")
            ax.plot([result["baseline_cpu_median"]], [target], "s", label=f"Adam-{adam_steps} (lr {best_lr:g})")
            ax.set_xlabel("CPU time (s)")
        else:
            ax.plot(list(jiio_scores), list(jiio_scores.values()), "o-", ms=3, label="JIIO")
            ax.set_xlabel("JIIO iterations")
        ax.axhline(target, color="gray", lw=0.6, ls="--", label="best Adam, at equilibrium")
        ax.set_ylabel("MSE at equilibrium")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title(f"{model.name}: latent inversion of {y.shape[0]} images", fontsize=9)
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=120)
        plt.close(fig)
        result["plot"] = str(plot)
    return result


def evaluate_generative(
    model: ZooModel,
    images: Tensor,
    out: Path,
    *,
    iterations: int = 100,
    adam_steps: int = 40,
    adam_lrs: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
    bench_images: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Held-out reconstruction MSE/PSNR by JIIO (``iterations``), a reconstruction grid, and
    the JIIO vs Adam inversion benchmark with its plot; written to ``out/metrics.json``.
    ``progress`` shows bars on stderr: the reconstruction's chunks, then the benchmark's runs."""
    act = activation(model)
    t0 = time.perf_counter()
    _, recon, _ = infer(model, to_model(images, act), iterations=iterations, progress=progress,
                        desc="JIIO reconstruction")
    seconds = time.perf_counter() - t0
    recon01 = from_model(recon, act).clamp(0, 1)
    err = mse(recon01, images)
    ps = psnr(recon01, images)
    out.mkdir(parents=True, exist_ok=True)
    save_grid([images[:16], recon01[:16]], out / "reconstructions.png", "top: held-out, bottom: JIIO")
    result: dict[str, Any] = {
        "model": model.name,
        "data_range": "[0, 1]",
        "images": int(images.shape[0]),
        "jiio_iterations": iterations,
        "reconstruction_mse_mean": float(err.mean()),
        "reconstruction_psnr_mean": float(ps.mean()),
        "reconstruction_psnr_median": float(ps.median()),
        "reconstruction_seconds": seconds,
    }
    result["jiio_vs_adam"] = jiio_vs_adam(
        model, images[:bench_images], iterations=iterations, adam_steps=adam_steps, adam_lrs=adam_lrs,
        plot=out / "cost_vs_time.png", progress=progress,
    )
    RunDir(out).update(final=result)
    return result


def fit_density(x: Tensor, density: str, *, components: int = 5, seed: int = 0,
                progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """A post-hoc density on latents ``x (N, d)``: ``"gmm"`` (``components`` full-covariance
    Gaussians, EM) or ``"vae"`` ([`LatentVAE`][jiio_tasks.generative.density.LatentVAE]). Returns the
    density (it has ``sample(n, generator)``) and a summary for the metrics file. ``progress``
    shows the VAE's training steps on stderr (the mixture's EM takes well under a second)."""
    if density == "gmm":
        gmm = fit_gmm(x.double(), components, reg=1e-4, generator=torch.Generator().manual_seed(seed))
        return gmm, {"density": "gmm", "components": components,
                     "gmm_mean_log_likelihood": gmm.log_likelihood, "gmm_iterations": gmm.iterations}
    if density == "vae":
        vae, nelbo = fit_latent_vae(x, seed=seed, progress=progress)
        return vae, {"density": "vae", "latent_vae_latent_dim": vae.latent_dim,
                     "latent_vae_negative_elbo_standardised": nelbo}
    raise ValueError(f"density must be 'gmm' or 'vae', got {density!r}")


def sample_generative(
    model: ZooModel,
    train_images: Tensor,
    out: Path,
    *,
    components: int = 5,
    count: int = 16,
    iterations: int = 100,
    seed: int = 0,
    density: str = "gmm",
    features: FeatureSpace | None = None,
    frechet_samples: int = 200,
    progress: bool = False,
) -> dict[str, Any]:
    """Infer the training latents with JIIO, fit a post-hoc density (``"gmm"`` with
    ``components`` Gaussians, or ``"vae"``), draw latents and decode them; a grid of ``count``
    samples goes to ``out/samples.png``. With ``features``, also the Fréchet distance between
    ``frechet_samples`` samples and ``train_images`` in that feature space. ``progress`` shows
    a bar on stderr for each stage (inference, density fit, decoding, features)."""
    act = activation(model)
    x, _, _ = infer(model, to_model(train_images, act), iterations=iterations, progress=progress,
                    desc="JIIO latents of the training images")
    dens, summary = fit_density(x, density, components=components, seed=seed, progress=progress)
    gen = torch.Generator().manual_seed(seed)
    n = max(count, frechet_samples if features is not None else 0)
    z = dens.sample(n, gen).to(x.dtype)
    samples = from_model(decode_latents(model, z, progress=progress), act).clamp(0, 1)
    nrow = max(1, math.ceil(math.sqrt(count)))
    rows = [samples[i : min(i + nrow, count)] for i in range(0, count, nrow)]
    out.mkdir(parents=True, exist_ok=True)
    what = f"GMM({components})" if density == "gmm" else "latent VAE"
    path = save_grid(rows, out / "samples.png", f"{count} samples, {what} on JIIO latents")
    result: dict[str, Any] = {"latents": int(x.shape[0]), **summary, "samples_png": str(path)}
    if features is not None:
        result["frechet_samples_vs_train"] = image_frechet(features, samples[:frechet_samples], train_images,
                                                           progress=progress)
        result["frechet_sample_count"] = int(min(frechet_samples, samples.shape[0]))
        result.update(features.describe())
    RunDir(out).update(sampling=result)
    return result


def image_frechet(features: FeatureSpace, images: Tensor, reference: Tensor, *, progress: bool = False) -> float:
    """Fréchet distance between the feature Gaussians of two [0, 1] image sets (``progress``:
    a bar on stderr over the feature space's batches, `FeatureSpace.batch`)."""
    parts = [*images.split(features.batch), *reference.split(features.batch)]
    feats = []
    with progress_bar(len(parts), "Fréchet features", enabled=progress, unit="batch") as bar:
        for part in parts:
            feats.append(features.features(part))
            bar.update()
    n = -(-images.shape[0] // features.batch)  # the batches of `images`
    return frechet_distance(gaussian_stats(torch.cat(feats[:n])), gaussian_stats(torch.cat(feats[n:])))

"""The Table-1-shaped comparison of generators on held-out images (paper §4.1, Table 1).

Rows (each only if its model is given):

- ``JIIO-trained decoder``: reconstruction = JIIO latent inversion (``iterations``) from
  ``x = 0``; samples = decoded draws from a post-hoc Gaussian mixture fitted to the JIIO
  latents of the training images (and a second row with the post-hoc latent VAE).
- ``ConvVAE``: reconstruction = decoder(encoder mean); samples = decoder(N(0, I) draws).
- ``MDEQ-VAE``: the same with the MDEQ decoder (forward DEQ solve).
- ``MDEQ-VAE + test-time JIIO``: JIIO inversion on the MDEQ-VAE's decoder starting from the
  encoder mean (no sampling column: JIIO does not change the prior).

Columns: mean PSNR and MSE of the reconstructions of the held-out images (data range [0, 1]),
the Fréchet distance between the reconstructions and the held-out images, and the Fréchet
distance between ``samples`` generated images and the training images, in one feature space
([`features`][jiio_tasks.generative.features]; recorded in the result). A reference row gives the
Fréchet distance of the real held-out images to the training images (the sampling column's
floor for this small data set, up to the sample-size bias of the estimate).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jiio_tasks.generative.evaluate import fit_density, image_frechet
from jiio_tasks.generative.features import FeatureSpace
from jiio_tasks.generative.mdeq_vae import MDEQVAE
from jiio_tasks.generative.vae import ConvVAE
from jiio_tasks.imaging.data import from_model, to_model
from jiio_tasks.imaging.inversion import activation, decode_latents, infer, save_grid
from jiio_tasks.imaging.operators import mse, psnr
from jiio_tasks.runs import RunDir
from jiio_zoo.model import ZooModel

__all__ = ["format_table", "generative_table"]



def _row(name: str, images: Tensor, recon: Tensor | None, samples: Tensor | None, train: Tensor,
         features: FeatureSpace, seconds: float, sampler: str, progress: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"row": name, "sampler": sampler, "seconds": seconds}
    if recon is not None:
        row["psnr_mean"] = float(psnr(recon, images).mean())
        row["psnr_median"] = float(psnr(recon, images).median())
        row["mse_mean"] = float(mse(recon, images).mean())
        row["frechet_reconstructions"] = image_frechet(features, recon, images, progress=progress)
    if samples is not None:
        row["frechet_samples"] = image_frechet(features, samples, train, progress=progress)
    return row


def format_table(rows: list[dict[str, Any]], feature_space: str) -> str:
    """Markdown table of [`generative_table`][jiio_tasks.generative.table.generative_table] rows."""
    head = ("| model | PSNR (dB) ↑ | MSE ↓ | Fréchet recon ↓ | Fréchet samples ↓ | sampler |\n"
            "|---|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        cells = [
            f"{r['psnr_mean']:.2f}" if "psnr_mean" in r else "–",
            f"{r['mse_mean']:.4f}" if "mse_mean" in r else "–",
            f"{r['frechet_reconstructions']:.3f}" if "frechet_reconstructions" in r else "–",
            f"{r['frechet_samples']:.3f}" if "frechet_samples" in r else "–",
        ]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r.get('sampler', '')} |")
    return (f"Held-out reconstruction (data range [0, 1]) and Fréchet distances in the "
            f"{feature_space} feature space\n\n" + "\n".join(lines) + "\n")


def generative_table(
    test_images: Tensor,
    train_images: Tensor,
    features: FeatureSpace,
    out: Path,
    *,
    jiio: ZooModel | None = None,
    conv_vae: ConvVAE | None = None,
    mdeq_vae: MDEQVAE | None = None,
    iterations: int = 100,
    samples: int = 200,
    components: int = 5,
    latent_vae: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute the rows described in the module docstring; writes ``out/table.md``,
    ``out/reconstructions.png``, ``out/samples.png`` and ``out/metrics.json``. ``progress``
    shows a bar on stderr for each stage (inversions, density fits, decoding, features)."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (a covariance needs two), got {samples!r}")
    rows: list[dict[str, Any]] = []
    recon_grid: list[Tensor] = [test_images[:10]]
    recon_names: list[str] = []
    sample_grid: list[Tensor] = []
    sample_names: list[str] = []
    n_show = 10
    if jiio is not None:
        act = activation(jiio)
        t0 = time.perf_counter()
        _, recon, _ = infer(jiio, to_model(test_images, act), iterations=iterations, progress=progress,
                            desc="JIIO reconstruction")
        recon01 = from_model(recon, act).clamp(0, 1)
        t_rec = time.perf_counter() - t0
        x_train, _, _ = infer(jiio, to_model(train_images, act), iterations=iterations, progress=progress,
                              desc="JIIO latents of the training images")
        for density in ("gmm", "vae") if latent_vae else ("gmm",):
            t0 = time.perf_counter()
            dens, summary = fit_density(x_train, density, components=components, seed=seed,
                                        progress=progress)
            z = dens.sample(samples, torch.Generator().manual_seed(seed)).to(x_train.dtype)
            drawn = from_model(decode_latents(jiio, z, progress=progress), act).clamp(0, 1)
            name = "JIIO-trained decoder" if density == "gmm" else "JIIO-trained decoder (latent-VAE samples)"
            sampler = (f"GMM({components}) on JIIO latents" if density == "gmm"
                       else f"MLP VAE (k = {summary['latent_vae_latent_dim']}) on JIIO latents")
            rows.append(_row(name, test_images, recon01, drawn, train_images, features,
                             t_rec + time.perf_counter() - t0, sampler, progress))
            sample_grid.append(drawn[:n_show])
            sample_names.append(sampler)
        recon_grid.append(recon01[:n_show])
        recon_names.append("JIIO-trained decoder")
    if conv_vae is not None:
        conv_vae.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            recon01 = conv_vae.reconstruct(test_images).clamp(0, 1)
            prior = torch.randn(samples, conv_vae.latent_dim,
                                generator=torch.Generator().manual_seed(seed)).to(recon01.device)
            drawn = conv_vae.decode(prior).clamp(0, 1)
        rows.append(_row("ConvVAE", test_images, recon01, drawn, train_images, features,
                         time.perf_counter() - t0, "N(0, I) prior", progress))
        recon_grid.append(recon01[:n_show])
        recon_names.append("ConvVAE")
        sample_grid.append(drawn[:n_show])
        sample_names.append("ConvVAE")
    if mdeq_vae is not None:
        mdeq_vae.eval()
        dec = mdeq_vae.decoder
        act = activation(dec)
        t0 = time.perf_counter()
        with torch.no_grad():
            mu, _ = mdeq_vae.encode(test_images)
            recon01 = from_model(decode_latents(dec, mu, progress=progress), act).clamp(0, 1)
            prior = torch.randn(samples, mu.shape[1], generator=torch.Generator().manual_seed(seed)).to(mu.device)
            drawn = from_model(decode_latents(dec, prior, progress=progress), act).clamp(0, 1)
        rows.append(_row("MDEQ-VAE", test_images, recon01, drawn, train_images, features,
                         time.perf_counter() - t0, "N(0, I) prior", progress))
        recon_grid.append(recon01[:n_show])
        recon_names.append("MDEQ-VAE")
        sample_grid.append(drawn[:n_show])
        sample_names.append("MDEQ-VAE")
        t0 = time.perf_counter()
        _, recon, _ = infer(dec, to_model(test_images, act), iterations=iterations, x0=mu, progress=progress,
                            desc="JIIO from the MDEQ-VAE's encoder")
        recon01 = from_model(recon, act).clamp(0, 1)
        rows.append(_row("MDEQ-VAE + test-time JIIO", test_images, recon01, None, train_images, features,
                         time.perf_counter() - t0, "–", progress))
        recon_grid.append(recon01[:n_show])
        recon_names.append("MDEQ-VAE + JIIO")
    rows.append({"row": "reference: held-out faces vs training faces", "sampler": "real images",
                 "frechet_samples": image_frechet(features, test_images, train_images, progress=progress)})
    described = features.describe()
    md = format_table(rows, described["feature_space"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(md, encoding="utf8")
    save_grid(recon_grid, out / "reconstructions.png",
              "rows: held-out; reconstructions by " + ", ".join(recon_names))
    if sample_grid:
        save_grid(sample_grid, out / "samples.png", "rows: samples of " + ", ".join(sample_names))
    result: dict[str, Any] = {
        "data_range": "[0, 1]",
        "test_images": int(test_images.shape[0]),
        "train_images": int(train_images.shape[0]),
        "samples": samples,
        "jiio_iterations": iterations,
        "seed": seed,
        **described,
        "rows": rows,
        "table": md,
    }
    RunDir(out).update(final=result)
    return result

"""The MDEQ-VAE baseline: loss decomposition by hand, a resumable training step, and test-time
JIIO from the encoder mean; the Table-1 comparison at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jiio_core import DEQSolver, hutchinson_jacobian_norm
from jiio_tasks.generative.features import RotationFeatures, train_rotation_net
from jiio_tasks.generative.frechet import frechet_distance, gaussian_stats
from jiio_tasks.generative.mdeq_vae import MDEQVAE, train_mdeq_vae
from jiio_tasks.generative.table import generative_table
from jiio_tasks.generative.vae import ConvVAE, gaussian_kl, train_vae
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.inversion import decode_latents, infer
from jiio_tasks.imaging.operators import mse, psnr
from jiio_tasks.runs import RunDir

from .tiny import tiny_decoder


class _Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, n: int = 8, seed: int = 5) -> None:
        self.images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


def test_loss_is_mse_plus_kl_plus_jacobian_by_hand() -> None:
    vae = MDEQVAE(tiny_decoder(seed=0, dtype=torch.float64), encoder_width=2).double()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(7)
    parts = vae.loss(images, beta=2.0, jac_reg=0.5)
    # the same computation written out: reparameterised latent, forward solve, decode
    torch.manual_seed(7)
    with torch.no_grad():
        mu, logvar = vae.encode(images)
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        z = DEQSolver(max_iter=200, tol=1e-12).solve(vae.decoder.layer, latent).z
        recon = vae.decoder.decode(z)
        err = ((recon - images) ** 2).flatten(1).mean(1)
        kl = gaussian_kl(mu, logvar)
    torch.testing.assert_close(parts["mse"].detach(), err.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["kl"].detach(), kl.mean())
    # the penalty: one Hutchinson probe per sample at the equilibrium, drawn right after ε
    jac_hand = hutchinson_jacobian_norm(vae.decoder.layer, z, latent.detach(), probes=1, create_graph=False)
    jac = parts["jacobian"].detach()
    assert float(jac) > 0
    torch.testing.assert_close(jac, jac_hand.mean(), rtol=1e-3, atol=1e-8)
    torch.testing.assert_close(parts["loss"].detach(), (err + 2.0 * kl / 64).mean() + 0.5 * jac_hand.mean(),
                               rtol=1e-4, atol=1e-6)


def test_training_step_resumes_and_test_time_jiio_starts_at_the_encoder_mean(tmp_path: Path) -> None:
    vae = MDEQVAE(tiny_decoder(seed=0), encoder_width=2)
    before = [p.detach().clone() for p in vae.parameters()]
    source = ImageSource(_Images(), 8, 1, "random")
    final = train_mdeq_vae(vae, source, RunDir(tmp_path / "run"), steps=2, progress=False, save_every=1)
    assert final["steps_done"] == 2
    assert any(float((p.detach() - b).abs().max()) > 1e-6 for p, b in zip(vae.parameters(), before, strict=True))
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2] and history[0]["jacobian"] > 0  # λ = 0.1 (config)
    again = MDEQVAE(tiny_decoder(seed=3), encoder_width=2)
    assert RunDir(tmp_path / "run").load_model(again) == 2
    for p, q in zip(vae.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    # JIIO from x0 = the latent that produced the images: already optimal, and the best
    # iterate is kept, so the loss stays at (near) zero; from x0 = 0 it is far worse
    dec = tiny_decoder(seed=0, dtype=torch.float64, alpha_x=0.5).eval()
    hidden = torch.randn(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    images = decode_latents(dec, hidden)
    _, recon, loss = infer(dec, images, iterations=10, x0=hidden)
    _, _, loss0 = infer(dec, images, iterations=10)
    assert float(loss.max()) < 1e-6 and float(loss0.min()) > 100 * float(loss.max())
    torch.testing.assert_close(loss, mse(recon, images))
    with pytest.raises(ValueError, match="x0 must have shape"):
        infer(dec, images, x0=hidden[:2])


def test_table1_rows_against_direct_computation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ImageSource(_Images(12, seed=8), 8, 1, "random")
    train_rotation_net(src, src.first(4), tmp_path / "rot.pt", steps=1, batch_size=4)
    space = RotationFeatures(tmp_path / "rot.pt")
    train_images, test_images = src.first(12)[:8], _Images(4, seed=9).images
    jiio = tiny_decoder(seed=0, iterations=8).eval()
    conv = ConvVAE(8, 1, 6, 2).eval()
    mdeq = MDEQVAE(tiny_decoder(seed=1, iterations=8), encoder_width=2).eval()
    res = generative_table(test_images, train_images, space, tmp_path / "t", jiio=jiio, conv_vae=conv,
                           mdeq_vae=mdeq, iterations=8, samples=6, components=2, latent_vae=False)
    rows = {r["row"]: r for r in res["rows"]}
    assert list(rows) == ["JIIO-trained decoder", "ConvVAE", "MDEQ-VAE", "MDEQ-VAE + test-time JIIO",
                          "reference: held-out faces vs training faces"]
    assert "rotation" in res["feature_space"] and res["weights"] == "rot.pt"
    with torch.no_grad():
        recon = conv.reconstruct(test_images)
        prior = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
        samples = conv.decode(prior)
    assert rows["ConvVAE"]["psnr_mean"] == pytest.approx(float(psnr(recon, test_images).mean()), abs=1e-4)
    assert rows["ConvVAE"]["mse_mean"] == pytest.approx(float(mse(recon, test_images).mean()), rel=1e-5)
    f = space.features

    def fd(a: torch.Tensor, b: torch.Tensor) -> float:
        return frechet_distance(gaussian_stats(f(a)), gaussian_stats(f(b)))

    assert rows["ConvVAE"]["frechet_samples"] == pytest.approx(fd(samples, train_images), rel=1e-6)
    assert rows["ConvVAE"]["frechet_reconstructions"] == pytest.approx(fd(recon, test_images), rel=1e-6)
    ref = rows["reference: held-out faces vs training faces"]["frechet_samples"]
    assert ref == pytest.approx(fd(test_images, train_images), rel=1e-6)
    assert "frechet_samples" not in rows["MDEQ-VAE + test-time JIIO"]
    # test-time JIIO keeps its best iterate, which includes the encoder-mean start
    assert rows["MDEQ-VAE + test-time JIIO"]["mse_mean"] <= rows["MDEQ-VAE"]["mse_mean"] * (1 + 1e-3)
    md = (tmp_path / "t" / "table.md").read_text()
    assert "rotation-net" in md and "| ConvVAE |" in md
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["final"]["feature_space"] == res["feature_space"]


def test_vae_budgets_run_on_the_given_clock(tmp_path: Path) -> None:
    """Both VAE trainers time their ``seconds`` budget with ``clock``: at 1 s per step, a
    2-second budget stops a 50-step run after 2 steps."""
    import itertools

    source = ImageSource(_Images(), 8, 1, "random")
    ticks = itertools.count()
    final = train_mdeq_vae(MDEQVAE(tiny_decoder(seed=0), encoder_width=2), source, RunDir(tmp_path / "mdeq"),
                           steps=50, seconds=2.0, progress=False, clock=lambda: float(next(ticks)))
    assert (final["steps_done"], final["train_seconds"]) == (2, 2.0)
    ticks = itertools.count()
    final = train_vae(ConvVAE(latent_dim=4, image_size=8, channels=1, width=2), source, RunDir(tmp_path / "vae"),
                      steps=50, seconds=2.0, progress=False, clock=lambda: float(next(ticks)))
    assert (final["steps_done"], final["train_seconds"]) == (2, 2.0)

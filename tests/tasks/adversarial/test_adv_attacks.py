"""The L2 attacks: feasibility (ball and pixel range), PGD's step against a hand computation,
the random start's radius law, and that both attacks raise the loss of a tiny DEQ."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, given, settings
from torch import Tensor

from jiio_core.accelerators import AndersonI
from jiio_core.baselines import DEQSolver
from jiio_tasks.adversarial import JIIOAttack, PGDAttack, finalize, random_ball
from jiio_zoo.configs import MDEQConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel, build_model


def tiny(dtype: torch.dtype = torch.float64, seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    cfg = ZooConfig(
        name="tiny_adv_test", task="adversarial", scale="test",
        model=MDEQConfig(image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2,
                         injection="image", head="classification", num_classes=3,
                         head_channels=(2, 4), final_channels=8),
        solver=SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.6), jiio_iterations=20, epsilon=1.0),
        train=TrainConfig(batch_size=4, learning_rate=1e-3),
    )
    return build_model(cfg).to(dtype).eval()


def batch(n: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    # binary-ish images: many pixels at 0 or 1, so the pixel box is active
    x = (torch.rand(n, 1, 8, 8, generator=g, dtype=dtype) > 0.6).to(dtype)
    return x, torch.randint(0, 3, (n,), generator=g)


def norms(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def unrolled_logits(model: ZooModel, images: Tensor, iters: int = 300) -> Tensor:
    """Reference: plain fixed-point iteration, differentiated by autograd through every step."""
    z = model.layer.init_state(images)
    for _ in range(iters):
        z = model.layer(z, images)
    out: Tensor = model.head(z)
    return out


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    eps=st.floats(0.01, 5.0),
    scale=st.floats(0.0, 50.0),
)
def test_finalize_never_leaves_ball_or_pixel_range(seed: int, eps: float, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(3, 1, 5, 5, generator=g, dtype=torch.float64)
    clean[0] = (clean[0] > 0.5).double()  # pixels exactly at the bounds
    delta = scale * torch.randn(3, 1, 5, 5, generator=g, dtype=torch.float64)
    adv = finalize(clean, delta, eps)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert bool((norms(adv - clean) <= eps * (1 + 1e-12)).all())
    # inside both sets already: unchanged (up to the clamp of clean + delta, a no-op here)
    small = delta * 0.0
    assert torch.equal(finalize(clean, small, eps), clean)


@settings(max_examples=4, deadline=None, derandomize=True, phases=[Phase.generate])
@given(seed=st.integers(0, 1000), eps=st.floats(0.05, 3.0))
def test_jiio_attack_stays_inside_ball_and_pixel_range(seed: int, eps: float) -> None:
    model = tiny(torch.float32)
    clean, y = batch(2, torch.float32, seed=seed)
    adv, sol = JIIOAttack(eps, iterations=8).perturb(model, clean, y)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert bool((norms(adv - clean) <= eps * (1 + 1e-6)).all())
    # the attack did move (the check above is not vacuous) and the returned images are the
    # re-projection of the joint solution's δ
    assert float(norms(adv - clean).min()) > 0.0
    assert torch.allclose(adv, finalize(clean, sol.x, eps))


@pytest.mark.parametrize("rel_step", [0.3, 1.7])
def test_pgd_single_step_matches_hand_computation(rel_step: float) -> None:
    model = tiny()
    clean, y = batch(3)
    eps = 0.8
    deq = DEQSolver(accelerator=AndersonI(memory=5), max_iter=200, tol=1e-12,
                    backward_max_iter=200, backward_tol=1e-12)
    adv = PGDAttack(eps, steps=1, rel_step=rel_step).perturb(model, clean, y, deq)
    # hand computation: gradient by unrolled autograd, normalised step, ball, clamp
    x = clean.clone().requires_grad_()
    loss = F.cross_entropy(unrolled_logits(model, x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    delta = rel_step * eps * g / norms(g).view(-1, 1, 1, 1)
    n = norms(delta).view(-1, 1, 1, 1)
    delta = delta * torch.clamp(eps / n, max=1.0)
    expected = torch.clamp(clean + delta, 0.0, 1.0)
    assert torch.allclose(adv, expected, atol=1e-7), float((adv - expected).abs().max())
    assert not torch.equal(expected, clean + delta)  # the clamp was active
    if rel_step > 1:  # the ball projection was active
        assert bool((norms(clean + delta - clean) <= eps + 1e-9).all())


def test_random_start_is_uniform_over_the_ball_volume() -> None:
    g = torch.Generator().manual_seed(0)
    d, eps = 16, 2.0
    pts = random_ball((20_000, d), eps, dtype=torch.float64, generator=g)
    r = norms(pts) / eps
    assert float(r.max()) <= 1.0
    # uniform in volume: P(r <= t) = t^d, so E[r] = d/(d+1), P(r <= 0.9) = 0.9^16 ≈ 0.185
    assert abs(float(r.mean()) - d / (d + 1)) < 3e-3
    assert abs(float((r <= 0.9).double().mean()) - 0.9**d) < 0.01
    # directions isotropic: the mean point is near the origin
    assert float(pts.mean(0).norm()) < 0.05


def test_attacks_increase_the_loss_and_jiio_is_competitive() -> None:
    model = tiny(torch.float32, seed=3)
    clean, y = batch(4, torch.float32, seed=5)
    eps = 1.0
    pgd = PGDAttack(eps, steps=5)(model, clean, y)
    jiio = JIIOAttack(eps, iterations=20)(model, clean, y)
    with torch.no_grad():
        ref_clean = F.cross_entropy(unrolled_logits(model, clean, 100), y, reduction="none")
        ref_pgd = F.cross_entropy(unrolled_logits(model, pgd.images, 100), y, reduction="none")
        ref_jiio = F.cross_entropy(unrolled_logits(model, jiio.images, 100), y, reduction="none")
        # a random perturbation of the same size barely changes the loss
        rnd = finalize(clean, eps * torch.randn_like(clean) / 8.0, eps)
        ref_rnd = F.cross_entropy(unrolled_logits(model, rnd, 100), y, reduction="none")
    assert torch.allclose(pgd.loss, ref_pgd, atol=1e-3) and torch.allclose(jiio.loss, ref_jiio, atol=1e-3)
    gain_pgd = ref_pgd - ref_clean
    gain_jiio = ref_jiio - ref_clean
    assert bool((gain_pgd > 0).all()) and bool((gain_jiio > 0).all()), (gain_pgd, gain_jiio)
    assert float(gain_jiio.mean()) > 0.5 * float(gain_pgd.mean())
    assert float(gain_pgd.mean()) > 3 * abs(float((ref_rnd - ref_clean).mean()))
    assert math.isfinite(jiio.seconds) and jiio.seconds > 0

"""One meta-training step of every method on a tiny DEQ / CNN, checked against independent
references: the FixedInput gradient against autograd through an unrolled equilibrium at the
same task vector, MAML against a hand-written functional inner step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch
from jiio_tasks.meta.train import (
    InnerSettings,
    MetaTrainConfig,
    SmallCNN,
    deq_forward,
    deq_solver,
    maml_step,
    query_ce,
)
from jiio_zoo.configs import MDEQConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.heads import head_output
from jiio_zoo.model import ZooModel, build_model


def tiny_meta(seed: int = 0, task_head_dim: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    cfg = ZooConfig(
        name="tiny_meta_test", task="meta", scale="test",
        model=MDEQConfig(image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2,
                         injection="film", latent_dim=5, head="classification", num_classes=3,
                         pool_size=2, task_head_dim=task_head_dim),
        solver=SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.3), jiio_iterations=20),
        train=TrainConfig(batch_size=2, learning_rate=1e-3),
    )
    return build_model(cfg).double()


def tiny_batch(seed: int = 1) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 1, 0, 1, 0, 2]])
    return TaskBatch(images, labels, support=3)


def unrolled_query_loss(model: ZooModel, batch: TaskBatch, x: Tensor, iters: int = 150) -> Tensor:
    z = model.layer.initial_state(x, batch.images)
    for _ in range(iters):
        z = model.layer(z, x, batch.images)
    return query_ce(head_output(model.head, z, x)[:, batch.support :], batch)


@pytest.mark.parametrize("task_head_dim", [0, 4])
@pytest.mark.parametrize("method", ["jiio", "adam"])
def test_deq_meta_step_gradient_matches_unrolled_reference(method: str, task_head_dim: int) -> None:
    model = tiny_meta(task_head_dim=task_head_dim)
    batch = tiny_batch()
    inner = InnerSettings(iterations=30, adam_steps=5, adam_lr=0.2, deq_iterations=100,
                          backward_iterations=100, deq_tol=1e-9)
    logits, x, support_loss, _, _ = deq_forward(model, batch, method, inner)
    loss = query_ce(logits, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    ref_loss = unrolled_query_loss(model, batch, x.detach())
    ref = torch.autograd.grad(ref_loss, list(model.parameters()), allow_unused=True)
    assert abs(float(loss.detach()) - float(ref_loss.detach())) < 1e-4
    n = 0
    for g, r in zip(grads, ref, strict=True):
        if r is None or float(r.abs().max()) == 0:
            continue
        assert g is not None
        rel = float((g - r).norm() / r.norm())
        assert rel < 2e-3, rel  # the forward solve stops at a finite residual
        n += 1
    assert n > 5  # cell, injection and head parameters all received a gradient
    # the inner loop lowered the support loss below its value at x = 0
    obj = RegularizedFewShot(model.head, batch.support, inner.reg)
    with torch.no_grad():
        x0 = torch.zeros_like(x)
        z = model.layer.initial_state(x0, batch.images)
        for _ in range(150):
            z = model.layer(z, x0, batch.images)
        start = obj(z, x0, batch.labels)
    assert bool((support_loss < start).all()), (support_loss, start)


def test_jiio_kkt_meta_step_runs_and_differs_from_fixed_input() -> None:
    model = tiny_meta()
    batch = tiny_batch()
    inner = InnerSettings(iterations=30)
    params = list(model.parameters())
    lf = query_ce(deq_forward(model, batch, "jiio", inner)[0], batch)
    gf = torch.autograd.grad(lf, params, allow_unused=True)
    lk = query_ce(deq_forward(model, batch, "jiio-kkt", inner)[0], batch)
    gk = torch.autograd.grad(lk, params, allow_unused=True)
    # same x* up to the solvers: FixedInput's JIIO sees the support images only, ImplicitKKT's
    # also the query ones (their μ is zero, but Anderson mixes whole states)
    assert abs(float(lf.detach()) - float(lk.detach())) < 1e-3
    flat_f = torch.cat([g.flatten() for g in gf if g is not None])
    flat_k = torch.cat([g.flatten() for g in gk if g is not None])
    assert bool(torch.isfinite(flat_k).all())
    # ImplicitKKT adds the dx*/dθ path: close to, but not equal to, the FixedInput gradient
    cos = float(flat_f @ flat_k / (flat_f.norm() * flat_k.norm()))
    assert cos > 0.5 and not torch.allclose(flat_f, flat_k, rtol=1e-6)


def test_maml_step_matches_functional_reference() -> None:
    l2l = pytest.importorskip("learn2learn")
    torch.manual_seed(0)
    net = SmallCNN(3, channels=4, groups=2).double()
    maml = l2l.algorithms.MAML(net, lr=0.4)
    batch = tiny_batch()
    loss, acc = maml_step(maml, batch, adapt_steps=1)
    grads = torch.autograd.grad(loss, list(maml.parameters()))
    params = dict(net.named_parameters())
    total = torch.zeros((), dtype=torch.float64)
    for b in range(2):
        s_loss = F.cross_entropy(functional_call(net, params, (batch.images[b, :3],)), batch.labels[b, :3])
        gs = torch.autograd.grad(s_loss, list(params.values()), create_graph=True)
        fast = {k: p - 0.4 * g for (k, p), g in zip(params.items(), gs, strict=True)}
        total = total + F.cross_entropy(functional_call(net, fast, (batch.images[b, 3:],)), batch.labels[b, 3:])
    ref = total / 2
    ref_grads = torch.autograd.grad(ref, list(params.values()))
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-10
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-10)
    assert 0.0 <= acc <= 1.0


def test_config_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        MetaTrainConfig(method="sgd")


@pytest.mark.parametrize("net", ["cnn", "l2l-fc"])
def test_maml_run_saves_its_network_and_accuracy_is_that_of_the_saved_network(tmp_path: Path, net: str) -> None:
    import learn2learn as l2l

    from jiio_tasks.meta.train import evaluate, load_maml, tasksets, train
    from jiio_tasks.runs import RunDir

    cfg = MetaTrainConfig(method="maml", steps=2, meta_batch=2, query_shots=1, eval_tasks=4, log_every=1,
                          maml_net=net)
    final = train(RunDir(tmp_path / "maml"), cfg, progress=False)
    net = load_maml(final["checkpoint"])
    state = torch.load(tmp_path / "maml" / "state.pt", weights_only=True)["modules"]["model"]
    for name, value in net.state_dict().items():  # the saved network is the trained one
        torch.testing.assert_close(value, state[f"module.{name}"], rtol=0, atol=0)
    again = l2l.algorithms.MAML(net, lr=cfg.maml_lr)
    torch.manual_seed(0)
    assert evaluate(again, tasksets(cfg)[1], cfg)["accuracy"] == final["accuracy"]


@pytest.mark.parametrize("method", ["jiio", "adam"])
def test_query_residual_is_the_relative_residual_of_the_returned_state(method: str) -> None:
    """``DEQForward.query_residual`` is ``‖f(z) − z‖ / ‖z‖`` of the query states the logits were
    computed from, recomputed here from the layer."""
    model = tiny_meta(task_head_dim=4)
    batch = tiny_batch()
    inner = InnerSettings(iterations=10, adam_steps=2, deq_iterations=4, deq_tol=1e-12)  # stops early: residual > 0
    with torch.no_grad():
        out = deq_forward(model, batch, method, inner)
        images = batch.images[:, batch.support :]
        sol = deq_solver(model, inner).solve(model.layer, out.x, context=images)
        fz = model.layer(sol.z, out.x, images)
    diff = torch.sqrt(sum((a - b).flatten(1).pow(2).sum(1) for a, b in zip(fz, sol.z, strict=True)))
    norm = torch.sqrt(sum(b.flatten(1).pow(2).sum(1) for b in sol.z))
    assert out.query_residual is not None
    torch.testing.assert_close(out.query_residual, diff / norm, rtol=1e-6, atol=0)
    assert float(out.query_residual.min()) > 0

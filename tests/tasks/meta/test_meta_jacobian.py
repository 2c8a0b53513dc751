"""The Jacobian penalty (paper A.1) and the config's optimiser in meta-training.

For every DEQ method, one step's gradient with ``jac_reg = λ`` minus that with ``jac_reg = 0``
must be ``λ ·`` the gradient of the penalty computed independently with the same randomness:
jiio_core's ``hutchinson_jacobian_norm`` at a fresh DEQ solve of the query images under the
inferred task vector (``jiio``, ``adam``), or a fresh joint solve with the penalty
(``jiio-kkt``) (float64, tiny model). λ = 0 is the plain query cross-entropy, bit for bit, and
draws nothing. Shards of a meta-batch add up to the whole (what DDP sums). ``train()`` logs
the penalty and takes the config's optimiser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from torch import Tensor

from jiio_core.regularizer import hutchinson_jacobian_norm
from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, sample_batch
from jiio_tasks.meta.train import (
    InnerSettings,
    MetaStep,
    MetaTrainConfig,
    _model,
    deq_forward,
    deq_solver,
    query_ce,
    query_logits,
    query_part,
    tasksets,
    train,
)
from jiio_tasks.penalty import PenaltyDraw, penalty_seed
from jiio_tasks.runs import RunDir
from jiio_zoo.configs import TrainConfig
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import joint_problem, settings
from tests.zoo.tiny import tiny_config, tiny_model

LAM = 0.6
SEED = 4321
INNER = InnerSettings(iterations=10, adam_steps=3, adam_lr=0.2, deq_iterations=30, backward_iterations=30)


def _batch(tasks: int = 2) -> TaskBatch:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(tasks, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 1, 0, 1, 0, 2]]).repeat(tasks // 2, 1)
    return TaskBatch(images, labels, support=3)


def _cfg(method: str) -> MetaTrainConfig:
    return MetaTrainConfig(method=method, inner=INNER)


def _grad(loss: Tensor, model: ZooModel) -> Tensor:
    params = list(model.parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params, strict=True)])


def _independent_penalty(model: ZooModel, batch: TaskBatch, method: str) -> Tensor:
    """Per-task penalty of the step, by jiio_core alone, with the step's seed."""
    probes = settings(model.config).jacobian_probes
    assert probes == 2
    gen = torch.Generator().manual_seed(SEED)
    if method == "jiio-kkt":  # the joint solve's own penalty at a random iterate
        problem = joint_problem(model, RegularizedFewShot(model.head, batch.support, INNER.reg),
                                iterations=INNER.iterations, outer="kkt", tol=0.0, jacobian_penalty=True)
        sol = problem.solve(batch.labels, context=batch.images, generator=gen)
        assert sol.jacobian_penalty is not None
        return sol.jacobian_penalty
    x = deq_forward(model, batch, method, INNER).x.detach()  # the task vectors the step used
    images = query_part(batch).images
    z = deq_solver(model, INNER).solve(model.layer, x, context=images).z
    return hutchinson_jacobian_norm(model.layer, z, x, context=images, probes=probes, generator=gen)


@pytest.mark.parametrize("method", ["jiio", "adam", "jiio-kkt"])
def test_penalty_gradient_is_lambda_times_the_independent_penalty_gradient(method: str) -> None:
    model = tiny_model("meta")
    batch = _batch()
    loss, correct, task, jac = MetaStep(model, _cfg(method), lam=LAM)(batch.images, batch.labels, 3, SEED)
    loss0, correct0, task0, jac0 = MetaStep(model, _cfg(method), lam=0.0)(batch.images, batch.labels, 3, SEED)
    g_lam, g_0 = _grad(loss, model), _grad(loss0, model)
    pen = _independent_penalty(model, batch, method)
    g_pen = _grad(pen.mean(), model)
    assert float(g_pen.norm()) > 1e-3 * float(g_0.norm())  # the penalty's gradient is not negligible
    rel = float((g_lam - g_0 - LAM * g_pen).norm() / (LAM * g_pen).norm())
    assert rel < 1e-8, rel
    assert float((loss - loss0).detach()) == pytest.approx(LAM * float(pen.detach().mean()), rel=1e-10)
    assert float(jac) == pytest.approx(float(pen.detach().sum()), rel=1e-12)
    assert float(jac0) == 0.0
    assert torch.equal(task, loss0.detach()) and torch.equal(task0, loss0.detach())
    assert int(correct) == int(correct0)


def test_zero_lambda_is_the_plain_query_loss_and_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("meta")
    batch = _batch()

    def refuse(*_: Any, **__: Any) -> Tensor:
        raise AssertionError("a penalty was computed with λ = 0")

    monkeypatch.setattr(PenaltyDraw, "penalty", refuse)
    torch.manual_seed(9)
    before = torch.get_rng_state()
    loss, *_ = MetaStep(model, _cfg("jiio"), lam=0.0)(batch.images, batch.labels, 3)
    assert torch.equal(torch.get_rng_state(), before)
    x = deq_forward(model, batch, "jiio", INNER).x
    assert torch.equal(loss, query_ce(query_logits(model, batch, x, INNER), batch))
    assert deq_forward(model, batch, "jiio", INNER).jacobian is None


def test_shards_add_up_to_the_whole_meta_batch() -> None:
    """What DDP sums: each shard's loss (its sums over the global meta-batch) and gradient add
    up to the single-process ones, penalty included (its probes are rows of the global draw)."""
    model = tiny_model("meta")
    batch = _batch(4)
    cfg = _cfg("jiio")
    whole = MetaStep(model, cfg, lam=LAM)(batch.images, batch.labels, 3, SEED)
    g_whole = _grad(whole[0], model)
    parts = [MetaStep(model, cfg, 4, lam=LAM, shard_start=lo)(batch.images[lo : lo + 2],
                                                                batch.labels[lo : lo + 2], 3, SEED)
             for lo in (0, 2)]
    g_parts = sum(_grad(p[0], model) for p in parts)
    assert float(sum(p[0].detach() for p in parts)) == pytest.approx(float(whole[0].detach()), rel=1e-12)
    assert float(sum(p[3] for p in parts)) == pytest.approx(float(whole[3]), rel=1e-12)
    # measured 1e-15: the DEQ solves treat the tasks independently
    assert float((g_parts - g_whole).norm() / g_whole.norm()) < 1e-10


def test_bad_jac_reg_is_refused() -> None:
    with pytest.raises(ValueError, match=r"MetaTrainConfig.jac_reg must be a finite number >= 0 or None, got -1"):
        MetaTrainConfig(jac_reg=-1)
    with pytest.raises(ValueError, match=r"lam \(λ of the Jacobian penalty\) must be a finite number >= 0, got inf"):
        MetaStep(tiny_model("meta"), _cfg("jiio"), lam=float("inf"))


def test_train_logs_the_penalty_and_uses_the_configs_optimiser(tmp_path: Path) -> None:
    cfg_file = tmp_path / "tiny_meta_jac.json"
    zc = attrs.evolve(tiny_config("meta"), name="tiny_meta_jac",
                      train=TrainConfig(batch_size=2, learning_rate=2e-3, jac_reg=0.4, weight_decay=0.05))
    cfg_file.write_text(json.dumps(zc.to_dict()))
    inner = InnerSettings(iterations=4, deq_iterations=6, backward_iterations=6)
    cfg = MetaTrainConfig(config=str(cfg_file), method="jiio", steps=1, seed=2, meta_batch=2, ways=3,
                          query_shots=1, eval_tasks=1, log_every=1, inner=inner)
    run = RunDir(tmp_path / "run")
    train(run, cfg, progress=False)
    metrics = run.read_metrics()
    assert metrics["config"]["jac_reg"] == 0.4
    (entry,) = metrics["history"]

    # the first step's tasks and penalty, recomputed from scratch (train()'s draws)
    torch.manual_seed(2)
    model = _model(cfg)
    assert isinstance(model, ZooModel)
    batch = sample_batch(tasksets(cfg)[0], 2)
    # (grad mode on, as in training: the DEQ solve then returns f(z*) for its implicit backward)
    x = deq_forward(model, batch, "jiio", inner).x.detach()
    images = query_part(batch).images
    z = deq_solver(model, inner).solve(model.layer, x, context=images).z
    gen = torch.Generator().manual_seed(penalty_seed(2, 0))
    pen = hutchinson_jacobian_norm(model.layer, z, x, context=images, generator=gen).detach()
    ce = query_ce(query_logits(model, batch, x, inner), batch).detach()
    assert entry["jacobian"] == pytest.approx(float(pen.mean()), rel=1e-6)
    assert entry["loss"] == pytest.approx(float(ce), rel=1e-6)

    state = torch.load(run.state_path, weights_only=True)
    group = state["optimizers"]["optimizer"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"]) == (2e-3, 0.05)  # the config's learning rate and decay

    # lr and jac_reg override the config; λ = 0 logs no penalty
    run0 = RunDir(tmp_path / "run0")
    train(run0, attrs.evolve(cfg, lr=1e-2, jac_reg=0.0), progress=False)
    assert "jacobian" not in run0.read_metrics()["history"][0]
    group = torch.load(run0.state_path, weights_only=True)["optimizers"]["optimizer"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"]) == (1e-2, 0.05)

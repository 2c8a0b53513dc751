"""The Jacobian penalty (paper A.1) and the config's optimiser in adversarial training.

One step's gradient with ``jac_reg = λ`` minus that with ``jac_reg = 0`` must be ``λ ·`` the
gradient of the penalty computed independently with the same randomness: jiio_core's
``hutchinson_jacobian_norm`` at a fresh DEQ solve of the step's examples, or a fresh joint
solve with the penalty for the JIIO shortcut (float64, tiny model). λ = 0 is the loss without
any penalty, bit for bit, and draws nothing. Shards of a global batch add up to the whole
batch's loss and gradient (what DDP sums). ``train()`` logs the penalty, takes the config's
optimiser and resumes bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_core.regularizer import hutchinson_jacobian_norm
from jiio_tasks.adversarial import splits
from jiio_tasks.adversarial import train as adv_train
from jiio_tasks.adversarial.attacks import pixel_ball
from jiio_tasks.adversarial.train import (
    AdvTrainConfig,
    PenaltyDraw,
    TrainingStep,
    penalty_seed,
    training_loss,
)
from jiio_tasks.runs import RunDir
from jiio_zoo.configs import TrainConfig, get_config
from jiio_zoo.model import ZooModel, build_model
from jiio_zoo.objectives import AdversarialObjective
from jiio_zoo.recipe import deq_solver, joint_problem, settings
from tests.zoo.tiny import tiny_config, tiny_model

LAM = 0.7
SEED = 1234
PATHS = [("clean", "examples"), ("pgd", "examples"), ("jiio", "examples"), ("jiio", "shortcut")]


def _cfg(method: str, gradient: str, lam: float | None) -> dict[str, Any]:
    return {"method": method, "eps": 1.0, "pgd_steps": 3, "jiio_iterations": 15, "jiio_gradient": gradient,
            "jac_reg": lam}


def _data(n: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2][:n])


def _grad(loss: Tensor, model: ZooModel) -> Tensor:
    params = list(model.parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params, strict=True)])


def _step(model: ZooModel, method: str, gradient: str, lam: float) -> tuple[adv_train.StepLoss, Tensor]:
    x, y = _data()
    torch.manual_seed(5)  # PGD's random start: the same in both runs
    out = training_loss(model, x, y, _cfg(method, gradient, lam), draw=PenaltyDraw(SEED))
    return out, _grad(out.loss, model)


def _independent_penalty(model: ZooModel, gradient: str, examples: Tensor) -> Tensor:
    """Per-sample penalty of the step, by jiio_core alone, with the step's seed."""
    x, y = _data()
    probes = settings(model.config).jacobian_probes
    assert probes == 2
    gen = torch.Generator().manual_seed(SEED)
    if gradient == "shortcut":  # the joint solve's own penalty at a random iterate
        problem = joint_problem(model, AdversarialObjective(model.head), iterations=15, tol=0.0,
                                jacobian_penalty=True)
        sol = problem.solve(y, torch.zeros_like(x), context=x, constraint=pixel_ball(x, 1.0), generator=gen)
        assert sol.jacobian_penalty is not None
        return sol.jacobian_penalty
    z = deq_solver(model).solve(model.layer, examples.detach()).z
    return hutchinson_jacobian_norm(model.layer, z, examples.detach(), probes=probes, generator=gen)


@pytest.mark.parametrize(("method", "gradient"), PATHS)
def test_penalty_gradient_is_lambda_times_the_independent_penalty_gradient(method: str, gradient: str) -> None:
    model = tiny_model("adversarial").train()
    with_pen, g_lam = _step(model, method, gradient, LAM)
    without, g_0 = _step(model, method, gradient, 0.0)
    assert torch.equal(with_pen.examples, without.examples)
    pen = _independent_penalty(model, gradient, with_pen.examples)
    g_pen = _grad(pen.mean(), model)
    assert float(g_pen.norm()) > 1e-3 * float(g_0.norm())  # the penalty's gradient is not negligible
    rel = float((g_lam - g_0 - LAM * g_pen).norm() / (LAM * g_pen).norm())
    assert rel < 1e-8, rel
    assert float((with_pen.loss - without.loss).detach()) == pytest.approx(LAM * float(pen.detach().mean()), rel=1e-10)
    assert float(with_pen.jacobian_sum) == pytest.approx(float(pen.detach().sum()), rel=1e-12)
    assert torch.equal(with_pen.task_loss, without.loss.detach())  # the logged part is the CE


@pytest.mark.parametrize(("method", "gradient"), [("clean", "examples"), ("jiio", "shortcut")])
def test_zero_lambda_is_the_plain_loss_and_draws_nothing(method: str, gradient: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("adversarial").train()
    x, y = _data()

    def refuse(*_: Any, **__: Any) -> Tensor:
        raise AssertionError("a penalty was computed with λ = 0")

    monkeypatch.setattr(PenaltyDraw, "penalty", refuse)
    monkeypatch.setattr(PenaltyDraw, "joint_generator", refuse)
    torch.manual_seed(9)
    before = torch.get_rng_state()
    out = training_loss(model, x, y, _cfg(method, gradient, 0.0))
    assert torch.equal(torch.get_rng_state(), before)  # no draw from the global stream
    if gradient == "shortcut":
        problem = joint_problem(model, AdversarialObjective(model.head), iterations=15, tol=0.0)
        ref = problem.solve(y, torch.zeros_like(x), context=x, constraint=pixel_ball(x, 1.0)).outer_loss.mean()
    else:
        ref = F.cross_entropy(model.head(deq_solver(model).solve(model.layer, x).z), y)
    assert torch.equal(out.loss, ref)
    assert float(out.jacobian_sum) == 0.0
    # the config's jac_reg (0 for the tiny config) is the default λ
    assert torch.equal(training_loss(model, x, y, _cfg(method, gradient, None)).loss, ref)


def test_shards_add_up_to_the_whole_batch() -> None:
    """What DDP sums: each shard's loss (its sum over the global batch) and gradient add up to
    the single-process ones, penalty included (its probes are rows of the global batch's)."""
    model = tiny_model("adversarial").train()
    x, y = _data(4)
    cfg = _cfg("clean", "examples", LAM)
    whole = TrainingStep(model, cfg)(x, y, SEED)
    g_whole = _grad(whole.loss, model)
    parts = [TrainingStep(model, cfg, 4, lo)(x[lo : lo + 2], y[lo : lo + 2], SEED) for lo in (0, 2)]
    g_parts = sum(_grad(p.loss, model) for p in parts)
    assert float(sum(p.loss.detach() for p in parts)) == pytest.approx(float(whole.loss.detach()), rel=1e-12)
    assert float(sum(p.jacobian_sum for p in parts)) == pytest.approx(float(whole.jacobian_sum), rel=1e-12)
    assert float((g_parts - g_whole).norm() / g_whole.norm()) < 1e-12
    # the whole batch's probes are hutchinson_jacobian_norm's with the same seed
    z = deq_solver(model).solve(model.layer, x).z
    ref = hutchinson_jacobian_norm(model.layer, z, x, generator=torch.Generator().manual_seed(SEED))
    assert float(whole.jacobian_sum) == pytest.approx(float(ref.detach().sum()), rel=1e-12)
    # probes drawn per shard (not rows of the global draw) would give another estimate
    own = TrainingStep(model, cfg, 4, 0)(x[2:], y[2:], SEED)
    assert abs(float(own.jacobian_sum - parts[1].jacobian_sum)) > 1e-6


def test_bad_jac_reg_is_refused() -> None:
    with pytest.raises(ValueError, match=r"AdvTrainConfig.jac_reg must be a finite number >= 0 or None, got -0.1"):
        AdvTrainConfig(jac_reg=-0.1)
    with pytest.raises(ValueError, match=r"jac_reg must be a finite number >= 0, got nan"):
        training_loss(tiny_model("adversarial"), *_data(), _cfg("clean", "examples", float("nan")))
    with pytest.raises(ValueError, match=r"PenaltyDraw.total must be None or an int > start=2, got 2"):
        PenaltyDraw(1, 2, 2)
    assert AdvTrainConfig().resolved()["jac_reg"] == get_config("digits_adv_small").train.jac_reg == 0.01
    assert AdvTrainConfig(jac_reg=0.0).resolved()["jac_reg"] == 0.0


# ---- train(): the history, the optimiser, resuming ----------------------------------------------


def _config_file(tmp_path: Path) -> str:
    base = tiny_config("adversarial", num_classes=10)  # the embedded digits' classes
    cfg = attrs.evolve(base, name="tiny_adv_jac",
                       train=TrainConfig(batch_size=4, learning_rate=2e-3, jac_reg=0.3, weight_decay=0.05))
    path = tmp_path / "tiny_adv_jac.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return str(path)


def _fake_accuracies(*_: Any, **__: Any) -> dict[str, float]:
    return {"clean": 0.0, "pgd": 0.0, "jiio": 0.0}


def _train_cfg(path: str, steps: int, **kw: Any) -> AdvTrainConfig:
    return AdvTrainConfig(config=path, method="clean", steps=steps, seed=3, eval_size=1, log_every=1,
                          save_every=1, **kw)


def test_train_logs_the_penalty_and_uses_the_configs_optimiser(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adv_train, "robust_accuracies", _fake_accuracies)
    path = _config_file(tmp_path)
    run = RunDir(tmp_path / "run")
    adv_train.train(run, _train_cfg(path, 1), progress=False)
    metrics = run.read_metrics()
    assert metrics["config"]["jac_reg"] == 0.3
    (entry,) = metrics["history"]

    # the first step's batch and penalty, recomputed from scratch (train()'s draws)
    torch.manual_seed(3)
    model = build_model(get_config(path))
    images, labels = splits.load_split("embedded", "train", None)
    images = splits.fit_images(images, model)
    idx = torch.randint(0, len(labels), (4,))
    x, y = images[idx], labels[idx]
    # (grad mode on, as in training: the DEQ solve then returns f(z*) for its implicit backward)
    z = deq_solver(model).solve(model.layer, x).z
    gen = torch.Generator().manual_seed(penalty_seed(3, 0))
    pen = hutchinson_jacobian_norm(model.layer, z, x, generator=gen).detach()
    ce = F.cross_entropy(model.head(z), y).detach()
    assert entry["jacobian"] == pytest.approx(float(pen.mean()), rel=1e-6)
    assert entry["loss"] == pytest.approx(float(ce), rel=1e-6)

    state = torch.load(run.state_path, weights_only=True)
    group = state["optimizers"]["optimizer"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"]) == (2e-3, 0.05)  # the config's learning rate and decay

    # --lr and --jac-reg override the config; λ = 0 logs no penalty
    run0 = RunDir(tmp_path / "run0")
    adv_train.train(run0, _train_cfg(path, 1, lr=1e-2, jac_reg=0.0), progress=False)
    assert "jacobian" not in run0.read_metrics()["history"][0]
    assert run0.read_metrics()["config"]["jac_reg"] == 0.0
    group = torch.load(run0.state_path, weights_only=True)["optimizers"]["optimizer"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"]) == (1e-2, 0.05)


def test_resumed_run_with_the_penalty_matches_an_uninterrupted_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adv_train, "robust_accuracies", _fake_accuracies)
    path = _config_file(tmp_path)
    straight, split = RunDir(tmp_path / "straight"), RunDir(tmp_path / "split")
    adv_train.train(straight, _train_cfg(path, 3), progress=False)
    adv_train.train(split, _train_cfg(path, 1), progress=False)  # "killed" after step 1
    adv_train.train(split, _train_cfg(path, 3), progress=False)
    a, b = (torch.load(r.state_path, weights_only=True) for r in (straight, split))
    assert a["step"] == b["step"] == 3
    for k, v in a["modules"]["model"].items():
        assert torch.equal(v, b["modules"]["model"][k]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    ha, hb = straight.read_metrics()["history"], split.read_metrics()["history"]
    assert [h["jacobian"] for h in ha] == [h["jacobian"] for h in hb]
    assert len({h["jacobian"] for h in ha}) == 3  # a fresh draw (and model) every step

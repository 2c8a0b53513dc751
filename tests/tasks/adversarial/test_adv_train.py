"""One adversarial-training step of every path on a tiny DEQ, checked against autograd through
an unrolled equilibrium at the examples it trained on; and the Table 5 aggregation."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_tasks.adversarial.evaluate import markdown, table
from jiio_tasks.adversarial.train import training_loss
from jiio_zoo.configs import MDEQConfig, SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel, build_model


def tiny(seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    cfg = ZooConfig(
        name="tiny_adv_test", task="adversarial", scale="test",
        model=MDEQConfig(image_size=8, image_channels=1, num_branches=2, channels=(4, 8), groups=2,
                         injection="image", head="classification", num_classes=3,
                         head_channels=(2, 4), final_channels=8),
        solver=SolverConfig(anderson_memory=5, damping=(0.8, 0.6, 0.6), jiio_iterations=20,
                            epsilon=1.0, forward_threshold=60, backward_threshold=60),
        train=TrainConfig(batch_size=3, learning_rate=1e-3),
    )
    return build_model(cfg).double()


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1])


def unrolled_ce(model: ZooModel, images: Tensor, y: Tensor, iters: int = 150) -> Tensor:
    z = model.layer.init_state(images)
    for _ in range(iters):
        z = model.layer(z, images)
    return F.cross_entropy(model.head(z), y)


def _cfg(method: str, gradient: str = "examples") -> dict[str, Any]:
    return {"method": method, "eps": 1.0, "pgd_steps": 3, "jiio_iterations": 15, "jiio_gradient": gradient}


def _flat(gs: Any) -> Tensor:
    return torch.cat([g.flatten() for g in gs])


@pytest.mark.parametrize("method", ["clean", "pgd", "jiio"])
def test_training_step_gradient_is_the_gradient_at_its_examples(method: str) -> None:
    model = tiny().train()
    x, y = data()
    loss, adv, _, _ = training_loss(model, x, y, _cfg(method))
    params = list(model.parameters())
    g = _flat(torch.autograd.grad(loss, params))
    ref_loss = unrolled_ce(model, adv.detach(), y)
    r = _flat(torch.autograd.grad(ref_loss, params))
    # the DEQ solves stop at a relative residual of 1e-4
    assert abs(float(loss.detach()) - float(ref_loss.detach())) < 1e-4
    assert float((g - r).norm() / r.norm()) < 1e-2
    delta = (adv - x).flatten(1).norm(dim=1)
    if method == "clean":
        assert torch.equal(adv, x)
    else:
        assert bool((delta <= 1.0 + 1e-9).all()) and float(delta.min()) > 0.5
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
        # the adversarial examples have a higher loss than the clean ones
        assert float(ref_loss.detach()) > float(unrolled_ce(model, x, y).detach())
    # an optimiser step on this gradient lowers the loss at the same examples
    with torch.no_grad():
        for p, gp in zip(params, torch.split(g, [p.numel() for p in params]), strict=True):
            p -= 1e-3 * gp.view_as(p) / g.norm()
    assert float(unrolled_ce(model, adv.detach(), y).detach()) < float(ref_loss.detach())


def test_jiio_adjoint_shortcut_step() -> None:
    model = tiny().train()
    x, y = data()
    loss, adv, _, _ = training_loss(model, x, y, _cfg("jiio", "shortcut"))
    params = list(model.parameters())
    g = _flat(torch.autograd.grad(loss, params))
    ref_loss = unrolled_ce(model, adv.detach(), y)
    r = _flat(torch.autograd.grad(ref_loss, params))
    # the Lagrangian's value is the CE at (z*, δ*) up to the solve's residual, and its gradient
    # (eq. 19, negated relation) points the same way as the exact one at the same examples;
    # only roughly (cosine 0.64 measured here), since the joint solve stops at a KKT residual
    # far from 0 — the reason ``examples`` is the default JIIO training gradient
    assert abs(float(loss.detach()) - float(ref_loss.detach())) < 0.05
    cos = float(g @ r / (g.norm() * r.norm()))
    assert cos > 0.4, cos


def test_table_aggregates_mean_and_std_over_seeds() -> None:
    runs = [
        {"method": "pgd", "clean": 90.0, "pgd": 60.0, "jiio": 62.0},
        {"method": "pgd", "clean": 94.0, "pgd": 64.0, "jiio": 61.0},
        {"method": "clean", "clean": 99.0, "pgd": 5.0, "jiio": 7.0},
    ]
    grid = table(runs)
    assert list(grid) == ["clean", "pgd"]
    assert grid["pgd"]["clean"]["mean"] == 92.0
    assert grid["pgd"]["pgd"]["std"] == pytest.approx(statistics.stdev([60.0, 64.0]))
    assert grid["clean"]["jiio"] == {"mean": 7.0, "std": 0.0, "n": 1.0}
    md = markdown(grid, 0.5)
    assert "| pgd (n=2) | 92.0 ± 2.8 | 62.0 ± 2.8 | 61.5 ± 0.7 |" in md


def test_evaluation_attacks_with_the_configs_jiio_iterations_unless_told(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Table 5's JIIO column is the config's ``jiio_iterations`` (80 for the MNIST configs), not
    a fixed 40; an explicit value wins."""
    import json

    import jiio_tasks.adversarial.evaluate as ev
    from jiio_zoo.checkpoint import save
    from tests.zoo.tiny import tiny_model

    model = tiny_model("adversarial", dtype=torch.float32, num_classes=10)
    run = tmp_path / "run"
    save(model, run / "model.pt")
    config = {"data": "embedded", "data_root": None, "eps": 0.5, "method": "clean", "seed": 0}
    (run / "metrics.json").write_text(json.dumps({"config": config}), encoding="utf8")
    seen: list[int] = []

    def fake(model: ZooModel, images: Tensor, labels: Tensor, eps: float, *, pgd_steps: int,
             jiio_iterations: int, progress: Any) -> dict[str, float]:
        seen.append(jiio_iterations)
        return {"clean": 1.0, "pgd": 0.5, "jiio": 0.25}

    monkeypatch.setattr(ev, "_robust_accuracies", fake)
    out = ev.evaluate_runs([str(run)], tmp_path / "out", size=4)
    ev.evaluate_runs([str(run)], tmp_path / "out2", size=4, jiio_iterations=7)
    assert seen == [model.config.solver.jiio_iterations, 7] and seen[0] != 40
    assert out["runs"][0]["jiio_iterations"] == seen[0]


def test_training_budget_runs_on_the_given_clock(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train(clock=...)`` times the steps with that clock: with a clock that advances 30 s per
    step, a 1.5-minute budget stops after 3 steps whatever the wall time."""
    import itertools

    import jiio_tasks.adversarial.train as tr
    from jiio_tasks.runs import RunDir
    from tests.zoo.tiny import tiny_config

    cfg = tiny_config("adversarial", num_classes=10)
    monkeypatch.setattr(tr, "get_config", lambda name: cfg)
    monkeypatch.setattr(tr, "robust_accuracies", lambda *a, **k: {"clean": 1.0, "pgd": 1.0, "jiio": 1.0})
    ticks = itertools.count(step=30.0)  # a step is timed from one reading to the next
    final = tr.train(RunDir(tmp_path / "run"), tr.AdvTrainConfig(config="x", method="clean", steps=50, eps=0.5,
                                                                 batch_size=4, eval_size=2, max_minutes=1.5),
                     progress=False, clock=lambda: float(next(ticks)))
    assert final["steps_done"] == 3


# ---- the learning-rate schedule and the shift augmentation ---------------------------------------


def test_cosine_schedule_values_and_errors() -> None:
    from jiio_tasks.adversarial.train import scheduled_lr

    assert scheduled_lr(0.1, 7, 10, "constant") == 0.1
    # ½(1 + cos(π s / S)) at s = 0, S/4, S/2, S, beyond S
    for step, factor in ((0, 1.0), (25, (1 + 2 ** -0.5) / 2), (50, 0.5), (100, 0.0), (130, 0.0)):
        assert scheduled_lr(0.1, step, 100, "cosine") == pytest.approx(0.1 * factor, abs=1e-15)
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine', got 'linear'"):
        scheduled_lr(0.1, 0, 10, "linear")
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got nan"):
        scheduled_lr(float("nan"), 0, 10, "cosine")
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        scheduled_lr(0.1, 0, 0, "cosine")
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        scheduled_lr(0.1, -1, 10, "cosine")


def _shift_reference(image: Tensor, dy: int, dx: int) -> Tensor:
    """Translation by (dy, dx) as a roll whose wrapped-around rows and columns are zeroed."""
    out = torch.roll(image, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :dx] = 0
    elif dx < 0:
        out[..., dx:] = 0
    return out


def test_random_shift_translates_each_image_by_its_offsets() -> None:
    from jiio_tasks.adversarial.train import random_shift

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 2, 5, 7, generator=g)
    offsets = torch.tensor([[0, 0], [2, -1], [-2, 2], [1, 0], [0, -2], [-1, 1]])
    out = random_shift(images, offsets, 2)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], _shift_reference(images[i], dy, dx)), (dy, dx)
    assert torch.equal(random_shift(images, torch.zeros(6, 2, dtype=torch.long), 0), images)
    with pytest.raises(ValueError, match=r"offsets must lie in \[-1, 1\], got \(2, -1\) in row 1"):
        random_shift(images, offsets, 1)
    with pytest.raises(ValueError, match=r"offsets must have shape \(6, 2\), got \(6, 3\)"):
        random_shift(images, torch.zeros(6, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="shift must be an int >= 0, got -1"):
        random_shift(images, offsets, -1)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\), got \(6, 5, 7\)"):
        random_shift(images[:, 0], offsets, 2)


def test_training_applies_the_schedule_and_the_shifts_and_resumes_bit_for_bit(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step trains on shifted images at the scheduled rate; a run stopped by its time budget
    after 2 steps and resumed ends where an uninterrupted one does (the shifts come back with
    the RNG state, the rate from the step index)."""
    import itertools

    import jiio_tasks.adversarial.train as tr
    from jiio_tasks.runs import RunDir
    from tests.zoo.tiny import tiny_config

    cfg = tiny_config("adversarial", num_classes=10)
    monkeypatch.setattr(tr, "get_config", lambda name: cfg)
    monkeypatch.setattr(tr, "robust_accuracies", lambda *a, **k: {"clean": 1.0, "pgd": 1.0, "jiio": 1.0})
    seen: list[tuple[float, Tensor]] = []
    optimizers: list[torch.optim.Optimizer] = []
    make_optimizer, training_loss = tr.make_optimizer, tr.training_loss

    def recording_optimizer(*a: Any, **k: Any) -> torch.optim.Optimizer:
        optimizers.append(make_optimizer(*a, **k))
        return optimizers[-1]

    def recording_loss(model: Any, images: Tensor, *a: Any, **k: Any) -> Any:
        seen.append((optimizers[-1].param_groups[0]["lr"], images.clone()))
        return training_loss(model, images, *a, **k)

    monkeypatch.setattr(tr, "make_optimizer", recording_optimizer)
    monkeypatch.setattr(tr, "training_loss", recording_loss)

    def config(**kw: Any) -> Any:
        return tr.AdvTrainConfig(config="x", method="clean", steps=3, eps=0.5, batch_size=4, eval_size=2,
                                 lr=0.1, lr_schedule="cosine", shift=1, seed=5, **kw)

    straight = RunDir(tmp_path / "straight")
    tr.train(straight, config(), progress=False)
    assert [lr for lr, _ in seen] == pytest.approx([0.1, 0.1 * 0.75, 0.1 * 0.25])
    # the images are the batch's training digits, each shifted by at most one pixel
    torch.manual_seed(5)
    model = tr.build_model(cfg)
    digits, _ = tr.training_digits(model)
    idx = torch.randint(0, len(digits), (4,))
    offsets = torch.randint(-1, 2, (4, 2))
    assert torch.equal(seen[0][1], torch.stack([_shift_reference(digits[i], dy, dx)
                                                for i, (dy, dx) in zip(idx.tolist(), offsets.tolist(), strict=True)]))
    assert offsets.abs().max() == 1 and (offsets != 0).any()

    seen.clear()
    split = RunDir(tmp_path / "split")
    ticks = itertools.count(step=30.0)
    tr.train(split, config(max_minutes=1.0), progress=False, clock=lambda: float(next(ticks)))
    assert split.read_metrics()["final"]["steps_done"] == 2
    tr.train(split, config(), progress=False)
    assert [lr for lr, _ in seen] == pytest.approx([0.1, 0.1 * 0.75, 0.1 * 0.25])
    a, b = (torch.load(r.state_path, weights_only=True) for r in (straight, split))
    for k, v in a["modules"]["model"].items():
        assert torch.equal(v, b["modules"]["model"][k]), k

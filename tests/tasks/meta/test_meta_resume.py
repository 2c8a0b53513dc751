"""``train()`` stopped after a few steps and resumed from its run directory ends exactly where an
uninterrupted run does: same step counter, optimiser state and parameters (bit for bit), the
task stream continuing where it stopped rather than starting over."""

from __future__ import annotations

from pathlib import Path

import torch

from jiio_tasks.meta.train import InnerSettings, MetaTrainConfig, _model, train
from jiio_tasks.runs import RunDir

# the smallest real run of the shipped config: 1 task per step, a few solver iterations
INNER = InnerSettings(iterations=3, deq_iterations=3)


def _cfg(steps: int) -> MetaTrainConfig:
    return MetaTrainConfig(method="jiio", steps=steps, meta_batch=1, query_shots=1, eval_tasks=1,
                           inner=INNER, log_every=1, save_every=2)


def _restored(run: RunDir) -> tuple[int, torch.nn.Module, torch.optim.Optimizer, dict[str, object]]:
    model = _model(_cfg(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step, extra = run.resume({"model": model}, {"optimizer": opt})
    return step, model, opt, extra


def test_resumed_training_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = RunDir(tmp_path / "straight")
    train(straight, _cfg(4), progress=False)

    split = RunDir(tmp_path / "split")
    train(split, _cfg(2), progress=False)  # "killed" after 2 steps (its state is saved there)
    step, _, opt, extra = _restored(split)
    assert step == 2
    assert all(int(s["step"]) == 2 for s in opt.state_dict()["state"].values())
    assert "taskset_rng" in extra["family"]
    train(split, _cfg(4), progress=False)  # resumes at step 2

    s_step, s_model, s_opt, _ = _restored(straight)
    r_step, r_model, r_opt, _ = _restored(split)
    assert s_step == r_step == 4
    s_state, r_state = s_opt.state_dict()["state"], r_opt.state_dict()["state"]
    assert s_state.keys() == r_state.keys()
    for k in s_state:
        assert int(s_state[k]["step"]) == int(r_state[k]["step"]) == 4
        assert torch.equal(s_state[k]["exp_avg"], r_state[k]["exp_avg"])
        assert torch.equal(s_state[k]["exp_avg_sq"], r_state[k]["exp_avg_sq"])
    torch.manual_seed(0)  # train()'s initialisation
    fresh = _model(_cfg(1)).state_dict()
    moved = False
    for k, v in s_model.state_dict().items():
        assert torch.equal(v, r_model.state_dict()[k]), k
        moved = moved or not torch.equal(v, fresh[k])
    assert moved  # training changed the parameters: the comparison is not vacuous
    # the logged history is the uninterrupted one, step by step
    steps = [h["step"] for h in split.read_metrics()["history"]]
    assert steps == [1, 2, 3, 4]
    s_hist = straight.read_metrics()["history"]
    r_hist = split.read_metrics()["history"]
    assert [h["loss"] for h in s_hist] == [h["loss"] for h in r_hist]
    # the config's Jacobian penalty (λ = 0.5) is on; its probes are drawn again on resume
    assert [h["jacobian"] for h in s_hist] == [h["jacobian"] for h in r_hist]

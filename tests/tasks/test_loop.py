"""jiio_tasks.loop: the one training loop (resume, kill -9, guards, budget, schema, plots)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.runs import NonFiniteError, RunDir, RunError

STEPS = 40


class ToyFamily:
    """A family in ~15 lines: a linear regression whose data come from the family's own
    generator (resumable family state) and torch's global stream (restored by the loop)."""

    def __init__(self, run: RunDir, steps: int = STEPS, *, lr: float = 0.05, pause: float = 0.0,
                 max_seconds: float | None = None, blow_up_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.gen = torch.Generator().manual_seed(1)
        self.pause, self.blow_up_at = pause, blow_up_at
        self.loop = Loop(
            run_dir=run, model=self.model, optimizer=torch.optim.Adam(self.model.parameters(), lr=lr),
            config={"family": "toy", "lr": lr, "max_seconds": max_seconds}, steps=steps, save_every=1, max_seconds=max_seconds,
            seed=0, progress=False, title="toy", panels={"loss": "squared error"},
            metrics=lambda s: {"loss": s["se"] / s["n"]},
            state=lambda: {"gen": self.gen.get_state()},
            restore=lambda family: self.gen.set_state(family["gen"]),
        )

    def step(self, step: int) -> StepResult:
        x = torch.randn(8, 4, generator=self.gen) + torch.randn(8, 4)  # both streams
        err = self.model(x).squeeze(1) - x.sum(1)
        if self.blow_up_at is not None and step == self.blow_up_at:
            err = err * float("nan")
        if self.pause:
            time.sleep(self.pause)
        se = err.pow(2).sum()
        return StepResult(se / 8, {"se": float(se.detach()), "n": 8.0})

    def train(self) -> dict[str, Any]:
        result = self.loop.run(self.step)
        return self.loop.finish(result, {"weight_norm": float(self.model.weight.detach().norm())},
                                lambda path: (torch.save(self.model.state_dict(), path), path)[1])


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from tasks.test_loop import ToyFamily
from jiio_tasks.runs import RunDir
ToyFamily(RunDir({root!r}), pause=0.02).train()
"""


def _logged(root: Path) -> int:
    try:
        history = json.loads((root / "metrics.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        return 0
    return int(history[-1]["step"]) if history else 0


def test_kill_9_at_any_point_then_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = ToyFamily(RunDir(tmp_path / "straight"))
    straight.train()
    reference = _params(straight.model)
    root = tmp_path / "killed"
    tests = str(Path(__file__).resolve().parents[1])
    for kill_after in (5, 20):  # kill the child once it has logged this many steps (~20 ms each)
        child = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=tests, root=str(root))])
        deadline = time.monotonic() + 120
        while _logged(root) < kill_after and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.003)
        child.send_signal(signal.SIGKILL)  # no cleanup runs: a save may be cut in the middle
        child.wait()
    assert 20 <= _logged(root) < STEPS, "the child was not interrupted where intended"
    resumed = ToyFamily(RunDir(root))
    final = resumed.train()
    for p, q in zip(reference, _params(resumed.model), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    metrics = json.loads((root / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == list(range(1, STEPS + 1))
    assert final["steps_done"] == STEPS and not list(root.glob(".*.tmp"))


def test_metrics_schema_plot_and_checkpoint(tmp_path: Path) -> None:
    fam = ToyFamily(RunDir(tmp_path), steps=3)
    final = fam.train()
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["config"] == {"family": "toy", "lr": 0.05, "max_seconds": None}
    assert [sorted(h) for h in data["history"]] == [["loss", "seconds", "step"]] * 3
    seconds = [h["seconds"] for h in data["history"]]
    assert seconds == sorted(seconds) and seconds[0] > 0  # training time so far, cumulative
    assert data["final"] == final and final["train_seconds"] == pytest.approx(seconds[-1])
    assert set(final) == {"steps_done", "train_seconds", "weight_norm", "checkpoint"}
    assert (tmp_path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert set(state["modules"]) == {"model"} and set(state["optimizers"]) == {"optimizer"}
    assert set(state["extra"]) == {"seconds", "family"}
    torch.testing.assert_close(torch.load(final["checkpoint"], weights_only=True)["weight"], fam.model.weight)


def test_non_finite_loss_stops_before_the_update_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    fam = ToyFamily(RunDir(tmp_path), steps=6, blow_up_at=3)
    with pytest.raises(NonFiniteError, match="step 4"):
        fam.loop.run(fam.step)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["step"] == 3
    after3 = ToyFamily(RunDir(tmp_path / "ref"), steps=3)
    after3.train()
    torch.testing.assert_close(state["modules"]["model"]["weight"], after3.model.weight, rtol=0, atol=0)
    torch.testing.assert_close(fam.model.weight, after3.model.weight, rtol=0, atol=0)  # no update applied


def test_time_budget_saves_where_it_stops_and_the_same_command_continues(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    first = ToyFamily(run, pause=0.01, max_seconds=0.05)
    out = first.loop.run(first.step)
    assert 1 <= out.steps_done < STEPS and out.seconds >= 0.05
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == out.steps_done
    run.release()
    second = ToyFamily(RunDir(tmp_path), max_seconds=1e9)  # a budget may change on resume
    assert second.loop.run(second.step).steps_done == STEPS
    assert json.loads((tmp_path / "metrics.json").read_text())["resumed"][0]["step"] == out.steps_done


def test_resuming_a_run_whose_budget_is_spent_takes_no_step(tmp_path: Path) -> None:
    """The same command run again after its time budget ran out changes nothing (it used to
    take one more step), so a driver can re-run it to collect a finished run's results."""
    first = ToyFamily(RunDir(tmp_path), pause=0.01, max_seconds=0.05)
    done = first.train()["steps_done"]
    RunDir(tmp_path).release()
    again = ToyFamily(RunDir(tmp_path), pause=0.01, max_seconds=0.05)
    assert again.train()["steps_done"] == done
    torch.testing.assert_close(again.model.weight, first.model.weight, rtol=0, atol=0)


def test_resume_with_a_changed_setting_is_refused(tmp_path: Path) -> None:
    ToyFamily(RunDir(tmp_path), steps=2).train()
    RunDir(tmp_path).release()
    with pytest.raises(RunError, match=r"lr: 0.05 -> 0.1"):
        ToyFamily(RunDir(tmp_path), steps=4, lr=0.1).loop.resume()


def test_steps_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Loop.steps must be an int >= 1, got 0"):
        ToyFamily(RunDir(tmp_path), steps=0)

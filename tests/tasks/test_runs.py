"""RunDir: atomic state, exact resume, metrics history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jiio_tasks.runs import RunDir, RunError


def _train(run: RunDir, total: int, stop_at: int | None = None) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    start, _ = run.resume({"model": model}, {"opt": opt})
    for step in range(start, total):
        x = torch.randn(8, 3)  # the RNG state is restored on resume, so data continue identically
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(step + 1, loss=float(loss.detach()))
        run.save_state(step + 1, {"model": model}, {"opt": opt})
        if stop_at is not None and step + 1 == stop_at:
            break
    return model


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    straight = _train(RunDir(tmp_path / "a"), 10)
    run = RunDir(tmp_path / "b")
    _train(run, 10, stop_at=4)
    resumed = _train(run, 10)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, 11))


def test_corrupt_or_foreign_state_is_a_clear_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.state_path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read run state"):
        run.resume({"model": nn.Linear(1, 1)})
    torch.save({"format": "other"}, run.state_path)
    with pytest.raises(RunError, match="not a jiio run state"):
        run.resume({"model": nn.Linear(1, 1)})


def test_mismatched_model_is_reported(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state(1, {"model": nn.Linear(2, 2)})
    with pytest.raises(RunError, match="does not match"):
        run.resume({"model": nn.Linear(3, 3)})


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state(1, {"model": nn.Linear(2, 2)})
    run.log(1, loss=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "state.pt"]


class _Payload:
    """Unpickling this object runs ``os.system``: what a hostile ``state.pt`` would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_state_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    marker = tmp_path / "pwned"
    good = nn.Linear(2, 2)
    run.save_state(1, {"model": good})
    payload = torch.load(run.state_path, weights_only=True)
    payload["extra"] = {"evil": _Payload(marker)}
    torch.save(payload, run.state_path)
    with pytest.raises(RunError, match="refused to execute"):
        run.resume({"model": nn.Linear(2, 2)})
    assert not marker.exists()


def test_real_states_load_as_data_only(tmp_path: Path) -> None:
    # model, Adam state, RNG states (torch + Python's random) all load with weights_only=True
    run = RunDir(tmp_path)
    _train(run, 3)
    payload = torch.load(run.state_path, weights_only=True)
    assert payload["step"] == 3 and set(payload["optimizers"]) == {"opt"}


def test_non_finite_state_is_never_written_over_a_good_one(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    model = nn.Linear(2, 2)
    run.save_state(1, {"model": model})
    good = run.state_path.read_bytes()
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
        model.bias[0] = float("inf")
    with pytest.raises(RunError, match=r"non-finite values in modules\.model\.weight, modules\.model\.bias"):
        run.save_state(2, {"model": model})
    assert run.state_path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_non_finite_state_on_disk_is_refused_on_resume(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state(1, {"model": nn.Linear(2, 2)})
    payload = torch.load(run.state_path, weights_only=True)
    payload["modules"]["model"]["bias"][0] = float("nan")
    torch.save(payload, run.state_path)
    with pytest.raises(RunError, match="non-finite"):
        run.resume({"model": nn.Linear(2, 2)})

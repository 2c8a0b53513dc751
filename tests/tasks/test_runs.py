"""RunDir: atomic state, exact resume, metrics history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jiio_tasks.runs import RunDir, RunError


def _files(root: Path) -> list[str]:
    """The directory's files, without the writer lock's two files."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".lock"))


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
    assert _files(tmp_path) == ["metrics.json", "state.pt"]


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
    assert _files(tmp_path) == ["state.pt"]


def test_non_finite_state_on_disk_is_refused_on_resume(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_state(1, {"model": nn.Linear(2, 2)})
    payload = torch.load(run.state_path, weights_only=True)
    payload["modules"]["model"]["bias"][0] = float("nan")
    torch.save(payload, run.state_path)
    with pytest.raises(RunError, match="non-finite"):
        run.resume({"model": nn.Linear(2, 2)})


_HOLDER = """
import sys, time
from jiio_tasks.runs import RunDir
RunDir(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        run = RunDir(tmp_path)
        with pytest.raises(RunError, match=rf"being written by process {holder.pid}"):
            run.log(1, loss=1.0)
        assert not (tmp_path / "metrics.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
        holder.wait()
    run.log(1, loss=1.0)  # the OS dropped the dead process's lock
    assert json.loads((tmp_path / "metrics.json").read_text())["history"] == [{"step": 1, "loss": 1.0}]
    run.release()


def test_leftover_temp_files_are_cleaned_when_the_lock_is_taken(tmp_path: Path) -> None:
    (tmp_path / ".state.pt.abc123.tmp").write_bytes(b"half a save")
    (tmp_path / ".metrics.json.x.tmp").write_text("{")
    run = RunDir(tmp_path)
    run.save_state(1, {"model": nn.Linear(1, 1)})
    assert _files(tmp_path) == ["state.pt"]
    run.release()


def test_resume_refuses_changed_settings_and_records_allowed_ones(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cfg = {"lr": 0.1, "settings": {"batch_size": 8, "steps": 10}}
    run.begin(cfg, start=0)
    run.begin(cfg, start=4, steps=10)  # unchanged: fine
    with pytest.raises(RunError, match=r"lr: 0.1 -> 0.2; settings.batch_size: 8 -> 16"):
        run.begin({"lr": 0.2, "settings": {"batch_size": 16, "steps": 10}}, start=4, steps=10)
    run.begin({"lr": 0.1, "settings": {"batch_size": 8, "steps": 20}}, start=4, steps=20)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["resumed"] == [{"step": 4, "changed": {"settings.steps": [10, 20]}}]
    assert data["config"]["settings"]["steps"] == 20
    with pytest.raises(RunError, match="already done 4 steps; --steps 3"):
        run.begin({"lr": 0.1, "settings": {"batch_size": 8, "steps": 3}}, start=4, steps=3)
    run.release()


def test_non_finite_gradient_stops_before_the_update() -> None:
    from jiio_tasks.runs import NonFiniteError, backward_and_step

    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    backward_and_step(opt, model(x).pow(2).mean(), 0)  # a normal step: Adam has state now
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adam_state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state_dict()["state"].items()}
    with pytest.raises(NonFiniteError, match=r"step 2: the loss .* not finite; stopped before the update"):
        backward_and_step(opt, model(x).pow(2).mean() * float("inf"), 1)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    for k, v in opt.state_dict()["state"].items():
        for n, t in v.items():
            torch.testing.assert_close(t, adam_state[k][n], rtol=0, atol=0)


def test_a_diverging_training_run_stops_with_its_last_good_state(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from jiio_tasks.cli import main

    run = tmp_path / "run"
    base = ["train", "adversarial", "--method", "clean", "--run-dir", str(run), "--batch-size", "8",
            "--eval-size", "8", "--threads", "1", "--no-progress", "--jac-reg", "0"]
    assert main([*base, "--steps", "2"]) == 0
    good = (run / "state.pt").read_bytes()
    capsys.readouterr()
    bad = tmp_path / "bad"
    code = main([*base[:4], "--run-dir", str(bad), *base[6:], "--steps", "3", "--lr", "1e30"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("jiio: error: step ") and "not finite" in err and "\n" not in err
    if (bad / "state.pt").exists():  # whatever was saved before the blow-up is finite
        payload = torch.load(bad / "state.pt", weights_only=True)
        assert all(bool(torch.isfinite(t).all()) for t in payload["modules"]["model"].values())
    assert (run / "state.pt").read_bytes() == good


def test_history_plot_has_a_point_per_record_and_skips_absent_keys(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    run = RunDir(tmp_path)
    assert run.plot_history({"loss": "loss"}) is None  # nothing logged yet
    run.log(1, loss=2.0)
    path = run.plot_history({"loss": "loss", "accuracy": "never logged"}, title="one point")
    assert path is not None and path.name == "training_curve.png"
    img = mpimg.imread(path)
    assert img.shape[1] < 600  # one panel: the key that was never logged is left out
    run.log(2, loss=1.0, accuracy=0.5)
    img2 = mpimg.imread(run.plot_history({"loss": "loss", "accuracy": "acc"}))
    assert img2.shape[1] > img.shape[1]  # two panels
    run.release()

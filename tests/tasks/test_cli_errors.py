"""A CLI that fails like a tool: each user error is one line on stderr, a non-zero exit, no
traceback, and nothing written where the arguments were bad."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jiio_tasks.cli import main

_HOLDER = """
import sys, time
from jiio_tasks.runs import RunDir
RunDir(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0 and err.startswith("jiio: error: "), err
    assert "Traceback" not in err
    assert match in err, err


def test_unknown_config_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_in_one_line(["config", "show", "no_such_config"], capsys, "unknown config name 'no_such_config'")
    _fails_in_one_line(["config", "show", str(tmp_path / "missing.json")], capsys, "does not exist")
    (tmp_path / "loop.json").write_text(json.dumps({"base": "loop.json"}))
    _fails_in_one_line(["config", "show", str(tmp_path / "loop.json")], capsys, "is its own base")
    (tmp_path / "typo.json").write_text(json.dumps({"base": "digits_adv_small", "modle": {}}))
    _fails_in_one_line(["config", "show", str(tmp_path / "typo.json")], capsys,
                      "modle: unknown key for ZooConfig (valid fields: architecture, model, ")
    (tmp_path / "bad.json").write_text(json.dumps({"base": "digits_adv_small", "solver": {"damping": [0.8, 0.6, -2]}}))
    _fails_in_one_line(["config", "show", str(tmp_path / "bad.json")], capsys,
                       "solver.damping[2]: SolverConfig.damping alpha_x must be a finite number > 0, got -2")


def test_corrupt_run_state_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"not a checkpoint")
    _fails_in_one_line(["train", "adversarial", "--run-dir", str(run), "--steps", "1", "--threads", "1",
                        "--no-progress"], capsys, "cannot read run state")


def test_locked_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        _fails_in_one_line(["train", "adversarial", "--run-dir", str(run), "--steps", "1", "--threads", "1",
                            "--no-progress"], capsys, f"being written by process {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (run / "state.pt").exists() and not (run / "metrics.json").exists()


def test_resume_with_a_changed_setting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jiio_tasks.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.begin({"config": "digits_adv_small", "lr": 0.001, "steps": 5}, start=0)
    run.save_state(2, {"model": torch.nn.Linear(1, 1)})
    run.release()
    cfg = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    with pytest.raises(Exception, match=r"lr: 0.001 -> 0.002"):
        RunDir(tmp_path / "run").begin({**cfg, "lr": 0.002}, start=2, steps=5)


def test_eval_of_a_missing_run_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_run"
    _fails_in_one_line(["eval", "adversarial", str(missing), "--out", str(tmp_path / "out"), "--size", "4"],
                       capsys, f"run directory {missing} does not exist")
    assert not missing.exists()
    _fails_in_one_line(["eval", "meta", "--run-dir", str(missing)], capsys, "does not exist")
    assert not missing.exists()


def test_missing_data_root_is_one_line_and_creates_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    base = ["train", "adversarial", "--run-dir", str(run), "--steps", "1", "--threads", "1", "--no-progress",
            "--method", "clean", "--data", "mnist"]
    _fails_in_one_line(base, capsys, "--data mnist needs --data-root")
    _fails_in_one_line([*base, "--data-root", str(tmp_path / "nowhere")], capsys, str(tmp_path / "nowhere"))
    assert not run.exists()
    _fails_in_one_line(["train", "generative", "--config", "celeba_gen", "--run-dir", str(run), "--steps", "1",
                        "--no-progress", "--data-root", str(tmp_path / "nowhere")], capsys, str(tmp_path / "nowhere"))
    assert not run.exists()


def test_disk_full_names_the_file_and_keeps_the_last_state(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from jiio_tasks import runs

    run = tmp_path / "run"
    args = ["train", "meta", "--run-dir", str(run), "--meta-batch", "1", "--query-shots", "1", "--eval-tasks", "1",
            "--iterations", "2", "--deq-iterations", "2", "--threads", "1", "--no-progress"]
    assert main([*args, "--steps", "1"]) == 0
    capsys.readouterr()
    good = (run / "state.pt").read_bytes()
    real_replace = os.replace

    def full(src: str, dst: str) -> None:
        if str(dst).endswith("state.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", full)
    _fails_in_one_line([*args, "--steps", "2"], capsys, f"cannot write {run / 'state.pt'}: No space left on device")
    assert (run / "state.pt").read_bytes() == good
    assert not list(run.glob(".*.tmp"))

"""Every family's `jiio train` takes a JSON config file (`{"base": NAME, ...overrides}`), and the
override reaches the run: one short training step per family, checked in the recorded settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jiio_tasks.cli import main

FAST = ["--steps", "1", "--no-progress"]
CASES = {
    "generative": ("faces_gen_small", ["--iterations", "2"]),
    "inverse": ("faces_gen_small", ["--iterations", "2", "--task", "inpaint"]),
    "adversarial": ("digits_adv_small", ["--method", "clean", "--eval-size", "2", "--pgd-steps", "1",
                                          "--jiio-iterations", "2", "--threads", "1"]),
    "meta": ("glyphs_meta_small", ["--meta-batch", "1", "--query-shots", "1", "--eval-tasks", "1",
                                   "--iterations", "2", "--deq-iterations", "2", "--threads", "1"]),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_train_takes_a_json_config_and_applies_its_override(tmp_path: Path, family: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    base, extra = CASES[family]
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "mine.json"  # the base is a catalogue name; batch 2, no penalty
    config.write_text(json.dumps({"base": base, "train": {"jac_reg": 0.0, "batch_size": 2}}), encoding="utf8")
    run = tmp_path / "run"
    assert main(["train", family, "--config", str(config), "--run-dir", str(run), *FAST, *extra]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf8"))
    recorded = metrics["config"]
    assert recorded["jac_reg"] == 0.0
    if family != "meta":  # meta batches are tasks (--meta-batch), not the config's batch size
        assert recorded["batch_size"] == 2
    assert "jacobian" not in metrics["history"][0] or metrics["history"][0]["jacobian"] == 0.0
    assert metrics["final"]["steps_done"] == 1 and (run / "training_curve.png").exists()

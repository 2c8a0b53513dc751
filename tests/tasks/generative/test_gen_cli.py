"""The CLI: registration, a 1-step training run through the real zoo config, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jiio_tasks.cli import build_parser, main


def test_subcommands_are_registered() -> None:
    parser = build_parser()
    for argv in (
        ["train", "generative", "--run-dir", "r", "--steps", "1"],
        ["train", "inverse", "--run-dir", "r", "--steps", "1", "--task", "inpaint"],
        ["eval", "generative", "--weights", "w", "--out", "o"],
        ["eval", "inverse", "--weights", "w", "--out", "o"],
        ["sample", "generative", "--weights", "w", "--out", "o", "--density", "vae", "--inception", "i.pt"],
        ["train", "mdeq-vae", "--run-dir", "r", "--steps", "1", "--seconds", "5"],
        ["train", "features", "--out", "f.pt", "--steps", "3"],
        ["eval", "table1", "--out", "o", "--vae-run", "v", "--mdeq-vae-run", "m", "--rotnet", "f.pt"],
    ):
        args = parser.parse_args(argv)
        assert callable(args.handler)


def test_train_generative_one_step_then_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    rc = main(["train", "generative", "--run-dir", str(run), "--steps", "1", "--batch-size", "2",
               "--iterations", "2", "--no-progress"])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["model"] == "faces_gen_small"
    assert metrics["config"]["data"] == "embedded faces"
    assert len(metrics["history"]) == 1 and (run / "model.pt").is_file()
    capsys.readouterr()
    # missing weights and a missing CelebA root: exit code 2 and a message naming the path
    assert main(["eval", "generative", "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    assert "nope.pt" in capsys.readouterr().err
    rc = main(["train", "generative", "--config", "celeba_gen", "--data-root", str(tmp_path / "celeba-root"),
               "--run-dir", str(tmp_path / "r2"), "--steps", "1"])
    assert rc == 2
    assert "celeba" in capsys.readouterr().err.lower()
    # the embedded faces are grey: an RGB config without --data-root is refused clearly
    assert main(["train", "generative", "--config", "celeba_gen", "--run-dir", str(tmp_path / "r3"), "--steps", "1"]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_table1_and_sampling_name_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "table1", "--out", str(tmp_path / "o"), "--mdeq-vae-run", str(tmp_path / "mv")]) == 2
    assert "mdeq-vae-run" in capsys.readouterr().err
    assert main(["eval", "table1", "--out", str(tmp_path / "o"), "--inception", str(tmp_path / "inc.pt")]) == 2
    assert "inc.pt" in capsys.readouterr().err

"""Every long-running ``jiio`` command talks: a tqdm bar with a total (so an ETA) on stderr,
never on stdout, and ``--no-progress`` really hides it.

The commands run in-process on tiny models and settings (a tiny decoder checkpoint, a tiny
classifier run directory, MAML over two meta-test tasks); the argparse tree is walked to check
that every train/eval/sample/bench subcommand offers ``--no-progress``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from jiio_tasks.cli import build_parser, main
from jiio_zoo.checkpoint import save
from tests.tasks.generative.tiny import tiny_decoder
from tests.zoo.tiny import tiny_model

NO_PROGRESS_HELP = "hide progress bars (stderr)"
#: a tqdm bar with a known total: "desc:  50%|█████     | 1/2 [00:01<00:01, ...]" (ETA after '<')
BAR = re.compile(r"\d+%\|.*\| \d+/\d+ \[[^]]*<")


def _subcommands() -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, verb_parser in action.choices.items():
                for sub in verb_parser._actions:
                    if isinstance(sub, argparse._SubParsersAction):
                        for family, parser in sub.choices.items():
                            yield verb, family, parser


def test_every_long_command_has_no_progress() -> None:
    seen = set()
    for verb, family, parser in _subcommands():
        if verb not in ("train", "eval", "sample", "bench"):
            continue
        seen.add((verb, family))
        flag = [a for a in parser._actions if "--no-progress" in a.option_strings]
        assert flag, f"jiio {verb} {family} has no --no-progress"
        assert flag[0].help == NO_PROGRESS_HELP, (verb, family, flag[0].help)
    # every family registered: the walk is not vacuous
    assert {("eval", "generative"), ("eval", "adversarial"), ("eval", "meta"), ("sample", "generative"),
            ("bench", "adversarial"), ("train", "meta"), ("eval", "table1")} <= seen


@pytest.fixture(scope="module")
def decoder_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 8×8 grey decoder checkpoint (the embedded faces are resized to 8×8 for it)."""
    return save(tiny_decoder(iterations=4).float(), tmp_path_factory.mktemp("gen") / "model.pt")


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished adversarial run directory: model.pt and the recorded config."""
    run = tmp_path_factory.mktemp("adv") / "run"
    save(tiny_model("adversarial", dtype=torch.float32, num_classes=10), run / "model.pt")
    config = {"data": "embedded", "data_root": None, "eps": 0.5, "method": "clean", "seed": 0}
    (run / "metrics.json").write_text(json.dumps({"config": config}), encoding="utf8")
    return run


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jiio_tasks.meta.train import MetaTrainConfig, _model
    from jiio_tasks.runs import RunDir

    run = RunDir(tmp_path_factory.mktemp("meta") / "run")
    run.save_state(0, {"model": _model(MetaTrainConfig(method="maml"))})
    run.release()
    return run.root


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def _commands(tmp: Path, weights: Path, adv_run: Path, meta_run: Path) -> dict[str, tuple[list[str], str]]:
    """name: (argv, the label of one of its bars)."""
    return {
        "eval generative": (["eval", "generative", "--weights", str(weights), "--out", str(tmp / "eg"),
                             "--count", "2", "--iterations", "4", "--adam-steps", "1", "--adam-lrs", "0.1,0.2"],
                            "fair comparison"),
        "sample generative": (["sample", "generative", "--weights", str(weights), "--out", str(tmp / "sg"),
                               "--count", "2", "--frechet-samples", "4", "--iterations", "2"],
                              "JIIO latents of the training images"),
        "eval adversarial": (["eval", "adversarial", str(adv_run), "--out", str(tmp / "ea"), "--size", "4",
                              "--pgd-steps", "1", "--jiio-iterations", "2"], "eval adversarial"),
        "bench adversarial": (["bench", "adversarial", "--run-dir", str(adv_run), "--out", str(tmp / "ba"),
                               "--size", "4", "--pgd-steps", "1", "--pgd-grid", "1", "--jiio-iterations", "1", "2",
                               "--repeats", "1", "--threads", "1"], "bench adversarial"),
        "eval meta": (["eval", "meta", "--run-dir", str(meta_run), "--method", "maml", "--eval-tasks", "2",
                       "--threads", "1"], "eval meta/maml"),
    }


@pytest.mark.parametrize("name", ["eval generative", "sample generative", "eval adversarial",
                                  "bench adversarial", "eval meta"])
def test_progress_on_stderr_and_hidden_by_no_progress(
    name: str, tmp_path: Path, decoder_weights: Path, classifier_run: Path, maml_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, label = _commands(tmp_path, decoder_weights, classifier_run, maml_run)[name]
    out, err = _run(argv, capsys)
    assert label in err and BAR.search(err), f"{name}: no bar with a total on stderr:\n{err[-2000:]}"
    assert label not in out and not BAR.search(out) and "\r" not in out, f"{name}: progress on stdout:\n{out}"
    if argv[1] == "generative":  # stdout is the result alone
        json.loads(out)
    quiet_out, quiet_err = _run([*argv, "--no-progress"], capsys)
    assert label not in quiet_err and not BAR.search(quiet_err), f"{name} --no-progress still shows:\n{quiet_err}"
    assert not BAR.search(quiet_out)

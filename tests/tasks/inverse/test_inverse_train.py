"""Supervised inverse training (eq. 24) through the one loop, and its gradient-error measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jiio_tasks.inverse.train import TrainSettings, outer_gradient_error, train
from jiio_tasks.runs import RunDir
from tests.tasks.generative.tiny import check_training_run, image_source, params, tiny_decoder


@pytest.mark.parametrize(("outer", "task"), [("kkt", "inpaint"), ("fixed-input", "blur")])
def test_training_steps_change_parameters(tmp_path: Path, outer: str, task: str) -> None:
    settings = TrainSettings(steps=2, task=task, outer=outer, iterations=6, save_every=1)
    model = tiny_decoder(seed=0)
    before = params(model)
    final = train(model, image_source(), RunDir(tmp_path / "run"), settings, progress=False)
    check_training_run(tmp_path / "run", model, before, final)
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert (config["family"], config["task"], config["outer"]) == ("inverse", task, outer)


def test_the_shortcut_is_refused() -> None:
    with pytest.raises(ValueError, match=r"TrainSettings.outer must be one of 'kkt', 'fixed-input', got 'shortcut'"):
        TrainSettings(steps=1, outer="shortcut")


def test_gradient_error_is_zero_against_itself_and_positive_for_fixed_input() -> None:
    model = tiny_decoder(dtype=torch.float64, alpha_x=0.5, iterations=30)
    clean = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = outer_gradient_error(model, clean, "inpaint", approximate="kkt")
    assert same["relative_error"] < 1e-10 and abs(same["cosine"] - 1) < 1e-10
    cheap = outer_gradient_error(model, clean, "inpaint")
    assert 1e-4 < cheap["relative_error"] < 2 and -1 <= cheap["cosine"] < 1


def test_training_time_is_taken_on_the_given_clock(tmp_path: Path) -> None:
    """``clock`` times the steps: with a clock that advances 1 s per step the run records
    exactly one second per step, whatever the wall time (a CPU-time budget passes
    ``time.process_time``)."""
    import itertools

    ticks = itertools.count()
    settings = TrainSettings(steps=3, task="inpaint", iterations=4, save_every=3)
    final = train(tiny_decoder(seed=0), image_source(), RunDir(tmp_path / "run"), settings, progress=False,
                  clock=lambda: float(next(ticks)))
    assert (final["steps_done"], final["train_seconds"]) == (3, 3.0)

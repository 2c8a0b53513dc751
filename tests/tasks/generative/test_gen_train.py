"""Tiny end-to-end JIIO training steps of the generative family (shortcut gradient), and resume."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch

from jiio_tasks.generative.train import TrainSettings, train
from jiio_tasks.runs import RunDir

from .tiny import check_training_run, image_source, params, tiny_decoder


def test_training_steps_change_parameters(tmp_path: Path) -> None:
    settings = TrainSettings(steps=2, iterations=6, save_every=1)
    model = tiny_decoder(seed=0)
    before = params(model)
    final = train(model, image_source(), RunDir(tmp_path / "run"), settings, progress=False)
    check_training_run(tmp_path / "run", model, before, final)


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    settings = TrainSettings(steps=1, iterations=6, save_every=1)
    model = tiny_decoder(seed=0)
    train(model, image_source(), RunDir(tmp_path / "run"), settings, progress=False)
    more = attrs.evolve(settings, steps=3)
    resumed = tiny_decoder(seed=1)  # different init: everything must come from state.pt
    train(resumed, image_source(), RunDir(tmp_path / "run"), more, progress=False)
    straight = tiny_decoder(seed=0)
    train(straight, image_source(), RunDir(tmp_path / "straight"), more, progress=False)
    torch.testing.assert_close(params(resumed), params(straight), rtol=1e-5, atol=1e-6)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]

"""Tiny end-to-end JIIO training steps: generative (shortcut) and supervised inverse (KKT)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch

from jiio_tasks.generative.data import ImageSource
from jiio_tasks.generative.train import TrainSettings, train
from jiio_tasks.runs import RunDir
from jiio_zoo.checkpoint import load_model

from .tiny import tiny_decoder


class _Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.images = torch.rand(12, 1, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


def _source() -> ImageSource:
    return ImageSource(_Images(), 8, 1, "random test images")


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize(
    ("mode", "outer", "corruption"),
    [("generative", "shortcut", "denoise0.2"), ("supervised", "kkt", "inpaint"), ("supervised", "fixed-input", "blur")],
)
def test_training_steps_change_parameters(tmp_path: Path, mode: str, outer: str, corruption: str) -> None:
    settings = TrainSettings(steps=2, mode=mode, outer=outer, corruption=corruption, iterations=6, save_every=1)  # type: ignore[arg-type]
    model = tiny_decoder(seed=0)
    before = _params(model)
    final = train(model, _source(), RunDir(tmp_path / "run"), settings, progress=False)
    after = _params(model)
    assert bool(torch.isfinite(after).all())
    assert float((after - before).abs().max()) > 1e-5
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in metrics["history"])
    assert metrics["history"][0]["jacobian"] > 0  # λ = 0.1 from the config: penalty computed
    assert final["steps"] == final["steps_done"] == 2
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    reloaded = load_model(tmp_path / "run" / "model.pt")
    torch.testing.assert_close(_params(reloaded), after)


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    settings = TrainSettings(steps=1, iterations=6, save_every=1)
    model = tiny_decoder(seed=0)
    train(model, _source(), RunDir(tmp_path / "run"), settings, progress=False)
    more = attrs.evolve(settings, steps=3)
    resumed = tiny_decoder(seed=1)  # different init: everything must come from state.pt
    train(resumed, _source(), RunDir(tmp_path / "run"), more, progress=False)
    straight = tiny_decoder(seed=0)
    train(straight, _source(), RunDir(tmp_path / "straight"), more, progress=False)
    torch.testing.assert_close(_params(resumed), _params(straight), rtol=1e-5, atol=1e-6)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]


def test_supervised_refuses_the_shortcut() -> None:
    with pytest.raises(ValueError, match="kkt"):
        TrainSettings(steps=1, mode="supervised", outer="shortcut")

"""The public face splits (jiio_tasks.imaging.splits) are the exact images the evaluators
score on (checked by intercepting what each ``jiio`` command hands its evaluator), are
deterministic, and never overlap the training faces."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from jiio_tasks.cli import main
from jiio_tasks.data import EmbeddedFaces
from jiio_tasks.imaging.splits import HELD_OUT_COUNT, held_out_faces, training_faces, training_stream
from jiio_zoo.checkpoint import save
from tests.tasks.generative.tiny import tiny_decoder


def test_held_out_faces_are_the_embedded_test_split() -> None:
    faces = held_out_faces()
    assert faces.shape == (HELD_OUT_COUNT, 1, 32, 32) == (20, 1, 32, 32)
    assert torch.equal(faces, EmbeddedFaces("test", size=32).images)  # all 20, in split order
    assert torch.equal(held_out_faces(5, size=8), EmbeddedFaces("test", size=8).images[:5])
    assert torch.equal(held_out_faces(None), faces) and torch.equal(held_out_faces(500), faces)
    assert torch.equal(held_out_faces(7), faces[:7])  # a smaller count is a prefix
    assert torch.equal(held_out_faces(), faces)  # deterministic
    with pytest.raises(ValueError, match="count"):
        held_out_faces(0)


def test_training_faces_are_the_unaugmented_train_split_and_the_stream_draws_from_it() -> None:
    train = training_faces()
    assert torch.equal(train, EmbeddedFaces("train", size=32, augment=False).images)
    assert train.shape == (80, 1, 32, 32) and torch.equal(training_faces(), train)
    torch.manual_seed(0)
    batch = training_stream().batch(4)
    assert batch.shape == (4, 1, 32, 32) and float(batch.min()) >= 0 and float(batch.max()) <= 1


def _digests(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in images}


def test_held_out_faces_are_disjoint_from_the_training_faces() -> None:
    # at the stored 25×25 resolution (no resize): 20 + 80 distinct images, none shared
    held, train = _digests(held_out_faces(None, size=25)), _digests(training_faces(size=25))
    assert len(held) == 20 and len(train) == 80
    assert not held & train


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tiny_decoder(iterations=4).float(), tmp_path_factory.mktemp("w") / "model.pt")


def _capture(monkeypatch: pytest.MonkeyPatch, module: str, name: str, result: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen["args"], seen["kwargs"] = args, kwargs
        return result

    monkeypatch.setattr(f"{module}.{name}", fake)
    return seen


def test_eval_commands_score_on_the_held_out_faces(weights: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    expected = held_out_faces(3, size=8, channels=1)  # the tiny decoder makes 8×8 grey images
    gen = _capture(monkeypatch, "jiio_tasks.generative.evaluate", "evaluate_generative",
                   {"jiio_vs_adam": {"speedup": None, "adam_steps": 1}})
    assert main(["eval", "generative", "--weights", str(weights), "--out", str(tmp_path), "--count", "3"]) == 0
    assert torch.equal(gen["args"][1], expected)
    inv = _capture(monkeypatch, "jiio_tasks.inverse.evaluate", "evaluate_inverse", {})
    assert main(["eval", "inverse", "--weights", str(weights), "--out", str(tmp_path), "--count", "3"]) == 0
    assert torch.equal(inv["args"][1], expected)
    table = _capture(monkeypatch, "jiio_tasks.generative.table", "generative_table", {"table": ""})
    assert main(["eval", "table1", "--weights", str(weights), "--out", str(tmp_path), "--count", "3"]) == 0
    test_images, train_images = table["args"][:2]
    assert torch.equal(test_images, expected)
    assert torch.equal(train_images, training_faces(size=8, channels=1))
    sample = _capture(monkeypatch, "jiio_tasks.generative.evaluate", "sample_generative", {})
    assert main(["sample", "generative", "--weights", str(weights), "--out", str(tmp_path),
                 "--frechet-samples", "0"]) == 0
    assert torch.equal(sample["args"][1], training_faces(size=8, channels=1))

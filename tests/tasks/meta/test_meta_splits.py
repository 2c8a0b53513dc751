"""The public task splits (jiio_tasks.meta.splits) are the exact tasks the trainer and
``jiio eval meta`` use, deterministic, and use no meta-train glyph class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from jiio_tasks.cli import main
from jiio_tasks.data import Task
from jiio_tasks.meta import evaluate as meta_evaluate
from jiio_tasks.meta.splits import META_TEST_SEED, glyph_size, meta_test_tasks, meta_train_tasks
from jiio_tasks.meta.train import MetaTrainConfig, _model, tasksets
from jiio_tasks.runs import RunDir


def _same(a: Task, b: Task) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("support_x", "support_y", "query_x", "query_y"))


def test_meta_test_tasks_are_the_trainers_and_fixed() -> None:
    cfg = MetaTrainConfig(eval_tasks=4, query_shots=1)
    train_ts, test_ts = tasksets(cfg)  # what train() meta-trains on and evaluates on
    tasks = meta_test_tasks(ways=5, shots=1, query_shots=1, count=4)
    assert len(tasks) == 4 and tasks.seed == META_TEST_SEED
    assert all(_same(a, b) for a, b in zip(tasks, test_ts, strict=True))
    assert _same(tasks[3], meta_test_tasks(ways=5, shots=1, query_shots=1, count=4)[3])  # any order
    assert tasks[0].support_x.shape == (5, 1, glyph_size(), glyph_size()) == (5, 1, 14, 14)
    stream = meta_train_tasks(ways=5, shots=1, query_shots=1, seed=cfg.seed)
    assert _same(stream.sample(), train_ts.sample()) and _same(stream.sample(), train_ts.sample())


def test_meta_test_classes_are_disjoint_from_the_meta_train_classes() -> None:
    test_glyphs = meta_test_tasks(count=1).dataset.dataset  # RotatedClasses over EmbeddedGlyphs
    train_glyphs = meta_train_tasks().dataset.dataset
    assert test_glyphs.split == "test" and train_glyphs.split == "train"
    assert not set(test_glyphs.glyph_ids.tolist()) & set(train_glyphs.glyph_ids.tolist())


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = RunDir(tmp_path_factory.mktemp("meta") / "run")
    torch.manual_seed(0)
    run.save_state(0, {"model": _model(MetaTrainConfig(method="maml"))})
    run.release()
    return run.root


def test_eval_meta_uses_the_meta_test_tasks(maml_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(model: Any, tasks: Any, cfg: Any, batch: int = 10, *, progress: bool = False) -> dict[str, float]:
        seen["tasks"] = list(tasks)
        return {"accuracy": 0.0}

    monkeypatch.setattr(meta_evaluate, "evaluate", fake)
    assert main(["eval", "meta", "--run-dir", str(maml_run), "--method", "maml", "--eval-tasks", "3",
                 "--query-shots", "1", "--no-progress"]) == 0
    want = meta_test_tasks(ways=5, shots=1, query_shots=1, count=3)
    assert len(seen["tasks"]) == 3 and all(_same(a, b) for a, b in zip(seen["tasks"], want, strict=True))

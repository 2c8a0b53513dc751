"""The family CLI modules register their subcommands with the documented options."""

from __future__ import annotations

import pytest

from jiio_tasks.cli import build_parser


def test_adversarial_and_meta_commands_parse() -> None:
    parser = build_parser()
    a = parser.parse_args(["train", "adversarial", "--method", "pgd", "--run", "/tmp/x", "--steps", "3"])
    assert a.method == "pgd" and a.steps == 3 and a.config == "digits_adv_small" and callable(a.handler)
    e = parser.parse_args(["eval", "adversarial", "r1", "r2", "--out", "o"])
    assert e.runs == ["r1", "r2"] and e.pgd_steps == 20
    b = parser.parse_args(["bench", "adversarial", "--out", "o"])
    assert b.jiio_iterations == [10, 20, 40, 80] and b.pgd_steps == 20
    m = parser.parse_args(["train", "meta", "--method", "maml", "--run", "/tmp/y"])
    assert m.method == "maml" and m.config == "glyphs_meta_small" and m.ways == 5 and m.shots == 1
    assert a.handler is not m.handler is not e.handler


def test_train_adversarial_passes_its_options_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every option of ``jiio train adversarial`` reaches ``AdvTrainConfig`` (here the schedule and
    the shift augmentation, given non-default values), and nothing else is trained."""
    import jiio_tasks.adversarial.train as tr

    captured: list[tr.AdvTrainConfig] = []
    monkeypatch.setattr(tr, "train", lambda run, cfg, **kw: captured.append(cfg) or {"steps_done": 0})
    a = build_parser().parse_args(["train", "adversarial", "--run", "/tmp/x", "--steps", "7", "--lr-schedule",
                                   "cosine", "--shift", "2", "--max-minutes", "3", "--no-progress"])
    assert a.handler(a) == 0
    (cfg,) = captured
    assert (cfg.steps, cfg.lr_schedule, cfg.shift, cfg.max_minutes) == (7, "cosine", 2, 3.0)

"""``jiio config list|show``: the printed config loads back as the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from jiio_zoo.configs import CONFIGS, get_config


def test_cli_show_prints_a_loadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jiio_tasks.cli import main

    assert main(["config", "show", "faces_gen_small"]) == 0
    path = tmp_path / "shown.json"
    path.write_text(capsys.readouterr().out, encoding="utf8")
    assert get_config(str(path)) == CONFIGS["faces_gen_small"]
    assert main(["config", "list"]) == 0
    listed = capsys.readouterr().out.split()
    assert all(name in listed for name in CONFIGS)
    assert main(["config", "show", "nope"]) == 2
    assert "unknown config name" in capsys.readouterr().err


def test_commands_without_ddp_refuse_torchrun(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from jiio_tasks.cli import DISTRIBUTED, main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["config", "list"]) == 2
    err = capsys.readouterr().err
    assert "does not run under torchrun" in err and "WORLD_SIZE=2" in err
    assert "'jiio train adversarial'" in err and ("train", "adversarial") in DISTRIBUTED
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["config", "list"]) == 0

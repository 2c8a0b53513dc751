"""Configs from JSON files: whole configs, ``base`` + overrides, and the errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jiio_zoo.configs import CONFIGS, ConfigError, get_config, load_config_file
from jiio_zoo.model import build_model


def _write(tmp_path: Path, data: object, name: str = "c.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf8")
    return path


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_whole_config_file_round_trips(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, CONFIGS[name].to_dict())  # JSON turns tuples into lists
    assert get_config(str(path)) == CONFIGS[name]
    assert get_config(path) == CONFIGS[name]  # PathLike accepted too


def test_base_with_nested_overrides(tmp_path: Path) -> None:
    base = CONFIGS["digits_adv_small"]
    path = _write(tmp_path, {"base": "digits_adv_small", "name": "digits_wide",
                             "model": {"channels": [16, 32]}, "train": {"learning_rate": 5e-4}})
    cfg = load_config_file(path)
    assert cfg.name == "digits_wide"
    assert cfg.model.channels == (16, 32)  # type: ignore[union-attr]
    assert cfg.train.learning_rate == 5e-4
    # everything not overridden is the base's
    assert cfg.solver == base.solver
    assert cfg.model.image_size == base.model.image_size  # type: ignore[union-attr]
    assert cfg.train.batch_size == base.train.batch_size
    # the override reaches the built model: wider channels, more parameters
    wide = sum(p.numel() for p in build_model(cfg).parameters())
    narrow = sum(p.numel() for p in build_model(base).parameters())
    assert wide > narrow


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"base": "digits_adv_small", "modle": {}}, r"^modle: unknown key for ZooConfig \(valid fields: "),
        ({"base": "digits_adv_small", "model": {"chanels": [8, 8]}}, r"^model.chanels: unknown key for MDEQConfig"),
        ({"base": "no_such_config"}, "unknown base 'no_such_config'"),
        ([1, 2, 3], "must hold a JSON object"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_config(str(_write(tmp_path, data)))


def test_bad_values_are_rejected_by_the_validators(tmp_path: Path) -> None:
    path = _write(tmp_path, {"base": "digits_adv_small", "model": {"channels": [8, -1]}})
    with pytest.raises(ConfigError, match=r"^model.channels\[1\]: MDEQConfig.channels\[1\] must be an int >= 1, got -1$"):
        get_config(str(path))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_config(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        get_config(str(bad))
    with pytest.raises(ValueError, match=r"unknown config name 'nope'.*faces_gen_small"):
        get_config("nope")


def test_base_file_resolves_against_the_including_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    (sub / "parent.json").write_text(json.dumps({"base": "faces_gen_small", "name": "parent_cfg"}))
    (sub / "child.json").write_text(json.dumps({"base": "parent.json", "name": "child_cfg",
                                                "train": {"batch_size": 3}}))
    monkeypatch.chdir(tmp_path)  # the working directory has no parent.json
    cfg = load_config_file(sub / "child.json")
    assert cfg.name == "child_cfg" and cfg.train.batch_size == 3
    assert cfg.model == get_config("faces_gen_small").model
    # and the zoo loader takes the file (fresh weights)
    from jiio_zoo import load

    model = load(str(sub / "child.json"), pretrained=False)
    assert model.config == cfg


def test_base_cycle_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    (tmp_path / "self.json").write_text(json.dumps({"base": "self.json"}))
    for name in ("a.json", "self.json"):
        with pytest.raises(ConfigError, match="is its own base") as info:
            load_config_file(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)

"""Checkpoints: round trip, config checks, atomic writes and clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs
import pytest
import torch

import jiio_zoo.checkpoint as ckpt_mod
from jiio_zoo.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    jiio_version,
    load_into,
    load_model,
    promote,
    read,
    save,
)
from jiio_zoo.model import build_model

from .tiny import tiny_input, tiny_model


def _outputs(
    model: torch.nn.Module, x: torch.Tensor, context: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        z = model.layer.initial_state(x, context)
        for _ in range(3):
            z = model.layer(z, x, context)
        return (*z, model.decode(z))


@pytest.mark.parametrize("task", ["adversarial", "generative", "meta", "toy"])
def test_round_trip_rebuilds_an_identical_model(task: str, tmp_path: Path) -> None:
    model = tiny_model(task, seed=3, dtype=torch.float32)
    path = save(model, tmp_path / "sub" / "m.pt", extra={"step": 7})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert raw["jiio_version"] == jiio_version() and raw["config_name"] == model.config.name
    assert set(raw) == {"format", "format_version", "jiio_version", "config_name", "config", "state_dict", "extra"}

    loaded = load_model(path)
    assert loaded.config == model.config
    assert read(path).extra == {"step": 7}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    x, context = tiny_input(model, batch=2)
    for a, b in zip(_outputs(model, x, context), _outputs(loaded, x, context), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    fresh = tiny_model(task, seed=99, dtype=torch.float32)
    load_into(fresh, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_config_mismatch_names_file_and_fields(tmp_path: Path) -> None:
    path = save(tiny_model("generative", dtype=torch.float32), tmp_path / "g.pt")
    other = tiny_model("generative", dtype=torch.float32, latent_dim=7)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}.*model.latent_dim: file 6 vs model 7"):
        load_into(other, path)


def test_promote_renames_the_config_and_keeps_the_weights(tmp_path: Path) -> None:
    model = tiny_model("adversarial", seed=5, dtype=torch.float32)
    src = save(model, tmp_path / "run.pt", extra={"step": 80})
    target = attrs.evolve(model.config, name="tiny_catalogue_entry")
    dest = promote(src, target, tmp_path / "shipped.pt")
    assert read(dest).config == target and read(dest).extra == {"step": 80, "promoted_from": model.config.name}
    shipped = build_model(target)
    load_into(shipped, dest)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(shipped.state_dict()[k], v, rtol=0, atol=0)


def test_promote_refuses_a_config_that_differs_beyond_the_name(tmp_path: Path) -> None:
    src = save(tiny_model("generative", dtype=torch.float32), tmp_path / "g.pt")
    other = attrs.evolve(tiny_model("generative", dtype=torch.float32, latent_dim=7).config, name="other")
    with pytest.raises(CheckpointError, match=r"differ in more than the name: model.latent_dim: file 6 vs config 7$"):
        promote(src, other, tmp_path / "shipped.pt")
    assert not (tmp_path / "shipped.pt").exists()
    with pytest.raises(TypeError, match=r"config must be a ZooConfig .* got str"):
        promote(src, "mnist_adv_small", tmp_path / "shipped.pt")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        promote(tmp_path / "missing.pt", other, tmp_path / "shipped.pt")


def test_state_dict_mismatch_is_reported(tmp_path: Path) -> None:
    model = tiny_model("generative", dtype=torch.float32)
    path = tmp_path / "g.pt"
    save(model, path)
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["head.out.bias"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"(?s){re.escape(str(path))}: state_dict does not fit model .*head.out.bias"):
        load_model(path)


def test_corrupted_file_error_names_the_file(tmp_path: Path) -> None:
    path = save(tiny_model("toy", dtype=torch.float32), tmp_path / "t.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(path))} is corrupted or not a torch checkpoint"):
        read(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is corrupted"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        read(tmp_path / "missing.pt")


def test_wrong_format_or_version(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is not a jiio zoo checkpoint \(format=None"):
        read(path)
    save(tiny_model("toy", dtype=torch.float32), path)
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = FORMAT_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} has format_version 2; .* reads versions 1..1"):
        read(path)
    raw["format_version"] = FORMAT_VERSION
    raw["config"]["model"]["bogus"] = 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"invalid config: model\.bogus: unknown key for OptEqConfig \(valid fields: activation, "):
        read(path)


def _assert_intact(path: Path, expected: dict[str, torch.Tensor]) -> None:
    loaded = load_model(path)
    for k, v in expected.items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_crash_while_writing_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    old = tiny_model("generative", seed=1, dtype=torch.float32)
    save(old, path)
    expected = {k: v.clone() for k, v in old.state_dict().items()}

    real_save = torch.save

    def torn_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f)  # type: ignore[arg-type]
        f.truncate(100)  # type: ignore[attr-defined]  # half-written, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", torn_save)
    with pytest.raises(CheckpointError, match=rf"could not write checkpoint {re.escape(str(path))}: disk full"):
        save(tiny_model("generative", seed=2, dtype=torch.float32), path)
    monkeypatch.undo()
    _assert_intact(path, expected)


def test_crash_before_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    old = tiny_model("toy", seed=1, dtype=torch.float32)
    save(old, path)
    expected = {k: v.clone() for k, v in old.state_dict().items()}

    def no_replace(src: object, dst: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(ckpt_mod.os, "replace", no_replace)
    with pytest.raises(CheckpointError, match=r"killed"):
        save(tiny_model("toy", seed=2, dtype=torch.float32), path)
    monkeypatch.undo()
    _assert_intact(path, expected)


def test_save_fsyncs_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(ckpt_mod.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    save(tiny_model("toy", dtype=torch.float32), tmp_path / "m.pt")
    assert events[:2] == ["fsync", "replace"]


def test_non_finite_weights_are_neither_written_nor_loaded(tmp_path: Path) -> None:
    model = tiny_model("toy", seed=3, dtype=torch.float32)
    path = save(model, tmp_path / "m.pt")
    good = path.read_bytes()
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=re.escape(f"non-finite values in {name}")):
        save(model, path)
    assert path.read_bytes() == good
    raw = torch.load(path, weights_only=True)
    raw["state_dict"][name] = param.detach().clone()
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="holds non-finite values"):
        read(path)

"""Checkpoints of zoo models: a documented, versioned format written atomically.

A checkpoint is a ``torch.save`` file holding one dict (loadable with ``weights_only=True``):

```
{
    "format": "jiio-zoo-checkpoint",
    "format_version": 1,
    "jiio_version": "0.1.0",          # the jiio package that wrote it
    "config_name": "mnist_adv",
    "config": {...},                  # ZooConfig.to_dict(): rebuilds the model
    "state_dict": {...},              # ZooModel.state_dict()
    "extra": {...},                   # optional user metadata (plain types only)
}
```

[`save`][jiio_zoo.checkpoint.save] writes to a temporary file in the destination's directory, flushes and fsyncs it,
then ``os.replace``-s it over the destination, so a crash leaves either the old file or the new
one, never a torn file. [`read`][jiio_zoo.checkpoint.read] validates the layout and version; [`load_into`][jiio_zoo.checkpoint.load_into] also
checks that the stored config equals the model's; [`load_model`][jiio_zoo.checkpoint.load_model] rebuilds the model from the
stored config; [`promote`][jiio_zoo.checkpoint.promote] re-saves a checkpoint under a config that differs
from its own in the name alone (a run trained from a derived config file, shipped as a catalogue
entry). Every failure raises [`CheckpointError`][jiio_zoo.checkpoint.CheckpointError] naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_zoo.configs import ConfigError, ZooConfig, config_from_dict
from jiio_zoo.model import ZooModel, build_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "jiio_version",
    "load_into",
    "load_model",
    "read",
    "save",
]

FORMAT = "jiio-zoo-checkpoint"
FORMAT_VERSION = 1
_KEYS = ("format", "format_version", "jiio_version", "config_name", "config", "state_dict")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, read or applied; the message names the file."""


def jiio_version() -> str:
    """Version of the installed ``jiio`` distribution (``"0+unknown"`` when not installed)."""
    try:
        return metadata.version("jiio")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.frozen(eq=False)
class Checkpoint:
    """A checkpoint read back by [`read`][jiio_zoo.checkpoint.read]."""

    path: Path
    format_version: int
    jiio_version: str
    config: ZooConfig
    state_dict: dict[str, Tensor]
    extra: dict[str, Any]


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. some filesystems)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _non_finite(state: Mapping[str, Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save(
    model: ZooModel, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` (its config and state dict) to ``path`` atomically; returns the path.

    A model with NaN/Inf weights is refused ([`CheckpointError`][jiio_zoo.checkpoint.CheckpointError]) and ``path`` is left as it was.

    The parent directory is created if needed. ``extra`` is stored as given (use plain types:
    numbers, strings, lists, dicts, tensors).
    """
    if not isinstance(model, ZooModel):
        raise TypeError(f"model must be a ZooModel, got {type(model).__name__}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jiio_version": jiio_version(),
        "config_name": model.config.name,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    bad = _non_finite(model.state_dict())
    if bad:
        raise CheckpointError(
            f"refusing to write checkpoint {dest}: non-finite values in {', '.join(bad[:5])}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}; the existing file is kept"
        )
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, Exception):
            raise CheckpointError(f"could not write checkpoint {dest}: {err}") from err
        raise
    _fsync_dir(dest.parent)
    return dest


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint (layout, format version, config)."""
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"checkpoint {src} does not exist or is not a file")
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {src} is corrupted or not a torch checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"checkpoint {src} is not a jiio zoo checkpoint (format={found!r}, expected {FORMAT!r})"
        )
    missing = [k for k in _KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {src} lacks the key(s) {', '.join(missing)}")
    version = raw["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"checkpoint {src} has format_version {version!r}; this jiio ({jiio_version()}) "
            f"reads versions 1..{FORMAT_VERSION}"
        )
    try:
        config = config_from_dict(raw["config"])
    except (ConfigError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {src} holds an invalid config: {err}") from err
    if raw["config_name"] != config.name:
        raise CheckpointError(
            f"checkpoint {src}: config_name {raw['config_name']!r} disagrees with its config's "
            f"name {config.name!r}"
        )
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {src}: state_dict is not a dict of tensors")
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(f"checkpoint {src} holds non-finite values in {', '.join(bad[:5])}")
    extra = raw.get("extra", {})
    return Checkpoint(
        path=src,
        format_version=version,
        jiio_version=str(raw["jiio_version"]),
        config=config,
        state_dict=state,
        extra=dict(extra) if isinstance(extra, dict) else {},
    )


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(stored: ZooConfig, other: ZooConfig, label: str, ignore: tuple[str, ...] = ()) -> str:
    """The fields (dotted paths) where ``stored`` and ``other`` differ, as ``"key: file A vs
    {label} B, ..."``; empty when none do (``ignore`` skips fields)."""
    a, b = _flat(stored.to_dict()), _flat(other.to_dict())
    diff = sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))
    return ", ".join(f"{k}: file {a.get(k)!r} vs {label} {b.get(k)!r}" for k in diff)


def _apply(model: ZooModel, ckpt: Checkpoint) -> None:
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {ckpt.path}: state_dict does not fit model {model.name!r}: {err}"
        ) from err


def load_into(model: ZooModel, path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint's weights into ``model`` after checking that its config equals
    ``model.config`` (a mismatch names the differing fields)."""
    ckpt = read(path)
    if ckpt.config != model.config:
        details = _differences(ckpt.config, model.config, "model")
        raise CheckpointError(
            f"checkpoint {ckpt.path} was saved for config {ckpt.config.name!r}, which differs "
            f"from the model's config {model.config.name!r} in {details}"
        )
    _apply(model, ckpt)
    return ckpt


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ZooModel:
    """Rebuild the model from the checkpoint's stored config and load its weights."""
    ckpt = read(path)
    model = build_model(ckpt.config)
    _apply(model, ckpt)
    return model.to(device)


def promote(src: str | os.PathLike[str], config: ZooConfig, dest: str | os.PathLike[str]) -> Path:
    """Write the weights of checkpoint ``src`` to ``dest`` under ``config`` (atomically, as
    [`save`][jiio_zoo.checkpoint.save]); returns ``dest``.

    For a model trained from a config file derived from a catalogue entry (its own ``name``,
    the same fields) that is to ship as that entry. Refused with a
    [`CheckpointError`][jiio_zoo.checkpoint.CheckpointError] naming each differing field unless the two configs differ in
    their ``name`` alone. ``extra`` keeps the source's and adds ``"promoted_from"`` (the source's
    config name)."""
    if not isinstance(config, ZooConfig):
        raise TypeError(f"config must be a ZooConfig (e.g. jiio_zoo.get_config(name)), got {type(config).__name__}")
    ckpt = read(src)
    details = _differences(ckpt.config, config, "config", ignore=("name",))
    if details:
        raise CheckpointError(
            f"cannot promote checkpoint {ckpt.path} (config {ckpt.config.name!r}) to config "
            f"{config.name!r}: they differ in more than the name: {details}"
        )
    model = build_model(config)
    _apply(model, ckpt)
    return save(model, dest, extra={**ckpt.extra, "promoted_from": ckpt.config.name})

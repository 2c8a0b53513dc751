"""The named models of the zoo: ``load(name)`` and ``list_models()``.

Weights are looked up, in order, at the ``weights=`` path, inside the package
(``jiio_zoo/weights/<name>.pt``, for the small CPU entries that ship trained weights) and in
the user cache (``$JIIO_CACHE/<name>.pt``, default ``~/.cache/jiio/<name>.pt``, where the
paper-scale entries live). Without weights, ``pretrained=True`` raises
[`MissingWeightsError`][jiio_zoo.registry.MissingWeightsError] saying where to put the file and which command trains it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from jiio_zoo.checkpoint import load_into
from jiio_zoo.configs import CONFIGS, ZooConfig, get_config
from jiio_zoo.model import ZooModel, build_model

__all__ = [
    "MissingWeightsError",
    "cache_dir",
    "list_models",
    "load",
    "packaged_weights_path",
    "train_command",
    "weights_candidates",
]

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


class MissingWeightsError(FileNotFoundError):
    """``load(name, pretrained=True)`` found no weights file; the message says where to put one
    and how to train it."""


def list_models(*, with_weights: bool = False) -> list[str]:
    """Names accepted by [`load`][jiio_zoo.registry.load], paper-scale entries first; ``with_weights``: only those
    whose trained weights are available here (shipped in the package or in the cache), see
    [`weights_status`][jiio_zoo.registry.weights_status]."""
    return [n for n in CONFIGS if not with_weights or weights_status(n) != "none"]


def weights_status(name: str) -> str:
    """Where ``load(name)`` finds trained weights: ``"packaged"`` (shipped with jiio),
    ``"cache"`` (``$JIIO_CACHE`` or ``~/.cache/jiio``) or ``"none"``."""
    found = next((p for p in weights_candidates(name) if p.is_file()), None)
    if found is None:
        return "none"
    return "packaged" if found == packaged_weights_path(_config(name).name) else "cache"


def _config(name: str | os.PathLike[str]) -> ZooConfig:
    """The catalogue entry ``name``, or the config in a ``.json`` file (see
    [`jiio_zoo.configs.load_config_file`][jiio_zoo.configs.loading.load_config_file])."""
    if isinstance(name, str) and name in CONFIGS:
        return CONFIGS[name]
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.endswith(".json")):
        return get_config(name)
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(CONFIGS)} (or a path to a .json config)")


def cache_dir() -> Path:
    """``$JIIO_CACHE`` if set, else ``~/.cache/jiio``."""
    env = os.environ.get("JIIO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jiio"


def packaged_weights_path(name: str) -> Path:
    return PACKAGE_WEIGHTS / f"{name}.pt"


def weights_candidates(name: str | os.PathLike[str]) -> list[Path]:
    """Where [`load`][jiio_zoo.registry.load] looks for ``name``'s weights (packaged first for small entries)."""
    config = _config(name)
    cached = cache_dir() / f"{config.name}.pt"
    if config.scale == "paper":
        return [cached]
    return [packaged_weights_path(config.name), cached]


def train_command(name: str | os.PathLike[str]) -> str:
    """The command that trains ``name`` (its checkpoint is what [`load`][jiio_zoo.registry.load] reads)."""
    return f"jiio train {_config(name).task} --config {name}"


def load(
    name: str | os.PathLike[str],
    pretrained: bool = True,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> ZooModel:
    """Build the zoo model ``name``; with ``pretrained`` load its weights.

    Args:
        name: one of [`list_models`][jiio_zoo.registry.list_models], or a path to a ``.json`` config file (its weights
            are looked up under the config's ``name``).
        pretrained: load trained weights (``False``: a fresh initialisation, for every entry).
        weights: explicit checkpoint path (overrides the lookup; implies ``pretrained``).
        device: where to put the model.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        MissingWeightsError: ``pretrained`` and no weights file at any candidate location.
        jiio_zoo.checkpoint.CheckpointError: the weights file is corrupted or for another config.
    """
    config = _config(name)
    model = build_model(config)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"weights file {path} for model {name!r} does not exist; train it with "
                f"`{train_command(name)}` and pass the checkpoint it writes"
            )
        load_into(model, path)
    elif pretrained:
        candidates = weights_candidates(name)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            where = " or ".join(str(p) for p in candidates)
            raise MissingWeightsError(
                f"no pretrained weights for {name!r}: expected a checkpoint at {where} "
                f"(set $JIIO_CACHE to change the cache directory). Train one with "
                f"`{train_command(name)}` and copy the checkpoint there, pass "
                f"weights=<path>, or use pretrained=False for a fresh model."
            )
        load_into(model, found)
    return model.to(device)

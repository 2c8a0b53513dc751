"""Access to the arrays shipped in ``jiio_tasks/data/embedded/`` (see its README.md)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Split = Literal["train", "test"]
NAMES = ("digits", "faces", "glyphs")


@functools.cache
def load_arrays(name: str) -> dict[str, NDArray[Any]]:
    """All arrays of the embedded set ``name`` (cached; treat them as read-only)."""
    if name not in NAMES:
        raise ValueError(f"embedded data set must be one of {NAMES}, got {name!r}")
    ref = resources.files("jiio_tasks.data").joinpath("embedded").joinpath(f"{name}.npz")
    if not ref.is_file():
        raise FileNotFoundError(
            f"embedded data file {name}.npz is missing from the jiio_tasks package ({ref}); "
            "regenerate it with scripts/make_embedded_data.py"
        )
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for arr in arrays.values():
        arr.setflags(write=False)
    return arrays


def metadata(name: str) -> dict[str, Any]:
    """Provenance record stored with the embedded set ``name`` (source, versions, split seed)."""
    meta: dict[str, Any] = json.loads(str(load_arrays(name)["meta"]))
    return meta


def check_split(split: str, allowed: tuple[str, ...] = ("train", "test")) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")

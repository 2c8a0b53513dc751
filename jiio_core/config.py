"""Building frozen attrs configs from plain mappings, rejecting unknown keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls(**data)`` for an attrs class, with a clear error for unknown or missing fields.

    Unlike libraries that silently drop unknown keys, a misspelt key is an error that names it
    and lists the valid fields.
    """
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    if not isinstance(data, Mapping):
        raise TypeError(f"data for {cls.__name__} must be a mapping, got {type(data).__name__}")
    fields = attrs.fields_dict(cls)
    valid = {name for name, f in fields.items() if f.init}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"valid fields: {', '.join(sorted(valid))}"
        )
    missing = sorted(name for name in valid if name not in data and fields[name].default is attrs.NOTHING)
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(map(repr, missing))} for {cls.__name__}")
    out: T = cls(**data)  # type: ignore[assignment]
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of an attrs config (inverse of :func:`from_dict` for plain fields)."""
    if not attrs.has(type(config)):
        raise TypeError(f"{type(config).__name__} is not an attrs class")
    return attrs.asdict(config, recurse=False)

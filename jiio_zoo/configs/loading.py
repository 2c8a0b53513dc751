"""Dicts and JSON files become configs here, through one cattrs converter.

[`from_dict`][jiio_zoo.configs.loading.from_dict] builds any attrs settings class (a [`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] or one
of its parts, or a ``jiio_core`` value such as ``Damping`` or ``AndersonI``) from nested plain
data. JSON lists become tuples; nothing else is coerced, so the classes' validators see the
values as given (``True`` is no int, ``"1"`` no number). Unknown keys are errors. Every problem
found is reported in one line of a [`ConfigError`][jiio_zoo.configs.schema.ConfigError], as
``<dotted path>: <message>`` (problems joined by ``"; "``), e.g.
``solver.damping[2]: SolverConfig.damping alpha_x must be a number in (0, 1], got 1.5 ...`` or
``model.chanels: unknown key for MDEQConfig (valid fields: channels, dropout, ...)``.

[`to_dict`][jiio_zoo.configs.loading.to_dict] is the inverse (nested plain dicts, tuples kept). [`load_config_file`][jiio_zoo.configs.loading.load_config_file] reads
a JSON file holding a config or ``{"base": ..., overrides}``; [`get_config`][jiio_zoo.configs.loading.get_config] takes a zoo name
or such a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, override

from jiio_core.validators import FieldError
from jiio_zoo.configs.catalogue import CONFIGS
from jiio_zoo.configs.schema import ConfigError, MDEQConfig, OptEqConfig, ZooConfig

__all__ = ["config_from_dict", "from_dict", "get_config", "load_config_file", "to_dict"]

T = TypeVar("T")

_ARCHITECTURES: dict[str, type[MDEQConfig] | type[OptEqConfig]] = {
    "mdeq": MDEQConfig,
    "opteq": OptEqConfig,
}
_EXTRA_KEYS: dict[type, tuple[str, ...]] = {ZooConfig: ("architecture",)}
"""Keys a class's dict may hold besides its fields (``ZooConfig.to_dict`` adds ``architecture``)."""


# --------------------------------------------------------------------------- the converter


def _as_given(value: Any, _: Any) -> Any:
    return value


def _list_to_tuple(value: Any, _: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _is_tuple_type(t: Any) -> bool:
    return t is tuple or getattr(t, "__origin__", None) is tuple


def _not_a_mapping(cls: type, value: Any) -> TypeError:
    return TypeError(f"expected a mapping of {cls.__name__} fields, got {type(value).__name__}")


def _attrs_hook(conv: cattrs.Converter, cls: type[T]) -> Callable[[Any, Any], T]:
    build = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True, _cattrs_use_alias=True
    )

    def structure(value: Any, _: Any) -> T:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise _not_a_mapping(cls, value)
        return build(value, cls)

    return structure


def _zoo_hook(conv: cattrs.Converter) -> Callable[[Any, Any], ZooConfig]:
    """``ZooConfig``: the model's class is named by the ``architecture`` key (or, without it,
    guessed from the model's keys: ``state_dim`` means OptEq)."""

    def model_hook(cls: type) -> Callable[[Any, Any], Any]:
        return lambda value, _: conv.structure(value, cls)

    builds = {
        arch: make_dict_structure_fn(
            ZooConfig,
            conv,
            _cattrs_forbid_extra_keys=True,
            _cattrs_detailed_validation=True,
            model=override(struct_hook=model_hook(cls)),
        )
        for arch, cls in _ARCHITECTURES.items()
    }

    def structure(value: Any, _: Any) -> ZooConfig:
        if isinstance(value, ZooConfig):
            return value
        if not isinstance(value, Mapping):
            raise _not_a_mapping(ZooConfig, value)
        data = dict(value)
        arch = data.pop("architecture", None)
        if arch is None:
            model = data.get("model")
            arch = "opteq" if isinstance(model, Mapping) and "state_dim" in model else "mdeq"
        if not isinstance(arch, str) or arch not in builds:
            raise FieldError(
                f"ZooConfig.architecture must be one of {', '.join(map(repr, builds))}, got {arch!r}",
                "architecture",
            )
        return builds[arch](data, ZooConfig)

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    # Later registrations win: values pass as given, lists become tuples for tuple fields,
    # attrs classes are built from mappings (unknown keys rejected), ZooConfig picks its model.
    conv.register_structure_hook_func(lambda _: True, _as_given)
    for t in (int, float, str, bool, bytes):
        conv.register_structure_hook(t, _as_given)
    conv.register_structure_hook_func(_is_tuple_type, _list_to_tuple)
    conv.register_structure_hook_factory(attrs.has, lambda cls: _attrs_hook(conv, cls))
    conv.register_structure_hook(ZooConfig, _zoo_hook(conv))
    return conv


_CONVERTER = _make_converter()


# --------------------------------------------------------------------------- error messages


def _join(path: str, name: str) -> str:
    if name.startswith("[") or not path:
        return f"{path}{name}"
    return f"{path}.{name}"


def _at(path: str, message: str) -> str:
    message = message.replace("\n", " ")
    return f"{path}: {message}" if path else message


def _init_names(cls: type) -> list[str]:
    names = [a.alias for a in attrs.fields(cls) if a.init]
    return sorted([*names, *_EXTRA_KEYS.get(cls, ())])


def _messages(err: BaseException, path: str) -> list[str]:
    """One ``"<path>: <message>"`` per problem in ``err`` (cattrs' exception groups walked)."""
    if isinstance(err, ClassValidationError):
        located, loose = err.group_exceptions()
        # cattrs reports an absent required field as a KeyError under that field's name
        missing = [_join(path, note.name) for sub, note in located if isinstance(sub, KeyError)]
        out: list[str] = []
        if missing:
            plural = "s" if len(missing) > 1 else ""
            out.append(f"{', '.join(missing)}: required key{plural} missing for {err.cl.__name__}")
        for sub, note in located:
            if not isinstance(sub, KeyError):
                out += _messages(sub, _join(path, note.name))
        for sub in loose:
            out += _messages(sub, path)
        return out
    if isinstance(err, IterableValidationError):
        items, loose_items = err.group_exceptions()
        out = []
        for sub, inote in items:
            out += _messages(sub, _join(path, f"[{inote.index}]"))
        for sub in loose_items:
            out += _messages(sub, path)
        return out
    if isinstance(err, ForbiddenExtraKeysError):
        keys = ", ".join(_join(path, k) for k in sorted(err.extra_fields))
        plural = "s" if len(err.extra_fields) > 1 else ""
        valid = ", ".join(_init_names(err.cl))
        return [f"{keys}: unknown key{plural} for {err.cl.__name__} (valid fields: {valid})"]
    if isinstance(err, FieldError):
        return [_at(_join(path, err.field), str(err))]
    if isinstance(err, (ValueError, TypeError)):
        return [_at(path, str(err))]
    return [_at(path, f"{type(err).__name__}: {err}")]


# --------------------------------------------------------------------------- public loaders


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of the attrs class ``cls`` from nested plain data (e.g. parsed JSON).

    Raises [`ConfigError`][jiio_zoo.configs.schema.ConfigError] naming, in one line, the dotted path of every
    unknown key (with the valid fields), missing key and value the class's validators reject.
    """
    target: type[T] = cls  # attrs.has narrows its argument's type; keep T for the result
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise TypeError(f"{cls!r} is not an attrs class")
    try:
        out = _CONVERTER.structure(data, target)
    except (ClassValidationError, ValueError, TypeError) as err:
        raise ConfigError("; ".join(_messages(err, ""))) from err
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of an attrs config (tuples kept; a [`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] also records its
    ``architecture``); [`from_dict`][jiio_zoo.configs.loading.from_dict] inverts it. Fields are written without a type tag, so a
    field holding a subclass of its declared attrs type does not come back as that subclass."""
    if isinstance(config, ZooConfig):
        return config.to_dict()
    if not attrs.has(type(config)):
        raise TypeError(f"{type(config).__name__} is not an attrs class")
    out: dict[str, Any] = attrs.asdict(config)  # tuples stay tuples
    return out


def config_from_dict(data: Mapping[str, Any]) -> ZooConfig:
    """``from_dict(ZooConfig, data)``: a [`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] from e.g. [`ZooConfig.to_dict`][jiio_zoo.configs.schema.ZooConfig.to_dict]
    (``architecture``, ``"mdeq"`` or ``"opteq"``, says which model class ``model`` holds)."""
    return from_dict(ZooConfig, data)


# --------------------------------------------------------------------------- JSON files and names


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, f"{path}.{key}")
        else:
            out[key] = value
    return out


def load_config_file(path: str | os.PathLike[str]) -> ZooConfig:
    """A [`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] from a JSON file.

    The file holds either a whole config (as written by [`ZooConfig.to_dict`][jiio_zoo.configs.schema.ZooConfig.to_dict], e.g. by
    ``jiio config show NAME``) or ``{"base": BASE, ...overrides}``: the config ``BASE`` (a zoo
    name, or another ``.json`` file, relative to this file's directory) with the given (nested)
    keys replaced, e.g.
    ``{"base": "faces_gen_small", "name": "faces_wide", "model": {"channels": [16, 32]}}``.
    Unknown keys are errors, as everywhere else; a chain of bases that comes back to a file
    already in it is a [`ConfigError`][jiio_zoo.configs.schema.ConfigError] naming the chain.
    """
    return config_from_dict(_config_file_dict(Path(path), ()))


def _config_file_dict(file: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = file.resolve()
    if resolved in chain:
        names = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"config file {str(file)!r} is its own base (cycle: {names})")
    if not file.is_file():
        where = f" (base of {str(chain[-1])!r})" if chain else ""
        raise FileNotFoundError(f"config file {str(file)!r} does not exist{where}")
    try:
        data = json.loads(file.read_text(encoding="utf8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"config file {str(file)!r} is not valid JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(file)!r} must hold a JSON object, got {type(data).__name__}")
    if "base" not in data:
        return dict(data)
    base = data["base"]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config file {str(file)!r}: base must be a zoo name or a .json path, got {base!r}")
    overrides = {k: v for k, v in data.items() if k != "base"}
    if base in CONFIGS:
        base_dict = CONFIGS[base].to_dict()
    elif base.endswith(".json"):
        base_dict = _config_file_dict(file.parent / base, (*chain, resolved))
    else:
        raise ConfigError(
            f"config file {str(file)!r}: unknown base {base!r}; valid: {', '.join(CONFIGS)} or a .json path "
            "(relative to this file)"
        )
    return _merge(base_dict, overrides, "config")


def get_config(name: str | os.PathLike[str]) -> ZooConfig:
    """The zoo configuration ``name``, or the config in a JSON file when ``name`` is a path
    ending in ``.json`` (see [`load_config_file`][jiio_zoo.configs.loading.load_config_file]). Unknown names raise ``ValueError``
    listing the valid ones."""
    if isinstance(name, str) and name in CONFIGS:
        return CONFIGS[name]
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.endswith(".json")):
        return load_config_file(name)
    raise ValueError(
        f"unknown config name {name!r}; valid names: {', '.join(CONFIGS)} (or a path to a .json config file)"
    )

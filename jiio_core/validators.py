"""attrs validators for the frozen settings classes of jiio (core, zoo and tasks).

Each is an ordinary attrs validator ``check(instance, attribute, value)``; they compose with
``attrs.validators`` (``and_``, ``optional``, ``deep_iterable``, ...). They exist because attrs'
own accept ``True`` for an ``int`` and NaN for a ``float`` and do not name the class; these
raise [`FieldError`][jiio_core.validators.FieldError] with one line ``"<Class>.<field> must be <expectation>, got <value>"``,
and keep the field's name (``"channels[1]"`` for a tuple element) on the error, so that a loader
(``jiio_zoo.configs.from_dict``) can add the path to the field, e.g. ``model.channels[1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

__all__ = [
    "FieldError",
    "FieldTypeError",
    "Validator",
    "identifier",
    "instance_of",
    "int_in",
    "number_in",
    "one_of",
    "optional",
    "tuple_of",
    "where",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
"""The attrs validator signature: ``(instance, attribute, value) -> None``, raising if bad."""


class FieldError(ValueError):
    """A field value that a validator rejected; ``field`` is the field's name in its class
    (with an index for a tuple element: ``"damping[2]"``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class FieldTypeError(FieldError, TypeError):
    """A [`FieldError`][jiio_core.validators.FieldError] for a value of the wrong type (also a ``TypeError``)."""


def where(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """``"<Class>.<field>"``, the way every message starts."""
    return f"{type(instance).__name__}.{attribute.name}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_in(low: int, high: int | None = None) -> Validator:
    """An ``int`` (not a ``bool``) in ``[low, high]`` (``high=None``: ``>= low``)."""
    span = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise FieldError(f"{where(instance, attribute)} must be {span}, got {value!r}", attribute.name)

    return check


def number_in(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Validator:
    """A finite real number (``int`` or ``float``, not ``bool``, not NaN or ±inf) in the interval
    from ``low`` to ``high`` (``None``: unbounded), closed unless ``low_open``/``high_open``."""
    if high is None:
        span = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise FieldError(f"{where(instance, attribute)} must be {span}, got {value!r}", attribute.name)

    return check


def one_of(*choices: object) -> Validator:
    """One of the given values (e.g. the strings of a ``Literal``)."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise FieldError(
                f"{where(instance, attribute)} must be one of {', '.join(map(repr, choices))}, got {value!r}",
                attribute.name,
            )

    return check


def instance_of(*classes: type) -> Validator:
    """An instance of one of ``classes`` (a [`FieldTypeError`][jiio_core.validators.FieldTypeError] otherwise)."""
    if not classes:
        raise ValueError("instance_of needs at least one class")
    article = "an" if classes[0].__name__[:1].lower() in "aeiou" else "a"
    names = " or ".join(c.__name__ for c in classes)

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, classes):
            raise FieldTypeError(
                f"{where(instance, attribute)} must be {article} {names}, got {type(value).__name__}",
                attribute.name,
            )

    return check


def optional(check: Validator) -> Validator:
    """``None``, or whatever ``check`` accepts (its message then says "... or None, got ...")."""

    def wrapped(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        try:
            check(instance, attribute, value)
        except FieldError as err:
            raise type(err)(str(err).replace(", got ", " or None, got ", 1), err.field) from None

    return wrapped


def tuple_of(member: Validator, *, non_empty: bool = False, length: int | None = None) -> Validator:
    """A ``tuple`` (non-empty, or of exactly ``length`` items, if asked) whose every item passes
    ``member``; an item's error names it as ``<Class>.<field>[i]``."""
    if length is not None:
        span = f"a tuple of {length} items"
    else:
        span = f"a {'non-empty ' if non_empty else ''}tuple"

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        bad_len = (length is not None and len(value) != length) if isinstance(value, tuple) else True
        if bad_len or (non_empty and not value):
            raise FieldError(f"{where(instance, attribute)} must be {span}, got {value!r}", attribute.name)
        for i, item in enumerate(value):
            member(instance, attribute.evolve(name=f"{attribute.name}[{i}]"), item)

    return check


def identifier(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty ``str`` of letters, digits and underscores (a name usable in file names)."""
    if not (isinstance(value, str) and value and all(c.isalnum() or c == "_" for c in value)):
        raise FieldError(
            f"{where(instance, attribute)} must be a non-empty string of letters, digits and "
            f"underscores, got {value!r}",
            attribute.name,
        )

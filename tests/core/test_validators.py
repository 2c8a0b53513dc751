"""The public attrs validators: what each accepts and rejects, and that every message names
``Class.field``, the expectation and the value (and the error keeps the field's name)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from jiio_core.validators import (
    FieldError,
    FieldTypeError,
    identifier,
    instance_of,
    int_in,
    number_in,
    one_of,
    optional,
    tuple_of,
)


@attrs.define
class Probe:
    count: int = attrs.field(default=1, validator=int_in(1))
    level: int = attrs.field(default=3, validator=int_in(0, 5))
    rate: float = attrs.field(default=0.5, validator=number_in(0.0, 1.0, low_open=True))
    drop: float = attrs.field(default=0.0, validator=number_in(0.0, 1.0, high_open=True))
    scale: float = attrs.field(default=1.0, validator=number_in(0.0))
    late: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    mode: str = attrs.field(default="a", validator=one_of("a", "b"))
    flag: bool = attrs.field(default=True, validator=instance_of(bool))
    sizes: tuple[int, ...] = attrs.field(default=(1,), validator=tuple_of(int_in(1), non_empty=True))
    pair: tuple[float, ...] = attrs.field(default=(0.5, 0.5), validator=tuple_of(number_in(0.0), length=2))
    name: str = attrs.field(default="x_1", validator=identifier)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", True, "Probe.count must be an int >= 1, got True"),  # a bool is no int
        ("count", 2.0, "Probe.count must be an int >= 1, got 2.0"),
        ("count", 0, "Probe.count must be an int >= 1, got 0"),
        ("level", 6, "Probe.level must be an int in [0, 5], got 6"),
        ("rate", math.nan, "Probe.rate must be in (0, 1], got nan"),
        ("rate", 0.0, "Probe.rate must be in (0, 1], got 0.0"),
        ("rate", False, "Probe.rate must be in (0, 1], got False"),
        ("drop", 1.0, "Probe.drop must be in [0, 1), got 1.0"),
        ("scale", math.inf, "Probe.scale must be a finite number >= 0, got inf"),
        ("scale", "1", "Probe.scale must be a finite number >= 0, got '1'"),
        ("late", -1.0, "Probe.late must be a finite number > 0 or None, got -1.0"),
        ("mode", "c", "Probe.mode must be one of 'a', 'b', got 'c'"),
        ("sizes", (), "Probe.sizes must be a non-empty tuple, got ()"),
        ("sizes", [1, 2], "Probe.sizes must be a non-empty tuple, got [1, 2]"),
        ("sizes", (1, 0), "Probe.sizes[1] must be an int >= 1, got 0"),
        ("pair", (0.5,), "Probe.pair must be a tuple of 2 items, got (0.5,)"),
        ("pair", (0.5, math.nan), "Probe.pair[1] must be a finite number >= 0, got nan"),
        ("name", "a b", "Probe.name must be a non-empty string of letters, digits and underscores, got 'a b'"),
        ("name", "", "Probe.name must be a non-empty string of letters, digits and underscores, got ''"),
    ],
)
def test_bad_values_name_class_field_expectation_and_value(field: str, value: Any, message: str) -> None:
    with pytest.raises(FieldError) as info:
        Probe(**{field: value})
    assert str(info.value) == message
    assert info.value.field == message.split(" ")[0].removeprefix("Probe.")  # e.g. "sizes[1]"
    assert isinstance(info.value, ValueError)


def test_wrong_type_is_also_a_type_error() -> None:
    with pytest.raises(FieldTypeError, match=r"^Probe\.flag must be a bool, got int$") as info:
        Probe(flag=1)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert info.value.field == "flag"
    either = instance_of(int, str)
    with pytest.raises(TypeError, match=r"^Probe\.count must be an int or str, got float$"):
        either(Probe(), attrs.fields(Probe).count, 1.5)


def test_good_values_pass() -> None:
    p = Probe(count=3, level=0, rate=1, drop=0.0, scale=0, late=2.5, mode="b", flag=False,
              sizes=(1, 2, 3), pair=(0, 1e9), name="Abc_9")
    assert p.count == 3 and p.late == 2.5
    assert Probe(late=None).late is None


def test_optional_keeps_the_error_type_and_field() -> None:
    @attrs.define
    class Opt:
        kind: int | None = attrs.field(default=None, validator=optional(instance_of(int)))

    with pytest.raises(FieldTypeError, match=r"^Opt\.kind must be an int or None, got str$") as info:
        Opt(kind="x")  # type: ignore[arg-type]
    assert info.value.field == "kind"


def _even(_: object, a: attrs.Attribute[Any], value: int) -> None:
    if value % 2:
        raise ValueError(f"{a.name} must be even, got {value}")


def test_they_compose_with_attrs_validators() -> None:
    @attrs.define
    class Even:
        n: int = attrs.field(validator=attrs.validators.and_(int_in(0), _even))
        m: int | None = attrs.field(default=None, validator=attrs.validators.optional(int_in(0, 9)))

    assert Even(4).n == 4 and Even(4, m=9).m == 9
    with pytest.raises(FieldError, match=r"^Even\.n must be an int >= 0, got -2$"):
        Even(-2)
    with pytest.raises(ValueError, match="n must be even, got 3"):
        Even(3)
    with pytest.raises(FieldError, match=r"^Even\.m must be an int in \[0, 9\], got 10$"):
        Even(0, m=10)

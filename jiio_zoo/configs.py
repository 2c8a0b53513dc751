"""Frozen, validated configurations of the zoo models: one per paper setting (Table 9) plus
small CPU variants.

A :class:`ZooConfig` bundles an architecture (:class:`MDEQConfig` or :class:`OptEqConfig`), the
JIIO solver settings (:class:`SolverConfig`) and the training settings (:class:`TrainConfig`).
Every field is checked at construction: a bad value raises ``ValueError`` (or ``TypeError``)
naming the class, the field, the allowed range and the value given. :func:`config_from_dict`
rebuilds a config from :meth:`ZooConfig.to_dict` output and rejects unknown keys, listing the
valid ones.

Sources of the paper-scale numbers: Table 9 and Appendix C.3/C.4 of the JIIO paper. Values the
paper leaves out (classification-head widths, output nonlinearity, JIIO iteration counts for
CIFAR-10 and Omniglot) follow the MDEQ/JIIO reference configurations; each is marked below.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from jiio_core._checks import one_of

__all__ = [
    "CONFIGS",
    "ConfigError",
    "MDEQConfig",
    "ModelConfig",
    "OptEqConfig",
    "SolverConfig",
    "TrainConfig",
    "ZooConfig",
    "config_from_dict",
    "get_config",
]


class ConfigError(ValueError):
    """A configuration dictionary that cannot be turned into a config (unknown or missing keys)."""


# --------------------------------------------------------------------------- validators


def _where(inst: object, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(inst).__name__}.{attribute.name}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: int | None = None) -> Any:
    """Validator: an ``int`` in ``[low, high]`` (``high=None``: unbounded)."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        ok = _is_int(value) and value >= low and (high is None or value <= high)  # type: ignore[operator]
        if not ok:
            bound = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
            raise ValueError(f"{_where(inst, attribute)} must be {bound}, got {value!r}")

    return check


def _float_in(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Any:
    """Validator: a finite number in the given interval."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            v = float(value)  # type: ignore[arg-type]
            ok = math.isfinite(v) and (v > low if low_open else v >= low)
            if ok and high is not None:
                ok = v < high if high_open else v <= high
        if not ok:
            lb = "(" if low_open else "["
            hb = ")" if high_open else "]"
            hi = "inf" if high is None else f"{high:g}"
            raise ValueError(
                f"{_where(inst, attribute)} must be a finite number in {lb}{low:g}, {hi}{hb}, "
                f"got {value!r}"
            )

    return check


def _optional(check: Any) -> Any:
    def run(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check(inst, attribute, value)

    return run


_one_of = one_of  # the core's validator: one message format everywhere


def _bool(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{_where(inst, attribute)} must be a bool, got {value!r}")


def _int_tuple(low: int, *, allow_empty: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or (not value and not allow_empty):
            raise ValueError(
                f"{_where(inst, attribute)} must be a {'' if allow_empty else 'non-empty '}"
                f"tuple of ints >= {low}, got {value!r}"
            )
        for i, v in enumerate(value):
            if not _is_int(v) or v < low:
                raise ValueError(
                    f"{_where(inst, attribute)}[{i}] must be an int >= {low}, got {v!r} "
                    f"(in {value!r})"
                )

    return check


def _to_tuple(value: Any) -> Any:
    """Converter: lists (e.g. from JSON) become tuples; anything else is left for the validator."""
    return tuple(value) if isinstance(value, list) else value


def _name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = isinstance(value, str) and value != "" and all(c.isalnum() or c == "_" for c in value)
    if not ok:
        raise ValueError(
            f"{_where(inst, attribute)} must be a non-empty string of letters, digits and "
            f"underscores, got {value!r}"
        )


# --------------------------------------------------------------------------- architectures

Injection = Literal["image", "latent", "film"]
Head = Literal["classification", "image"]
Activation = Literal["none", "tanh", "sigmoid"]


@attrs.frozen(kw_only=True)
class MDEQConfig:
    """A multiscale DEQ (Bai et al. 2020) as used by the JIIO paper (Appendix C.2, Table 9).

    Branch ``i`` holds ``channels[i]`` feature maps at resolution ``ceil(image_size / 2^i)``.
    ``injection`` says what the optimised input ``x`` is: ``"image"`` (an image, or a
    perturbation added to a context image; conv stem into branch 0, zeros elsewhere),
    ``"latent"`` (a ``latent_dim`` vector, one linear map per branch) or ``"film"`` (a
    ``latent_dim`` task vector giving FiLM scale/shift after the first GroupNorm of every
    residual block; the images are fixed context). ``head`` is ``"classification"`` (with
    ``head_channels`` non-empty: the MDEQ classification head; empty: per-branch GroupNorm +
    average pool to ``pool_size`` + linear) or ``"image"`` (MDEQ segmentation-style merge to
    ``image_channels`` with ``output_activation``).

    ``init_std`` (conv weights ``N(0, init_std²)``), ``post_norm_init`` (initial affine weight
    of the post-fusion GroupNorm; MDEQ used 1) and ``inject_all_branches`` (image/FiLM
    injections also feed the coarser branches; MDEQ fed them zeros) are initialisation and
    conditioning choices documented in :mod:`jiio_zoo.mdeq` and :mod:`jiio_zoo.injections`.
    """

    image_size: int = attrs.field(validator=_int_in(2, 4096))
    image_channels: int = attrs.field(validator=_int_in(1, 64))
    num_branches: int = attrs.field(validator=_int_in(1, 8))
    channels: tuple[int, ...] = attrs.field(converter=_to_tuple, validator=_int_tuple(1))
    groups: int = attrs.field(default=8, validator=_int_in(1))
    expansion: int = attrs.field(default=5, validator=_int_in(1, 64))
    weight_norm: bool = attrs.field(default=True, validator=_bool)
    dropout: float = attrs.field(default=0.0, validator=_float_in(0.0, 1.0, high_open=True))
    injection: Injection = attrs.field(validator=_one_of("image", "latent", "film"))
    latent_dim: int = attrs.field(default=0, validator=_int_in(0))
    head: Head = attrs.field(validator=_one_of("classification", "image"))
    num_classes: int = attrs.field(default=0, validator=_int_in(0))
    head_channels: tuple[int, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_int_tuple(1, allow_empty=True)
    )
    final_channels: int = attrs.field(default=0, validator=_int_in(0))
    pool_size: int = attrs.field(default=1, validator=_int_in(1, 64))
    output_activation: Activation = attrs.field(
        default="none", validator=_one_of("none", "tanh", "sigmoid")
    )
    init_std: float = attrs.field(default=0.01, validator=_float_in(0.0, 1.0, low_open=True))
    post_norm_init: float = attrs.field(
        default=0.25, validator=_float_in(0.0, 10.0, low_open=True)
    )
    inject_all_branches: bool = attrs.field(default=True, validator=_bool)

    def __attrs_post_init__(self) -> None:
        n = self.num_branches
        if len(self.channels) != n:
            raise ValueError(
                f"MDEQConfig.channels must have num_branches={n} entries, got {self.channels!r}"
            )
        if self.image_size < 2 ** (n - 1):
            raise ValueError(
                f"MDEQConfig.image_size={self.image_size} is too small for num_branches={n} "
                f"(needs >= {2 ** (n - 1)})"
            )
        for i, c in enumerate(self.channels):
            for label, width in (("channels", c), ("expansion*channels", self.expansion * c)):
                if width % self.groups:
                    raise ValueError(
                        f"MDEQConfig.groups={self.groups} must divide {label} of branch {i} "
                        f"({width}); GroupNorm needs a whole number of channels per group"
                    )
        if self.injection in ("latent", "film") and self.latent_dim < 1:
            raise ValueError(
                f"MDEQConfig.latent_dim must be >= 1 when injection={self.injection!r}, "
                f"got {self.latent_dim}"
            )
        if self.injection == "image" and self.latent_dim != 0:
            raise ValueError(
                f"MDEQConfig.latent_dim must be 0 when injection='image' (x is the image), "
                f"got {self.latent_dim}"
            )
        if self.head == "classification":
            if self.num_classes < 2:
                raise ValueError(
                    f"MDEQConfig.num_classes must be >= 2 for head='classification', "
                    f"got {self.num_classes}"
                )
            if self.head_channels:
                if len(self.head_channels) != n:
                    raise ValueError(
                        f"MDEQConfig.head_channels must be empty or have num_branches={n} "
                        f"entries, got {self.head_channels!r}"
                    )
                if self.final_channels < 1:
                    raise ValueError(
                        "MDEQConfig.final_channels must be >= 1 when head_channels is given, "
                        f"got {self.final_channels}"
                    )
                for i, h in enumerate(self.head_channels):
                    if h % self.groups:
                        raise ValueError(
                            f"MDEQConfig.groups={self.groups} must divide head_channels[{i}]={h}"
                        )
                if self.final_channels % self.groups:
                    raise ValueError(
                        f"MDEQConfig.groups={self.groups} must divide "
                        f"final_channels={self.final_channels}"
                    )
        elif self.num_classes != 0 or self.head_channels or self.final_channels != 0:
            raise ValueError(
                "MDEQConfig.num_classes, head_channels and final_channels must be left at "
                f"0/()/0 for head='image', got {self.num_classes}, {self.head_channels!r}, "
                f"{self.final_channels}"
            )
        if self.head == "image" and sum(self.channels) % self.groups:
            raise ValueError(
                f"MDEQConfig.groups={self.groups} must divide sum(channels)={sum(self.channels)} "
                "(the image head normalises the concatenated branches)"
            )

    def branch_sizes(self) -> tuple[int, ...]:
        """Spatial side of each branch: ``ceil(image_size / 2^i)`` (stride-2 3×3 convs)."""
        sizes = [self.image_size]
        for _ in range(1, self.num_branches):
            sizes.append((sizes[-1] + 1) // 2)
        return tuple(sizes)


@attrs.frozen(kw_only=True)
class OptEqConfig:
    """A convex OptEq-style layer (:class:`jiio_zoo.opteq.OptEqLayer`) on vectors, with a
    linear head ``z ↦ Vz + c`` to ``output_dim``."""

    state_dim: int = attrs.field(validator=_int_in(1, 1_000_000))
    input_dim: int = attrs.field(validator=_int_in(1, 1_000_000))
    output_dim: int = attrs.field(validator=_int_in(1, 1_000_000))
    activation: Literal["relu", "hardtanh", "identity"] = attrs.field(
        default="relu", validator=_one_of("relu", "hardtanh", "identity")
    )
    max_gain: float = attrs.field(
        default=0.9, validator=_float_in(0.0, 1.0, low_open=True, high_open=True)
    )


ModelConfig = MDEQConfig | OptEqConfig


# --------------------------------------------------------------------------- solver / training


@attrs.frozen(kw_only=True)
class SolverConfig:
    """JIIO and DEQ solver settings (Table 9, Appendix C.3).

    ``damping`` is ``(α_z, α_μ, α_x)``; after ``damping_x_switch_iter`` iterations ``α_x``
    becomes ``damping_x_switch`` (both ``None``: no switch), at that iteration whatever the
    number of iterations run. ``α_x`` is in the units of :mod:`jiio_core.augmented`: with
    ``x_step="gradient"`` it multiplies the gradient of the *summed* loss (the paper's
    convention), with ``x_step="normalized"`` it is the length of a step along the normalised
    gradient. ``accelerator`` is the JIIO (and DEQ forward) accelerator: Anderson uses
    ``anderson_memory``, Broyden ``broyden_memory``. ``forward_threshold`` and
    ``backward_threshold`` bound the plain DEQ forward solve and every backward linear solve.
    ``epsilon`` is the L2 radius of the adversarial perturbation (``None`` when ``x`` is
    unconstrained). :mod:`jiio_zoo.recipe` turns this into solver objects.
    """

    accelerator: Literal["picard", "anderson1", "anderson2", "broyden"] = attrs.field(
        default="anderson1", validator=_one_of("picard", "anderson1", "anderson2", "broyden")
    )
    x_step: Literal["gradient", "normalized"] = attrs.field(
        default="gradient", validator=_one_of("gradient", "normalized")
    )
    forward_threshold: int = attrs.field(default=18, validator=_int_in(1, 100_000))
    backward_threshold: int = attrs.field(default=20, validator=_int_in(1, 100_000))
    broyden_memory: int = attrs.field(default=20, validator=_int_in(1, 1000))
    anderson_memory: int = attrs.field(validator=_int_in(1, 1000))
    damping: tuple[float, float, float] = attrs.field(converter=_to_tuple)
    damping_x_switch: float | None = attrs.field(
        default=None, validator=_optional(_float_in(0.0, 1.0, low_open=True))
    )
    damping_x_switch_iter: int | None = attrs.field(
        default=None, validator=_optional(_int_in(1, 100_000))
    )
    jiio_iterations: int = attrs.field(validator=_int_in(1, 100_000))
    epsilon: float | None = attrs.field(
        default=None, validator=_optional(_float_in(0.0, low_open=True))
    )

    @damping.validator
    def _check_damping(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or len(value) != 3:
            raise ValueError(
                f"SolverConfig.damping must be a tuple (alpha_z, alpha_mu, alpha_x), got {value!r}"
            )
        for label, v in zip(("alpha_z", "alpha_mu", "alpha_x"), value, strict=True):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < float(v) <= 1
            if not ok:
                raise ValueError(
                    f"SolverConfig.damping {label} must be a number in (0, 1], got {v!r} "
                    f"(in {value!r})"
                )

    def __attrs_post_init__(self) -> None:
        if (self.damping_x_switch is None) != (self.damping_x_switch_iter is None):
            raise ValueError(
                "SolverConfig.damping_x_switch and damping_x_switch_iter must be given together "
                f"(or both None), got {self.damping_x_switch!r} and {self.damping_x_switch_iter!r}"
            )


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Outer training settings (Table 9, Appendix C.4)."""

    batch_size: int = attrs.field(validator=_int_in(1, 1_000_000))
    learning_rate: float = attrs.field(validator=_float_in(0.0, 10.0, low_open=True))
    jac_reg: float = attrs.field(default=0.0, validator=_float_in(0.0))
    optimizer: Literal["adam"] = attrs.field(default="adam", validator=_one_of("adam"))
    weight_decay: float = attrs.field(default=0.0, validator=_float_in(0.0))


Task = Literal["adversarial", "generative", "inverse", "meta", "toy"]


def _instance(label: str, kinds: tuple[type, ...]) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise TypeError(f"ZooConfig.{label} must be a {names}, got {type(value).__name__}")

    return check


@attrs.frozen(kw_only=True)
class ZooConfig:
    """One named zoo entry: architecture, solver and training settings.

    ``scale`` is ``"paper"`` (Table 9 sizes; weights are looked up in the user cache) or
    ``"small"`` (CPU-sized; weights may ship inside the package).
    """

    name: str = attrs.field(validator=_name)
    task: Task = attrs.field(
        validator=_one_of("adversarial", "generative", "inverse", "meta", "toy")
    )
    scale: Literal["paper", "small", "test"] = attrs.field(
        validator=_one_of("paper", "small", "test")
    )
    model: ModelConfig = attrs.field(validator=_instance("model", (MDEQConfig, OptEqConfig)))
    solver: SolverConfig = attrs.field(validator=_instance("solver", (SolverConfig,)))
    train: TrainConfig = attrs.field(validator=_instance("train", (TrainConfig,)))

    def __attrs_post_init__(self) -> None:
        m = self.model
        expected: dict[str, tuple[str, str]] = {
            "adversarial": ("image", "classification"),
            "generative": ("latent", "image"),
            "inverse": ("latent", "image"),
            "meta": ("film", "classification"),
        }
        if isinstance(m, MDEQConfig):
            if self.task == "toy":
                raise ValueError("ZooConfig.task='toy' is for OptEq models, got an MDEQConfig")
            inj, head = expected[self.task]
            if (m.injection, m.head) != (inj, head):
                raise ValueError(
                    f"ZooConfig.task={self.task!r} needs model.injection={inj!r} and "
                    f"model.head={head!r}, got {m.injection!r} and {m.head!r}"
                )
        if self.task == "adversarial" and self.solver.epsilon is None:
            raise ValueError("ZooConfig.solver.epsilon must be set for task='adversarial'")

    @property
    def architecture(self) -> str:
        """``"mdeq"`` or ``"opteq"``."""
        return "mdeq" if isinstance(self.model, MDEQConfig) else "opteq"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples kept as tuples); :func:`config_from_dict` inverts it."""
        out = _as_dict(self)
        out["architecture"] = self.architecture
        return out

    def replace(self, **changes: Any) -> ZooConfig:
        """A copy with top-level fields changed (validated again)."""
        return attrs.evolve(self, **changes)


# --------------------------------------------------------------------------- from_dict


def _as_dict(inst: Any) -> dict[str, Any]:
    return {
        f.name: _as_dict(v) if attrs.has(type(v)) else v
        for f in attrs.fields(type(inst))
        for v in [getattr(inst, f.name)]
    }

C = TypeVar("C")


def _build(cls: type[C], data: Mapping[str, Any], path: str) -> C:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {type(data).__name__}")
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {path} ({cls.__name__}); "
            f"valid fields: {', '.join(sorted(fields))}"
        )
    required = [
        n for n, f in fields.items() if f.default is attrs.NOTHING and n not in data
    ]
    if required:
        raise ConfigError(
            f"missing key(s) {', '.join(map(repr, required))} in {path} ({cls.__name__})"
        )
    return cls(**dict(data))


def config_from_dict(data: Mapping[str, Any]) -> ZooConfig:
    """Rebuild a :class:`ZooConfig` from a nested dict (e.g. :meth:`ZooConfig.to_dict`).

    Raises :class:`ConfigError` for unknown or missing keys (listing the valid fields) and the
    fields' own ``ValueError``/``TypeError`` for bad values.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    data = dict(data)
    arch = data.pop("architecture", None)
    model = data.get("model")
    if arch is None:
        arch = "opteq" if isinstance(model, Mapping) and "state_dim" in model else "mdeq"
    if arch not in ("mdeq", "opteq"):
        raise ConfigError(f"config architecture must be 'mdeq' or 'opteq', got {arch!r}")
    model_cls: type[MDEQConfig] | type[OptEqConfig] = MDEQConfig if arch == "mdeq" else OptEqConfig
    top = {n: f for n, f in attrs.fields_dict(ZooConfig).items()}
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in config (ZooConfig); valid "
            f"fields: {', '.join(sorted([*top, 'architecture']))}"
        )
    missing = sorted(set(top) - set(data))
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(map(repr, missing))} in config (ZooConfig)")
    return ZooConfig(
        name=data["name"],
        task=data["task"],
        scale=data["scale"],
        model=_build(model_cls, data["model"], "config.model"),
        solver=_build(SolverConfig, data["solver"], "config.solver"),
        train=_build(TrainConfig, data["train"], "config.train"),
    )


# --------------------------------------------------------------------------- the catalogue


def _adversarial(name: str, image_size: int, image_channels: int, alpha_x: float,
                 switch: float | None) -> ZooConfig:
    return ZooConfig(
        name=name,
        task="adversarial",
        scale="paper",
        model=MDEQConfig(
            image_size=image_size,
            image_channels=image_channels,
            num_branches=2,
            channels=(24, 24),
            injection="image",
            head="classification",
            num_classes=10,
            # Not in Table 9: MDEQ-SMALL classification head of the reference configs.
            head_channels=(8, 16),
            final_channels=200,
        ),
        solver=SolverConfig(
            x_step="normalized",  # the original adversarial code: α_x is a step length
            anderson_memory=20,
            damping=(0.8, 0.6, alpha_x),
            damping_x_switch=switch,
            damping_x_switch_iter=None if switch is None else 65,
            jiio_iterations=80,  # §4.3 (MNIST); the reference CIFAR config also uses 80
            epsilon=1.0,
        ),
        train=TrainConfig(batch_size=96, learning_rate=1e-3, jac_reg=0.01),
    )


def _celeba(name: str, task: Literal["generative", "inverse"], iterations: int,
            jac_reg: float) -> ZooConfig:
    return ZooConfig(
        name=name,
        task=task,
        scale="paper",
        model=MDEQConfig(
            image_size=64,
            image_channels=3,
            num_branches=4,
            channels=(32, 64, 128, 256),
            injection="latent",
            latent_dim=128,
            head="image",
            output_activation="tanh",  # data in [-1, 1], as the reference config
        ),
        solver=SolverConfig(
            anderson_memory=40,
            damping=(0.8, 0.6, 0.01),
            damping_x_switch=0.003,  # C.3: for 100-iteration runs, after 65 iterations
            damping_x_switch_iter=65,
            jiio_iterations=iterations,
        ),
        train=TrainConfig(batch_size=48, learning_rate=1e-3, jac_reg=jac_reg),
    )


def _catalogue() -> dict[str, ZooConfig]:
    configs = [
        _adversarial("mnist_adv", 28, 1, alpha_x=0.6, switch=0.2),
        _adversarial("cifar10_adv", 32, 3, alpha_x=0.1, switch=None),
        _celeba("celeba_gen", "generative", iterations=40, jac_reg=0.1),
        _celeba("celeba_inverse", "inverse", iterations=100, jac_reg=2.0),
        ZooConfig(
            name="omniglot_meta",
            task="meta",
            scale="paper",
            model=MDEQConfig(
                image_size=28,
                image_channels=1,
                num_branches=2,
                channels=(64, 128),
                injection="film",
                latent_dim=400,
                head="classification",
                num_classes=5,
                pool_size=4,  # reference: per-branch GN + 7×7 average pool of a 28×28 map
            ),
            solver=SolverConfig(
                accelerator="anderson2",  # the paper's choice for meta-learning (A.2)
                x_step="normalized",
                anderson_memory=10,
                damping=(0.8, 0.6, 0.04),
                damping_x_switch=0.01,
                damping_x_switch_iter=65,
                jiio_iterations=100,  # Table 7
            ),
            train=TrainConfig(batch_size=80, learning_rate=1e-3, jac_reg=0.5),
        ),
        # ---- CPU-sized variants (minutes on 2 cores) ----
        ZooConfig(
            name="digits_adv_small",
            task="adversarial",
            scale="small",
            model=MDEQConfig(
                image_size=8,
                image_channels=1,
                num_branches=2,
                channels=(8, 16),
                groups=4,
                injection="image",
                head="classification",
                num_classes=10,
                head_channels=(4, 8),
                final_channels=32,
            ),
            solver=SolverConfig(
                x_step="normalized",
                anderson_memory=10,
                # normalised α_x tuned on 200 *training* digits, not the held-out ones
                # (benchmarks/tune_attack.py, benchmarks/results/attack-tuning-cpu.json): fewest
                # JIIO iterations from which on the attack stays at the best PGD-20's success:
                # α_x 0.3: 60-100, 0.6: 40 (the previous config, late 0.2 from 25), 1.0: 35,
                # 1.5: 30 (each with late α_x/3 from 25 or 40, or no switch); 1.5 is outside the
                # (0, 1] this config allows, so 1.0 with late α_x/3 from 25
                damping=(0.8, 0.6, 1.0),
                damping_x_switch=0.333333,
                damping_x_switch_iter=25,
                jiio_iterations=40,
                epsilon=0.5,
            ),
            train=TrainConfig(batch_size=64, learning_rate=1e-3, jac_reg=0.01),
        ),
        ZooConfig(
            name="faces_gen_small",
            task="generative",
            scale="small",
            model=MDEQConfig(
                image_size=32,
                image_channels=1,
                num_branches=3,
                channels=(8, 16, 32),
                groups=4,
                injection="latent",
                latent_dim=32,
                head="image",
                output_activation="sigmoid",  # data in [0, 1]
            ),
            solver=SolverConfig(
                # memory 20 → 10: the same iterations to Adam-40's loss on the training faces
                # (k* = 20 for memory 20, 10 and 5) at half the history traffic per iteration
                anderson_memory=10,
                # α_x tuned on 16 training faces (benchmarks/bench_inversion.py --split train
                # --alpha-x ...; docs/benchmarks.md): fewest iterations to Adam-40's loss at
                # equilibrium at 0.06 (0.04: 24, 0.06: 20, 0.08: 22, 0.11: 28, 0.16: never);
                # the late value keeps the paper's ratio 0.3
                damping=(0.8, 0.6, 0.06),
                damping_x_switch=0.018,
                damping_x_switch_iter=25,
                jiio_iterations=40,
            ),
            train=TrainConfig(batch_size=32, learning_rate=1e-3, jac_reg=0.1),
        ),
        ZooConfig(
            name="glyphs_meta_small",
            task="meta",
            scale="small",
            model=MDEQConfig(
                image_size=14,  # glyphs drawn at 14×14: a quarter of the 28×28 cost
                image_channels=1,
                num_branches=2,
                channels=(8, 16),
                groups=4,
                expansion=2,
                injection="film",
                latent_dim=32,
                head="classification",
                num_classes=5,
                pool_size=4,
                # larger than MDEQ's 0.01 so that the FiLM-modulated block output is not
                # drowned by the image injection (the task vector must move the logits)
                init_std=0.05,
            ),
            solver=SolverConfig(
                accelerator="anderson2",
                x_step="normalized",
                anderson_memory=10,
                damping=(0.8, 0.6, 0.3),  # α_x: length of the normalised x step
                damping_x_switch=0.06,
                damping_x_switch_iter=15,
                jiio_iterations=20,
            ),
            # the shipped weights: 4 tasks per meta step (`--meta-batch 4`), lr 3e-3, trained
            # before the trainer applied jac_reg (reproduce with `--jac-reg 0`); jac_reg as the paper's
            train=TrainConfig(batch_size=4, learning_rate=3e-3, jac_reg=0.5),
        ),
        ZooConfig(
            name="opteq_small",
            task="toy",
            scale="small",
            model=OptEqConfig(state_dim=64, input_dim=16, output_dim=32, activation="relu"),
            solver=SolverConfig(
                anderson_memory=10, damping=(0.8, 0.6, 0.1), jiio_iterations=60
            ),
            train=TrainConfig(batch_size=64, learning_rate=1e-3),
        ),
    ]
    return {c.name: c for c in configs}


CONFIGS: dict[str, ZooConfig] = _catalogue()
"""Every named configuration, paper-scale first."""


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
    """A :class:`ZooConfig` from a JSON file.

    The file holds either a whole config (as written by :meth:`ZooConfig.to_dict`, e.g. by
    ``jiio config show NAME``) or ``{"base": BASE, ...overrides}``: the config ``BASE`` (a zoo
    name, or another ``.json`` file, relative to this file's directory) with the given (nested)
    keys replaced, e.g.
    ``{"base": "faces_gen_small", "name": "faces_wide", "model": {"channels": [16, 32]}}``.
    Unknown keys are errors, as everywhere else; a chain of bases that comes back to a file
    already in it is a :class:`ConfigError` naming the chain.
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
    ending in ``.json`` (see :func:`load_config_file`). Unknown names raise ``ValueError``
    listing the valid ones."""
    if isinstance(name, str) and name in CONFIGS:
        return CONFIGS[name]
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.endswith(".json")):
        return load_config_file(name)
    raise ValueError(
        f"unknown config name {name!r}; valid names: {', '.join(CONFIGS)} (or a path to a .json config file)"
    )

"""The zoo's configuration classes: frozen attrs values checked field by field at construction.

A [`ZooConfig`][jiio_zoo.configs.schema.ZooConfig] bundles an architecture ([`MDEQConfig`][jiio_zoo.configs.schema.MDEQConfig] or [`OptEqConfig`][jiio_zoo.configs.schema.OptEqConfig]), the
JIIO solver settings ([`SolverConfig`][jiio_zoo.configs.schema.SolverConfig]) and the training settings ([`TrainConfig`][jiio_zoo.configs.schema.TrainConfig]).
A bad value raises [`jiio_core.validators.FieldError`][jiio_core.validators.FieldError] (a ``ValueError``; its
[`FieldTypeError`][jiio_core.validators.FieldTypeError] form is also a ``TypeError``) naming
``Class.field``, the allowed range and the value given. The named configs are in
[`jiio_zoo.configs.catalogue`][jiio_zoo.configs.catalogue]; dicts and JSON files become configs in
[`jiio_zoo.configs.loading`][jiio_zoo.configs.loading].
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs

from jiio_core.validators import (
    FieldError,
    identifier,
    instance_of,
    int_in,
    number_in,
    one_of,
    optional,
    tuple_of,
)

__all__ = [
    "ConfigError",
    "MDEQConfig",
    "ModelConfig",
    "OptEqConfig",
    "SolverConfig",
    "TrainConfig",
    "ZooConfig",
]


class ConfigError(ValueError):
    """A dict or JSON file that cannot become a config: unknown, missing or bad keys (the message
    names the dotted path to each, e.g. ``solver.damping[2]: ...``), a bad file or base."""


def _to_tuple(value: Any) -> Any:
    """Converter: lists (e.g. from JSON) become tuples; anything else is left for the validator."""
    return tuple(value) if isinstance(value, list) else value


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
    conditioning choices documented in [`jiio_zoo.mdeq`][jiio_zoo.mdeq] and [`jiio_zoo.injections`][jiio_zoo.injections].
    """

    image_size: int = attrs.field(validator=int_in(2, 4096))
    image_channels: int = attrs.field(validator=int_in(1, 64))
    num_branches: int = attrs.field(validator=int_in(1, 8))
    channels: tuple[int, ...] = attrs.field(converter=_to_tuple, validator=tuple_of(int_in(1), non_empty=True))
    groups: int = attrs.field(default=8, validator=int_in(1))
    expansion: int = attrs.field(default=5, validator=int_in(1, 64))
    weight_norm: bool = attrs.field(default=True, validator=instance_of(bool))
    dropout: float = attrs.field(default=0.0, validator=number_in(0.0, 1.0, high_open=True))
    injection: Injection = attrs.field(validator=one_of("image", "latent", "film"))
    latent_dim: int = attrs.field(default=0, validator=int_in(0))
    head: Head = attrs.field(validator=one_of("classification", "image"))
    num_classes: int = attrs.field(default=0, validator=int_in(0))
    head_channels: tuple[int, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=tuple_of(int_in(1))
    )
    final_channels: int = attrs.field(default=0, validator=int_in(0))
    pool_size: int = attrs.field(default=1, validator=int_in(1, 64))
    output_activation: Activation = attrs.field(
        default="none", validator=one_of("none", "tanh", "sigmoid")
    )
    init_std: float = attrs.field(default=0.01, validator=number_in(0.0, 1.0, low_open=True))
    post_norm_init: float = attrs.field(
        default=0.25, validator=number_in(0.0, 10.0, low_open=True)
    )
    inject_all_branches: bool = attrs.field(default=True, validator=instance_of(bool))
    task_head_dim: int = attrs.field(default=0, validator=int_in(0, 4096))
    """With ``injection="film"`` and the pooled classification head: when > 0, the classifier is
    task specific and part of ``x`` ([`TaskLinearHead`][jiio_zoo.heads.TaskLinearHead]): ``x`` is the
    ``latent_dim`` FiLM code followed by ``num_classes × task_head_dim`` classifier weights over a
    learned ``task_head_dim``-dimensional embedding of the pooled features. 0: the paper's head."""

    @property
    def x_size(self) -> int:
        """Entries of one latent or task vector ``x`` (``latent`` and ``film`` injections)."""
        return self.latent_dim + self.num_classes * self.task_head_dim

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
        if self.task_head_dim and (self.injection != "film" or self.head != "classification"
                                   or self.head_channels):
            raise ValueError(
                f"MDEQConfig.task_head_dim={self.task_head_dim} needs injection='film' and the pooled "
                f"classification head (head='classification', head_channels=()), got "
                f"injection={self.injection!r}, head={self.head!r}, head_channels={self.head_channels!r}"
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
    """A convex OptEq-style layer ([`jiio_zoo.opteq.OptEqLayer`][jiio_zoo.opteq.OptEqLayer]) on vectors, with a
    linear head ``z ↦ Vz + c`` to ``output_dim``."""

    state_dim: int = attrs.field(validator=int_in(1, 1_000_000))
    input_dim: int = attrs.field(validator=int_in(1, 1_000_000))
    output_dim: int = attrs.field(validator=int_in(1, 1_000_000))
    activation: Literal["relu", "hardtanh", "identity"] = attrs.field(
        default="relu", validator=one_of("relu", "hardtanh", "identity")
    )
    max_gain: float = attrs.field(
        default=0.9, validator=number_in(0.0, 1.0, low_open=True, high_open=True)
    )


ModelConfig = MDEQConfig | OptEqConfig


# --------------------------------------------------------------------------- solver / training


@attrs.frozen(kw_only=True)
class SolverConfig:
    """JIIO and DEQ solver settings (Table 9, Appendix C.3).

    ``damping`` is ``(α_z, α_μ, α_x)`` (``α_z, α_μ`` in (0, 1]; ``α_x`` any step size > 0); after ``damping_x_switch_iter`` iterations ``α_x``
    becomes ``damping_x_switch`` (both ``None``: no switch), at that iteration whatever the
    number of iterations run. ``α_x`` is in the units of [`jiio_core.augmented`][jiio_core.augmented]: with
    ``x_step="gradient"`` it multiplies the gradient of the *summed* loss (the paper's
    convention), with ``x_step="normalized"`` it is the length of a step along the normalised
    gradient. ``accelerator`` is the JIIO (and DEQ forward) accelerator: Anderson uses
    ``anderson_memory``, Broyden ``broyden_memory``. ``forward_threshold`` and
    ``backward_threshold`` bound the plain DEQ forward solve and every backward linear solve.
    ``epsilon`` is the L2 radius of the adversarial perturbation (``None`` when ``x`` is
    unconstrained). [`jiio_zoo.recipe`][jiio_zoo.recipe] turns this into solver objects.
    """

    accelerator: Literal["picard", "anderson1", "anderson2", "broyden"] = attrs.field(
        default="anderson1", validator=one_of("picard", "anderson1", "anderson2", "broyden")
    )
    x_step: Literal["gradient", "normalized"] = attrs.field(
        default="gradient", validator=one_of("gradient", "normalized")
    )
    forward_threshold: int = attrs.field(default=18, validator=int_in(1, 100_000))
    backward_threshold: int = attrs.field(default=20, validator=int_in(1, 100_000))
    broyden_memory: int = attrs.field(default=20, validator=int_in(1, 1000))
    anderson_memory: int = attrs.field(validator=int_in(1, 1000))
    damping: tuple[float, float, float] = attrs.field(converter=_to_tuple)
    damping_x_switch: float | None = attrs.field(
        default=None, validator=optional(number_in(0.0, low_open=True))
    )
    damping_x_switch_iter: int | None = attrs.field(
        default=None, validator=optional(int_in(1, 100_000))
    )
    jiio_iterations: int = attrs.field(validator=int_in(1, 100_000))
    epsilon: float | None = attrs.field(
        default=None, validator=optional(number_in(0.0, low_open=True))
    )
    balanced_iterations: int = attrs.field(default=0, validator=int_in(0, 100_000))
    """Anderson weighs the ``z``, ``μ`` and ``x`` blocks of the joint residual alike in its first
    ``balanced_iterations`` updates, then uses the Euclidean metric
    ([`SolveSettings.balance_until`][jiio_core.recipe.SolveSettings.balance_until]); 0: Euclidean throughout."""

    @damping.validator
    def _check_damping(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or len(value) != 3:
            raise FieldError(
                f"SolverConfig.damping must be a tuple (alpha_z, alpha_mu, alpha_x), got {value!r}",
                "damping",
            )
        for i, (label, v) in enumerate(zip(("alpha_z", "alpha_mu", "alpha_x"), value, strict=True)):
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            # α_z, α_μ mix an old and a new iterate; α_x is a step size, with no upper bound
            ok = number and v > 0 and (i == 2 or v <= 1)
            if not ok:
                expected = "a finite number > 0" if i == 2 else "a number in (0, 1]"
                raise FieldError(
                    f"SolverConfig.damping {label} must be {expected}, got {v!r} (in {value!r})",
                    f"damping[{i}]",
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

    batch_size: int = attrs.field(validator=int_in(1, 1_000_000))
    learning_rate: float = attrs.field(validator=number_in(0.0, 10.0, low_open=True))
    jac_reg: float = attrs.field(default=0.0, validator=number_in(0.0))
    optimizer: Literal["adam"] = attrs.field(default="adam", validator=one_of("adam"))
    weight_decay: float = attrs.field(default=0.0, validator=number_in(0.0))


Task = Literal["adversarial", "generative", "inverse", "meta", "toy"]


@attrs.frozen(kw_only=True)
class ZooConfig:
    """One named zoo entry: architecture, solver and training settings.

    ``scale`` is ``"paper"`` (Table 9 sizes; weights are looked up in the user cache) or
    ``"small"`` (CPU-sized; weights may ship inside the package).
    """

    name: str = attrs.field(validator=identifier)
    task: Task = attrs.field(
        validator=one_of("adversarial", "generative", "inverse", "meta", "toy")
    )
    scale: Literal["paper", "small", "test"] = attrs.field(
        validator=one_of("paper", "small", "test")
    )
    model: ModelConfig = attrs.field(validator=instance_of(MDEQConfig, OptEqConfig))
    solver: SolverConfig = attrs.field(validator=instance_of(SolverConfig))
    train: TrainConfig = attrs.field(validator=instance_of(TrainConfig))

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
        """Plain nested dict (tuples kept as tuples) with the model's ``architecture``;
        [`jiio_zoo.configs.config_from_dict`][jiio_zoo.configs.loading.config_from_dict] inverts it."""
        out = attrs.asdict(self)  # tuples stay tuples
        out["architecture"] = self.architecture
        return out

    def replace(self, **changes: Any) -> ZooConfig:
        """A copy with top-level fields changed (validated again)."""
        return attrs.evolve(self, **changes)


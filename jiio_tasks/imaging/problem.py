"""The JIIO problem of a zoo decoder, built by the one recipe ([`jiio_zoo.recipe`][jiio_zoo.recipe]).

Step sizes: the losses here are per-pixel means that declare the pixel count ``D`` as their
``loss_scale`` ([`MeasurementObjective`][jiio_tasks.imaging.objectives.MeasurementObjective]), so the core
takes ``α_x`` steps on the gradient of the *summed* error, the paper's convention: the
config's ``α_x`` means what the paper's did, with no rescaling here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jiio_core import InnerObjective, JointProblem, OuterGradient
from jiio_core.recipe import OUTER_GRADIENTS, SolveSettings
from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import joint_problem

__all__ = ["OUTER_CHOICES", "image_shape", "jiio_problem", "outer_gradient", "pixels"]

OUTER_CHOICES = tuple(k for k in OUTER_GRADIENTS if k != "unrolled")


def image_shape(model: ZooModel) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images the model's head produces."""
    m = model.config.model
    if not isinstance(m, MDEQConfig) or m.head != "image" or m.injection != "latent":
        raise ValueError(
            f"model {model.name!r} is not a latent-to-image decoder (need an MDEQ with "
            "injection='latent' and head='image')"
        )
    return (m.image_channels, m.image_size, m.image_size)


def pixels(model: ZooModel) -> int:
    """``D``: values in one output image."""
    return math.prod(image_shape(model))


def outer_gradient(name: str) -> OuterGradient:
    """``shortcut`` (eq. 19, exact when outer = inner loss), ``kkt`` (eq. 16–17, exact for
    any outer loss) or ``fixed-input`` (IFT through the DEQ at fixed ``x*``; ignores
    ``dx*/dθ``: the cheap approximation for supervised inverse problems), with backward
    solves of 100 iterations to a relative 1e-5."""
    if name not in OUTER_CHOICES:
        raise ValueError(f"unknown outer gradient {name!r}; valid: {', '.join(OUTER_CHOICES)}")
    return SolveSettings(backward_max_iter=100, backward_tol=1e-5).make_outer(name)  # type: ignore[arg-type]


def jiio_problem(
    model: ZooModel,
    objective: InnerObjective,
    *,
    outer: OuterGradient | None = None,
    iterations: int | None = None,
    jacobian_penalty: bool = False,
    tol: float = 1e-6,
    overrides: Mapping[str, Any] | None = None,
) -> JointProblem:
    """[`jiio_zoo.recipe.joint_problem`][jiio_zoo.recipe.joint_problem] for a decoder: the config's accelerator, memory,
    damping and late-``α_x`` switch (at the config's iteration), ``iterations`` (default: the
    config's ``jiio_iterations``), ``tol``, and, if asked, the Jacobian penalty at a random
    iterate in ``[min(15, iterations // 2), iterations)``. ``overrides`` replace other
    [`SolveSettings`][jiio_core.recipe.SolveSettings] fields (e.g. ``{"damping": (0.8, 0.6, 0.04)}``)."""
    image_shape(model)  # a decoder, or a clear error
    return joint_problem(
        model,
        objective,
        iterations=iterations,
        outer="shortcut" if outer is None else outer,
        jacobian_penalty=jacobian_penalty,
        tol=tol,
        **dict(overrides or {}),
    )

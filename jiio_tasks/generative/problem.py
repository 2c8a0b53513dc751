"""Building the JIIO problem of a zoo decoder from its config (Appendix C.3, C.4).

Convention on the step size ``α_x``: the paper's code minimised the *sum* of the squared
error over pixels (and batch), so its ``α_x`` (0.01 for CelebA) multiplies a gradient that is
``D`` times larger than the gradient of our per-pixel *mean* loss (``D`` = pixels × channels
of one image). :func:`jiio_problem` therefore uses ``α_x · D`` (and ``α_x_late · D``) so that
the config's numbers mean what the paper's did.
"""

from __future__ import annotations

import math

from jiio_core import (
    AdjointShortcut,
    AndersonI,
    Damping,
    FixedInput,
    ImplicitKKT,
    InnerObjective,
    JacobianPenalty,
    JointProblem,
    OuterGradient,
)
from jiio_zoo.configs import MDEQConfig
from jiio_zoo.model import ZooModel

__all__ = ["OUTER_CHOICES", "image_shape", "jiio_problem", "outer_gradient", "pixels"]

OUTER_CHOICES = ("shortcut", "kkt", "fixed-input")


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
    ``dx*/dθ``: the cheap approximation for supervised inverse problems)."""
    if name == "shortcut":
        return AdjointShortcut()
    if name == "kkt":
        return ImplicitKKT(max_iter=100, tol=1e-5)
    if name == "fixed-input":
        return FixedInput(max_iter=100, tol=1e-5)
    raise ValueError(f"unknown outer gradient {name!r}; valid: {', '.join(OUTER_CHOICES)}")


def jiio_problem(
    model: ZooModel,
    objective: InnerObjective,
    *,
    outer: OuterGradient | None = None,
    iterations: int | None = None,
    jacobian_penalty: bool = False,
    tol: float = 1e-6,
) -> JointProblem:
    """The joint problem of the config: Anderson type I with the config's memory, damping
    ``(α_z, α_μ, α_x·D)`` with the late ``α_x`` switch, ``iterations`` (default: the config's
    ``jiio_iterations``) and, if asked, the Jacobian penalty at a random iterate in
    ``[min(15, iterations // 2), iterations)``."""
    s = model.config.solver
    iters = s.jiio_iterations if iterations is None else iterations
    d = pixels(model)
    az, amu, ax = s.damping
    late = None if s.damping_x_switch is None else s.damping_x_switch * d
    switch = s.damping_x_switch_iter
    if switch is not None and iterations is not None and iterations != s.jiio_iterations:
        # keep the switch at the same fraction of the run (C.3: 65 of 100)
        switch = max(1, round(switch * iters / s.jiio_iterations))
    damping = Damping(
        z=az, mu=amu, x=ax * d, x_late=late, switch_at=None if late is None else switch
    )
    penalty = JacobianPenalty(probes=2, start=min(15, iters // 2)) if jacobian_penalty else None
    return JointProblem(
        model.layer,
        objective,
        accelerator=AndersonI(memory=s.anderson_memory),
        damping=damping,
        outer=AdjointShortcut() if outer is None else outer,
        max_iter=iters,
        tol=tol,
        x_shape=model.x_shape,
        jacobian_penalty=penalty,
    )

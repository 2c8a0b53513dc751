"""A zoo config's solver settings as a [`jiio_core.recipe.SolveSettings`][jiio_core.recipe.SolveSettings]: the one place
where [`SolverConfig`][jiio_zoo.configs.schema.SolverConfig] fields become solver objects.

Field by field: ``accelerator`` → the accelerator kind, with ``anderson_memory`` (Anderson) or
``broyden_memory`` (Broyden) as its memory; ``damping`` and ``damping_x_switch`` /
``damping_x_switch_iter`` → ``(α_z, α_μ, α_x)``, ``x_late``, ``switch_at`` (used as given: a
solve of fewer iterations never switches); ``x_step`` → plain or normalised x-steps;
``jiio_iterations`` → ``max_iter``; ``forward_threshold`` / ``backward_threshold`` → the DEQ
forward budget and every backward solve's budget. ``epsilon`` is the adversarial radius (read
by the attack), and [`TrainConfig`][jiio_zoo.configs.schema.TrainConfig] is read by the trainers
([`make_optimizer`][jiio_zoo.recipe.make_optimizer] for ``optimizer``, ``learning_rate``, ``weight_decay``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from jiio_core import Constraint, DEQSolver, InnerObjective, JointProblem, OuterGradient
from jiio_core.recipe import OuterKind, SolveSettings
from jiio_zoo.configs import SolverConfig, TrainConfig, ZooConfig
from jiio_zoo.model import ZooModel

__all__ = ["deq_solver", "joint_problem", "make_optimizer", "settings"]


def settings(config: ZooConfig | SolverConfig, *, iterations: int | None = None, **overrides: Any) -> SolveSettings:
    """The [`SolveSettings`][jiio_core.recipe.SolveSettings] of ``config`` (``iterations`` replaces
    ``jiio_iterations``; ``overrides`` replace any other settings field by name)."""
    s = config.solver if isinstance(config, ZooConfig) else config
    if not isinstance(s, SolverConfig):
        raise TypeError(f"config must be a ZooConfig or SolverConfig, got {type(config).__name__}")
    base = SolveSettings(
        accelerator=s.accelerator,
        memory=s.broyden_memory if s.accelerator == "broyden" else s.anderson_memory,
        damping=s.damping,
        x_late=s.damping_x_switch,
        switch_at=s.damping_x_switch_iter,
        x_step=s.x_step,
        max_iter=s.jiio_iterations if iterations is None else iterations,
        forward_max_iter=s.forward_threshold,
        backward_max_iter=s.backward_threshold,
        balance_blocks=s.balanced_iterations > 0,
        balance_until=s.balanced_iterations or None,
    )
    return base.evolve(**overrides) if overrides else base


def joint_problem(
    model: ZooModel,
    objective: InnerObjective,
    *,
    iterations: int | None = None,
    outer: OuterKind | OuterGradient = "shortcut",
    constraint: Constraint | None = None,
    jacobian_penalty: bool = False,
    throw: bool = False,
    **overrides: Any,
) -> JointProblem:
    """The JIIO problem of ``model``'s config for ``objective`` (see [`settings`][jiio_zoo.recipe.settings])."""
    if not isinstance(model, ZooModel):
        raise TypeError(f"model must be a ZooModel, got {type(model).__name__}")
    return settings(model.config, iterations=iterations, **overrides).problem(
        model.layer,
        objective,
        constraint=constraint,
        outer=outer,
        x_shape=model.x_shape,
        jacobian_penalty=jacobian_penalty,
        throw=throw,
    )


def deq_solver(model: ZooModel | ZooConfig, *, max_iter: int | None = None, tol: float | None = None) -> DEQSolver:
    """The plain DEQ solver of the config (forward budget ``forward_threshold`` unless given)."""
    config = model.config if isinstance(model, ZooModel) else model
    return settings(config).deq_solver(max_iter=max_iter, tol=tol)


def make_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
    config: ZooConfig | TrainConfig,
    *,
    lr: float | None = None,
) -> torch.optim.Optimizer:
    """The optimiser ``TrainConfig.optimizer`` names, with its ``learning_rate`` (or ``lr``)
    and ``weight_decay``."""
    t = config.train if isinstance(config, ZooConfig) else config
    if t.optimizer != "adam":  # the validator allows only "adam" today
        raise ValueError(f"TrainConfig.optimizer must be 'adam', got {t.optimizer!r}")
    return torch.optim.Adam(params, lr=t.learning_rate if lr is None else lr, weight_decay=t.weight_decay)

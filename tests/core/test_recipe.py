"""SolveSettings: one value builds every solver object of a solve."""

from __future__ import annotations

import pytest
import torch

from jiio_core import (
    AdjointShortcut,
    AndersonI,
    AndersonII,
    Broyden,
    CostResidualTradeoff,
    FixedInput,
    ImplicitKKT,
    LowestCost,
    LowestResidual,
    Picard,
    Unrolled,
)
from jiio_core.recipe import SolveSettings

from .toy import DT, QuadraticLoss, TanhLayer


@pytest.mark.parametrize(("kind", "cls"), [("picard", Picard), ("anderson1", AndersonI),
                                           ("anderson2", AndersonII), ("broyden", Broyden)])
def test_accelerator_kind_and_memory(kind: str, cls: type) -> None:
    acc = SolveSettings(accelerator=kind, memory=7).make_accelerator()  # type: ignore[arg-type]
    assert type(acc) is cls
    if kind != "picard":
        assert acc.memory == 7  # type: ignore[attr-defined]


def test_problem_carries_every_setting() -> None:
    s = SolveSettings(accelerator="broyden", memory=9, damping=(0.7, 0.5, 0.2), x_late=0.05, switch_at=12,
                      x_step="normalized", max_iter=33, tol=1e-7, equilibrium_tol=2e-4, selection="cost",
                      check_every=3, backward_max_iter=44, backward_tol=1e-8, jacobian_probes=3, jacobian_start=4,
                      balance_blocks=True)
    p = s.problem(TanhLayer(4, 2), QuadraticLoss(4, 3), outer="kkt", x_shape=(2,), jacobian_penalty=True)
    assert isinstance(p.accelerator, Broyden) and p.accelerator.memory == 9
    d = p.damping
    assert (d.z, d.mu, d.x, d.x_late, d.switch_at) == (0.7, 0.5, 0.2, 0.05, 12)
    assert p.normalized_x_step and p.max_iter == 33 and p.tol == 1e-7 and p.equilibrium_tol == 2e-4
    assert isinstance(p.selection, LowestCost) and p.check_every == 3 and p.balance_blocks
    pieces = (TanhLayer(4, 2), QuadraticLoss(4, 3))
    assert not SolveSettings().problem(*pieces, x_shape=(2,)).balance_blocks
    assert SolveSettings(balance_blocks=True).problem(*pieces, x_shape=(2,)).balance_blocks
    until = SolveSettings(balance_blocks=True, balance_until=6).problem(*pieces, x_shape=(2,)).accelerator
    assert isinstance(until, AndersonI) and until.balance_until == 6
    assert isinstance(p.outer, ImplicitKKT) and p.outer.max_iter == 44 and p.outer.tol == 1e-8
    assert p.jacobian_penalty is not None and (p.jacobian_penalty.probes, p.jacobian_penalty.start) == (3, 4)
    solver = s.deq_solver()
    assert isinstance(solver.accelerator, Broyden) and solver.backward_max_iter == 44 and solver.check_every == 3


def test_outer_and_selection_names() -> None:
    s = SolveSettings()
    assert isinstance(s.make_outer("shortcut"), AdjointShortcut)
    assert isinstance(s.make_outer("fixed-input"), FixedInput)
    assert isinstance(s.make_outer("unrolled"), Unrolled)
    assert isinstance(s.make_selection(), CostResidualTradeoff)
    assert isinstance(SolveSettings(selection="residual").make_selection(), LowestResidual)
    with pytest.raises(ValueError, match="outer must be one of"):
        s.make_outer("adjoint")  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("accelerator", "anderson", "SolveSettings.accelerator must be one of"),
    ("memory", 0, "memory"),
    ("damping", (0.8, 0.6), "alpha_z, alpha_mu, alpha_x"),
    ("damping", (1.5, 0.6, 0.1), "z"),
    ("x_step", "sign", "SolveSettings.x_step must be one of"),
    ("max_iter", 0, "max_iter"),
    ("tol", -1.0, "tol"),
    ("switch_at", 5, "x_late and Damping.switch_at must be given together"),
])
def test_bad_settings_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        SolveSettings(**{field: value})  # type: ignore[arg-type]


def test_settings_solve_like_the_hand_built_problem() -> None:
    layer, loss = TanhLayer(5, 2), QuadraticLoss(5, 3)
    y = torch.randn(3, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    p = SolveSettings(damping=(0.8, 0.6, 0.3), max_iter=80, tol=1e-8).problem(layer, loss, x_shape=(2,))
    with torch.no_grad():
        sol = p.solve(y)
    assert bool(sol.converged.all()) and bool(sol.at_equilibrium.all())

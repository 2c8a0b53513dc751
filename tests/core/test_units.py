"""Scale-free settings: the loss's declared scale, per-block residuals, honest solutions."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from jiio_core import (
    AndersonI,
    Damping,
    InnerObjective,
    JointProblem,
    LowestCost,
    Picard,
    StepOutput,
    fixed_point,
)

from .toy import DT, LinearLayer, QuadraticLoss, TanhLayer, closed_form_x


class MeanLoss(InnerObjective):
    """``QuadraticLoss / D``, declaring ``D`` as its scale (a per-term mean)."""

    def __init__(self, inner: QuadraticLoss, d: float, declare: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.d = d
        self.declare = declare

    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        out: Tensor = self.inner(z, x, y) / self.d
        return out

    def loss_scale(self, y: Any) -> float:
        return self.d if self.declare else 1.0


def _problem(objective: InnerObjective, layer: Any, alpha_x: float, **kw: Any) -> JointProblem:
    return JointProblem(layer, objective, accelerator=Picard(), damping=Damping(z=0.8, mu=0.6, x=alpha_x),
                        max_iter=kw.pop("max_iter", 40), tol=0.0, x_shape=(3,), **kw)


def test_a_declared_mean_takes_the_steps_of_the_sum() -> None:
    torch.manual_seed(0)
    layer, loss = TanhLayer(6, 3), QuadraticLoss(6, 4)
    y = torch.randn(5, 4, dtype=DT)
    d = 37.0
    with torch.no_grad():
        s_sum = _problem(loss, layer, 0.3).solve(y)
        s_mean = _problem(MeanLoss(loss, d), layer, 0.3).solve(y)
        s_undeclared = _problem(MeanLoss(loss, d, declare=False), layer, 0.3).solve(y)
    torch.testing.assert_close(s_mean.x, s_sum.x, rtol=1e-10, atol=1e-12)
    # μ stays the adjoint of the user's (mean) loss
    torch.testing.assert_close(s_mean.mu * d, s_sum.mu, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(s_mean.kkt_residual, s_sum.kkt_residual, rtol=1e-8, atol=1e-12)
    # without the declaration the same α_x is a D-times smaller step: far from the sum's x
    assert float((s_undeclared.x - s_sum.x).norm()) > 0.1 * float(s_sum.x.norm())


def test_block_residuals_match_their_definitions() -> None:
    torch.manual_seed(1)
    layer, loss = TanhLayer(6, 3), QuadraticLoss(6, 4)
    d = 5.0
    objective = MeanLoss(loss, d)
    y = torch.randn(4, 4, dtype=DT)
    x = torch.randn(4, 3, dtype=DT)
    z = 3 * torch.randn(4, 6, dtype=DT)
    mu = torch.randn(4, 6, dtype=DT)
    problem = _problem(objective, layer, 0.1, max_iter=1)
    with torch.no_grad():
        sol = problem.solve(y, x, z0=z)  # one evaluation at (z, μ=0, x)
    assert sol.kkt_blocks is not None
    # reference: torch.func VJPs, written independently of the augmented map
    fz, vjp = torch.func.vjp(lambda zz, xx: layer(zz, xx), z, x)
    m0 = torch.zeros_like(mu)
    jz, jx = vjp(m0)
    gz_l, gx_l = torch.func.grad(lambda zz, xx: objective(zz, xx, y).sum(), argnums=(0, 1))(z, x)
    norm = torch.linalg.vector_norm
    r_z = norm(fz - z, dim=1) / norm(z, dim=1).clamp(min=1)
    r_mu = d * norm(jz + gz_l - m0, dim=1) / (d * norm(m0, dim=1)).clamp(min=1)
    r_x = norm(d * (jx + gx_l), dim=1) / norm(x, dim=1).clamp(min=1)
    expected = torch.stack([r_z, r_mu, r_x], 1)
    torch.testing.assert_close(sol.kkt_blocks, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.kkt_residual, expected.amax(1), rtol=1e-10, atol=1e-12)
    assert sol.trace.blocks is not None and sol.trace.blocks.shape == (1, 4, 3)


def test_converged_solution_is_the_closed_form_and_at_equilibrium() -> None:
    layer, loss = LinearLayer(6, 3), QuadraticLoss(6, 4)
    y = torch.randn(3, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    problem = JointProblem(layer, MeanLoss(loss, 8.0), accelerator=AndersonI(memory=10),
                           damping=Damping(z=0.8, mu=0.6, x=0.5), max_iter=300, tol=1e-9, x_shape=(3,))
    with torch.no_grad():
        sol = problem.solve(y)
    assert bool(sol.converged.all()) and bool(sol.at_equilibrium.all())
    torch.testing.assert_close(sol.x, closed_form_x(layer, loss, y), rtol=1e-7, atol=1e-8)
    eq = problem.equilibrium(y, sol.x, tol=1e-12)
    torch.testing.assert_close(eq.loss, sol.loss, rtol=1e-7, atol=1e-12)


def test_equilibrium_rescore_matches_plain_iteration() -> None:
    layer, loss = TanhLayer(6, 3), QuadraticLoss(6, 4)
    g = torch.Generator().manual_seed(3)
    y, x = torch.randn(4, 4, dtype=DT, generator=g), torch.randn(4, 3, dtype=DT, generator=g)
    problem = _problem(loss, layer, 0.3)
    eq = problem.equilibrium(y, x, tol=1e-12)
    z = torch.zeros(4, 6, dtype=DT)
    with torch.no_grad():
        for _ in range(400):
            z = layer(z, x)
    torch.testing.assert_close(eq.z, z, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(eq.loss, loss(z, x, y), rtol=1e-10, atol=1e-12)
    assert bool((eq.residual <= 1e-12).all())
    with pytest.raises(ValueError, match="tol"):
        problem.equilibrium(y, x, tol=-1.0)


def test_selection_never_returns_a_cheap_iterate_off_equilibrium() -> None:
    # iterate k has cost 10 - k, but only even iterates are "at equilibrium"
    def step(v: Tensor, k: int) -> StepOutput:
        b = v.shape[0]
        cost = torch.full((b,), 10.0 - k, dtype=DT)
        feasible = torch.full((b,), k % 2 == 0 and k <= 4)
        return StepOutput(value=v + 1, residual=torch.ones(b, dtype=DT), cost=cost, relative=True,
                          feasible=feasible)

    res = fixed_point(step, torch.zeros(2, 1, dtype=DT), Picard(), max_iter=9, tol=0.0, selection=LowestCost())
    assert res.feasible is not None and bool(res.feasible.all())
    # the cheapest feasible iterate is k = 4 (v = 4), not the cheapest overall (k = 8)
    torch.testing.assert_close(res.v, torch.full((2, 1), 4.0, dtype=DT))
    torch.testing.assert_close(res.cost, torch.full((2,), 6.0, dtype=DT))


def test_bad_loss_scale_is_named() -> None:
    layer, loss = TanhLayer(6, 3), QuadraticLoss(6, 4)
    y = torch.randn(2, 4, dtype=DT)
    for bad in (0.0, float("nan"), -2.0):
        with pytest.raises(ValueError, match=r"MeanLoss\.loss_scale\(y\) must be a finite number > 0"):
            _problem(MeanLoss(loss, bad), layer, 0.1).solve(y)
    with pytest.raises(ValueError, match="equilibrium_tol"):
        _problem(loss, layer, 0.1, equilibrium_tol=0.0)


@pytest.mark.parametrize("balance", [True, False], ids=["balanced", "euclidean"])
def test_anderson_metric_choice_reaches_the_closed_form(balance: bool) -> None:
    """The joint solve hands the accelerator the ``(z, μ, x)`` layout exactly when
    ``balance_blocks`` is on, and both metrics converge to the closed-form optimum."""
    layout: list[tuple[int, ...] | None] = []

    class Recording(AndersonI):
        def init(self, v0: Tensor) -> Any:
            layout.append(None)
            return super().init(v0)

        def init_blocks(self, v0: Tensor, blocks: tuple[int, ...]) -> Any:
            layout.append(blocks)
            return super().init_blocks(v0, blocks)

    layer, loss = LinearLayer(6, 3), QuadraticLoss(6, 4)
    y = torch.randn(3, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    problem = JointProblem(layer, MeanLoss(loss, 8.0), accelerator=Recording(memory=10),
                           damping=Damping(z=0.8, mu=0.6, x=0.5), max_iter=300, tol=1e-9, x_shape=(3,),
                           balance_blocks=balance)
    with torch.no_grad():
        sol = problem.solve(y)
    assert layout == [(6, 6, 3) if balance else None]
    assert bool(sol.converged.all())
    torch.testing.assert_close(sol.x, closed_form_x(layer, loss, y), rtol=1e-7, atol=1e-8)

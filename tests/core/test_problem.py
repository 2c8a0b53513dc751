"""JointProblem.solve against closed forms and against Adam over the DEQ."""

from __future__ import annotations

import pytest
import torch

from jiio_core import (
    Adam,
    AndersonI,
    AndersonII,
    Box,
    Broyden,
    Damping,
    DEQSolver,
    JointProblem,
    L2Ball,
    LowestResidual,
    Picard,
    Status,
    optimize_input,
)
from tests.core.toy import (
    DT,
    LinearLayer,
    QuadraticLoss,
    TanhLayer,
    TwoScaleLayer,
    ball_constrained_x,
    closed_form_x,
)

ACCELERATORS = {
    "picard": (Picard(), 3000),
    "anderson1": (AndersonI(memory=10), 300),
    "anderson2": (AndersonII(memory=10), 300),
    "broyden": (Broyden(memory=30), 300),
}


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_linear_quadratic_matches_closed_form(name: str) -> None:
    torch.manual_seed(0)
    layer, loss = LinearLayer(10, 4), QuadraticLoss(10, 6, lam=0.1)
    y = torch.randn(5, 6, dtype=DT)
    acc, iters = ACCELERATORS[name]
    damping = Damping(z=1.0, mu=1.0, x=0.05 if name == "picard" else 0.2)
    problem = JointProblem(
        layer, loss, accelerator=acc, damping=damping, max_iter=iters, tol=1e-11, x_shape=(4,)
    )
    sol = problem.solve(y)
    assert (sol.status == Status.CONVERGED).all(), sol.summary()
    torch.testing.assert_close(sol.x, closed_form_x(layer, loss, y), atol=1e-7, rtol=1e-7)
    a, c = layer.affine()
    torch.testing.assert_close(sol.z, sol.x @ a.T + c, atol=1e-7, rtol=1e-7)
    # μ* is the adjoint of each sample's own loss: (I − W)ᵀ μ = ∇_z ℓ
    grad_z = (sol.z @ loss.H.T - y) @ loss.H
    eye = torch.eye(10, dtype=DT)
    torch.testing.assert_close(sol.mu @ (eye - layer.W), grad_z.detach(), atol=1e-7, rtol=1e-7)
    # the reported KKT residual is below tolerance and the trace ends there
    assert (sol.kkt_residual < 1e-9).all()


def test_active_l2_ball_matches_trust_region_solution() -> None:
    torch.manual_seed(1)
    layer, loss = LinearLayer(8, 5, seed=3), QuadraticLoss(8, 8, lam=0.01, seed=4)
    y = 3.0 * torch.randn(6, 8, dtype=DT)
    radius = 0.3
    unconstrained = closed_form_x(layer, loss, y)
    assert (torch.linalg.vector_norm(unconstrained, dim=1) > radius).all(), "constraint must be active"
    problem = JointProblem(
        layer,
        loss,
        L2Ball(radius=radius),
        AndersonII(memory=10),
        Damping(z=1.0, mu=1.0, x=0.1),
        max_iter=500,
        tol=1e-10,
        x_shape=(5,),
    )
    sol = problem.solve(y)
    assert sol.converged.all(), sol.summary()
    torch.testing.assert_close(sol.x, ball_constrained_x(layer, loss, y, radius), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.linalg.vector_norm(sol.x, dim=1), torch.full((6,), radius, dtype=DT))


def test_per_sample_centres_and_radii() -> None:
    torch.manual_seed(2)
    layer, loss = LinearLayer(8, 3, seed=5), QuadraticLoss(8, 6, lam=0.05, seed=6)
    y = 2.0 * torch.randn(4, 6, dtype=DT)
    centre = torch.randn(4, 3, dtype=DT)
    radius = torch.tensor([0.0, 0.1, 0.5, 100.0], dtype=DT)
    problem = JointProblem(
        layer, loss, None, AndersonII(memory=10), Damping(z=1.0, mu=1.0, x=0.1), max_iter=600, tol=1e-10
    )
    sol = problem.solve(y, centre.clone(), constraint=L2Ball(radius=radius, center=centre))
    dist = torch.linalg.vector_norm(sol.x - centre, dim=1)
    assert (dist <= radius + 1e-9).all()
    torch.testing.assert_close(sol.x[0], centre[0])
    # the huge ball is inactive: unconstrained optimum
    torch.testing.assert_close(sol.x[3], closed_form_x(layer, loss, y)[3], atol=1e-6, rtol=1e-6)


def test_structured_state_is_packed_and_unpacked() -> None:
    torch.manual_seed(3)
    layer = TwoScaleLayer(6, 8, 3)
    loss = QuadraticLoss(14, 5, lam=0.2)
    y = 0.5 * torch.randn(3, 5, dtype=DT)
    problem = JointProblem(
        layer,
        loss,
        damping=Damping(z=1.0, mu=1.0, x=0.3),
        max_iter=300,
        tol=1e-11,
        x_shape=(3,),
        selection=LowestResidual(),
    )
    sol = problem.solve(y)
    assert sol.converged.all(), sol.summary()
    z1, z2 = sol.z
    assert z1.shape == (3, 6) and z2.shape == (3, 2, 4)
    f1, f2 = layer((z1, z2), sol.x)
    torch.testing.assert_close(f1, z1, atol=1e-9, rtol=0)
    torch.testing.assert_close(f2, z2, atol=1e-9, rtol=0)
    # stationarity in x, checked independently by autograd through a long Picard DEQ solve
    x = sol.x.detach().requires_grad_()
    z = layer.init_state(x)
    for _ in range(200):
        z = layer(z, x)
    (g,) = torch.autograd.grad(loss(z, x, y).sum(), x)
    assert g.abs().max() < 1e-8


def test_jiio_reaches_at_least_adams_loss_on_a_nonlinear_deq() -> None:
    torch.manual_seed(4)
    layer, loss = TanhLayer(24, 4, rho=0.7), QuadraticLoss(24, 12, lam=1e-3)
    y = 0.3 * torch.randn(4, 12, dtype=DT)
    x0 = torch.zeros(4, 4, dtype=DT)
    problem = JointProblem(
        layer,
        loss,
        accelerator=AndersonII(memory=15),
        damping=Damping(z=0.9, mu=0.9, x=0.3),
        max_iter=400,
        tol=1e-10,
        x_shape=(4,),
    )
    sol = problem.solve(y)
    assert sol.converged.all(), sol.summary()
    deq = DEQSolver(max_iter=60, tol=1e-7, backward_max_iter=60, backward_tol=1e-7)
    adam = optimize_input(layer, loss, y, x0, Adam(lr=0.05), 100, deq=deq)
    # JIIO's optimum is at least as good as many Adam steps (up to a small tolerance) ...
    assert (sol.loss <= adam.loss + 1e-6).all(), (sol.loss, adam.loss)
    # ... and Adam did make real progress from the start (the comparison is not vacuous)
    start = loss(deq.solve(layer, x0).z, x0, y)
    assert (adam.loss < start).all() and adam.loss.sum() < 0.8 * start.sum()


def test_divergent_samples_are_reported_not_returned_as_nan() -> None:
    torch.manual_seed(5)
    layer, loss = LinearLayer(6, 3), QuadraticLoss(6, 4, lam=0.1)
    y = torch.randn(4, 4, dtype=DT)
    y[2] = 1e300  # this sample's loss overflows
    problem = JointProblem(
        layer, loss, damping=Damping(z=1.0, mu=1.0, x=0.2), max_iter=300, tol=1e-10, x_shape=(3,)
    )
    sol = problem.solve(y)
    assert sol.status.tolist() == [Status.CONVERGED, Status.CONVERGED, Status.DIVERGED, Status.CONVERGED]
    # the healthy samples are unaffected by the broken one
    keep = [0, 1, 3]
    torch.testing.assert_close(sol.x[keep], closed_form_x(layer, loss, y[keep]), atol=1e-7, rtol=1e-7)
    assert torch.isfinite(sol.x).all() and torch.isfinite(sol.mu).all()
    assert "diverged" in sol.summary()


def test_solve_error_when_throw() -> None:
    from jiio_core import SolveError

    layer, loss = LinearLayer(6, 3), QuadraticLoss(6, 4, lam=0.1)
    y = torch.randn(2, 4, dtype=DT)
    y[1] = 1e300
    problem = JointProblem(
        layer, loss, damping=Damping(z=1.0, mu=1.0, x=0.2), max_iter=100, x_shape=(3,), throw=True
    )
    with pytest.raises(SolveError, match=r"samples \[1\]"):
        problem.solve(y)


def test_damping_schedule_switches_alpha_x() -> None:
    d = Damping(z=0.8, mu=0.6, x=0.6, x_late=0.2, switch_at=65)
    assert d.alpha_x(64) == 0.6 and d.alpha_x(65) == 0.2
    assert Damping.paper_code_switch(100) == 62 and Damping.paper_code_switch(40) == 50


def test_normalized_x_step_reaches_the_ball_boundary_optimum() -> None:
    # adversarial-style: maximise a loss (minimise its negation) inside an L2 ball
    torch.manual_seed(6)
    layer = LinearLayer(8, 4, seed=7)
    loss = QuadraticLoss(8, 5, lam=0.0, seed=8)
    y = torch.randn(3, 5, dtype=DT)

    class Negated(QuadraticLoss):
        def forward(self, z, x, y):  # type: ignore[no-untyped-def]
            return -super().forward(z, x, y)

    neg = Negated(8, 5, lam=0.0, seed=8)
    problem = JointProblem(
        layer,
        neg,
        L2Ball(radius=0.5),
        AndersonII(memory=10),
        Damping(z=1.0, mu=1.0, x=0.05),
        max_iter=400,
        tol=1e-9,
        x_shape=(4,),
        normalized_x_step=True,
    )
    sol = problem.solve(y)
    # reference: maximise a convex quadratic over the ball by brute force on many directions
    a, c = layer.affine()
    m = loss.H.detach() @ a
    dirs = torch.randn(20000, 4, dtype=DT)
    dirs = 0.5 * dirs / torch.linalg.vector_norm(dirs, dim=1, keepdim=True)
    for i in range(3):
        vals = 0.5 * ((dirs @ m.T + loss.H.detach() @ c - y[i]) ** 2).sum(1)
        assert -sol.loss[i] >= vals.max() - 1e-3
    torch.testing.assert_close(torch.linalg.vector_norm(sol.x, dim=1), torch.full((3,), 0.5, dtype=DT))


def test_returned_x_is_feasible_whatever_the_accelerator_proposes() -> None:
    """Accelerators mix iterates, so evaluated points can leave C (Anderson was seen putting a
    pixel at -0.004); the returned x must be projected. An accelerator that always overshoots
    makes every evaluated x infeasible."""
    from jiio_core import Accelerator

    class Overshoot(Accelerator[None]):
        def init(self, v0: torch.Tensor) -> None:
            return None

        def update(self, state: None, v: torch.Tensor, gv: torch.Tensor, active: torch.Tensor):  # type: ignore[no-untyped-def]
            return gv + 0.5, None

    layer, loss = LinearLayer(6, 3, seed=11), QuadraticLoss(6, 4, lam=0.1, seed=12)
    centre = torch.randn(5, 3, dtype=DT)
    box = Box(lo=centre - 0.1, hi=centre + 0.1)
    problem = JointProblem(layer, loss, box, Overshoot(), max_iter=5, tol=0.0, selection=LowestResidual())
    sol = problem.solve(3 * torch.randn(5, 4, dtype=DT), centre.clone())
    assert ((sol.x >= centre - 0.1) & (sol.x <= centre + 0.1)).all()
    assert (sol.x - centre).abs().max() > 0.05  # the box is active: the check is not vacuous

"""Each OuterGradient's θ-gradient against central finite differences of the solved problem.

All in float64 with tight tolerances. Directional derivatives along fixed random directions keep
the number of re-solves small: ``⟨∇_θ J, d⟩ ≈ (J(θ + εd) − J(θ − εd)) / 2ε``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from jiio_core import (
    AdjointShortcut,
    AndersonII,
    BackwardSolveError,
    Damping,
    FixedInput,
    ImplicitKKT,
    JointProblem,
    JointSolution,
    L2Ball,
    LowestResidual,
    OuterGradient,
    Relation,
    Unrolled,
)
from jiio_core.constraint import Constraint
from tests.core.toy import DT, MarkGraph, QuadraticLoss, Sentinel, TanhLayer, TwoScaleLayer, directional_fd

EPS = 1e-5


def _problem(
    layer: nn.Module, loss: QuadraticLoss, outer: OuterGradient, nx: int, constraint: Constraint | None = None
) -> JointProblem:
    return JointProblem(
        layer,  # type: ignore[arg-type]
        loss,
        constraint,
        AndersonII(memory=20),
        Damping(z=1.0, mu=1.0, x=0.3),
        outer,
        max_iter=600,
        tol=1e-13,
        x_shape=(nx,),
        selection=LowestResidual(),
    )


def _directional_fd(params: list[nn.Parameter], direction: list[Tensor], fn: Callable[[], float]) -> float:
    out: float = directional_fd(params, direction, fn, EPS)
    return out


def _check(
    params: list[nn.Parameter],
    grads: list[Tensor],
    fn: Callable[[], float],
    *,
    n_dirs: int = 3,
    rtol: float = 1e-6,
) -> None:
    g = torch.Generator().manual_seed(123)
    for _ in range(n_dirs):
        direction = [torch.randn(p.shape, generator=g, dtype=DT) for p in params]
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction, strict=True))
        numeric = _directional_fd(params, direction, fn)
        assert abs(analytic - numeric) <= rtol * max(1.0, abs(numeric)), (analytic, numeric)


def _grads(params: list[nn.Parameter], value: Tensor) -> list[Tensor]:
    gs = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


def _setup(seed: int = 0, relation: Relation = Relation.SAME) -> tuple[TanhLayer, QuadraticLoss, Tensor]:
    torch.manual_seed(seed)
    layer = TanhLayer(7, 3, rho=0.6, seed=seed)
    loss = QuadraticLoss(7, 5, lam=0.3, seed=seed + 1, relation=relation)
    y = 0.5 * torch.randn(3, 5, dtype=DT)
    return layer, loss, y


@pytest.mark.parametrize(
    "outer",
    [AdjointShortcut(), ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()],
    ids=["shortcut", "kkt", "unrolled"],
)
def test_same_loss_gradient_matches_finite_differences(outer: OuterGradient) -> None:
    layer, loss, y = _setup()
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, outer, 3).solve(y)
    assert sol.converged.all(), sol.summary()
    grads = _grads(params, sol.loss.sum())
    if isinstance(outer, ImplicitKKT):
        assert sol.backward.converged is not None and bool(sol.backward.converged.all())

    def solved_loss() -> float:
        with torch.no_grad():
            return float(_problem(layer, loss, AdjointShortcut(), 3).solve(y).loss.sum())

    _check(params, grads, solved_loss)


def test_shortcut_gradient_with_structured_state_and_active_ball() -> None:
    torch.manual_seed(1)
    layer = TwoScaleLayer(5, 6, 3, seed=2)
    loss = QuadraticLoss(11, 4, lam=0.01, seed=3)
    y = 2.0 * torch.randn(3, 4, dtype=DT)
    ball = L2Ball(radius=0.2)
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, AdjointShortcut(), 3, ball).solve(y)
    assert sol.converged.all(), sol.summary()
    torch.testing.assert_close(torch.linalg.vector_norm(sol.x, dim=1), torch.full((3,), 0.2, dtype=DT))
    grads = _grads(params, sol.loss.sum())

    def solved_loss() -> float:
        with torch.no_grad():
            return float(_problem(layer, loss, AdjointShortcut(), 3, ball).solve(y).loss.sum())

    _check(params, grads, solved_loss)


def test_negated_relation_flips_the_outer_gradient() -> None:
    layer, loss, y = _setup(seed=4, relation=Relation.NEGATED)
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, AdjointShortcut(), 3).solve(y)
    torch.testing.assert_close(sol.outer_loss, -sol.loss)
    grads = _grads(params, sol.outer_loss.sum())

    def outer() -> float:
        with torch.no_grad():
            return -float(_problem(layer, loss, AdjointShortcut(), 3).solve(y).loss.sum())

    _check(params, grads, outer)


def _other_outer(sol: JointSolution, target: Tensor) -> Tensor:
    """An outer loss unrelated to ℓ: depends on both z* and x*."""
    z = sol.z
    assert isinstance(z, Tensor)
    weights = torch.arange(1, sol.x.shape[1] + 1, dtype=DT)
    return ((z - target) ** 2).sum() + (weights * sol.x**2).sum()


@pytest.mark.parametrize("outer", [ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()], ids=["kkt", "unrolled"])
@pytest.mark.parametrize("constrained", [False, True], ids=["free", "ball"])
def test_other_outer_loss_gradient_matches_finite_differences(
    outer: OuterGradient, constrained: bool
) -> None:
    layer, loss, y = _setup(seed=7, relation=Relation.OTHER)
    if constrained:
        y = 3.0 * y
    ball = L2Ball(radius=0.3) if constrained else None
    target = 0.3 * torch.randn(3, 7, dtype=DT, generator=torch.Generator().manual_seed(9))
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, outer, 3, ball).solve(y)
    assert sol.converged.all(), sol.summary()
    if constrained:
        assert (torch.linalg.vector_norm(sol.x.detach(), dim=1) > 0.3 - 1e-9).any(), "ball must be active"
    grads = _grads(params, _other_outer(sol, target))

    def solved_outer() -> float:
        with torch.no_grad():
            return float(_other_outer(_problem(layer, loss, Unrolled(), 3, ball).solve(y), target))

    _check(params, grads, solved_outer, rtol=1e-5)


def test_fixed_input_gradient_matches_finite_differences_at_fixed_x() -> None:
    layer, loss, y = _setup(seed=11, relation=Relation.OTHER)
    target = 0.3 * torch.randn(3, 7, dtype=DT, generator=torch.Generator().manual_seed(12))
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, FixedInput(tol=1e-12, max_iter=400), 3).solve(y)
    x_star = sol.x.detach()
    z = sol.z
    assert isinstance(z, Tensor)
    grads = _grads(params, ((z - target) ** 2).sum() + loss(z, x_star, y).sum())

    def at_fixed_x() -> float:
        with torch.no_grad():
            zz = layer.init_state(x_star)
            for _ in range(400):
                zz = layer(zz, x_star)
            return float(((zz - target) ** 2).sum() + loss(zz, x_star, y).sum())

    _check(params, grads, at_fixed_x)
    # and dx*/dθ is really ignored: x carries no graph
    assert not sol.x.requires_grad


def test_shortcut_refine_steps_recover_the_adjoint_from_a_rough_solve() -> None:
    layer, loss, y = _setup(seed=13)
    params = [*layer.parameters(), *loss.parameters()]
    exact = _problem(layer, loss, AdjointShortcut(), 3).solve(y)
    g_exact = _grads(params, exact.loss.sum())
    rough = JointProblem(
        layer,
        loss,
        None,
        AndersonII(memory=20),
        Damping(z=1.0, mu=0.2, x=0.3),
        AdjointShortcut(refine_steps=60),
        max_iter=600,
        tol=1e-13,
        x_shape=(3,),
        selection=LowestResidual(),
    )
    sol = rough.solve(y)
    g_refined = _grads(params, sol.loss.sum())
    for a, b in zip(g_refined, g_exact, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)


def test_backward_failure_is_reported_and_raised_with_throw() -> None:
    layer, loss, y = _setup(seed=15, relation=Relation.OTHER)
    problem = JointProblem(
        layer,
        loss,
        None,
        AndersonII(memory=20),
        Damping(z=1.0, mu=1.0, x=0.3),
        ImplicitKKT(max_iter=2, tol=1e-14),
        max_iter=300,
        tol=1e-12,
        x_shape=(3,),
    )
    sol = problem.solve(y)
    z = sol.z
    assert isinstance(z, Tensor)
    (z**2).sum().backward()
    assert sol.backward.status is not None
    assert not bool(sol.backward.converged.all())  # type: ignore[union-attr]
    problem.throw = True
    sol = problem.solve(y)
    z = sol.z
    assert isinstance(z, Tensor)
    with pytest.raises(BackwardSolveError, match="did not converge"):
        (z**2).sum().backward()


def test_no_graph_is_built_under_no_grad() -> None:
    layer, loss, y = _setup(seed=17)
    for outer in (AdjointShortcut(), ImplicitKKT(), FixedInput(), Unrolled()):
        with torch.no_grad():
            sol = _problem(layer, loss, outer, 3).solve(y)
        assert not sol.loss.requires_grad
        assert not sol.x.requires_grad


@pytest.mark.parametrize("outer", [ImplicitKKT(tol=1e-10, max_iter=200), FixedInput(tol=1e-10, max_iter=200)],
                         ids=["kkt", "fixed-input"])
def test_implicit_strategies_free_the_solve_graph_by_reference_counting_alone(outer: OuterGradient) -> None:
    """After backward and dropping the solution, every tensor the layer produced is freed with
    the garbage collector off (no reference cycle through the implicit backward's hook, which
    would keep each solve's graph alive for good)."""
    import gc
    import weakref

    made: list[weakref.ref[Sentinel]] = []

    class Recording(TanhLayer):
        def forward(self, z: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
            out: Tensor = MarkGraph.apply(super().forward(z, x), made)
            return out

    layer, loss = Recording(5, 3, seed=2), QuadraticLoss(5, 4, seed=3)
    y = torch.randn(2, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    gc.collect()
    gc.disable()
    try:
        sol = _problem(layer, loss, outer, 3).solve(y)
        sol.loss.sum().backward()
        assert layer.W.grad is not None
        del sol
        alive = sum(r() is not None for r in made)
    finally:
        gc.enable()
    assert made and alive == 0, f"{alive} of {len(made)} graph nodes of the layer still alive after the solution was dropped"


def test_with_implicit_backward_rejects_inputs_without_a_graph_or_of_another_shape() -> None:
    from jiio_core import BackwardStats, with_implicit_backward

    kw = {"accelerator": AndersonII(), "max_iter": 5, "tol": 1e-8, "stats": BackwardStats(), "throw": False}
    v = torch.zeros(2, 3, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="output must be a tensor that requires grad"):
        with_implicit_backward(torch.zeros(2, 3, dtype=DT), v, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"output must have wrt's shape \(2, 3\).*\(2, 4\)"):
        with_implicit_backward(torch.zeros(2, 4, dtype=DT, requires_grad=True) * 1.0, v, **kw)  # type: ignore[arg-type]

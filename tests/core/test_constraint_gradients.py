"""θ-gradients of constrained joint solves, and Jacobians of the projections themselves, against
central finite differences (float64, fixed seeds).

The inner optimum of the toy problem lies far outside every constraint set used here, so the
constraint is active at ``x*`` and the outer gradients that differentiate through ``x*``
(:class:`ImplicitKKT`, :class:`Unrolled`) differentiate through the projection. ``L2Ball ∩ Box``
used to get this wrong: its bisection's multiplier was a constant to autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jiio_core import (
    Accelerator,
    AdjointShortcut,
    AndersonI,
    AndersonII,
    Box,
    Broyden,
    Damping,
    FixedInput,
    ImplicitKKT,
    Intersection,
    JointProblem,
    JointSolution,
    L2Ball,
    LowestResidual,
    OuterGradient,
    Picard,
    Unconstrained,
    Unrolled,
)
from jiio_core.constraint import Constraint
from tests.core.toy import DT, QuadraticLoss, TanhLayer, directional_fd

NZ, NX, NY, B = 6, 4, 5, 2
EPS = 1e-5
RTOL = 1e-6
RADIUS = 0.5
# per-sample unit axes orthogonal to each sample's unconstrained optimum (to 4 digits): the
# optimum over the lens of two balls centred at ±(r/√2)·axis then lies on its rim, both balls
# active, where their normals are orthogonal (the best case for Dykstra's convergence)
_AXIS = torch.tensor([[0.7012, -0.4956, -0.4696, 0.2056], [0.0437, -0.5389, 0.8403, 0.0397]], dtype=DT)
LENS_CENTER = RADIUS / 2**0.5 * _AXIS / torch.linalg.vector_norm(_AXIS, dim=1, keepdim=True)
CONSTRAINTS = ["free", "ball", "box", "ball&box:ball", "ball&box:both", "ball&ball"]


def _constraint(name: str) -> Constraint:
    if name == "free":
        return Unconstrained()
    if name == "ball":
        return L2Ball(RADIUS)
    if name == "box":
        return Box(-0.3, 0.3)
    if name == "ball&box:ball":  # the box [-1, 1] holds the whole ball: only the ball is active
        return L2Ball(RADIUS) & Box(-1.0, 1.0)
    if name == "ball&box:both":
        return L2Ball(RADIUS) & Box(-0.3, 0.3)
    if name == "ball&ball":  # Dykstra; a looser tol stalls the joint solve above its 1e-13
        parts = (L2Ball(RADIUS, center=LENS_CENTER), L2Ball(RADIUS, center=-LENS_CENTER))
        return Intersection(parts, iterations=400, tol=1e-14)
    raise AssertionError(name)


def _assert_active(name: str, x: Tensor) -> None:
    """The constraint ``name`` binds at ``x`` the way its case means it to, in every sample."""
    norm = torch.linalg.vector_norm(x, dim=1)
    radius = torch.full((B,), RADIUS, dtype=DT)
    at_box = (x.abs() >= 0.3 - 1e-12).any(1)
    if name == "free":
        assert bool((norm > 1.0).all()), "the unconstrained optimum must lie outside the other sets"
    elif name in ("ball", "ball&box:ball"):  # (‖x‖ ≤ 0.5 keeps x off the faces of [-1, 1])
        torch.testing.assert_close(norm, radius, rtol=0, atol=1e-9)
    elif name == "box":
        assert bool(at_box.all() & (norm > RADIUS).all()), x
    elif name == "ball&box:both":
        torch.testing.assert_close(norm, radius, rtol=0, atol=1e-9)
        assert bool(at_box.all()), x
    else:
        for c in (LENS_CENTER, -LENS_CENTER):
            torch.testing.assert_close(torch.linalg.vector_norm(x - c, dim=1), radius, rtol=0, atol=1e-9)


def _setup() -> tuple[TanhLayer, QuadraticLoss, Tensor, list[nn.Parameter]]:
    torch.manual_seed(0)
    layer = TanhLayer(NZ, NX, rho=0.6, seed=0)
    loss = QuadraticLoss(NZ, NY, lam=0.1, seed=1)
    y = 2.0 * torch.randn(B, NY, dtype=DT)
    return layer, loss, y, [*layer.parameters(), *loss.parameters()]


def _problem(
    layer: TanhLayer,
    loss: QuadraticLoss,
    constraint: Constraint,
    outer: OuterGradient,
    accelerator: Accelerator[Any] | None = None,
) -> JointProblem:
    return JointProblem(
        layer,
        loss,
        constraint,
        AndersonII(memory=20) if accelerator is None else accelerator,
        Damping(z=1.0, mu=1.0, x=0.3),
        outer,
        max_iter=800,
        tol=1e-13,
        x_shape=(NX,),
        selection=LowestResidual(),
    )


TARGET = 0.3 * torch.randn(B, NZ, dtype=DT, generator=torch.Generator().manual_seed(9))


def _outer_loss(sol: JointSolution) -> Tensor:
    """An outer loss other than ℓ, with a strong dependence on ``x*``."""
    z = sol.z
    assert isinstance(z, Tensor)
    weights = torch.arange(1, NX + 1, dtype=DT)
    return ((z - TARGET) ** 2).sum() + (weights * sol.x**2).sum() + sol.x.sum()


def _directions(params: list[nn.Parameter], n_dirs: int = 2) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(123)
    return [[torch.randn(p.shape, generator=gen, dtype=DT) for p in params] for _ in range(n_dirs)]


def _central_differences(params: list[nn.Parameter], fn: Callable[[], Tensor]) -> list[Tensor]:
    """Central differences along each of :func:`_directions`; ``fn`` may return several values
    at once."""
    return [directional_fd(params, direction, fn, EPS) for direction in _directions(params)]


@functools.cache
def _solved_derivatives(name: str) -> tuple[tuple[float, float], ...]:
    """Per direction, the directional derivatives of ``(outer loss, Σℓ)`` of the solved problem
    with constraint ``name`` (shared by the tests: every strategy and accelerator must match
    them)."""
    layer, loss, y, params = _setup()
    problem = _problem(layer, loss, _constraint(name), AdjointShortcut())

    def values() -> Tensor:
        sol = problem.solve(y)
        assert bool(sol.converged.all()), sol.summary()
        return torch.stack([_outer_loss(sol), sol.loss.sum()])

    return tuple((float(fd[0]), float(fd[1])) for fd in _central_differences(params, values))


def _grads(params: list[nn.Parameter], value: Tensor) -> list[Tensor]:
    gs = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


def _assert_matches(params: list[nn.Parameter], grads: list[Tensor], numeric: list[float]) -> None:
    """``⟨∇J, d⟩`` against central differences, along each of :func:`_directions`."""
    errors = []
    for direction, num in zip(_directions(params), numeric, strict=True):
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
        errors.append(abs(analytic - num) / max(1.0, abs(num)))
    assert max(errors) <= RTOL, errors


def _check_through_x(name: str, outer: OuterGradient, accelerator: Accelerator[Any] | None = None) -> None:
    """An outer loss of ``z*`` and ``x*``, through a strategy that differentiates ``x*``."""
    layer, loss, y, params = _setup()
    sol = _problem(layer, loss, _constraint(name), outer, accelerator).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    _assert_active(name, sol.x.detach())
    assert sol.x.requires_grad
    grads = _grads(params, _outer_loss(sol))
    _assert_matches(params, grads, [fd[0] for fd in _solved_derivatives(name)])
    if isinstance(outer, ImplicitKKT):
        assert sol.backward.converged is not None and bool(sol.backward.converged.all())


@pytest.mark.parametrize("name", CONSTRAINTS)
@pytest.mark.parametrize("outer", [ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()], ids=["kkt", "unrolled"])
def test_gradient_through_x_matches_finite_differences(outer: OuterGradient, name: str) -> None:
    _check_through_x(name, outer)


@pytest.mark.parametrize(
    "make",
    [Picard, lambda: AndersonI(memory=20), lambda: AndersonII(memory=20), lambda: Broyden(memory=20)],
    ids=["picard", "anderson1", "anderson2", "broyden"],
)
@pytest.mark.parametrize("kind", ["kkt", "unrolled"])
def test_ball_and_box_gradient_with_every_accelerator(
    make: Callable[[], Accelerator[Any]], kind: str
) -> None:
    """The forward solve (and the KKT backward solve) with each accelerator."""
    outer: OuterGradient = Unrolled() if kind == "unrolled" else ImplicitKKT(make(), max_iter=800, tol=1e-12)
    _check_through_x("ball&box:both", outer, make())


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_adjoint_shortcut_gradient_matches_finite_differences(name: str) -> None:
    """Outer loss = ℓ: the envelope theorem, exact also on the boundary of the constraint."""
    layer, loss, y, params = _setup()
    sol = _problem(layer, loss, _constraint(name), AdjointShortcut()).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    _assert_active(name, sol.x.detach())
    _assert_matches(params, _grads(params, sol.loss.sum()), [fd[1] for fd in _solved_derivatives(name)])


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_fixed_input_gradient_matches_finite_differences_at_fixed_x(name: str) -> None:
    """``dx*/dθ`` is dropped: the reference re-solves only the DEQ, at the constrained ``x*``."""
    layer, loss, y, params = _setup()
    sol = _problem(layer, loss, _constraint(name), FixedInput(tol=1e-12, max_iter=400)).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    x_star = sol.x.detach()
    _assert_active(name, x_star)
    assert not sol.x.requires_grad
    z = sol.z
    assert isinstance(z, Tensor)
    grads = _grads(params, ((z - TARGET) ** 2).sum() + loss(z, x_star, y).sum())

    def at_fixed_x() -> Tensor:
        zz = layer.init_state(x_star)
        for _ in range(200):  # a 0.6-contraction: far below 1e-13
            zz = layer.forward(zz, x_star)
        return ((zz - TARGET) ** 2).sum() + loss(zz, x_star, y).sum()

    _assert_matches(params, grads, [float(fd) for fd in _central_differences(params, at_fixed_x)])


# --------------------------------------------------------------------------- the projections


def _jacobian_fd(fn: Callable[[Tensor], Tensor], x: Tensor, eps: float = 1e-6) -> Tensor:
    """Central differences for a batch ``x`` of shape ``(B, n)``, laid out like
    ``torch.autograd.functional.jacobian``: ``(B, n, B, n)``."""
    jac = torch.zeros(*x.shape, *x.shape, dtype=x.dtype)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            dx = torch.zeros_like(x)
            dx[b, i] = eps
            jac[:, :, b, i] = (fn(x + dx) - fn(x - dx)) / (2 * eps)
    return jac


def _ball_box_batch() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(x, c, r, lo, hi)``: one sample per regime of ``L2Ball(r, c) ∩ Box(lo, hi)``."""
    gen = torch.Generator().manual_seed(5)
    n = 5
    c = 0.4 + 0.2 * torch.rand(5, n, dtype=DT, generator=gen)
    lo, hi = torch.zeros(5, n, dtype=DT), torch.ones(5, n, dtype=DT)
    direction = torch.randn(5, n, dtype=DT, generator=gen)
    direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    r = torch.tensor([0.3, 0.3, 0.7, 2.0, 0.8], dtype=DT)
    x = c + direction * torch.tensor([[0.1], [0.5], [3.0], [3.0], [0.9]], dtype=DT)
    # 0: inside both; 1: ball active, box not; 2: both active; 3: box active, ball not;
    # 4: both active, with coordinates clamped at both bounds
    x[4] = c[4] + torch.tensor([2.0, -1.5, 0.3, 0.5, -0.2], dtype=DT)
    return x, c, r, lo, hi


def test_ball_and_box_batch_covers_every_regime() -> None:
    x, c, r, lo, hi = _ball_box_batch()
    p = Intersection((L2Ball(r, center=c), Box(lo, hi))).project(x)
    ball_active = (torch.linalg.vector_norm(p - c, dim=1) - r).abs() <= 1e-12
    box_active = ((p == lo) | (p == hi)).any(1)
    assert ball_active.tolist() == [False, True, True, False, True]
    assert box_active.tolist() == [False, False, True, True, True]
    assert bool((p[4] == lo[4]).any() & (p[4] == hi[4]).any())


@pytest.mark.parametrize("order", ["ball-first", "box-first"])
def test_ball_and_box_projection_jacobian_matches_finite_differences(order: str) -> None:
    x, c, r, lo, hi = _ball_box_batch()
    ball, box = L2Ball(r, center=c), Box(lo, hi)
    inter = Intersection((ball, box) if order == "ball-first" else (box, ball))
    jac = torch.autograd.functional.jacobian(inter.project, x)
    torch.testing.assert_close(jac, _jacobian_fd(inter.project, x), rtol=0, atol=1e-8)
    # samples do not interact
    off = jac.clone()
    for b in range(x.shape[0]):
        off[b, :, b, :] = 0
    assert bool((off == 0).all())


def test_ball_and_box_projection_is_differentiable_in_centre_radius_and_bounds() -> None:
    x, c, r, lo, hi = _ball_box_batch()
    lo = lo - 0.1 * torch.rand(lo.shape, dtype=DT, generator=torch.Generator().manual_seed(6))

    def project(x: Tensor, c: Tensor, r: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return Intersection((L2Ball(r, center=c), Box(lo, hi))).project(x)

    inputs = tuple(t.clone().requires_grad_() for t in (x, c, r, lo, hi))
    assert torch.autograd.gradcheck(project, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_ball_and_box_degenerate_cases_have_finite_gradients() -> None:
    """Radius 0 (``r² − ‖(b − c)_A‖² = 0``), ``x`` at the centre (``d = 0``), and the ball
    touching the box's face exactly where ``x`` is clamped (a kink)."""
    c = torch.full((3, 3), 0.5, dtype=DT)
    x = torch.tensor([[2.0, -1.0, 0.7], [0.5, 0.5, 0.5], [3.0, 0.5, 0.5]], dtype=DT)
    r = torch.tensor([0.0, 0.2, 0.5], dtype=DT)
    xr, cr, rr = (t.clone().requires_grad_() for t in (x, c, r))
    p = Intersection((L2Ball(rr, center=cr), Box(0.0, 1.0))).project(xr)
    torch.testing.assert_close(p.detach(), torch.tensor([[0.5] * 3, [0.5] * 3, [1.0, 0.5, 0.5]], dtype=DT))
    gx, gc, gr = torch.autograd.grad((p * torch.arange(1.0, 4.0, dtype=DT)).sum(), (xr, cr, rr))
    for g in (gx, gc, gr):
        assert bool(torch.isfinite(g).all()), g
    torch.testing.assert_close(gx[0], torch.zeros(3, dtype=DT))  # radius 0: p = c whatever x is


@pytest.mark.parametrize("case", ["ball&ball", "ball&box&box"])
def test_dykstra_projection_jacobian_matches_the_exact_one(case: str) -> None:
    """Autograd through Dykstra's sweeps: once the sweeps have converged, the Jacobian is the
    exact one (checked against central differences of a run to full convergence)."""
    gen = torch.Generator().manual_seed(2)
    x = 2.0 * torch.randn(3, NX, dtype=DT, generator=gen)
    if case == "ball&ball":
        axis = torch.randn(3, NX, dtype=DT, generator=gen)
        axis = axis - (axis * x).sum(1, keepdim=True) * x / (x * x).sum(1, keepdim=True)  # ⟂ x
        center = RADIUS / 2**0.5 * axis / torch.linalg.vector_norm(axis, dim=1, keepdim=True)
        parts: tuple[Constraint, ...] = (L2Ball(RADIUS, center=center), L2Ball(RADIUS, center=-center))
    else:
        parts = (L2Ball(RADIUS), Box(-0.3, 1.0), Box(-1.0, 0.35))
    inter = Intersection(parts, iterations=400, tol=1e-14)
    exact = Intersection(parts, iterations=1500, tol=0.0)
    p = exact.project(x)
    if case == "ball&ball":
        for cc in (center, -center):
            torch.testing.assert_close(
                torch.linalg.vector_norm(p - cc, dim=1),
                torch.full((3,), RADIUS, dtype=DT),
                rtol=0,
                atol=1e-12,
            )
    else:
        torch.testing.assert_close(torch.linalg.vector_norm(p, dim=1), torch.full((3,), RADIUS, dtype=DT))
        assert bool(((p == -0.3) | (p == 0.35)).any(1).all())
    jac = torch.autograd.functional.jacobian(inter.project, x)
    torch.testing.assert_close(jac, _jacobian_fd(exact.project, x), rtol=0, atol=1e-7)

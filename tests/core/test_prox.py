"""Non-smooth inner objectives (jiio_core.prox), each checked against an independent reference
(float64, fixed seeds).

* every prox against a closed form by another route (Moreau's decomposition, a bisection on the
  subgradient per coordinate) or, for total variation, a long dense ADMM run;
* the exact compositions ``Π_C ∘ prox_g`` against the Dykstra-like proximal splitting of
  ``g + ι_C``;
* JIIO through a linear DEQ ``z = Wz + Ux`` (equilibrium ``z* = (I − W)⁻¹Ux``, loss
  ``½‖Vz − y‖²``) against long FISTA / ADMM runs on the reduced problem in ``x``;
* θ-gradients of an outer loss at ``x*`` against central finite differences of the solve;
* the proximal-gradient KKT residual: zero at the reference solution, not elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import jiio_core as jc
from jiio_core import (
    L1,
    AdjointShortcut,
    AndersonII,
    AugmentedMap,
    Box,
    Damping,
    FixedInput,
    GroupL1,
    ImplicitKKT,
    Indicator,
    InnerObjective,
    JointProblem,
    JointSolution,
    L2Ball,
    Layer,
    LowestResidual,
    NonNegative,
    NonSmooth,
    OuterGradient,
    StateSpec,
    TotalVariation2D,
    Unconstrained,
    Unrolled,
)
from jiio_core.constraint import Constraint
from tests.core.toy import DT, TanhLayer, directional_fd


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- references


def _bisect_min(right_derivative: Callable[[Tensor], Tensor], lo: Tensor, hi: Tensor, steps: int = 200) -> Tensor:
    """Elementwise minimiser of a convex 1-D function on ``[lo, hi]``: bisection for the point
    where its (nondecreasing) right derivative turns ``≥ 0``."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        up = right_derivative(mid) >= 0
        hi = torch.where(up, mid, hi)
        lo = torch.where(up, lo, mid)
    return hi


def _difference_matrices(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Dense forward differences on an ``h × w`` grid, one row per pixel (zero rows on the last
    row / column): written out entry by entry, independent of the module's stencils."""
    n = h * w
    dh, dw = torch.zeros(n, n, dtype=DT), torch.zeros(n, n, dtype=DT)
    for i in range(h):
        for j in range(w):
            k = i * w + j
            if i + 1 < h:
                dh[k, k], dh[k, k + w] = -1.0, 1.0
            if j + 1 < w:
                dw[k, k], dw[k, k + 1] = -1.0, 1.0
    return dh, dw


def _admm_tv(
    m: Tensor, y: Tensor, lam: Tensor | float, shape: tuple[int, int], isotropic: bool,
    project: Callable[[Tensor], Tensor] | None = None, iters: int = 6000, rho: float = 1.0,
) -> Tensor:
    """``argmin_x ½‖M x − y‖² + λ TV(x) (+ ι_C)`` per sample by ADMM with the splitting
    ``u = (D_h x, D_w x)``, ``w = x ∈ C`` (``project`` is ``Π_C`` on flat ``(B, n)``); exact
    (Cholesky) x-updates. ``y`` is ``(B, m)``."""
    dh, dw = _difference_matrices(*shape)
    d = torch.cat([dh, dw])
    n = dh.shape[0]
    has_box = project is not None
    lhs = m.T @ m + rho * d.T @ d + (rho if has_box else 0.0) * torch.eye(n, dtype=DT)
    chol = torch.linalg.cholesky(lhs)
    mty = y @ m
    lam_col = lam.reshape(-1, 1) if isinstance(lam, Tensor) else lam
    x = torch.zeros(y.shape[0], n, dtype=DT)
    u, a = torch.zeros(y.shape[0], 2 * n, dtype=DT), torch.zeros(y.shape[0], 2 * n, dtype=DT)
    wv, c = torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(iters):
        rhs = mty + rho * (u - a) @ d + (rho * (wv - c) if has_box else 0.0)
        x = torch.cholesky_solve(rhs.T, chol).T
        dx = x @ d.T
        s = dx + a
        k = lam_col / rho
        if isotropic:
            norm = torch.sqrt(s[:, :n] ** 2 + s[:, n:] ** 2)
            f = torch.clamp(1 - k / norm.clamp(min=1e-300), min=0.0)
            u = torch.cat([s[:, :n] * f, s[:, n:] * f], dim=1)
        else:
            u = s - torch.maximum(torch.minimum(s, torch.as_tensor(k)), -torch.as_tensor(k))
        a = a + dx - u
        if project is not None:
            wv = project(x + c)
            c = c + x - wv
    return x


def _dykstra_prox(
    prox_g: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], v: Tensor, iters: int = 3000
) -> Tensor:
    """``prox_{g + ι_C}(v)`` by the Dykstra-like proximal algorithm (Bauschke and Combettes):
    alternating ``prox_g`` and ``Π_C`` with correction terms converges to the prox of the sum."""
    x, p, q = v, torch.zeros_like(v), torch.zeros_like(v)
    for _ in range(iters):
        yk = prox_g(x + p)
        p = x + p - yk
        x_prev, x = x, project(yk + q)
        q = yk + q - x
        if bool((x == x_prev).all()):
            break
    return x


def _fista(m: Tensor, y: Tensor, prox: Callable[[Tensor, float], Tensor], n: int, iters: int = 5000) -> Tensor:
    """``argmin_x ½‖M x − y‖² + g(x)`` per sample by FISTA, ``prox(v, t) = prox_{t g}(v)``."""
    step = 1.0 / float(torch.linalg.matrix_norm(m, 2)) ** 2
    x = torch.zeros(y.shape[0], n, dtype=DT)
    yk, t = x.clone(), 1.0
    for _ in range(iters):
        xn = prox(yk - step * ((yk @ m.T - y) @ m), step)
        tn = (1 + (1 + 4 * t * t) ** 0.5) / 2
        yk, x, t = xn + (t - 1) / tn * (xn - x), xn, tn
    return x


# --------------------------------------------------------------------------- the proxes


def test_l1_prox_is_the_coordinatewise_minimiser() -> None:
    v = 2.0 * torch.randn(3, 7, dtype=DT, generator=_gen(0))
    step = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    weight = torch.tensor([0.3, 0.8, 0.1], dtype=DT)
    t = (step * weight).reshape(-1, 1)
    # t|x| + ½(x − v)²: right derivative t·(1 if x ≥ 0 else −1) + x − v
    ref = _bisect_min(lambda x: t * torch.where(x >= 0, 1.0, -1.0) + x - v, v - 5, v + 5)
    out = L1(weight).prox(v, step)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert int((out == 0).sum()) > 0  # some coordinates are thresholded to exact zeros
    torch.testing.assert_close(L1(0.4).prox(v, 0.0), v)  # step 0: the identity
    torch.testing.assert_close(L1(weight).value(v), weight * v.abs().sum(1))


def test_group_l1_prox_is_moreau_of_the_ball_projection() -> None:
    """``prox_{t‖·‖₂}(v_G) = v_G − Π_{‖·‖ ≤ t}(v_G)`` per group (Moreau's decomposition)."""
    v = torch.randn(2, 3, 4, dtype=DT, generator=_gen(1))
    v[0, 1] *= 0.05  # a small group, thresholded to zero
    groups = torch.arange(3).reshape(3, 1).expand(3, 4).contiguous()  # one group per row
    g = GroupL1(0.7, groups)
    out = g.prox(v, 1.5)
    ref = torch.stack([v[:, k] - L2Ball(1.05).project(v[:, k]) for k in range(3)], dim=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    assert bool((out[0, 1] == 0).all())
    torch.testing.assert_close(g.value(v), 0.7 * torch.linalg.vector_norm(v, dim=2).sum(1))
    # singleton groups are L1
    single = GroupL1(0.7, torch.arange(12).reshape(3, 4))
    torch.testing.assert_close(single.prox(v, 1.5), L1(0.7).prox(v, 1.5), rtol=0, atol=1e-15)


def test_sign_and_indicator_proxes_are_projections() -> None:
    v = torch.randn(3, 5, dtype=DT, generator=_gen(2))
    torch.testing.assert_close(NonNegative().prox(v, 0.7), Box(lo=0.0).project(v))
    ball = L2Ball(0.4)
    torch.testing.assert_close(Indicator(ball).prox(v, 3.0), ball.project(v))
    assert bool((NonNegative().value(v) == 0).all()) and bool((Indicator(ball).value(v) == 0).all())


TV_SETS: dict[str, Constraint] = {"free": Unconstrained(), "box": Box(-0.3, 0.5), "ball": L2Ball(1.5)}


@pytest.mark.parametrize("isotropic", [True, False], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("name", sorted(TV_SETS))
def test_total_variation_prox_matches_a_long_admm_run(isotropic: bool, name: str) -> None:
    """With a constraint, the prox of ``g + ι_C`` (exact inside the dual solver)."""
    h, w = 5, 4
    v = torch.randn(3, 1, h, w, dtype=DT, generator=_gen(3))
    step = torch.tensor([0.2, 0.5, 1.0], dtype=DT)
    tv = TotalVariation2D(0.6, isotropic=isotropic, iterations=2000, tol=1e-14)
    constraint = TV_SETS[name]
    assert tv.composes_with(constraint)
    out = tv.prox_onto(v, step, constraint)
    project = None if name == "free" else constraint.project
    ref = _admm_tv(torch.eye(h * w, dtype=DT), v.reshape(3, -1), 0.6 * step, (h, w), isotropic, project)
    err = float((out.reshape(3, -1) - ref).abs().max())
    assert err <= 1e-9, err
    if name != "free":  # the constraint is active
        assert float((constraint.project(v) - v).abs().max()) > 0.1
        assert float((constraint.project(out) - out).abs().max()) <= 1e-14


def test_total_variation_value_by_explicit_sums() -> None:
    x = torch.randn(2, 2, 3, 4, dtype=DT, generator=_gen(4))
    iso = torch.zeros(2, dtype=DT)
    aniso = torch.zeros(2, dtype=DT)
    for i in range(3):
        for j in range(4):
            a = x[:, :, i + 1, j] - x[:, :, i, j] if i + 1 < 3 else torch.zeros(2, 2, dtype=DT)
            b = x[:, :, i, j + 1] - x[:, :, i, j] if j + 1 < 4 else torch.zeros(2, 2, dtype=DT)
            iso += torch.sqrt(a * a + b * b).sum(1)
            aniso += (a.abs() + b.abs()).sum(1)
    torch.testing.assert_close(TotalVariation2D(0.3).value(x), 0.3 * iso)
    torch.testing.assert_close(TotalVariation2D(0.3, isotropic=False).value(x), 0.3 * aniso)


def _composition_cases() -> list[tuple[str, NonSmooth, Constraint, Tensor]]:
    v = 1.5 * torch.randn(3, 2, 3, 3, dtype=DT, generator=_gen(5))
    groups = torch.arange(6).reshape(6, 1).expand(6, 3).reshape(2, 3, 3)
    return [
        ("l1&ball", L1(0.4), L2Ball(1.2), v),
        ("l1&box", L1(0.4), Box(-0.5, torch.full((2, 3, 3), 0.7, dtype=DT)), v),
        ("l1&box-off-zero", L1(0.4), Box(0.2, 0.9), v),
        ("l1&ball&box", L1(0.4), L2Ball(1.2) & Box(-0.3, 0.6), v),
        ("nonneg&ball", NonNegative(), L2Ball(torch.tensor([0.5, 1.0, 8.0], dtype=DT)), v),
        ("nonneg&box", NonNegative(), Box(-0.5, 0.6), v),
        ("nonneg&ball&box", NonNegative(), Box(-0.5, 0.4) & L2Ball(0.9), v),
        ("group&ball", GroupL1(0.5, groups), L2Ball(1.0), v),
    ]


@pytest.mark.parametrize("case", range(8), ids=[c[0] for c in _composition_cases()])
def test_exact_compositions_match_the_prox_of_the_sum(case: int) -> None:
    name, g, constraint, v = _composition_cases()[case]
    assert g.composes_with(constraint)
    step = 0.8
    out = g.prox_onto(v, step, constraint)
    ref = _dykstra_prox(lambda u: g.prox(u, step), constraint.project, v)
    err = float((out - ref).abs().max())
    assert err <= 1e-9, (name, err)
    assert float((constraint.project(out) - out).abs().max()) <= 1e-14  # feasible
    assert float((g.prox(v, step) - out).abs().max()) > 1e-2  # and the constraint is active


@pytest.mark.parametrize(
    ("g", "constraint"),
    [
        (L1(0.1), L2Ball(1.0, center=torch.ones(2, 4, dtype=DT))),
        (GroupL1(0.1, torch.tensor([0, 0, 1, 1])), Box(-0.5, 0.5)),
        (Indicator(L2Ball(1.0)), Box(-0.5, 0.5)),
    ],
    ids=["l1&off-centre-ball", "group&box", "indicator-ball&box"],
)
def test_inexact_compositions_are_refused(g: NonSmooth, constraint: Constraint) -> None:
    """The refused pairs are really inexact: Π_C ∘ prox_g differs from the prox of the sum."""
    assert not g.composes_with(constraint)
    v = 2.0 * torch.randn(2, 4, dtype=DT, generator=_gen(6))
    ref = _dykstra_prox(lambda u: g.prox(u, 1.0), constraint.project, v)
    assert float((constraint.project(g.prox(v, 1.0)) - ref).abs().max()) > 1e-3
    layer, objective = LinearDEQ(5, (4,)), Sparse(5, 3, g)
    problem = JointProblem(layer, objective, constraint, x_shape=(4,))
    with pytest.raises(ValueError, match=f"{type(g).__name__} does not compose exactly"):
        problem.solve(torch.zeros(2, 3, dtype=DT))


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"L1\.weight"):
        L1(-1.0)
    with pytest.raises(ValueError, match=r"GroupL1\.groups"):
        GroupL1(1.0, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"TotalVariation2D\.iterations"):
        TotalVariation2D(1.0, iterations=0)
    with pytest.raises(ValueError, match="12 labels but a sample of x has 4"):
        GroupL1(1.0, torch.zeros(12, dtype=torch.int64)).prox(torch.zeros(2, 4, dtype=DT), 1.0)


# --------------------------------------------------------------------------- JIIO through a DEQ


class LinearDEQ(Layer):
    """``f(z, x) = W z + U x`` (``x`` of any per-sample shape, flattened), ``‖W‖₂ = 0.5``."""

    def __init__(self, nz: int, x_shape: tuple[int, ...], seed: int = 0) -> None:
        super().__init__()
        nx = int(torch.tensor(x_shape).prod())
        g = _gen(seed)
        w = torch.randn(nz, nz, generator=g, dtype=DT)
        self.W = nn.Parameter(0.5 * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(nz, nx, generator=g, dtype=DT) / nx**0.5)

    def forward(self, z: Any, x: Tensor) -> Tensor:
        out: Tensor = z @ self.W.T + x.reshape(x.shape[0], -1) @ self.U.T
        return out

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.W.shape[0])

    def equilibrium_map(self) -> Tensor:
        """``A`` with ``z*(x) = A x``."""
        with torch.no_grad():
            a: Tensor = torch.linalg.solve(torch.eye(self.W.shape[0], dtype=DT) - self.W, self.U)
        return a


class Sparse(InnerObjective):
    """``ℓ = ½‖V z − y‖²`` (a sum: ``s = 1``) with the non-smooth part ``g``."""

    def __init__(self, nz: int, ny: int, g: NonSmooth | None, seed: int = 1) -> None:
        super().__init__()
        self.V = nn.Parameter(torch.randn(ny, nz, generator=_gen(seed), dtype=DT) / nz**0.5)
        self.g = g

    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        out: Tensor = 0.5 * ((z @ self.V.T - y) ** 2).sum(1)
        return out

    def nonsmooth(self) -> NonSmooth | None:
        return self.g


def _joint(layer: Layer, objective: InnerObjective, constraint: Constraint | None, x_shape: tuple[int, ...],
           outer: OuterGradient | None = None, tol: float = 1e-12) -> JointProblem:
    return JointProblem(
        layer, objective, constraint, AndersonII(memory=5), Damping(z=1.0, mu=1.0, x=0.3),
        AdjointShortcut() if outer is None else outer, max_iter=800, tol=tol, x_shape=x_shape,
        selection=LowestResidual(),
    )


NZ, NY, B = 12, 10, 3
Y = 2.0 * torch.randn(B, NY, dtype=DT, generator=_gen(2))


def _reduced(layer: LinearDEQ, objective: Sparse) -> Tensor:
    return (objective.V @ layer.equilibrium_map()).detach()


def _solve_sparse(g: NonSmooth, constraint: Constraint | None, nx: int = 6) -> tuple[JointSolution, Tensor]:
    layer, objective = LinearDEQ(NZ, (nx,)), Sparse(NZ, NY, g)
    with torch.no_grad():
        sol = _joint(layer, objective, constraint, (nx,)).solve(Y)
    assert bool(sol.converged.all()), sol.summary()
    return sol, _reduced(layer, objective)


def test_lasso_matches_fista() -> None:
    sol, m = _solve_sparse(L1(0.5), None)
    ref = _fista(m, Y, lambda v, t: torch.sign(v) * torch.clamp(v.abs() - 0.5 * t, min=0.0), 6)
    err = float((sol.x - ref).abs().max())
    assert err <= 1e-6, err
    assert 0 < int((ref == 0).sum()) < ref.numel()  # a genuinely sparse solution
    # the reported objective: ℓ + g at x*
    torch.testing.assert_close(sol.nonsmooth, 0.5 * sol.x.abs().sum(1))
    ref_total = 0.5 * ((ref @ m.T - Y) ** 2).sum(1) + 0.5 * ref.abs().sum(1)
    torch.testing.assert_close(sol.total_loss, ref_total, rtol=1e-9, atol=1e-9)


def test_lasso_in_an_l2_ball_matches_fista() -> None:
    radius = 1.0
    sol, m = _solve_sparse(L1(0.5), L2Ball(radius))

    def prox(v: Tensor, t: float) -> Tensor:  # the composition, validated above against Dykstra
        return L2Ball(radius).project(torch.sign(v) * torch.clamp(v.abs() - 0.5 * t, min=0.0))

    ref = _fista(m, Y, prox, 6)
    err = float((sol.x - ref).abs().max())
    assert err <= 1e-6, err
    torch.testing.assert_close(torch.linalg.vector_norm(ref, dim=1), torch.full((B,), radius, dtype=DT))
    assert int((ref == 0).sum()) > 0


def test_nonnegative_least_squares_matches_fista() -> None:
    sol, m = _solve_sparse(NonNegative(), None)
    ref = _fista(m, Y, lambda v, t: torch.clamp(v, min=0.0), 6)
    err = float((sol.x - ref).abs().max())
    assert err <= 1e-5, err
    assert bool((sol.x >= 0).all()) and int((ref == 0).sum()) > 0  # the returned x is feasible


def test_group_lasso_matches_fista() -> None:
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    sol, m = _solve_sparse(GroupL1(1.5, groups), None)
    ref = _fista(m, Y, lambda v, t: GroupL1(1.5, groups).prox(v, t), 6)
    err = float((sol.x - ref).abs().max())
    assert err <= 1e-6, err


def test_total_variation_problem_matches_admm() -> None:
    """Isotropic TV with a box (the box inside the prox's dual solver)."""
    box = (-0.6, 0.6)
    shape = (1, 3, 4)
    layer = LinearDEQ(16, shape)
    objective = Sparse(16, 14, TotalVariation2D(0.8, tol=1e-11))
    y = 2.0 * torch.randn(2, 14, dtype=DT, generator=_gen(7))
    with torch.no_grad():
        sol = _joint(layer, objective, Box(*box), shape, tol=1e-10).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    ref = _admm_tv(_reduced(layer, objective), y, 0.8, (3, 4), True, Box(*box).project, iters=6000)
    x = sol.x.reshape(2, -1)
    err = float((x - ref).abs().max())
    assert err <= 1e-5, err
    assert int(((x[:, :, None] - x[:, None, :]).abs() < 1e-9).sum()) > 2 * 12, x  # flat regions


def test_kkt_residual_vanishes_at_the_reference_solution_only() -> None:
    """The proximal-gradient mapping at ``(z*(x), μ*(x), x)`` for the FISTA solution ``x`` and
    for perturbations of it (``z``, ``μ`` kept exact, so only ``r_x`` can tell)."""
    layer, objective = LinearDEQ(NZ, (6,)), Sparse(NZ, NY, L1(0.5))
    m = _reduced(layer, objective)
    ref = _fista(m, Y, lambda v, t: torch.sign(v) * torch.clamp(v.abs() - 0.5 * t, min=0.0), 6)
    a = layer.equilibrium_map()
    eye = torch.eye(NZ, dtype=DT)

    def blocks(x: Tensor, constraint: Constraint) -> Tensor:
        z = x @ a.T
        with torch.no_grad():  # μ = (I − Wᵀ)⁻¹ Vᵀ(V z − y), the adjoint at equilibrium
            mu = torch.linalg.solve(eye - layer.W.T, ((z @ objective.V.T - Y) @ objective.V).T).T
        amap = AugmentedMap(layer, objective, constraint, Damping(), StateSpec.of(z), (6,))
        ev = amap.evaluate(amap.pack(z, mu, x), Y, 0)
        return ev.blocks

    at_ref = blocks(ref, Unconstrained())
    assert float(at_ref.max()) <= 1e-10, at_ref
    off = ref + 0.01 * torch.randn(ref.shape, dtype=DT, generator=_gen(8))
    assert bool((blocks(off, Unconstrained())[:, 2] > 1e-3).all())
    # a zero coordinate nudged off zero, alone, is caught too
    nudged = ref.clone()
    nudged[ref == 0] = 1e-3
    assert bool((blocks(nudged, Unconstrained())[:, 2] >= 1e-4).all())


class BlackBoxL1(NonSmooth):
    """Soft-thresholding computed outside autograd: declares no Jacobian (the default)."""

    def prox(self, v: Tensor, step: Tensor | float) -> Tensor:
        with torch.no_grad():
            return L1(0.5).prox(v, step)

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * x.abs().sum(1)


def test_normalized_x_step_and_an_undifferentiable_prox_are_refused() -> None:
    layer, objective = LinearDEQ(NZ, (6,)), Sparse(NZ, NY, L1(0.5))
    with pytest.raises(ValueError, match="normalized_x_step is not defined with a non-smooth part"):
        JointProblem(layer, objective, normalized_x_step=True, x_shape=(6,)).solve(Y)
    black_box = Sparse(NZ, NY, BlackBoxL1())
    with pytest.raises(ValueError, match="ImplicitKKT cannot differentiate through the prox of BlackBoxL1"):
        JointProblem(layer, black_box, outer=ImplicitKKT(), x_shape=(6,))
    for outer in (AdjointShortcut(), FixedInput(), Unrolled()):
        JointProblem(layer, black_box, outer=outer, x_shape=(6,))  # accepted
    tv = Sparse(NZ, NY, TotalVariation2D(0.5))
    JointProblem(LinearDEQ(NZ, (1, 2, 3)), tv, outer=ImplicitKKT(), x_shape=(1, 2, 3))  # accepted
    with pytest.raises(ValueError, match="would ignore its non-smooth part L1"):  # the gradient baselines
        jc.optimize_input(layer, objective, Y, torch.zeros(B, 6, dtype=DT), jc.Adam(lr=0.1), steps=2)


# --------------------------------------------------------------------------- θ-gradients

EPS = 1e-5
TARGET = 0.3 * torch.randn(2, 6, dtype=DT, generator=_gen(9))


def _outer_loss(sol: JointSolution) -> Tensor:
    z = sol.z
    assert isinstance(z, Tensor)
    weights = torch.arange(1, sol.x[0].numel() + 1, dtype=DT).reshape(sol.x.shape[1:])
    return ((z - TARGET) ** 2).sum() + (weights * sol.x**2).sum() + sol.x.sum()


def _gradient_case(
    g: NonSmooth, constraint: Constraint | None, x_shape: tuple[int, ...], y_scale: float = 2.0, tol: float = 1e-13
) -> tuple[
    Callable[[OuterGradient], JointProblem], Tensor, list[nn.Parameter]
]:
    nx = int(torch.tensor(x_shape).prod())

    class Layer2(TanhLayer):
        def forward(self, z: Any, x: Tensor) -> Tensor:
            return super().forward(z, x.reshape(x.shape[0], -1))

    layer = Layer2(6, nx, rho=0.6, seed=0)
    objective = Sparse(6, 5, g)
    y = y_scale * torch.randn(2, 5, dtype=DT, generator=_gen(10))
    params = [*layer.parameters(), *objective.parameters()]

    def make(outer: OuterGradient) -> JointProblem:
        return _joint(layer, objective, constraint, x_shape, outer, tol=tol)

    return make, y, params


def _directions(params: list[nn.Parameter], n_dirs: int = 2) -> list[list[Tensor]]:
    gen = _gen(123)
    return [[torch.randn(p.shape, generator=gen, dtype=DT) for p in params] for _ in range(n_dirs)]


def _gradient_errors(
    params: list[nn.Parameter], value: Tensor, fn: Callable[[], Tensor], eps: float = EPS, n_dirs: int = 2
) -> list[float]:
    """Relative errors of ``⟨∇value, d⟩`` against central differences of ``fn`` along
    ``n_dirs`` random directions ``d``."""
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    errors = []
    for direction in _directions(params, n_dirs):
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction, strict=True) if gr is not None)
        numeric = float(directional_fd(params, direction, fn, eps))
        errors.append(abs(analytic - numeric) / max(1.0, abs(numeric)))
    return errors


def _check_gradient(
    params: list[nn.Parameter],
    value: Tensor,
    fn: Callable[[], Tensor],
    rtol: float = 1e-6,
    eps: float = EPS,
    n_dirs: int = 2,
) -> None:
    errors = _gradient_errors(params, value, fn, eps, n_dirs)
    assert max(errors) <= rtol, errors


L1_CASES = {
    "l1": (L1(1.0), None),
    "l1&ball": (L1(1.0), L2Ball(1.0)),
}


@pytest.mark.parametrize("case", sorted(L1_CASES))
@pytest.mark.parametrize("outer", [ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()], ids=["kkt", "unrolled"])
def test_theta_gradient_through_the_l1_prox_matches_finite_differences(case: str, outer: OuterGradient) -> None:
    g, constraint = L1_CASES[case]
    make, y, params = _gradient_case(g, constraint, (4,))
    sol = make(outer).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    x = sol.x.detach()
    assert 0 < int((x.abs() < 1e-9).sum()) < x.numel(), x  # some coordinates at the kink
    if constraint is not None:
        torch.testing.assert_close(torch.linalg.vector_norm(x, dim=1), torch.full((2,), 1.0, dtype=DT))

    def solved() -> Tensor:
        with torch.no_grad():
            return _outer_loss(make(AdjointShortcut()).solve(y))

    _check_gradient(params, _outer_loss(sol), solved)
    if isinstance(outer, ImplicitKKT):
        assert sol.backward.converged is not None and bool(sol.backward.converged.all())


def test_theta_gradient_through_the_tv_prox_implicit_matches_finite_differences() -> None:
    """ImplicitKKT differentiates the TV prox (with a box, inside its dual solver) through its
    inner sweeps."""
    tv = TotalVariation2D(0.1, iterations=300, tol=1e-13)
    make, y, params = _gradient_case(tv, Box(-0.6, 0.6), (1, 2, 3), y_scale=0.6, tol=1e-12)
    sol = make(ImplicitKKT(tol=1e-12, max_iter=400)).solve(y)
    assert bool(sol.converged.all()), sol.summary()
    x = sol.x.detach().reshape(2, -1)
    assert int(((x[:, :, None] - x[:, None, :]).abs() < 1e-9).sum()) >= 2 * 6 + 8, x  # flat regions

    def solved() -> Tensor:
        with torch.no_grad():
            return _outer_loss(make(AdjointShortcut()).solve(y))

    _check_gradient(params, _outer_loss(sol), solved, n_dirs=1)
    assert sol.backward.converged is not None and bool(sol.backward.converged.all())


def test_unrolled_differentiates_through_the_tv_prox() -> None:
    """Unrolled is the derivative of the iterations run: for 20 iterations (TV with a fixed 60
    sweeps), against central differences of that same computation. (Of a converged solve, an
    accelerated iteration's unrolled derivative on this non-smooth map does not converge to the
    solution's: see jiio_core.prox.)"""
    tv = TotalVariation2D(0.1, iterations=60, tol=0.0)
    make, y, params = _gradient_case(tv, Box(-0.6, 0.6), (1, 2, 3), y_scale=0.6)

    def short() -> JointProblem:
        problem = make(Unrolled())
        problem.max_iter, problem.tol = 20, 0.0
        return problem

    def computed() -> Tensor:
        with torch.no_grad():
            return _outer_loss(short().solve(y))

    _check_gradient(params, _outer_loss(short().solve(y)), computed, rtol=1e-5, eps=1e-6, n_dirs=1)


@pytest.mark.parametrize("isotropic", [True, False], ids=["isotropic", "anisotropic"])
def test_tv_prox_jacobian_through_its_sweeps_matches_finite_differences(isotropic: bool) -> None:
    """Autograd through 80 sweeps against central differences of a 250-sweep prox (the box
    and flat regions make the Jacobian a projector with zeros)."""
    v = torch.randn(2, 1, 3, 3, dtype=DT, generator=_gen(11))
    constraint = Box(-0.3, 0.5)
    fast = TotalVariation2D(0.3, isotropic=isotropic, iterations=80, tol=0.0)
    exact = TotalVariation2D(0.3, isotropic=isotropic, iterations=250, tol=0.0)
    jac = torch.autograd.functional.jacobian(lambda u: fast.prox_onto(u, 1.0, constraint), v).reshape(18, 18)
    eps = 1e-6
    fd = torch.zeros(18, 18, dtype=DT)
    for i in range(18):
        d = torch.zeros(18, dtype=DT)
        d[i] = eps
        d = d.reshape(v.shape)
        diff = exact.prox_onto(v + d, 1.0, constraint) - exact.prox_onto(v - d, 1.0, constraint)
        fd[:, i] = (diff / (2 * eps)).reshape(-1)
    err = float((jac - fd).abs().max())
    assert err <= 1e-8, err
    assert 0 < int((jac.abs() > 1e-12).sum()) < jac.numel() // 2


def test_adjoint_shortcut_differentiates_the_optimal_value() -> None:
    """With g, the shortcut's gradient is that of ``ℓ + g(x*)/s`` (``total_loss``), not of ℓ."""
    make, y, params = _gradient_case(L1(1.0), L2Ball(1.0), (4,))
    sol = make(AdjointShortcut()).solve(y)

    def total() -> Tensor:
        with torch.no_grad():
            return make(AdjointShortcut()).solve(y).total_loss.sum()

    def smooth_only() -> Tensor:
        with torch.no_grad():
            return make(AdjointShortcut()).solve(y).loss.sum()

    _check_gradient(params, sol.total_loss.sum(), total)
    assert min(_gradient_errors(params, sol.loss.sum(), smooth_only)) > 1e-2  # not ℓ's alone


def test_fixed_input_gradient_is_unchanged_by_the_prox() -> None:
    """``dx*/dθ`` dropped: the reference re-solves only the DEQ at the fixed ``x*``."""
    make, y, params = _gradient_case(L1(1.0), None, (4,))
    problem = make(FixedInput(tol=1e-12, max_iter=400))
    sol = problem.solve(y)
    x_star = sol.x.detach()
    z = sol.z
    assert isinstance(z, Tensor)

    def at_fixed_x() -> Tensor:
        with torch.no_grad():
            eq = problem.equilibrium(y, x_star, tol=1e-14, max_iter=400)
            zz = eq.z
            assert isinstance(zz, Tensor)
            return ((zz - TARGET) ** 2).sum() + eq.loss.sum()

    _check_gradient(params, ((z - TARGET) ** 2).sum() + sol.loss.sum(), at_fixed_x)


def test_public_names() -> None:
    for name in ("NonSmooth", "L1", "NonNegative", "GroupL1", "TotalVariation2D", "Indicator"):
        assert name in jc.__all__

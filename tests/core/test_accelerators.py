"""Accelerators driven by :func:`jiio_core.solver.fixed_point` on maps with known fixed points.

References are independent of the solvers: ``torch.linalg.solve`` for affine maps, a long plain
float64 Picard loop for contractive nonlinear maps, ``(I − A)⁻ᵀ w`` for the derivative of an
affine fixed point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from jiio_core import AndersonI, AndersonII, Broyden, Picard, Status, StepOutput, fixed_point
from jiio_core.accelerators import Accelerator, BroydenState

DT = torch.float64

ACCELERATORS: dict[str, Callable[[], Accelerator]] = {
    "picard": lambda: Picard(),
    "picard-damped": lambda: Picard(beta=0.7),
    "anderson1": lambda: AndersonI(memory=5),
    "anderson2": lambda: AndersonII(memory=5),
    "anderson2-damped": lambda: AndersonII(memory=5, beta=0.5),
    "broyden": lambda: Broyden(memory=20),
}
CORE = ["picard", "anderson1", "anderson2", "broyden"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Batched LAPACK solves pay a fixed OpenMP wake-up cost per call with 2 threads on small
    # CI machines (~10 ms for a 4x5x5 solve); one thread keeps these tiny problems fast.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spectral_matrices(b: int, n: int, norm: float, gen: torch.Generator) -> Tensor:
    """``(b, n, n)`` random matrices of spectral norm exactly ``norm``."""
    a = torch.randn(b, n, n, dtype=DT, generator=gen)
    return a * (norm / torch.linalg.matrix_norm(a, ord=2)).view(-1, 1, 1)


def symmetric_matrices(b: int, n: int, top: float, gen: torch.Generator) -> Tensor:
    """Symmetric ``(b, n, n)`` with eigenvalues in ``[−top, top]``, ``top`` attained (slow Picard)."""
    q, _ = torch.linalg.qr(torch.randn(b, n, n, dtype=DT, generator=gen))
    lam = (2 * torch.rand(b, n, dtype=DT, generator=gen) - 1) * top
    lam[:, 0] = top
    return q @ torch.diag_embed(lam) @ q.mT


class Affine:
    """``G(v) = A_b v + c_b`` per sample; counts evaluations and records the points evaluated."""

    def __init__(self, a: Tensor, c: Tensor) -> None:
        self.a, self.c = a, c
        self.calls = 0
        self.points: list[Tensor] = []

    def __call__(self, v: Tensor, k: int) -> StepOutput:
        self.calls += 1
        self.points.append(v.detach().clone())
        g = torch.einsum("bij,bj->bi", self.a, v) + self.c
        return StepOutput(value=g, residual=torch.linalg.vector_norm(g - v, dim=1))

    def solution(self) -> Tensor:
        eye = torch.eye(self.a.shape[-1], dtype=self.a.dtype)
        return torch.linalg.solve(eye - self.a, self.c)


class Tanh:
    """``G(v) = tanh(W_b v + c_b)``: a contraction when ``‖W_b‖ < 1``."""

    def __init__(self, w: Tensor, c: Tensor) -> None:
        self.w, self.c = w, c
        self.calls = 0

    def apply(self, v: Tensor) -> Tensor:
        return torch.tanh(torch.einsum("bij,bj->bi", self.w, v) + self.c)

    def __call__(self, v: Tensor, k: int) -> StepOutput:
        self.calls += 1
        g = self.apply(v)
        return StepOutput(value=g, residual=torch.linalg.vector_norm(g - v, dim=1))

    def reference(self, iters: int = 800) -> Tensor:
        v = torch.zeros_like(self.c)
        for _ in range(iters):  # 0.9**800 ~ 1e-37: exact to rounding
            v = self.apply(v)
        return v

    def subset(self, idx: list[int]) -> Tanh:
        return Tanh(self.w[idx], self.c[idx])


def tanh_problem(b: int, n: int, seed: int, norm: float = 0.9) -> Tanh:
    gen = _gen(seed)
    return Tanh(spectral_matrices(b, n, norm, gen), torch.randn(b, n, dtype=DT, generator=gen))


# --------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_affine_contraction_reaches_linear_solve(name: str) -> None:
    b, n, tol = 5, 6, 1e-11
    gen = _gen(1)
    step = Affine(spectral_matrices(b, n, 0.8, gen), torch.randn(b, n, dtype=DT, generator=gen))
    res = fixed_point(step, torch.zeros(b, n, dtype=DT), ACCELERATORS[name](), max_iter=400, tol=tol)
    assert res.status.tolist() == [Status.CONVERGED] * b
    scale = torch.clamp(torch.linalg.vector_norm(res.v, dim=1), min=1.0)
    assert bool((res.residual <= tol * scale).all())
    # ‖(I − A)(v − v*)‖ = residual and σ_min(I − A) ≥ 0.2, so ‖v − v*‖ ≤ 5 · residual
    err = torch.linalg.vector_norm(res.v - step.solution(), dim=1)
    assert bool((err <= 5 * tol * scale + 1e-13).all()), err
    # the reported residual is the one of the returned iterate
    true_res = torch.linalg.vector_norm(torch.einsum("bij,bj->bi", step.a, res.v) + step.c - res.v, dim=1)
    torch.testing.assert_close(res.residual, true_res, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_nonlinear_contraction_matches_long_picard(name: str) -> None:
    b, n, tol = 4, 7, 1e-11
    step = tanh_problem(b, n, seed=2)
    ref = step.reference()
    res = fixed_point(step, torch.zeros(b, n, dtype=DT), ACCELERATORS[name](), max_iter=400, tol=tol)
    assert res.status.tolist() == [Status.CONVERGED] * b
    # tanh is 1-Lipschitz, so ‖v − v*‖ ≤ residual / (1 − 0.9)
    torch.testing.assert_close(res.v, ref, rtol=0, atol=20 * tol)


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_batch_equals_each_sample_alone(name: str) -> None:
    b, n = 5, 6
    step = tanh_problem(b, n, seed=3)
    v0 = torch.randn(b, n, dtype=DT, generator=_gen(33))
    kw = {"max_iter": 200, "tol": 1e-10, "check_every": 3}
    batch = fixed_point(step, v0, ACCELERATORS[name](), **kw)
    for i in range(b):
        alone = fixed_point(step.subset([i]), v0[i : i + 1], ACCELERATORS[name](), **kw)
        torch.testing.assert_close(batch.v[i : i + 1], alone.v, rtol=0, atol=1e-12)
        torch.testing.assert_close(batch.residual[i : i + 1], alone.residual, rtol=1e-6, atol=1e-14)
        assert batch.iterations[i].item() == alone.iterations[0].item()
        assert batch.status[i].item() == alone.status[0].item()


ANDERSON = {"anderson1": AndersonI, "anderson2": AndersonII}


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "broyden"])
def test_quasi_newton_solves_linear_maps_in_few_iterations(name: str) -> None:
    """On an affine map in dimension N, Anderson with memory ≥ N (no ridge) is GMRES in
    disguise: the fixed point is exact at the (N+1)-th proposal, i.e. N + 2 evaluations.
    "Good" Broyden terminates in at most 2N steps (Gay 1979): 2N + 1 evaluations. Picard on
    the same maps (spectral radius 0.95) needs hundreds."""
    b, n, tol = 4, 8, 1e-10
    step = Affine(symmetric_matrices(b, n, 0.95, _gen(4)), torch.randn(b, n, dtype=DT, generator=_gen(5)))
    if name == "broyden":
        acc: Accelerator = Broyden(memory=2 * n + 2)
        limit = 2 * n + 2  # one evaluation of slack for rounding
    else:
        acc = ANDERSON[name](memory=n, ridge=0.0)
        limit = n + 2
    res = fixed_point(step, torch.zeros(b, n, dtype=DT), acc, max_iter=200, tol=tol, check_every=1)
    assert res.status.tolist() == [Status.CONVERGED] * b
    assert int(res.iterations.max()) <= limit, res.iterations
    torch.testing.assert_close(res.v, step.solution(), rtol=0, atol=1e-8)

    # the default (small relative ridge) variants stay close to that
    if name != "broyden":
        default = ANDERSON[name](memory=n)
        res_d = fixed_point(step, torch.zeros(b, n, dtype=DT), default, max_iter=200, tol=1e-8)
        assert res_d.status.tolist() == [Status.CONVERGED] * b
        assert int(res_d.iterations.max()) <= 2 * n, res_d.iterations

    picard = fixed_point(step, torch.zeros(b, n, dtype=DT), Picard(), max_iter=1000, tol=tol)
    assert int(picard.iterations.min()) > 10 * limit


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "broyden"])
def test_secant_methods_solve_non_contractive_affine_maps(name: str) -> None:
    """Spectral radius 1.5: Picard diverges (status DIVERGED, finite iterate) while Anderson and
    Broyden, being secant/Krylov methods, still find the unique fixed point."""
    b, n = 4, 6
    gen = _gen(6)
    a = torch.randn(b, n, n, dtype=DT, generator=gen)
    a = a * (1.5 / torch.linalg.eigvals(a).abs().amax(1)).view(-1, 1, 1)
    step = Affine(a, torch.randn(b, n, dtype=DT, generator=gen))
    acc: Accelerator = Broyden() if name == "broyden" else ANDERSON[name](memory=n)
    res = fixed_point(step, torch.zeros(b, n, dtype=DT), acc, max_iter=100, tol=1e-10)
    assert res.status.tolist() == [Status.CONVERGED] * b
    torch.testing.assert_close(res.v, step.solution(), rtol=0, atol=1e-7)

    pic = fixed_point(step, torch.zeros(b, n, dtype=DT), Picard(), max_iter=100, tol=1e-10)
    assert pic.status.tolist() == [Status.DIVERGED] * b
    assert bool(torch.isfinite(pic.v).all())


# --------------------------------------------------------------------------- per-sample status


class Mixed:
    """Samples 0, 2, 4: contractive tanh maps. Sample 1: the map turns NaN from iteration 3.
    Sample 3: a translation ``v ↦ v + 1`` (no fixed point, constant residual; from ``v0 = 0``
    with Anderson's β ∈ {1, 1/2} the iterates are dyadic and ΔF = 0 exactly — see
    :func:`test_stalled_residual_is_not_reported_converged` for the rounding-noise case).
    Sample 5: a translation whose step grows 10× per iteration (residual blow-up, finite
    values)."""

    good = (0, 2, 4)

    def __init__(self, n: int, seed: int) -> None:
        self.inner = tanh_problem(6, n, seed)

    def __call__(self, v: Tensor, k: int) -> StepOutput:
        g = self.inner.apply(v).clone()
        g[1] = math.nan if k >= 3 else g[1]
        g[3] = v[3] + 1.0
        g[5] = v[5] + 10.0**k
        return StepOutput(value=g, residual=torch.linalg.vector_norm(g - v, dim=1))


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_per_sample_status_and_isolation(name: str) -> None:
    n = 5
    step = Mixed(n, seed=7)
    v0 = torch.zeros(6, n, dtype=DT)
    kw = {"max_iter": 60, "tol": 1e-10, "check_every": 4}
    res = fixed_point(step, v0, ACCELERATORS[name](), **kw)
    expected = [Status.CONVERGED, Status.DIVERGED, Status.CONVERGED, Status.MAX_ITER, Status.CONVERGED]
    assert res.status.tolist() == [*expected, Status.DIVERGED]
    assert res.status.dtype == torch.int8
    assert bool(torch.isfinite(res.v).all())
    assert bool(torch.isfinite(res.residual).all())
    assert res.iterations[3].item() == 60  # ran out of budget
    assert res.iterations[1].item() == 4  # NaN seen on the 4th evaluation, then frozen
    assert 7 <= res.iterations[5].item() <= 8  # 10**k exceeds 1e6 × the first residual at k = 7
    assert res.converged.tolist() == [s == Status.CONVERGED for s in res.status.tolist()]

    good = list(Mixed.good)
    alone = fixed_point(step.inner.subset(good), v0[good], ACCELERATORS[name](), **kw)
    torch.testing.assert_close(res.v[good], alone.v, rtol=0, atol=1e-12)
    assert res.iterations[good].tolist() == alone.iterations.tolist()
    torch.testing.assert_close(res.v[good], step.inner.reference()[good], rtol=0, atol=1e-8)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_picard_divergence_on_expanding_map_is_reported(beta: float) -> None:
    b, n = 4, 5
    gen = _gen(8)
    a = spectral_matrices(b, n, 0.7, gen)
    # sample 2 expands: A = 1.6 · I (plus 0.1 · random), no contraction
    a[2] = 1.6 * torch.eye(n, dtype=DT) + 0.1 * torch.randn(n, n, dtype=DT, generator=gen)
    step = Affine(a, torch.randn(b, n, dtype=DT, generator=gen))
    res = fixed_point(step, torch.zeros(b, n, dtype=DT), Picard(beta=beta), max_iter=300, tol=1e-10)
    assert res.status.tolist() == [Status.CONVERGED, Status.CONVERGED, Status.DIVERGED, Status.CONVERGED]
    assert bool(torch.isfinite(res.v).all())
    keep = [0, 1, 3]
    torch.testing.assert_close(res.v[keep], step.solution()[keep], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", CORE)
def test_diverged_sample_does_not_poison_shared_parameter_gradients(name: str) -> None:
    """Unrolled mode with a parameter ``W`` shared by the batch: sample 1 blows up to Inf
    (``exp``). The driver must park it at its finite best iterate, or the next evaluations
    produce ``0 · Inf = NaN`` in ``∂/∂W`` of a loss that only involves sample 0."""
    n = 3
    w = (0.5 * torch.eye(n, dtype=DT) + 0.1).requires_grad_()  # spectral norm 0.8
    c = torch.tensor([[0.3, -0.2, 0.1], [1.0, 1.0, 1.0]], dtype=DT)
    bad = torch.tensor([[False], [True]])

    def step(v: Tensor, k: int) -> StepOutput:
        a = v @ w.T
        g = torch.where(bad, torch.exp(a) + c, a + c)
        return StepOutput(value=g, residual=torch.linalg.vector_norm(g - v, dim=1))

    with torch.enable_grad():
        res = fixed_point(step, torch.zeros(2, n, dtype=DT), ACCELERATORS[name](), max_iter=200, tol=1e-12)
        (grad,) = torch.autograd.grad(res.v[0].sum(), w)
        assert res.status[0].item() == Status.CONVERGED
        exact = torch.linalg.solve(torch.eye(n, dtype=DT) - w, c[0])
        (expected,) = torch.autograd.grad(exact.sum(), w)
    assert bool(torch.isfinite(res.v).all())
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-7)


def test_damping_makes_an_oscillating_map_converge() -> None:
    """``G(v) = −1.5 v + c`` (eigenvalue −1.5): plain Picard diverges; ``β = 0.5`` gives the
    contraction ``v ↦ −0.25 v + 0.5 c`` with the same fixed point ``c / 2.5``; one damped step
    is exactly ``v + β (G(v) − v)``."""
    b, n = 2, 3
    c = torch.randn(b, n, dtype=DT, generator=_gen(16))
    step = Affine(-1.5 * torch.eye(n, dtype=DT).expand(b, n, n), c)
    plain = fixed_point(step, torch.zeros(b, n, dtype=DT), Picard(), max_iter=100, tol=1e-12)
    assert plain.status.tolist() == [Status.DIVERGED] * b
    damped = fixed_point(step, torch.zeros(b, n, dtype=DT), Picard(beta=0.5), max_iter=100, tol=1e-12)
    assert damped.status.tolist() == [Status.CONVERGED] * b
    torch.testing.assert_close(damped.v, c / 2.5, rtol=0, atol=1e-11)
    v = torch.randn(b, n, dtype=DT, generator=_gen(17))
    gv = torch.randn(b, n, dtype=DT, generator=_gen(18))
    nxt, _ = Picard(beta=0.3).update(None, v, gv, torch.ones(b, dtype=torch.bool))
    torch.testing.assert_close(nxt, 0.7 * v + 0.3 * gv, rtol=1e-15, atol=1e-15)


# --------------------------------------------------------------------------- singular systems


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "anderson2-damped", "broyden"])
def test_singular_history_falls_back_to_plain_step(name: str) -> None:
    """Sample 0: constant map (one step to the answer). Sample 1: translation ``v ↦ v + c``
    with dyadic ``v0``, ``c``, β so that ``f = c`` and ``ΔF = 0`` hold exactly: a singular
    least-squares system (Anderson) / zero secant denominator (Broyden) on every iteration.
    Sample 2: an ordinary contraction, which must still be accelerated to its answer."""
    n = 4
    gen = _gen(9)
    a = torch.zeros(3, n, n, dtype=DT)
    a[1] = torch.eye(n, dtype=DT)
    a[2] = spectral_matrices(1, n, 0.6, gen)[0]
    c = torch.randn(3, n, dtype=DT, generator=gen)
    c[1] = torch.tensor([0.25, -1.5, 0.0, 2.0], dtype=DT)
    step = Affine(a, c)
    acc = ACCELERATORS[name]()
    beta = getattr(acc, "beta", 1.0)
    v0 = torch.randn(3, n, dtype=DT, generator=gen)
    v0[1] = torch.tensor([1.0, 0.5, -3.0, 0.125], dtype=DT)
    res = fixed_point(step, v0, acc, max_iter=25, tol=1e-12, check_every=1)
    assert res.status.tolist() == [Status.CONVERGED, Status.MAX_ITER, Status.CONVERGED]
    # sample 1 followed plain (damped) steps v_k = v0 + k·β·c exactly
    traj = torch.stack([p[1] for p in step.points])
    k = torch.arange(len(step.points), dtype=DT).unsqueeze(1)
    torch.testing.assert_close(traj, v0[1] + k * beta * c[1], rtol=0, atol=0)
    torch.testing.assert_close(res.v[0], c[0], rtol=0, atol=1e-12)
    expected = torch.linalg.solve(torch.eye(n, dtype=DT) - a[2], c[2])
    torch.testing.assert_close(res.v[2], expected, rtol=0, atol=1e-10)
    assert res.iterations[2].item() < 25


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "broyden"])
def test_stalled_residual_is_not_reported_converged(name: str) -> None:
    """A translation with a non-dyadic offset: ``f = G(v) − v`` is constant up to rounding, so
    the secant history ΔF is pure noise and, without the accelerators' noise guard, the step
    explodes. Whatever the accelerator does, the driver must not report such a sample as
    CONVERGED (the relative test ``tol · max(1, ‖v‖)`` would pass at ‖v‖ ~ 1e15) and must
    return a finite iterate of sensible size."""
    n = 4
    gen = _gen(15)
    c, v0 = torch.randn(2, 1, n, dtype=DT, generator=gen)

    def step(v: Tensor, k: int) -> StepOutput:
        g = v + c
        return StepOutput(value=g, residual=torch.linalg.vector_norm(g - v, dim=1))

    res = fixed_point(step, v0, ACCELERATORS[name](), max_iter=40, tol=1e-12)
    assert res.status.item() in (Status.DIVERGED, Status.MAX_ITER)
    assert bool(torch.isfinite(res.v).all())
    assert float(torch.linalg.vector_norm(res.v)) < 1e3
    torch.testing.assert_close(res.residual, torch.linalg.vector_norm(c, dim=1), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "broyden"])
def test_noise_level_secant_pairs_fall_back_to_plain_step(name: str) -> None:
    """A secant pair whose ΔF is rounding noise (here G(v) = v + c) must be ignored: the
    iteration reduces to the plain step v₀ + k·c instead of exploding."""
    n = 4
    gen = _gen(15)
    c, v0 = torch.randn(2, 1, n, dtype=DT, generator=gen)
    step = Affine(torch.eye(n, dtype=DT).unsqueeze(0), c)
    fixed_point(step, v0, ACCELERATORS[name](), max_iter=10, tol=1e-12, check_every=1)
    traj = torch.cat(step.points)
    k = torch.arange(len(step.points), dtype=DT).unsqueeze(1)
    torch.testing.assert_close(traj, v0 + k * c, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_anderson_update_with_repeated_iterates_is_plain_and_per_sample(cls: type) -> None:
    """Direct accelerator API: a sample fed the same (v, G(v)) again and again has an all-zero
    history (ΔV = ΔF = 0); another sample carries NaN. Both must get a plain step, and the
    healthy sample's proposal must equal the one it gets when solved alone."""
    n, beta = 5, 0.9
    acc = cls(memory=3, beta=beta)
    gen = _gen(10)
    a = spectral_matrices(1, n, 0.5, gen)[0]
    c = torch.randn(n, dtype=DT, generator=gen)
    fixed_v = torch.randn(n, dtype=DT, generator=gen)
    fixed_g = torch.randn(n, dtype=DT, generator=gen)

    state = acc.init(torch.zeros(3, n, dtype=DT))
    solo = acc.init(torch.zeros(1, n, dtype=DT))
    v = torch.randn(3, n, dtype=DT, generator=gen)
    v[0] = fixed_v
    active = torch.ones(3, dtype=torch.bool)
    for it in range(6):
        g = v @ a.T + c
        g[0] = fixed_g
        if it >= 2:
            g[1] = math.nan
        nxt, state = acc.update(state, v, g, active)
        nxt_solo, solo = acc.update(solo, v[2:], g[2:], torch.ones(1, dtype=torch.bool))
        torch.testing.assert_close(nxt[0], fixed_v + beta * (fixed_g - fixed_v), rtol=0, atol=1e-14)
        torch.testing.assert_close(nxt[2:], nxt_solo, rtol=0, atol=1e-14)
        assert bool(torch.isfinite(nxt[[0, 2]]).all())
        v = nxt.clone()
        v[0] = fixed_v
        v[1] = torch.where(torch.isfinite(v[1]), v[1], 0.0)


# --------------------------------------------------------------------------- evaluation budget


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize(("max_iter", "check_every"), [(200, 1), (200, 3), (200, 7), (5, 3), (1, 1)])
def test_evaluation_count(name: str, max_iter: int, check_every: int) -> None:
    b, n = 4, 5
    step = tanh_problem(b, n, seed=11, norm=0.5)
    res = fixed_point(
        step,
        torch.zeros(b, n, dtype=DT),
        ACCELERATORS[name](),
        max_iter=max_iter,
        tol=1e-9,
        check_every=check_every,
    )
    assert step.calls <= max_iter
    assert res.iterations_run == step.calls
    assert tuple(res.trace.residual.shape) == (step.calls, b)
    last = int(res.iterations.max())
    if bool(res.converged.all()):
        # stops at the first stopping test after the last sample converged
        assert step.calls == min(max_iter, math.ceil(last / check_every) * check_every)
    else:
        assert step.calls == max_iter
        assert max_iter < 20  # the generous budget must be enough
    assert bool((res.iterations <= step.calls).all())
    assert bool((res.iterations >= 1).all())


# --------------------------------------------------------------------------- autograd (unrolled)


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_unrolled_derivative_of_affine_fixed_point(name: str) -> None:
    """``v* = (I − A)⁻¹ c``: the gradient of ``Σ wᵀ v*`` in ``c`` is ``(I − A)⁻ᵀ w`` per sample."""
    b, n = 4, 6
    gen = _gen(12)
    a = spectral_matrices(b, n, 0.8, gen)
    c = torch.randn(b, n, dtype=DT, generator=gen).requires_grad_()
    w = torch.randn(b, n, dtype=DT, generator=gen)
    step = Affine(a, c)
    with torch.enable_grad():
        res = fixed_point(step, torch.zeros(b, n, dtype=DT), ACCELERATORS[name](), max_iter=300, tol=1e-12)
        assert res.v.requires_grad
        (grad,) = torch.autograd.grad((w * res.v).sum(), c)
    expected = torch.linalg.solve((torch.eye(n, dtype=DT) - a).mT, w)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-7)


def test_unrolled_derivative_through_nonlinear_map_matches_implicit_function_theorem() -> None:
    """``v* = tanh(W v* + c)``: ``dv*/dc = (I − D W)⁻¹ D`` with ``D = diag(1 − v*²)``."""
    b, n = 3, 5
    base = tanh_problem(b, n, seed=13)
    c = base.c.clone().requires_grad_()
    step = Tanh(base.w, c)
    w = torch.randn(b, n, dtype=DT, generator=_gen(14))
    with torch.enable_grad():
        res = fixed_point(step, torch.zeros(b, n, dtype=DT), AndersonII(memory=5), max_iter=200, tol=1e-12)
        (grad,) = torch.autograd.grad((w * res.v).sum(), c)
    v = base.reference()
    d = torch.diag_embed(1 - v**2)
    jac = torch.linalg.solve(torch.eye(n, dtype=DT) - d @ base.w, d)  # dv*/dc, (b, n, n)
    torch.testing.assert_close(grad, torch.einsum("bi,bij->bj", w, jac), rtol=0, atol=1e-7)


def test_no_graph_without_grad_mode() -> None:
    b, n = 2, 3
    c = torch.randn(b, n, dtype=DT).requires_grad_()
    step = Affine(0.5 * torch.eye(n, dtype=DT).expand(b, n, n), c)
    with torch.no_grad():
        res = fixed_point(step, torch.zeros(b, n, dtype=DT), AndersonII(), max_iter=50, tol=1e-10)
    assert not res.v.requires_grad
    torch.testing.assert_close(res.v, 2 * c.detach(), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- update formula


def _history_pairs(count: int, b: int, n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``(v, G(v))`` pairs with generic (well-conditioned, informative) secant histories."""
    gen = _gen(seed)
    out = []
    v = torch.randn(b, n, dtype=DT, generator=gen)
    for _ in range(count):
        gv = 0.5 * v + torch.randn(b, n, dtype=DT, generator=gen)
        out.append((v, gv))
        v = gv + 0.1 * torch.randn(b, n, dtype=DT, generator=gen)
    return out


def _reference_anderson(
    pairs: list[tuple[Tensor, Tensor]], *, type_one: bool, memory: int, beta: float, ridge: float,
    blocks: tuple[int, ...] | None = None,
) -> list[Tensor]:
    """The plain einsum formulation, with every product rebuilt from the chronological history
    at every step: ``γ = (Xᵀ W ΔF + λI)⁻¹ Xᵀ W f`` with ``X = ΔV`` (type I) or ``ΔF`` (type II),
    ``v⁺ = v + βf − (ΔV + βΔF) γ``, λ = ridge × the Gram's scale. ``W`` is the identity, or with
    ``blocks`` the weighted metric ``⟨a, b⟩ = Σ_k ⟨a_k, b_k⟩ ‖f‖²/(K‖f_k‖²)`` (``f`` the current
    residual, ``k`` over the ``K`` blocks) as a dense diagonal, not per-block Gram matrices."""
    dvs: list[Tensor] = []
    dfs: list[Tensor] = []
    prev: tuple[Tensor, Tensor] | None = None
    out = []
    for v, gv in pairs:
        f = gv - v
        if prev is not None:
            dvs = [*dvs, v - prev[0]][-memory:]
            dfs = [*dfs, f - prev[1]][-memory:]
        prev = (v, f)
        plain = v + beta * f
        if not dvs:
            out.append(plain)
            continue
        if blocks is None:
            w = torch.ones_like(f)
        else:
            total = (f * f).sum(1, keepdim=True)
            w = torch.cat([(total / (len(blocks) * (p * p).sum(1, keepdim=True))).expand(-1, p.shape[1])
                           for p in f.split(blocks, 1)], 1)
        dv, df = torch.stack(dvs, 1), torch.stack(dfs, 1)  # (B, n, N), oldest first
        left = dv if type_one else df
        gram = torch.einsum("bin,bn,bjn->bij", left, w, df)
        rhs = torch.einsum("bin,bn,bn->bi", left, w, f)
        dv_sq = torch.einsum("bin,bn,bin->bi", dv, w, dv).mean(1)
        df_sq = torch.einsum("bin,bn,bin->bi", df, w, df).mean(1)
        scale = torch.sqrt(dv_sq * df_sq) if type_one else df_sq
        lam = ridge * scale + torch.finfo(DT).tiny
        gamma = torch.linalg.solve(gram + lam.view(-1, 1, 1) * torch.eye(gram.shape[1], dtype=DT), rhs)
        out.append(plain - torch.einsum("bm,bmn->bn", gamma, dv + beta * df))
    return out


@pytest.mark.parametrize("graph", [False, True], ids=["no-graph", "graph"])
@pytest.mark.parametrize("beta", [1.0, 0.7])
@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_anderson_update_matches_einsum_reference(cls: type, beta: float, graph: bool) -> None:
    """Every proposal, over a run that wraps the ring buffer three times, equals the plain
    formula to rounding (relative 1e-12), in the in-place (no-graph) and autograd paths."""
    b, n, memory = 3, 64, 4
    pairs = _history_pairs(3 * memory + 2, b, n, seed=21)
    if graph:
        pairs = [(v.clone().requires_grad_(), gv) for v, gv in pairs]
    ref = _reference_anderson(pairs, type_one=cls is AndersonI, memory=memory, beta=beta, ridge=1e-8)
    acc = cls(memory=memory, beta=beta)
    _assert_replays(acc, acc.init(torch.zeros(b, n, dtype=DT)), pairs, ref, graph, 1e-12)


def _assert_replays(acc: Any, state: Any, pairs: list[tuple[Tensor, Tensor]], ref: list[Tensor], graph: bool,
                    tol: float) -> None:
    """Feed ``pairs`` to ``acc.update`` from ``state``: every proposal equals ``ref`` to ``tol``
    (relative), on the autograd path exactly when ``graph``."""
    active = torch.ones(pairs[0][0].shape[0], dtype=torch.bool)
    with torch.set_grad_enabled(graph):
        for k, ((v, gv), expected) in enumerate(zip(pairs, ref, strict=True)):
            nxt, state = acc.update(state, v, gv, active)
            assert nxt.requires_grad == graph
            err = torch.linalg.vector_norm(nxt - expected, dim=1) / torch.linalg.vector_norm(expected, dim=1)
            assert bool((err <= tol).all()), (k, err)


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_anderson_graph_path_derivative_matches_finite_differences(cls: type) -> None:
    """The autograd (out-of-place) path differentiates the proposal correctly: ``gradcheck``
    compares it with central finite differences through a wrapped ring buffer."""
    b, n, memory = 2, 5, 3
    gen = _gen(22)
    a = spectral_matrices(b, n, 0.6, gen)
    c = torch.randn(b, n, dtype=DT, generator=gen).requires_grad_()

    def proposals(c: Tensor) -> Tensor:
        acc = cls(memory=memory, beta=0.8)
        state = acc.init(torch.zeros(b, n, dtype=DT))
        v = torch.zeros(b, n, dtype=DT)
        for _ in range(2 * memory + 1):
            gv = torch.tanh(torch.einsum("bij,bj->bi", a, v) + c)
            v, state = acc.update(state, v, gv, torch.ones(b, dtype=torch.bool))
        return v

    with torch.enable_grad():
        assert torch.autograd.gradcheck(proposals, (c,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_anderson_graph_path_with_an_idle_sample_matches_finite_differences(cls: type) -> None:
    """A sample that sits still (the driver's frozen samples: the same ``(v, G(v))`` every
    step) fills its history with zeros; the unrolled derivative of the whole batch must stay
    finite and exact (``gradcheck`` against central differences), also through the blocked
    code path (one block: its weight is exactly 1, so the derivative is the plain one)."""
    b, n, memory = 2, 6, 3
    gen = _gen(25)
    a = spectral_matrices(b, n, 0.6, gen)
    c = torch.randn(b, n, dtype=DT, generator=gen).requires_grad_()
    still = torch.tensor([True, False]).unsqueeze(1)

    def proposals(c: Tensor, blocks: tuple[int, ...] | None) -> Tensor:
        acc = cls(memory=memory, beta=0.8)
        v = torch.zeros(b, n, dtype=DT)
        state = acc.init(v) if blocks is None else acc.init_blocks(v, blocks)
        for _ in range(3 * memory):
            gv = torch.tanh(torch.einsum("bij,bj->bi", a, v) + c)
            v, state = acc.update(state, v, gv, torch.ones(b, dtype=torch.bool))
            v = torch.where(still, torch.zeros_like(v), v)  # sample 0 stays at 0
        return v

    with torch.enable_grad():
        for blocks in (None, (n,)):
            assert torch.autograd.gradcheck(lambda c, blocks=blocks: proposals(c, blocks), (c,), eps=1e-6,
                                            atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("transpose", [False, True], ids=["H", "Ht"])
def test_broyden_low_rank_products_match_dense_matrix(transpose: bool) -> None:
    """``H x`` and ``Hᵀ x`` for ``H = −I + Σᵢ uᵢ vᵢᵀ`` (first ``count`` slots only; the other
    slots hold stale values that must be ignored) against the dense ``(B, N, N)`` matrix."""
    b, m, n, count = 3, 5, 7, 3
    gen = _gen(23)
    st = BroydenState(
        u=torch.randn(b, m, n, dtype=DT, generator=gen), vt=torch.randn(b, m, n, dtype=DT, generator=gen)
    )
    x = torch.randn(b, n, dtype=DT, generator=gen)
    dense = -torch.eye(n, dtype=DT) + torch.einsum("bki,bkj->bij", st.u[:, :count], st.vt[:, :count])
    if transpose:
        got, expected = Broyden._ht(st, x, count), torch.einsum("bji,bj->bi", dense, x)
    else:
        got, expected = Broyden._h(st, x, count), torch.einsum("bij,bj->bi", dense, x)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(Broyden._h(st, x, 0), -x, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["anderson1", "anderson2", "broyden"])
def test_no_graph_update_allocates_no_history_sized_temporary(name: str) -> None:
    """With the history full, one no-graph update allocates only ``(B, N)``-sized tensors (a
    few at most per op), never a ``(B, m, N)`` one like ``ΔV + βΔF``; measured with the
    profiler's per-op allocation sizes."""
    b, n, memory = 4, 3000, 8
    acc = {"anderson1": AndersonI, "anderson2": AndersonII, "broyden": Broyden}[name](memory=memory)
    pairs = _history_pairs(memory + 3, b, n, seed=24)
    state = acc.init(torch.zeros(b, n, dtype=DT))
    active = torch.ones(b, dtype=torch.bool)
    for v, gv in pairs[:-1]:
        _, state = acc.update(state, v, gv, active)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        acc.update(state, *pairs[-1], active)
    sizes = {e.name: 0 for e in prof.events()}
    for e in prof.events():
        sizes[e.name] = max(sizes[e.name], e.self_cpu_memory_usage)
    assert sizes and max(sizes.values()) > 0  # the profiler did record the allocations
    limit = b * (memory // 2) * n * 8  # half a history buffer
    assert max(sizes.values()) < limit, sizes


# --------------------------------------------------------------------------- block-balanced metric


@pytest.mark.parametrize("graph", [False, True], ids=["no-graph", "graph"])
@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_blocked_anderson_matches_weighted_einsum_reference(cls: type, graph: bool) -> None:
    """With a block layout, every proposal (over a run that wraps the ring buffer twice, with
    blocks of very different scales) equals the weighted-metric formula to rounding."""
    b, memory, blocks = 3, 4, (40, 20, 4)
    n = sum(blocks)
    pairs = _history_pairs(2 * memory + 3, b, n, seed=31)
    scale = torch.cat([torch.full((40,), 1.0), torch.full((20,), 1e-3), torch.full((4,), 30.0)]).to(DT)
    pairs = [(v * scale, gv * scale) for v, gv in pairs]
    if graph:
        pairs = [(v.clone().requires_grad_(), gv) for v, gv in pairs]
    ref = _reference_anderson(pairs, blocks=blocks, type_one=cls is AndersonI, memory=memory, beta=0.8,
                                       ridge=1e-8)
    acc = cls(memory=memory, beta=0.8)
    _assert_replays(acc, acc.init_blocks(torch.zeros(b, n, dtype=DT), blocks), pairs, ref, graph, 1e-11)


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_one_block_is_the_plain_method(cls: type) -> None:
    """A single block weighs the whole residual by one number, which cancels: the proposals
    equal the unblocked einsum reference."""
    b, n, memory = 2, 30, 3
    pairs = _history_pairs(2 * memory + 2, b, n, seed=32)
    ref = _reference_anderson(pairs, type_one=cls is AndersonI, memory=memory, beta=1.0, ridge=1e-8)
    acc = cls(memory=memory)
    state = acc.init_blocks(torch.zeros(b, n, dtype=DT), (n,))
    for (v, gv), expected in zip(pairs, ref, strict=True):
        nxt, state = acc.update(state, v, gv, torch.ones(b, dtype=torch.bool))
        torch.testing.assert_close(nxt, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_balanced_metric_is_invariant_to_the_units_of_each_block(cls: type) -> None:
    """Rescaling one block of the state (``u = D v``, the map conjugated by ``D``) rescales the
    iterates and nothing else: the solve in ``u`` visits ``D`` times the points of the solve in
    ``v``. Without the block layout it does not (the check is not vacuous)."""
    b, blocks = 3, (12, 12, 3)
    n = sum(blocks)
    problem = tanh_problem(b, n, seed=34, norm=0.8)
    d = torch.cat([torch.ones(12), torch.full((12,), 1e-3), torch.full((3,), 50.0)]).to(DT)

    def run(scale: Tensor, use_blocks: bool) -> list[Tensor]:
        acc = cls(memory=5)
        v = torch.zeros(b, n, dtype=DT)
        state = acc.init_blocks(v, blocks) if use_blocks else acc.init(v)
        points = []
        for _ in range(12):
            gv = problem.apply(v / scale) * scale
            v, state = acc.update(state, v, gv, torch.ones(b, dtype=torch.bool))
            points.append(v / scale)
        return points

    one = torch.ones(n, dtype=DT)
    for p, q in zip(run(one, True), run(d, True), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)
    gap = max(float((p - q).abs().max()) for p, q in zip(run(one, False), run(d, False), strict=True))
    assert gap > 1e-4


@pytest.mark.parametrize("cls", [AndersonI, AndersonII])
def test_balance_until_switches_to_the_euclidean_metric(cls: type) -> None:
    """``balance_until = u``: updates 1..u use the block-balanced metric, later ones the plain
    one, on the same history (each proposal equals the matching einsum reference)."""
    b, memory, blocks, until = 2, 3, (10, 6, 2), 4
    n = sum(blocks)
    pairs = _history_pairs(2 * memory + 4, b, n, seed=35)
    scale = torch.cat([torch.ones(10), torch.full((6,), 1e-2), torch.full((2,), 20.0)]).to(DT)
    pairs = [(v * scale, gv * scale) for v, gv in pairs]
    kw = dict(type_one=cls is AndersonI, memory=memory, beta=1.0, ridge=1e-8)
    blocked = _reference_anderson(pairs, blocks=blocks, **kw)
    plain = _reference_anderson(pairs, **kw)
    acc = cls(memory=memory, balance_until=until)
    state = acc.init_blocks(torch.zeros(b, n, dtype=DT), blocks)
    gaps = []
    for i, (v, gv) in enumerate(pairs):
        nxt, state = acc.update(state, v, gv, torch.ones(b, dtype=torch.bool))
        torch.testing.assert_close(nxt, blocked[i] if i <= until else plain[i], rtol=1e-10, atol=1e-11)
        gaps.append(float((blocked[i] - plain[i]).abs().max()))
    assert max(gaps[1:]) > 1e-6  # the two metrics do differ here


def test_bad_block_layout_is_named() -> None:
    with pytest.raises(ValueError, match="summing to the state width 10"):
        AndersonI(memory=3).init_blocks(torch.zeros(2, 10, dtype=DT), (4, 5))
    with pytest.raises(ValueError, match="positive ints"):
        Picard().init_blocks(torch.zeros(2, 10, dtype=DT), (10, 0))


def test_vanishing_block_residual_is_floored() -> None:
    """``‖f‖²/(K‖f_k‖²)`` per block, and a block whose residual is exactly zero gets the finite
    weight ``1/(K·eps)`` instead of a division by zero."""
    from jiio_core.accelerators import balanced_weights

    f = torch.tensor([[3.0, 4.0, 0.0, 0.0, 1.0]], dtype=DT)
    w = balanced_weights(f, (2, 2, 1))
    eps = torch.finfo(DT).eps
    torch.testing.assert_close(w, torch.tensor([[26 / 75.0, 1 / (3 * eps), 26 / 3.0]], dtype=DT))

"""DEQSolver on plain functions and Layers: equilibrium, implicit gradient, evaluation counts.

References are independent of the solver: a long plain (Picard) iteration for the equilibrium,
autograd through that long unrolled iteration and central finite differences for the gradient,
and counters inside ``f`` (calls) and inside its backward (vector-Jacobian products) for the
reported evaluation counts.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from jiio_core import SGD, AndersonI, Broyden, DEQSolver, Picard, Status, optimize_input
from jiio_core.accelerators import Accelerator

from .toy import MarkGraph, QuadraticLoss, Sentinel, TanhLayer

DT = torch.float64
B, NZ, NX = 3, 6, 4
RHO = 0.7  # ‖W‖₂: f is a 0.7-contraction in z (tanh is 1-Lipschitz)


class _CountVJP(torch.autograd.Function):
    """Identity whose backward counts the vector-Jacobian products taken through it."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, counter: list[int]) -> Tensor:
        ctx.counter = counter
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        ctx.counter[0] += 1
        return g, None


class Cell:
    """``f(z, x) = tanh(W z + U x + b)``, a plain callable counting its calls and VJPs."""

    def __init__(self, seed: int = 0, rho: float = RHO) -> None:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(NZ, NZ, dtype=DT, generator=g)
        self.W = (rho * w / torch.linalg.matrix_norm(w, 2)).requires_grad_()
        self.U = torch.randn(NZ, NX, dtype=DT, generator=g) / NX**0.5
        self.b = 0.1 * torch.randn(NZ, dtype=DT, generator=g)
        self.calls = 0
        self.vjps = [0]

    def __call__(self, z: Any, x: Tensor) -> Tensor:
        self.calls += 1
        out = torch.tanh(z @ self.W.T + x @ self.U.T + self.b)
        return _CountVJP.apply(out, self.vjps)  # type: ignore[no-any-return]

    def picard(self, x: Tensor, iters: int = 400) -> Tensor:
        """Plain iteration from 0: 0.7**400 ~ 1e-62, exact to rounding (differentiable)."""
        z = torch.zeros(x.shape[0], NZ, dtype=DT)
        for _ in range(iters):
            z = torch.tanh(z @ self.W.T + x @ self.U.T + self.b)
        return z


def _x(seed: int = 1) -> Tensor:
    return torch.randn(B, NX, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _tight(**kw: Any) -> DEQSolver:
    base: dict[str, Any] = {"max_iter": 100, "tol": 1e-13, "backward_max_iter": 100, "backward_tol": 1e-13}
    return DEQSolver(**{**base, **kw})


# --------------------------------------------------------------------------- equilibrium


@pytest.mark.parametrize(
    "acc", [AndersonI(memory=5), Broyden(memory=20), Picard()], ids=["anderson1", "broyden", "picard"]
)
def test_plain_callable_reaches_the_long_iteration_fixed_point(acc: Accelerator[Any]) -> None:
    cell, x = Cell(), _x()
    with torch.no_grad():
        sol = _tight(accelerator=acc, max_iter=300).solve(cell, x, z_shape=(NZ,))
        ref = cell.picard(x)
    assert sol.status.tolist() == [Status.CONVERGED] * B
    assert isinstance(sol.z, Tensor) and sol.z.shape == (B, NZ)
    # ‖z − z*‖ ≤ residual / (1 − ρ)
    torch.testing.assert_close(sol.z, ref, rtol=0, atol=1e-12 / (1 - RHO))
    # the reported residual is the one of the returned (best) iterate
    with torch.no_grad():
        true_res = torch.linalg.vector_norm(cell(sol.z, x) - sol.z, dim=1)
    torch.testing.assert_close(sol.residual, true_res, rtol=1e-6, atol=1e-15)


def test_layer_and_equivalent_callable_agree() -> None:
    layer, x = TanhLayer(NZ, NX, rho=RHO, seed=3), _x()
    deq = _tight()
    with torch.no_grad():
        from_layer = deq.solve(layer, x)  # init_state: zeros
        from_fn = deq.solve(lambda z, xx: layer(z, xx), x, torch.zeros(B, NZ, dtype=DT))
        ref = x.new_zeros(B, NZ)
        for _ in range(400):
            ref = layer(ref, x)
    torch.testing.assert_close(from_layer.z, ref, rtol=0, atol=1e-11)
    torch.testing.assert_close(from_fn.z, from_layer.z, rtol=0, atol=0)
    assert from_fn.evaluations == from_layer.evaluations


# --------------------------------------------------------------------------- gradient


def test_implicit_gradient_matches_unrolled_autograd_and_finite_differences() -> None:
    cell = Cell()
    x = _x().requires_grad_()
    w = torch.randn(B, NZ, dtype=DT, generator=torch.Generator().manual_seed(2))
    sol = _tight().solve(cell, x, z_shape=(NZ,))
    assert sol.z.requires_grad
    gx, gw = torch.autograd.grad((w * sol.z).sum(), (x, cell.W))
    assert sol.backward.status is not None and sol.backward.status.tolist() == [Status.CONVERGED] * B

    # autograd through 400 plain iterations (the derivative iteration contracts like 0.7**k)
    rx, rw = torch.autograd.grad((w * cell.picard(x)).sum(), (x, cell.W))
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-10)
    torch.testing.assert_close(gw, rw, rtol=0, atol=1e-10)

    # central differences of the long iteration in x (truncation O(h²) ~ 1e-10)
    h = 1e-5
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(B):
            for j in range(NX):
                e = torch.zeros_like(x)
                e[i, j] = h
                fd[i, j] = ((w * cell.picard(x + e)).sum() - (w * cell.picard(x - e)).sum()) / (2 * h)
    torch.testing.assert_close(gx, fd, rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("check_every", [1, 3, 7])
def test_forward_evaluation_count_follows_the_stopping_rule(check_every: int) -> None:
    cell, x = Cell(), _x()
    deq = DEQSolver(accelerator=AndersonI(memory=5), max_iter=200, tol=1e-10, check_every=check_every)
    with torch.no_grad():
        sol = deq.solve(cell, x, z_shape=(NZ,))
    assert sol.status.tolist() == [Status.CONVERGED] * B
    assert sol.evaluations == cell.calls  # each evaluation is one call of f on the batch
    assert sol.graph_evaluations == 0 and sol.f_evaluations == cell.calls  # no autograd
    last = int(sol.iterations.max())
    # the driver tests for stopping after every check_every-th evaluation
    assert sol.evaluations == math.ceil(last / check_every) * check_every
    assert sol.evaluations < last + check_every
    assert bool((sol.iterations >= 1).all()) and bool((sol.iterations <= sol.evaluations).all())
    assert sol.backward.evaluations == 0 and sol.vjp_evaluations == 0


def test_check_every_does_not_change_the_answer() -> None:
    cell, x = Cell(), _x()
    sols = {}
    with torch.no_grad():
        for k in (1, 7):
            sols[k] = DEQSolver(accelerator=AndersonI(memory=5), max_iter=200, tol=1e-10,
                                check_every=k).solve(cell, x, z_shape=(NZ,))
    a, b = sols[1], sols[7]
    assert a.status.tolist() == b.status.tolist() == [Status.CONVERGED] * B
    # samples freeze as soon as they converge, whatever the stopping-test period
    assert a.iterations.tolist() == b.iterations.tolist()
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=1e-14)
    torch.testing.assert_close(a.residual, b.residual, rtol=0, atol=1e-15)
    assert a.evaluations == int(a.iterations.max())
    assert b.evaluations == 7 * math.ceil(int(b.iterations.max()) / 7)


@pytest.mark.parametrize("check_every", [1, 4, 7])
def test_zero_tolerance_spends_exactly_max_iter(check_every: int) -> None:
    cell, x = Cell(), _x()
    with torch.no_grad():
        sol = DEQSolver(max_iter=13, tol=0.0, check_every=check_every).solve(cell, x, z_shape=(NZ,))
    assert cell.calls == 13 and sol.evaluations == 13
    assert sol.iterations.tolist() == [13] * B
    assert sol.status.tolist() == [Status.MAX_ITER] * B


def test_backward_vjp_counts_match_counted_products() -> None:
    cell = Cell()
    x = _x().requires_grad_()
    sol = DEQSolver(max_iter=100, tol=1e-10, backward_max_iter=100, backward_tol=1e-10).solve(
        cell, x, z_shape=(NZ,)
    )
    # forward solve + one differentiable evaluation at z*
    assert sol.graph_evaluations == 1 and cell.calls == sol.evaluations + 1 == sol.f_evaluations
    assert cell.vjps[0] == 0 and sol.vjp_evaluations == 0  # nothing until autograd runs
    torch.autograd.grad(sol.z.sum(), x)
    st = sol.backward
    assert st.calls == 1 and st.status is not None and st.status.tolist() == [Status.CONVERGED] * B
    # the backward solve's products, plus one carrying the adjoint on to x (and θ)
    assert cell.vjps[0] == sol.vjp_evaluations == sol.backward_evaluations + 1
    assert st.iterations is not None and st.total_iterations is not None
    assert st.total_iterations.tolist() == st.iterations.tolist()
    assert 1 <= int(st.iterations.max()) <= sol.backward_evaluations
    # a second backward pass (retained graph) adds up
    first = sol.backward_evaluations
    sol2 = DEQSolver(max_iter=100, tol=1e-10, backward_max_iter=100, backward_tol=1e-10).solve(
        cell, x, z_shape=(NZ,)
    )
    cell.vjps[0] = 0
    loss = sol2.z.sum()
    torch.autograd.grad(loss, x, retain_graph=True)
    torch.autograd.grad(loss, x)
    assert sol2.backward.calls == 2
    assert cell.vjps[0] == sol2.vjp_evaluations == sol2.backward_evaluations + 2
    assert sol2.backward_evaluations == 2 * first  # same solve twice
    assert sol2.backward.total_iterations is not None
    assert sol2.backward.total_iterations.tolist() == (2 * st.iterations).tolist()


def test_optimize_input_reports_total_f_and_vjp_evaluations() -> None:
    cell = Cell()
    loss = QuadraticLoss(NZ, 5, lam=0.1)
    y = 0.3 * torch.randn(B, 5, dtype=DT, generator=torch.Generator().manual_seed(5))
    x0 = torch.zeros(B, NX, dtype=DT)
    deq = DEQSolver(max_iter=100, tol=1e-9, backward_max_iter=100, backward_tol=1e-9, check_every=3)
    steps = 4
    res = optimize_input(cell, loss, y, x0, SGD(lr=0.2), steps, deq=deq, z_shape=(NZ,))
    assert res.f_evaluations == cell.calls
    assert res.vjp_evaluations == cell.vjps[0]
    # per sample: at most the batch counts, at least one evaluation per solve
    assert bool((res.forward_iterations <= res.f_evaluations).all())
    assert bool((res.forward_iterations >= steps + 1).all())
    assert bool((res.backward_iterations <= res.vjp_evaluations - steps).all())
    assert bool((res.backward_iterations >= steps).all())
    # progress was made and the returned loss is the best one seen
    assert bool((res.loss <= res.trace[0]).all()) and bool((res.loss < res.trace[0]).any())


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "5", None])
def test_bad_check_every_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"DEQSolver\.check_every must be an int >= 1, got") as err:
        DEQSolver(check_every=bad)
    assert repr(bad) in str(err.value)


def test_plain_callable_needs_an_initial_state() -> None:
    cell, x = Cell(), _x()
    with pytest.raises(ValueError, match=r"z0 .* or z_shape"):
        DEQSolver().solve(cell, x)
    with pytest.raises(TypeError, match=r"f must be a jiio_core\.Layer or a callable"):
        DEQSolver().solve(42, x)  # type: ignore[arg-type]
    for bad_shape in [(), (0,), (NZ, 1.5), [NZ]]:
        with pytest.raises(ValueError, match="z_shape must be a non-empty tuple of ints"):
            DEQSolver().solve(cell, x, z_shape=bad_shape)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="z0 must have batch size 3"):
        DEQSolver().solve(cell, x, torch.zeros(B + 1, NZ, dtype=DT))
    with pytest.raises(ValueError, match="does not match z0"):
        DEQSolver().solve(cell, x, torch.zeros(B, NZ, dtype=DT), z_shape=(NZ + 1,))
    with pytest.raises(ValueError, match=r"z_shape=\(6,\) given with a Layer"):
        DEQSolver().solve(TanhLayer(NZ, NX), x, z_shape=(NZ,))
    # a function that does not keep the state's shape is caught by the state packing
    with pytest.raises(ValueError, match=r"state part 0 has shape \(3, 6\), expected \(B, 2, 3\)"):
        DEQSolver().solve(lambda z, xx: cell(z.reshape(B, NZ), xx), x, z_shape=(2, 3))


# --------------------------------------------------------------------------- memory


def test_the_solve_graph_is_freed_by_reference_counting_alone() -> None:
    """Once the solution is dropped, every tensor the layer produced is freed, with the garbage
    collector off: the implicit backward's hook (which refers to the graph's output for its
    vector-Jacobian products) forms no reference cycle through autograd's graph. Such a cycle
    is invisible to Python's collector and kept a whole graph per solve in memory for good."""
    import gc
    import weakref

    made: list[weakref.ref[Sentinel]] = []
    inner = TanhLayer(NZ, NX, rho=0.7, seed=3)

    def f(z: Tensor, x: Tensor) -> Tensor:
        out: Tensor = MarkGraph.apply(inner(z, x), made)
        return out

    x = _x().requires_grad_()
    gc.collect()
    gc.disable()
    try:
        sol = _tight().solve(f, x, z_shape=(NZ,))
        sol.z.pow(2).sum().backward()
        assert x.grad is not None and sol.backward.vjp_evaluations > 0
        del sol
        alive = sum(r() is not None for r in made)
    finally:
        gc.enable()
    assert made and alive == 0, f"{alive} of {len(made)} graph nodes of the layer still alive after the solution was dropped"

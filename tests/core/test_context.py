"""Per-batch context as an argument (jiio_core.context): each solve hands its own context to the
layer and the objective, forward and backward, and leaves nothing behind.

References: two fresh problems (deep copies) each solving one context; central finite
differences in float64 for the θ-gradient of every outer-gradient strategy; a layer that
declares no context, unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jiio_core import (
    SGD,
    AdjointShortcut,
    AndersonII,
    Damping,
    DEQSolver,
    FixedInput,
    ImplicitKKT,
    InnerObjective,
    JointProblem,
    Layer,
    LowestResidual,
    OuterGradient,
    Relation,
    Unrolled,
    accepts_context,
    hutchinson_jacobian_norm,
    optimize_input,
)
from tests.core.toy import DT, ContextLoss, ContextTanhLayer, QuadraticLoss, TanhLayer, directional_fd

NZ, NX, NC, NY, B = 6, 3, 4, 5, 3


def _problem(layer: Layer, loss: InnerObjective, outer: OuterGradient | None = None) -> JointProblem:
    return JointProblem(
        layer,
        loss,
        None,
        AndersonII(memory=20),
        Damping(z=1.0, mu=1.0, x=0.3),
        AdjointShortcut() if outer is None else outer,
        max_iter=600,
        tol=1e-13,
        x_shape=(NX,),
        selection=LowestResidual(),
    )


def _contexts(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(B, NC, generator=g, dtype=DT), 0.5 * torch.randn(B, NC, generator=g, dtype=DT)


def _targets(seed: int = 5) -> Tensor:
    return 0.5 * torch.randn(B, NY, generator=torch.Generator().manual_seed(seed), dtype=DT)


PIECES = {
    "both": lambda: (ContextTanhLayer(NZ, NX, NC, seed=1), ContextLoss(NZ, NY, NC, lam=0.3, seed=2)),
    "layer only": lambda: (ContextTanhLayer(NZ, NX, NC, seed=1), QuadraticLoss(NZ, NY, lam=0.3, seed=2)),
    "objective only": lambda: (TanhLayer(NZ, NX, seed=1), ContextLoss(NZ, NY, NC, lam=0.3, seed=2)),
}


def _attributes(*modules: nn.Module) -> list[dict[str, Any]]:
    return [{k: v for k, v in vars(m).items() if not k.startswith("_")} for mod in modules for m in mod.modules()]


# --------------------------------------------------------------------------- (a) no state leaks


@pytest.mark.parametrize("pieces", sorted(PIECES))
def test_context_a_then_b_equals_two_fresh_problems(pieces: str) -> None:
    layer, loss = PIECES[pieces]()
    fresh_a = _problem(*copy.deepcopy((layer, loss)))
    fresh_b = _problem(*copy.deepcopy((layer, loss)))
    problem = _problem(layer, loss)
    ca, cb = _contexts()
    y = _targets()
    before = _attributes(layer, loss)
    with torch.no_grad():
        sol_a = problem.solve(y, context=ca)
        sol_b = problem.solve(y, context=cb)
        ref_a = fresh_a.solve(y, context=ca)
        ref_b = fresh_b.solve(y, context=cb)
    assert sol_a.converged.all() and sol_b.converged.all()
    for got, ref in ((sol_a, ref_a), (sol_b, ref_b)):
        for name in ("x", "z", "mu", "loss", "kkt_residual", "iterations"):
            assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert float((sol_a.x - sol_b.x).abs().max()) > 1e-3  # the context matters
    # the same for the fixed-input re-solve, the plain DEQ solve and the penalty
    with torch.no_grad():
        eq_a = problem.equilibrium(y, sol_a.x, context=ca, tol=1e-13)
        eq_b = problem.equilibrium(y, sol_b.x, context=cb, tol=1e-13)
        eq_ref = fresh_b.equilibrium(y, sol_b.x, context=cb, tol=1e-13)
    assert torch.equal(eq_b.loss, eq_ref.loss) and not torch.equal(eq_a.loss, eq_b.loss)
    torch.testing.assert_close(eq_a.loss, sol_a.loss, rtol=1e-9, atol=1e-12)
    if layer.takes_context:
        deq = DEQSolver(max_iter=200, tol=1e-12)
        with torch.no_grad():
            za = deq.solve(layer, sol_a.x, context=ca).z
            zb = deq.solve(layer, sol_b.x, context=cb).z
            zb_ref = deq.solve(fresh_b.layer, sol_b.x, context=cb).z
        assert torch.equal(zb, zb_ref)
        torch.testing.assert_close(za, sol_a.z, rtol=1e-9, atol=1e-11)
        g = torch.Generator().manual_seed(3)
        pa = hutchinson_jacobian_norm(layer, za, sol_a.x, context=ca, generator=g)
        pa_ref = hutchinson_jacobian_norm(fresh_a.layer, za, sol_a.x, context=ca,
                                          generator=torch.Generator().manual_seed(3))
        assert torch.equal(pa, pa_ref)
    # nothing was set on the modules
    after = _attributes(layer, loss)
    assert [set(d) for d in after] == [set(d) for d in before]
    assert not any(isinstance(v, Tensor) and v.shape == ca.shape for d in after for v in d.values())


@pytest.mark.parametrize(
    "outer",
    [AdjointShortcut(), ImplicitKKT(tol=1e-12, max_iter=400), FixedInput(tol=1e-12, max_iter=400), Unrolled()],
    ids=["shortcut", "kkt", "fixed-input", "unrolled"],
)
def test_backward_of_a_solve_uses_its_own_context_after_another_solve(outer: OuterGradient) -> None:
    """Solve with A, solve with B, then backpropagate A: the gradient is fresh A's."""
    layer, loss = PIECES["both"]()
    fresh = _problem(*copy.deepcopy((layer, loss)), outer=outer)
    problem = _problem(layer, loss, outer)
    ca, cb = _contexts(1)
    y = _targets(6)

    def outer_loss(sol: Any) -> Tensor:
        out: Tensor = sol.loss.sum() + (sol.z**2).sum()
        return out

    sol_a = problem.solve(y, context=ca)
    sol_b = problem.solve(y, context=cb)
    grads_a = torch.autograd.grad(outer_loss(sol_a), list(problem.parameters()))
    grads_b = torch.autograd.grad(outer_loss(sol_b), list(problem.parameters()))
    ref_a = torch.autograd.grad(outer_loss(fresh.solve(y, context=ca)), list(fresh.parameters()))
    for g, r in zip(grads_a, ref_a, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    assert max(float((g - o).abs().max()) for g, o in zip(grads_a, grads_b, strict=True)) > 1e-3


# --------------------------------------------------------------------------- (b) θ-gradients


def _check(params: list[nn.Parameter], grads: list[Tensor], fn: Callable[[], float], rtol: float = 1e-6) -> None:
    g = torch.Generator().manual_seed(123)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=DT) for p in params]
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction, strict=True))
        numeric = float(directional_fd(params, direction, fn))
        assert abs(analytic - numeric) <= rtol * max(1.0, abs(numeric)), (analytic, numeric)


def _grads(params: list[nn.Parameter], value: Tensor) -> list[Tensor]:
    gs = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


@pytest.mark.parametrize(
    "outer",
    [AdjointShortcut(), ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()],
    ids=["shortcut", "kkt", "unrolled"],
)
def test_same_loss_gradient_with_context_matches_finite_differences(outer: OuterGradient) -> None:
    layer, loss = PIECES["both"]()
    ca, _ = _contexts(2)
    y = _targets(7)
    params = [*layer.parameters(), *loss.parameters()]  # V and G read the context
    sol = _problem(layer, loss, outer).solve(y, context=ca)
    assert sol.converged.all(), sol.summary()
    grads = _grads(params, sol.loss.sum())
    assert float(grads[2].abs().max()) > 1e-3 and float(grads[-1].abs().max()) > 1e-3  # V, G

    def solved_loss() -> float:
        with torch.no_grad():
            return float(_problem(layer, loss).solve(y, context=ca).loss.sum())

    _check(params, grads, solved_loss)


@pytest.mark.parametrize("outer", [ImplicitKKT(tol=1e-12, max_iter=400), Unrolled()], ids=["kkt", "unrolled"])
def test_other_outer_loss_gradient_with_context_matches_finite_differences(outer: OuterGradient) -> None:
    layer = ContextTanhLayer(NZ, NX, NC, seed=3)
    loss = ContextLoss(NZ, NY, NC, lam=0.3, seed=4, relation=Relation.OTHER)
    ca, _ = _contexts(3)
    y = _targets(8)
    weights = torch.arange(1, NX + 1, dtype=DT)

    def other(sol: Any) -> Tensor:
        out: Tensor = (sol.z**2).sum() + (weights * sol.x**2).sum()
        return out

    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, outer).solve(y, context=ca)
    assert sol.converged.all(), sol.summary()
    grads = _grads(params, other(sol))

    def solved() -> float:
        with torch.no_grad():
            return float(other(_problem(layer, loss, Unrolled()).solve(y, context=ca)))

    _check(params, grads, solved, rtol=1e-5)


def test_fixed_input_gradient_with_context_matches_finite_differences_at_fixed_x() -> None:
    layer = ContextTanhLayer(NZ, NX, NC, seed=5)
    loss = ContextLoss(NZ, NY, NC, lam=0.3, seed=6, relation=Relation.OTHER)
    ca, _ = _contexts(4)
    y = _targets(9)
    params = [*layer.parameters(), *loss.parameters()]
    sol = _problem(layer, loss, FixedInput(tol=1e-12, max_iter=400)).solve(y, context=ca)
    x_star = sol.x.detach()
    grads = _grads(params, (sol.z**2).sum() + loss(sol.z, x_star, y, ca).sum())

    def at_fixed_x() -> float:
        with torch.no_grad():
            zz = layer.init_state(x_star)
            for _ in range(400):
                zz = layer(zz, x_star, ca)
            return float((zz**2).sum() + loss(zz, x_star, y, ca).sum())

    _check(params, grads, at_fixed_x)


def test_deq_solver_gradient_with_context_matches_finite_differences() -> None:
    layer = ContextTanhLayer(NZ, NX, NC, seed=7)
    ca, _ = _contexts(5)
    x = torch.randn(B, NX, generator=torch.Generator().manual_seed(1), dtype=DT)
    deq = DEQSolver(max_iter=300, tol=1e-13, backward_max_iter=300, backward_tol=1e-13)
    params = list(layer.parameters())
    grads = _grads(params, (deq.solve(layer, x, context=ca).z ** 3).sum())

    def value() -> float:
        with torch.no_grad():
            return float((deq.solve(layer, x, context=ca).z ** 3).sum())

    _check(params, grads, value)


# --------------------------------------------------------------------------- (c) errors, plain pieces


class NeedsContext(TanhLayer):
    """A layer whose ``forward`` cannot run without a context (no default)."""

    def forward(self, z: Any, x: Tensor, context: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(z, x + context)


def test_a_layer_needing_a_context_called_without_one_says_what_is_missing() -> None:
    layer = NeedsContext(NZ, NX)
    x = torch.zeros(B, NX, dtype=DT)
    z = layer.init_state(x)
    msg = r"NeedsContext\.forward requires a context .* but none was given: pass this batch's context"
    with pytest.raises(TypeError, match=msg):
        layer(z, x)
    with pytest.raises(TypeError, match=msg):
        _problem(layer, QuadraticLoss(NZ, NY)).solve(_targets())
    with pytest.raises(TypeError, match=msg):
        DEQSolver().solve(layer, x)
    torch.testing.assert_close(layer(z, x, x), TanhLayer(NZ, NX)(z, 2 * x))


def test_a_context_nobody_reads_is_refused() -> None:
    layer, loss = TanhLayer(NZ, NX), QuadraticLoss(NZ, NY)
    ca, _ = _contexts()
    with pytest.raises(TypeError, match=r"JointProblem got a context \(Tensor\), but neither TanhLayer nor "
                                        r"QuadraticLoss takes one: declare a `context` parameter"):
        _problem(layer, loss).solve(_targets(), context=ca)
    with pytest.raises(TypeError, match=r"neither TanhLayer nor QuadraticLoss takes one"):
        _problem(layer, loss).equilibrium(_targets(), torch.zeros(B, NX, dtype=DT), context=ca)
    with pytest.raises(TypeError, match=r"DEQSolver\.solve got a context \(Tensor\), but TanhLayer\.forward "
                                        r"takes none"):
        DEQSolver().solve(layer, torch.zeros(B, NX, dtype=DT), context=ca)
    with pytest.raises(TypeError, match=r"optimize_input got a context"):
        optimize_input(layer, loss, _targets(), torch.zeros(B, NX, dtype=DT), SGD(lr=0.1), 1, context=ca)


def test_pieces_without_context_are_called_unchanged() -> None:
    layer = TanhLayer(NZ, NX)
    loss = QuadraticLoss(NZ, NY)
    assert not layer.takes_context and not loss.takes_context
    assert ContextTanhLayer(NZ, NX, NC).takes_context and ContextLoss(NZ, NY, NC).takes_context
    x = torch.randn(B, NX, dtype=DT)
    z = torch.randn(B, NZ, dtype=DT)
    ca, _ = _contexts()
    # handed on only to a piece that declares it (one problem may pair a reader with a non-reader)
    assert torch.equal(layer(z, x, ca), layer(z, x))
    assert torch.equal(loss(z, x, _targets(), ca), loss(z, x, _targets()))
    with torch.no_grad():
        plain = _problem(layer, loss).solve(_targets())
        also = _problem(layer, ContextLoss(NZ, NY, NC, seed=1)).solve(_targets())  # no context: G c = 0
    assert plain.converged.all() and also.converged.all()


def test_plain_functions_and_init_state_receive_the_context() -> None:
    w = 0.5 * torch.eye(NZ, dtype=DT)

    def cell(z: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        assert context is not None
        return torch.tanh(z @ w + context)

    def plain(z: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(z @ w)

    assert accepts_context(cell) and not accepts_context(plain)
    c = 0.3 * torch.randn(B, NZ, dtype=DT)
    with torch.no_grad():
        z = DEQSolver(max_iter=200, tol=1e-12).solve(cell, torch.zeros(B, 1, dtype=DT), context=c, z_shape=(NZ,)).z
    torch.testing.assert_close(z, torch.tanh(z @ w + c), rtol=1e-10, atol=1e-10)

    class StartsAtContext(TanhLayer):
        def init_state(self, x: Tensor, context: Tensor | None = None) -> Tensor:
            return super().init_state(x) if context is None else context

    layer = StartsAtContext(NZ, NX)
    x = torch.zeros(B, NX, dtype=DT)
    assert torch.equal(layer.initial_state(x, c), c)
    assert torch.equal(layer.initial_state(x), torch.zeros(B, NZ, dtype=DT))
    with torch.no_grad():  # the problem's init: z0 = c, and ContextLoss reads the same context
        sol = _problem(layer, ContextLoss(NZ, NY, NZ, seed=3), None).solve(_targets(), context=c)
    assert sol.converged.all()


def test_optimize_input_hands_the_context_to_both_pieces() -> None:
    layer, loss = PIECES["both"]()
    ca, cb = _contexts(6)
    y = _targets(10)
    x0 = torch.zeros(B, NX, dtype=DT)
    deq = DEQSolver(max_iter=100, tol=1e-12, backward_max_iter=100, backward_tol=1e-12)
    res_a = optimize_input(layer, loss, y, x0, SGD(lr=0.2), 5, deq=deq, context=ca)
    optimize_input(layer, loss, y, x0, SGD(lr=0.2), 5, deq=deq, context=cb)
    again = optimize_input(layer, loss, y, x0, SGD(lr=0.2), 5, deq=deq, context=ca)
    assert torch.equal(res_a.x, again.x)
    # its losses are the problem's at that context
    with torch.no_grad():
        eq = _problem(layer, loss).equilibrium(y, res_a.x, context=ca, tol=1e-13)
    torch.testing.assert_close(eq.loss, res_a.loss, rtol=1e-8, atol=1e-10)

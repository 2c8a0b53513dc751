"""Hutchinson estimate of ``‖∂f/∂z‖_F² / N`` against the exact Jacobian from
``torch.autograd.functional.jacobian``, its θ-gradient against finite differences, and the
penalty returned by ``JointProblem.solve``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jiio_core import InnerObjective, JacobianPenalty, JointProblem, Layer, hutchinson_jacobian_norm
from jiio_core.state import State

DT = torch.float64
NZ, NX = 4, 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batched solves are dominated by OpenMP wake-ups otherwise
    try:
        yield
    finally:
        torch.set_num_threads(n)


class TanhLayer(Layer):
    """``f(z, x) = tanh(W z + U x + b)``: ``J_z = diag(1 − f²) W``."""

    def __init__(self, scale: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(scale * torch.randn(NZ, NZ, dtype=DT, generator=gen))
        self.u = nn.Parameter(torch.randn(NZ, NX, dtype=DT, generator=gen))
        self.b = nn.Parameter(0.1 * torch.randn(NZ, dtype=DT, generator=gen))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        return torch.tanh(z @ self.w.T + x @ self.u.T + self.b)

    def init_state(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], NZ, dtype=x.dtype)


class TwoScale(Layer):
    """A tuple state ``(a (B, 2, 2), b (B, 3))`` coupled across the parts."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(0.4 * torch.randn(7, 7, dtype=DT, generator=gen))
        self.u = nn.Parameter(torch.randn(7, NX, dtype=DT, generator=gen))

    def forward(self, z: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = z
        flat = torch.cat([a.reshape(a.shape[0], -1), b], dim=1)
        out = torch.tanh(flat @ self.w.T + x @ self.u.T)
        return out[:, :4].reshape(-1, 2, 2), out[:, 4:]

    def init_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(x.shape[0], 2, 2, dtype=x.dtype), torch.zeros(x.shape[0], 3, dtype=x.dtype)


def exact_norm(layer: Layer, z: State, x: Tensor) -> Tensor:
    """Per-sample ``‖J_z‖_F² / N`` from the full Jacobian of the sample's own map."""
    parts = z if isinstance(z, tuple) else (z,)
    out = []
    for i in range(x.shape[0]):
        sizes = [p[i].numel() for p in parts]
        shapes = [p.shape[1:] for p in parts]

        def f_i(flat: Tensor, i: int = i, sizes: list[int] = sizes, shapes: list[Any] = shapes) -> Tensor:
            chunks = torch.split(flat, sizes)
            zz = tuple(c.reshape(1, *s) for c, s in zip(chunks, shapes, strict=True))
            res = layer(zz if isinstance(z, tuple) else zz[0], x[i : i + 1])
            res_parts = res if isinstance(res, tuple) else (res,)
            return torch.cat([r.reshape(-1) for r in res_parts])

        flat = torch.cat([p[i].reshape(-1) for p in parts])
        jac = torch.autograd.functional.jacobian(f_i, flat, create_graph=True)
        out.append((jac**2).sum() / flat.numel())
    return torch.stack(out)


def _data(b: int = 3, seed: int = 5) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, NZ, dtype=DT, generator=gen), torch.randn(b, NX, dtype=DT, generator=gen)


def _many(state: State, x: Tensor, reps: int) -> tuple[State, Tensor]:
    """The batch repeated ``reps`` times: every copy gets its own probes (samples are
    independent), so one call with ``probes=p`` averages ``reps · p`` probes per sample."""
    if isinstance(state, tuple):
        return tuple(s.repeat(reps, *([1] * (s.ndim - 1))) for s in state), x.repeat(reps, 1)
    return state.repeat(reps, 1), x.repeat(reps, 1)


def test_estimate_is_unbiased_against_the_exact_jacobian() -> None:
    layer = TanhLayer()
    z, x = _data()
    exact = exact_norm(layer, z, x).detach()
    gen = torch.Generator().manual_seed(0)
    assert hutchinson_jacobian_norm(layer, z, x, probes=2, generator=gen).shape == (3,)
    est = hutchinson_jacobian_norm(layer, *_many(z, x, 1000), probes=8, generator=gen)
    est = est.detach().view(1000, 3).mean(0)
    # relative std ≤ sqrt(2 / 8000) ≈ 1.6 %; allow 5 %
    torch.testing.assert_close(est, exact, rtol=0.05, atol=0)
    # and it is not the unnormalised ‖J‖_F²
    assert bool(((est - exact * NZ).abs() > 0.5 * exact * NZ).all())


def test_single_probe_average_over_calls_converges() -> None:
    layer = TanhLayer(scale=1.0, seed=3)
    z, x = _data(b=2, seed=6)
    exact = exact_norm(layer, z, x).detach()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        mean = torch.stack(
            [hutchinson_jacobian_norm(layer, z, x, probes=1, generator=gen) for _ in range(1500)]
        )
    assert not mean.requires_grad
    torch.testing.assert_close(mean.mean(0), exact, rtol=0.1, atol=0)  # ≤ 3.7 % std


def test_tuple_state() -> None:
    layer = TwoScale()
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(2, 2, 2, dtype=DT, generator=gen), torch.randn(2, 3, dtype=DT, generator=gen))
    x = torch.randn(2, NX, dtype=DT, generator=gen)
    exact = exact_norm(layer, z, x).detach()
    gen = torch.Generator().manual_seed(3)
    est = hutchinson_jacobian_norm(layer, *_many(z, x, 1000), probes=8, generator=gen)
    torch.testing.assert_close(est.detach().view(1000, 2).mean(0), exact, rtol=0.05, atol=0)


def test_gradient_in_theta_matches_finite_differences_for_fixed_probes() -> None:
    """With a fixed generator seed the estimate is a deterministic smooth function of θ."""
    layer = TanhLayer()
    z, x = _data()

    def estimate() -> Tensor:
        gen = torch.Generator().manual_seed(11)
        return hutchinson_jacobian_norm(layer, z, x, probes=3, generator=gen).sum()

    value = estimate()
    assert value.requires_grad
    grads = torch.autograd.grad(value, [layer.w, layer.u, layer.b])
    h = 1e-6
    for param, grad in zip([layer.w, layer.u, layer.b], grads, strict=True):
        fd = torch.zeros_like(param)
        with torch.no_grad():
            for idx in range(param.numel()):
                flat = param.view(-1)
                old = flat[idx].item()
                flat[idx] = old + h
                up = estimate()
                flat[idx] = old - h
                down = estimate()
                flat[idx] = old
                fd.view(-1)[idx] = (up - down) / (2 * h)
        torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


def test_gradient_in_expectation_matches_exact_frobenius_gradient() -> None:
    layer = TanhLayer()
    z, x = _data()
    gen = torch.Generator().manual_seed(4)
    est = hutchinson_jacobian_norm(layer, *_many(z, x, 1000), probes=8, generator=gen)
    (g_est,) = torch.autograd.grad(est.sum() / 1000, layer.w)
    (g_exact,) = torch.autograd.grad(exact_norm(layer, z, x).sum(), layer.w)
    rel = torch.linalg.norm(g_est - g_exact) / torch.linalg.norm(g_exact)
    assert rel < 0.08, rel


def test_z_and_x_are_constants_and_graph_follows_grad_mode() -> None:
    layer = TanhLayer()
    z, x = _data()
    z.requires_grad_()
    x.requires_grad_()
    est = hutchinson_jacobian_norm(layer, z, x, probes=2)
    gz, gx = torch.autograd.grad(est.sum(), [z, x], allow_unused=True)
    assert gz is None and gx is None
    with torch.no_grad():
        est = hutchinson_jacobian_norm(layer, z, x, probes=2)
    assert not est.requires_grad
    est = hutchinson_jacobian_norm(layer, z, x, probes=2, create_graph=False)
    assert not est.requires_grad


# --------------------------------------------------------------------------- JointProblem


class Match(InnerObjective):
    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        return ((z - y) ** 2).sum(1)


class LinearLayer(Layer):
    """``f(z, x) = W z + U x``: ``‖J_z‖_F² / N = ‖W‖_F² / N`` at every iterate."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        w = torch.randn(NZ, NZ, dtype=DT, generator=gen)
        self.w = nn.Parameter(0.5 * w / torch.linalg.matrix_norm(w, ord=2))
        self.u = nn.Parameter(torch.randn(NZ, NX, dtype=DT, generator=gen))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        return z @ self.w.T + x @ self.u.T

    def init_state(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], NZ, dtype=x.dtype)


def test_joint_problem_returns_a_differentiable_penalty() -> None:
    b = 4
    problem = JointProblem(
        TanhLayer(), Match(), max_iter=20, x_shape=(NX,), jacobian_penalty=JacobianPenalty(probes=2, start=3)
    )
    y = 0.3 * torch.randn(b, NZ, dtype=DT, generator=torch.Generator().manual_seed(8))
    sol = problem.solve(y, generator=torch.Generator().manual_seed(9))
    pen = sol.jacobian_penalty
    assert pen is not None and pen.shape == (b,)
    assert bool(torch.isfinite(pen).all()) and bool((pen > 0).all())
    assert pen.requires_grad
    grads = torch.autograd.grad(pen.sum(), list(problem.layer.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)
    # the same generator seed reproduces the penalty
    again = problem.solve(y, generator=torch.Generator().manual_seed(9)).jacobian_penalty
    assert again is not None
    torch.testing.assert_close(again.detach(), pen.detach(), rtol=0, atol=0)
    # no penalty requested: none returned
    assert JointProblem(TanhLayer(), Match(), max_iter=5, x_shape=(NX,)).solve(y).jacobian_penalty is None


def test_joint_problem_penalty_value_and_gradient_for_a_linear_layer() -> None:
    b = 64
    problem = JointProblem(
        LinearLayer(),
        Match(),
        max_iter=12,
        x_shape=(NX,),
        jacobian_penalty=JacobianPenalty(probes=2, start=2),
    )
    y = torch.randn(b, NZ, dtype=DT, generator=torch.Generator().manual_seed(10))
    pen = problem.solve(y, generator=torch.Generator().manual_seed(12)).jacobian_penalty
    assert pen is not None
    w = problem.layer.w
    expected = float((w.detach() ** 2).sum() / NZ)
    assert abs(float(pen.detach().mean()) - expected) < 0.15 * expected
    gw, gu = torch.autograd.grad(pen.mean(), [w, problem.layer.u], allow_unused=True)
    # J_z does not depend on U; its θ-gradient is E[2 εεᵀ W]/N ≈ 2W/N
    assert gu is None or float(gu.abs().max()) == 0.0
    rel = torch.linalg.norm(gw - 2 * w.detach() / NZ) / torch.linalg.norm(2 * w.detach() / NZ)
    assert rel < 0.3, rel


@pytest.mark.parametrize(("max_iter", "start"), [(5, 10), (100, 60)])
def test_joint_problem_penalty_when_no_iterate_reaches_start(max_iter: int, start: int) -> None:
    """The budget ends (or every sample converges) before ``start``: the penalty is taken at
    the returned iterate instead of being dropped."""
    b = 3
    problem = JointProblem(
        LinearLayer(),
        Match(),
        max_iter=max_iter,
        tol=1e-6,
        x_shape=(NX,),
        jacobian_penalty=JacobianPenalty(probes=2, start=start),
    )
    y = torch.randn(b, NZ, dtype=DT, generator=torch.Generator().manual_seed(13))
    sol = problem.solve(y)
    assert int(sol.iterations.max()) < start
    assert sol.jacobian_penalty is not None and sol.jacobian_penalty.shape == (b,)
    assert sol.jacobian_penalty.requires_grad

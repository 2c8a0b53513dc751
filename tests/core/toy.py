"""Small problems with known structure, shared by the core tests (float64)."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from jiio_core import InnerObjective, Layer, Relation

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LinearLayer(Layer):
    """``f(z, x) = W z + U x + b`` with ``‖W‖₂ = rho``: ``z*(x) = (I − W)⁻¹ (U x + b)``."""

    def __init__(self, nz: int, nx: int, rho: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        w = torch.randn(nz, nz, generator=g, dtype=DT)
        self.W = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(nz, nx, generator=g, dtype=DT) / nx**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(nz, generator=g, dtype=DT))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        out: Tensor = z @ self.W.T + x @ self.U.T + self.b
        return out

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.W.shape[0])

    def affine(self) -> tuple[Tensor, Tensor]:
        """``z*(x) = A x + c``."""
        eye = torch.eye(self.W.shape[0], dtype=DT)
        with torch.no_grad():
            a = torch.linalg.solve(eye - self.W, self.U)
            c = torch.linalg.solve(eye - self.W, self.b)
        return a, c


class TanhLayer(Layer):
    """``f(z, x) = tanh(W z + U x + b)``, a contraction in ``z`` for ``rho < 1``."""

    def __init__(self, nz: int, nx: int, rho: float = 0.6, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        w = torch.randn(nz, nz, generator=g, dtype=DT)
        self.W = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(nz, nx, generator=g, dtype=DT) / nx**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(nz, generator=g, dtype=DT))

    def forward(self, z: Any, x: Tensor) -> Tensor:
        out: Tensor = torch.tanh(z @ self.W.T + x @ self.U.T + self.b)
        return out

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.W.shape[0])


class TwoScaleLayer(Layer):
    """A tuple-state layer (two 'resolutions' coupled both ways), to exercise state packing."""

    def __init__(self, n1: int, n2: int, nx: int, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)

        def mat(r: int, c: int, scale: float) -> nn.Parameter:
            m = torch.randn(r, c, generator=g, dtype=DT)
            return nn.Parameter(scale * m / torch.linalg.matrix_norm(m, 2))

        self.A11, self.A12 = mat(n1, n1, 0.4), mat(n1, n2, 0.2)
        self.A21, self.A22 = mat(n2, n1, 0.2), mat(n2, n2, 0.4)
        self.U1, self.U2 = mat(n1, nx, 1.0), mat(n2, nx, 1.0)
        self.n1, self.n2 = n1, n2

    def forward(self, z: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        z1, z2 = z
        flat2 = z2.reshape(z2.shape[0], -1)
        a = torch.tanh(z1 @ self.A11.T + flat2 @ self.A12.T + x @ self.U1.T)
        b = torch.tanh(z1 @ self.A21.T + flat2 @ self.A22.T + x @ self.U2.T)
        return a, b.reshape_as(z2)

    def init_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Second part is 2-D per sample, ``(B, 2, n2 // 2)``."""
        return x.new_zeros(x.shape[0], self.n1), x.new_zeros(x.shape[0], 2, self.n2 // 2)


class QuadraticLoss(InnerObjective):
    """``ℓ = ½‖H z − y‖² + ½ λ‖x‖²`` with a trainable head ``H``."""

    def __init__(self, nz: int, ny: int, lam: float = 0.1, seed: int = 1, relation: Relation = Relation.SAME):
        super().__init__()
        self.H = nn.Parameter(torch.randn(ny, nz, generator=_gen(seed), dtype=DT) / nz**0.5)
        self.lam = lam
        self.relation = relation

    def forward(self, z: Any, x: Tensor, y: Any) -> Tensor:
        if isinstance(z, tuple):
            z = torch.cat([p.reshape(p.shape[0], -1) for p in z], dim=1)
        out: Tensor = 0.5 * ((z @ self.H.T - y) ** 2).sum(1) + 0.5 * self.lam * (x**2).sum(1)
        return out


class ContextTanhLayer(Layer):
    """``f(z, x; c) = tanh(W z + U x + V c + b)``: a per-batch context ``c`` ``(B, nc)`` read
    through a trainable ``V``; without a context, ``c = 0``."""

    def __init__(self, nz: int, nx: int, nc: int, rho: float = 0.6, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        w = torch.randn(nz, nz, generator=g, dtype=DT)
        self.W = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(nz, nx, generator=g, dtype=DT) / nx**0.5)
        self.V = nn.Parameter(torch.randn(nz, nc, generator=g, dtype=DT) / nc**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(nz, generator=g, dtype=DT))

    def forward(self, z: Any, x: Tensor, context: Tensor | None = None) -> Tensor:
        pre = z @ self.W.T + x @ self.U.T + self.b
        if context is not None:
            pre = pre + context @ self.V.T
        out: Tensor = torch.tanh(pre)
        return out

    def init_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.W.shape[0])


class ContextLoss(QuadraticLoss):
    """``ℓ = ½‖H z − y − G c‖² + ½ λ‖x‖²``: the context ``c`` shifts the target through a
    trainable ``G``."""

    def __init__(self, nz: int, ny: int, nc: int, lam: float = 0.1, seed: int = 1,
                 relation: Relation = Relation.SAME) -> None:
        super().__init__(nz, ny, lam, seed, relation)
        self.G = nn.Parameter(torch.randn(ny, nc, generator=_gen(seed + 100), dtype=DT) / nc**0.5)

    def forward(self, z: Any, x: Tensor, y: Any, context: Tensor | None = None) -> Tensor:
        return super().forward(z, x, y if context is None else y + context @ self.G.T)


def closed_form_x(layer: LinearLayer, loss: QuadraticLoss, y: Tensor) -> Tensor:
    """Unconstrained minimiser of the linear-quadratic problem."""
    a, c = layer.affine()
    with torch.no_grad():
        m = loss.H @ a
        lhs = m.T @ m + loss.lam * torch.eye(a.shape[1], dtype=DT)
        rhs = (y - c @ loss.H.T) @ m
        return torch.linalg.solve(lhs, rhs.T).T


def ball_constrained_x(layer: LinearLayer, loss: QuadraticLoss, y: Tensor, radius: float) -> Tensor:
    """Minimiser over ``‖x‖ ≤ radius``: the trust-region subproblem, solved by bisection on the
    multiplier ``ν`` of ``(MᵀM + (λ+ν) I) x = Mᵀ(y − Hc)``."""
    a, c = layer.affine()
    out = []
    with torch.no_grad():
        m = loss.H @ a
        q = m.T @ m
        eye = torch.eye(a.shape[1], dtype=DT)
        for yi in y:
            r = (yi - loss.H @ c) @ m

            def x_of(nu: float, r: Tensor = r) -> Tensor:
                return torch.linalg.solve(q + (loss.lam + nu) * eye, r)

            x = x_of(0.0)
            if torch.linalg.vector_norm(x) > radius:
                lo, hi = 0.0, 1.0
                while torch.linalg.vector_norm(x_of(hi)) > radius:
                    hi *= 2
                for _ in range(200):
                    mid = 0.5 * (lo + hi)
                    if torch.linalg.vector_norm(x_of(mid)) > radius:
                        lo = mid
                    else:
                        hi = mid
                x = x_of(hi)
            out.append(x)
    return torch.stack(out)


def directional_fd(params: list[nn.Parameter], direction: list[Tensor], fn: Any, eps: float = 1e-5) -> Any:
    """Central difference ``(J(θ + εd) − J(θ − εd)) / 2ε`` of ``fn() -> J`` (a float or a tensor)
    along ``direction``, with the parameters restored afterwards."""
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
        plus = fn()
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * eps * d)
        minus = fn()
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
    return (plus - minus) / (2 * eps)


class Sentinel:
    """A weak-referenceable marker."""


class MarkGraph(torch.autograd.Function):
    """Identity that leaves a [`Sentinel`][tests.core.toy.Sentinel] on its autograd node and a weak
    reference to it in ``made``: the sentinel lives exactly as long as the graph node does (under
    ``no_grad`` no node is kept, and the sentinel dies at once), so a live one after the outputs
    are dropped means that a graph was leaked."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, made: list[Any]) -> Tensor:
        ctx.sentinel = Sentinel()
        made.append(weakref.ref(ctx.sentinel))
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None

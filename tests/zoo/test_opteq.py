"""OptEq-style layer: its fixed point is the minimiser of the explicit energy, with and without
a prior term (checked against direct minimisation and closed forms)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_core.layer import Layer
from jiio_zoo.opteq import CallablePrior, OptEqLayer, QuadraticPrior

ACTIVATIONS = ("relu", "hardtanh", "identity")
N, D, B = 12, 5, 4


def _layer(activation: str = "relu", seed: int = 0, gain: float = 0.9) -> OptEqLayer:
    torch.manual_seed(seed)
    layer = OptEqLayer(N, D, activation=activation, max_gain=gain).double()  # type: ignore[arg-type]
    with torch.no_grad():  # a bias pushing some coordinates against the constraints
        layer.inp.bias.mul_(4.0)
    return layer.requires_grad_(False)  # gradients below are taken w.r.t. z only


def _x(seed: int = 1) -> Tensor:
    return 2.0 * torch.randn(B, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _iterate(layer: OptEqLayer, x: Tensor, iters: int = 3000) -> Tensor:
    """The equilibrium by plain iteration of the layer, to float64 precision."""
    with torch.no_grad():
        z = layer.init_state(x)
        for _ in range(iters):
            new = layer(z, x)
            if float((new - z).abs().max()) < 1e-15:
                return new
            z = new
    return z


def _own_projection(activation: str, z: Tensor) -> Tensor:
    if activation == "relu":
        return z.clamp_min(0.0)
    if activation == "hardtanh":
        return z.clamp(-1.0, 1.0)
    return z


def _minimise(layer: OptEqLayer, x: Tensor, lipschitz: float, steps: int = 4000) -> Tensor:
    """Direct minimisation of ``layer.energy``: projected gradient descent with autograd
    gradients of the energy (not the layer's own formula) and step ``1/L``."""
    z = torch.zeros(B, N, dtype=torch.float64)
    step = 1.0 / lipschitz
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(layer.energy(z, x).sum(), z)
        z_new = _own_projection(layer.activation, z.detach() - step * g)
        if float((z_new - z.detach()).abs().max()) < 1e-15:
            return z_new
        z = z_new
    return z.detach()


def test_is_a_layer_with_vector_state() -> None:
    layer = _layer()
    assert isinstance(layer, Layer)
    x = _x()
    z0 = layer.init_state(x)
    assert z0.shape == (B, N) and bool((z0 == 0).all())
    assert layer(z0, x).shape == (B, N)
    assert layer.energy(z0, x).shape == (B,)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_weight_is_symmetric_with_bounded_gain(scale: float) -> None:
    layer = _layer(gain=0.7)
    with torch.no_grad():
        layer.raw.mul_(scale)
    w = layer.weight()
    torch.testing.assert_close(w, w.T)
    s = 0.5 * (layer.raw + layer.raw.T).detach()
    spec = float(torch.linalg.eigvalsh(s).abs().max())
    assert layer.gain() == pytest.approx(0.7 * spec / (1 + spec), rel=1e-10)
    assert layer.gain() < 0.7


def test_energy_gradient_matches_autograd() -> None:
    layer = _layer("identity")
    layer.set_prior(QuadraticPrior(0.3, torch.randn(N, dtype=torch.float64)))
    x = _x()
    z = torch.randn(B, N, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(layer.energy(z, x).sum(), z)
    torch.testing.assert_close(layer.smooth_gradient(z, x), g)


@torch.no_grad()
def test_energy_is_infinite_outside_the_set() -> None:
    layer = _layer("relu")
    z = torch.ones(B, N, dtype=torch.float64)
    z[0, 3] = -0.5
    e = layer.energy(z, _x())
    assert math.isinf(float(e[0])) and bool(torch.isfinite(e[1:]).all())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fixed_point_is_the_energy_minimiser(activation: str) -> None:
    layer = _layer(activation)
    x = _x()
    z_star = _iterate(layer, x)
    # A fixed point ...
    torch.testing.assert_close(layer(z_star, x), z_star, rtol=0, atol=1e-12)
    # ... satisfies the optimality (KKT) conditions of the convex problem ...
    assert float(layer.stationarity(z_star, x).max()) < 1e-12
    if activation == "relu":  # gradient 0 on the support, >= 0 where the constraint binds
        g = layer.smooth_gradient(z_star, x)
        free = z_star > 1e-12
        assert bool(free.any()) and bool((~free).any())  # both cases exercised
        assert float(g[free].abs().max()) < 1e-10
        assert float(g[~free].min()) > -1e-10
    # ... has the lowest energy among random feasible perturbations ...
    with torch.no_grad():
        e_star = layer.energy(z_star, x)
        gen = torch.Generator().manual_seed(9)
        for scale in (1e-3, 1e-1, 1.0):
            for _ in range(20):
                other = _own_projection(activation, z_star + scale * torch.randn(B, N, generator=gen, dtype=torch.float64))
                assert bool((layer.energy(other, x) >= e_star - 1e-12).all())
    # ... and equals a direct minimisation of the energy.
    z_min = _minimise(layer, x, lipschitz=1.0 + layer.gain())
    torch.testing.assert_close(z_star, z_min, rtol=0, atol=1e-9)
    if activation == "identity":  # closed form: (I − W) z = Ux + b
        eye = torch.eye(N, dtype=torch.float64)
        closed = torch.linalg.solve(eye - layer.weight(), layer.inp(x).T).T
        torch.testing.assert_close(z_star, closed.detach(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layer_is_a_contraction_with_the_stated_bound(activation: str) -> None:
    layer = _layer(activation)
    layer.set_prior(QuadraticPrior(0.5))
    bound = layer.contraction_bound()
    assert bound < 1.0
    x = _x()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(20):
            a = 3 * torch.randn(B, N, generator=gen, dtype=torch.float64)
            b = 3 * torch.randn(B, N, generator=gen, dtype=torch.float64)
            ratio = (layer(a, x) - layer(b, x)).norm(dim=1) / (a - b).norm(dim=1)
            assert bool((ratio <= bound + 1e-12).all())


def test_quadratic_prior_identity_matches_closed_form() -> None:
    layer = _layer("identity")
    x = _x()
    rho = 0.7
    center = torch.randn(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    layer.set_prior(QuadraticPrior(rho, center))
    z = _iterate(layer, x)
    # Minimiser of ½zᵀ(I−W)z − cᵀz + ρ/2‖z − z_p‖²: ((1+ρ)I − W) z = c + ρ z_p.
    eye = torch.eye(N, dtype=torch.float64)
    rhs = (layer.inp(x) + rho * center).T
    closed = torch.linalg.solve((1 + rho) * eye - layer.weight(), rhs).T
    torch.testing.assert_close(z, closed.detach(), rtol=0, atol=1e-10)


def test_quadratic_prior_moves_the_relu_equilibrium_as_predicted() -> None:
    layer = _layer("relu")
    x = _x()
    z_old = _iterate(layer, x)
    center = torch.rand(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) + 0.5
    prior = QuadraticPrior(2.0, center)
    layer.set_prior(prior)
    z_new = _iterate(layer, x)
    # Stationary for the modified energy, equal to its direct minimisation ...
    assert float(layer.stationarity(z_new, x).max()) < 1e-12
    z_min = _minimise(layer, x, lipschitz=1.0 + layer.gain() + prior.lipschitz)
    torch.testing.assert_close(z_new, z_min, rtol=0, atol=1e-9)
    # ... not stationary for it at the old equilibrium, and closer to the prior's centre.
    assert float(layer.stationarity(z_old, x).min()) > 1e-3
    assert bool(((z_new - center).norm(dim=1) < (z_old - center).norm(dim=1)).all())
    with torch.no_grad():
        assert bool((layer.energy(z_new, x) < layer.energy(z_old, x)).all())
    # Removing the prior restores the old equilibrium.
    layer.set_prior(None)
    torch.testing.assert_close(_iterate(layer, x), z_old, rtol=0, atol=1e-12)


def test_callable_prior_equals_quadratic_and_handles_nonquadratic() -> None:
    layer = _layer("relu")
    x = _x()
    center = torch.randn(N, dtype=torch.float64)
    layer.set_prior(QuadraticPrior(1.5, center))
    z_q = _iterate(layer, x)
    layer.set_prior(
        CallablePrior(
            value_fn=lambda z: 0.75 * (z - center).pow(2).sum(-1),
            grad_fn=lambda z: 1.5 * (z - center),
            lipschitz=1.5,
        )
    )
    torch.testing.assert_close(_iterate(layer, x), z_q, rtol=0, atol=1e-12)

    # P(z) = Σ softplus(3 − z): convex, ∇P = −sigmoid(3 − z), Lipschitz 1/4.
    soft = CallablePrior(
        value_fn=lambda z: F.softplus(3.0 - z).sum(-1),
        grad_fn=lambda z: -torch.sigmoid(3.0 - z),
        lipschitz=0.25,
    )
    layer.set_prior(soft)
    z_s = _iterate(layer, x)
    assert float(layer.stationarity(z_s, x).max()) < 1e-12
    torch.testing.assert_close(z_s, _minimise(layer, x, lipschitz=1.0 + layer.gain() + 0.25), rtol=0, atol=1e-9)


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"max_gain must be in \(0, 1\), got 1.0"):
        OptEqLayer(4, 2, max_gain=1.0)
    with pytest.raises(ValueError, match=r"activation must be 'relu', 'hardtanh' or 'identity'"):
        OptEqLayer(4, 2, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"QuadraticPrior.rho must be a finite number > 0"):
        QuadraticPrior(0.0)
    with pytest.raises(TypeError, match=r"prior must be a jiio_zoo.opteq.Prior"):
        OptEqLayer(4, 2).set_prior("l2")  # type: ignore[arg-type]
    layer = OptEqLayer(4, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(3, 2\)"):
        layer(torch.zeros(3, 4), torch.zeros(3, 5))

r"""An OptEq-style convex equilibrium layer (after Liu et al. 2021, "Optimization Induced
Equilibrium Networks"): its fixed point is the unique minimiser of an explicit energy.

The unit layer is a proximal-gradient step on

$$
E(z; x) = \tfrac12 z^\top (I - W) z - (Ux + b)^\top z + \iota_K(z) + P(z),
$$

with ``W`` symmetric and ``‖W‖₂ ≤ w < 1`` by construction, ``ι_K`` the indicator of a closed
convex set ``K`` (``relu``: ``z ≥ 0``; ``hardtanh``: ``-1 ≤ z ≤ 1``; ``identity``: all of
``ℝⁿ``), and ``P`` an optional convex prior with ``L_P``-Lipschitz gradient. The layer is

$$
f(z, x) = \Pi_K\big(z - t\,\nabla_z g(z; x)\big), \qquad
\nabla_z g = (I - W) z - (Ux + b) + \nabla P(z), \qquad t = 1 / (1 + L_P),
$$

which without a prior is ``f(z, x) = σ(Wz + Ux + b)`` with ``σ = Π_K`` the activation: the
proximal operator of ``ι_K``, as in OptEq's "unit layer". Why the fixed point is the minimiser:

- ``E`` is ``(1 − w)``-strongly convex (the Hessian of the smooth part is ``I − W + ∇²P ⪰
  (1 − w) I``; ``ι_K`` and ``P`` are convex), so it has exactly one minimiser ``z*``;
- ``z = Π_K(z − t∇g(z))`` ⇔ ``−∇g(z) ∈ N_K(z)`` ⇔ ``0 ∈ ∂E(z)`` ⇔ ``z = z*``;
- ``z ↦ z − t∇g(z)`` has Lipschitz constant ``max|1 − tλ|`` over the Hessian's spectrum
  ``λ ∈ [1 − w, 1 + w + L_P]``, i.e. at most ``(w + L_P)/(1 + L_P) < 1``, and ``Π_K`` is
  non-expansive, so plain iteration of the layer converges linearly to ``z*``
  ([`OptEqLayer.contraction_bound`][jiio_zoo.opteq.OptEqLayer.contraction_bound]).

The prior is the OptEq paper's "modify the underlying convex problem" knob: adding
``P(z) = ρ/2 ‖z − z_p‖²`` ([`QuadraticPrior`][jiio_zoo.opteq.QuadraticPrior]) moves the equilibrium to the minimiser of
``E + P``, e.g. for ``identity`` to ``((1 + ρ) I − W)⁻¹ (Ux + b + ρ z_p)``.

``W`` is parametrised as ``W = w · S / (1 + ‖S‖₂)`` with ``S = (A + Aᵀ)/2`` and ``A`` free, so
``‖W‖₂ = w‖S‖₂/(1 + ‖S‖₂) < w`` for every value of the parameters.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import attrs
import torch
from torch import Tensor, nn

from jiio_core.layer import Layer
from jiio_core.state import State

__all__ = ["CallablePrior", "OptEqLayer", "Prior", "QuadraticPrior"]

Activation = Literal["relu", "hardtanh", "identity"]


class Prior(ABC):
    """A convex, differentiable prior ``P(z)`` on the state (per sample), with the Lipschitz
    constant ``lipschitz`` of its gradient (used for the step size)."""

    lipschitz: float

    @abstractmethod
    def value(self, z: Tensor) -> Tensor:
        """``P(z)`` per sample, shape ``(B,)``."""

    @abstractmethod
    def grad(self, z: Tensor) -> Tensor:
        """``∇P(z)``, shape of ``z``."""


def _check_rho(_: object, a: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"QuadraticPrior.{a.name} must be a finite number > 0, got {value!r}")


@attrs.frozen(eq=False)
class QuadraticPrior(Prior):
    """``P(z) = ρ/2 ‖z − center‖²``; ``center`` is ``None`` (the origin), ``(n,)`` or ``(B, n)``."""

    rho: float = attrs.field(validator=_check_rho)
    center: Tensor | None = None

    @property
    def lipschitz(self) -> float:  # type: ignore[override]
        return float(self.rho)

    def _diff(self, z: Tensor) -> Tensor:
        if self.center is None:
            return z
        c = self.center.to(dtype=z.dtype, device=z.device)
        if c.shape[-1] != z.shape[-1] or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != z.shape[0]):
            raise ValueError(
                f"QuadraticPrior.center must have shape ({z.shape[-1]},) or "
                f"({z.shape[0]}, {z.shape[-1]}), got {tuple(c.shape)}"
            )
        return z - c

    def value(self, z: Tensor) -> Tensor:
        return 0.5 * self.rho * self._diff(z).pow(2).sum(dim=-1)

    def grad(self, z: Tensor) -> Tensor:
        return self.rho * self._diff(z)


@attrs.frozen(eq=False)
class CallablePrior(Prior):
    """A user prior from ``value_fn(z) -> (B,)`` and ``grad_fn(z) -> ∇P(z)``; the user vouches
    that ``P`` is convex with ``lipschitz``-Lipschitz gradient (not checkable here)."""

    value_fn: Callable[[Tensor], Tensor]
    grad_fn: Callable[[Tensor], Tensor]
    lipschitz: float = attrs.field(default=1.0)

    @lipschitz.validator
    def _check_l(self, a: attrs.Attribute[float], value: float) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"CallablePrior.lipschitz must be a finite number >= 0, got {value!r}")

    def value(self, z: Tensor) -> Tensor:
        return self.value_fn(z)

    def grad(self, z: Tensor) -> Tensor:
        return self.grad_fn(z)


class OptEqLayer(Layer):
    """Convex equilibrium layer on vectors: ``z ∈ ℝⁿ`` (``(B, n)``), ``x ∈ ℝᵈ`` (``(B, d)``).

    Args:
        state_dim: ``n``.
        input_dim: ``d``.
        activation: ``"relu"``, ``"hardtanh"`` or ``"identity"`` (the projection ``Π_K``).
        max_gain: ``w ∈ (0, 1)``, the bound on ``‖W‖₂`` (strong convexity ``≥ 1 − w``).
        prior: optional [`Prior`][jiio_zoo.opteq.Prior] added to the energy (see [`set_prior`][jiio_zoo.opteq.OptEqLayer.set_prior]).
    """

    def __init__(
        self,
        state_dim: int,
        input_dim: int,
        activation: Activation = "relu",
        max_gain: float = 0.9,
        prior: Prior | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("state_dim", state_dim), ("input_dim", input_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"OptEqLayer {name} must be an int >= 1, got {v!r}")
        if activation not in ("relu", "hardtanh", "identity"):
            raise ValueError(
                "OptEqLayer activation must be 'relu', 'hardtanh' or 'identity', "
                f"got {activation!r}"
            )
        if not isinstance(max_gain, (int, float)) or not 0.0 < max_gain < 1.0:
            raise ValueError(f"OptEqLayer max_gain must be in (0, 1), got {max_gain!r}")
        self.state_dim = state_dim
        self.input_dim = input_dim
        self.activation: Activation = activation
        self.max_gain = float(max_gain)
        self.raw = nn.Parameter(torch.randn(state_dim, state_dim) / math.sqrt(state_dim))
        self.inp = nn.Linear(input_dim, state_dim)
        self.prior: Prior | None = None
        self.set_prior(prior)

    # ---- parametrisation -------------------------------------------------------------

    def weight(self) -> Tensor:
        """The symmetric ``W = w · S/(1 + ‖S‖₂)``, ``S = (A + Aᵀ)/2``."""
        s = 0.5 * (self.raw + self.raw.T)
        spec: Tensor = torch.linalg.eigvalsh(s).abs().max()
        w: Tensor = self.max_gain * s / (1.0 + spec)
        return w

    def gain(self) -> float:
        """``‖W‖₂`` (< ``max_gain``)."""
        with torch.no_grad():
            return float(torch.linalg.eigvalsh(self.weight()).abs().max())

    def set_prior(self, prior: Prior | None) -> None:
        """Add (or with ``None`` remove) the prior term ``P`` of the energy."""
        if prior is not None and not isinstance(prior, Prior):
            raise TypeError(
                f"prior must be a jiio_zoo.opteq.Prior or None, got {type(prior).__name__}"
            )
        self.prior = prior

    @property
    def step_size(self) -> float:
        """``t = 1 / (1 + L_P)`` (1 without a prior)."""
        return 1.0 / (1.0 + (self.prior.lipschitz if self.prior is not None else 0.0))

    def contraction_bound(self) -> float:
        """Upper bound ``(‖W‖ + L_P)/(1 + L_P) < 1`` on the layer's Lipschitz constant in ``z``."""
        lp = self.prior.lipschitz if self.prior is not None else 0.0
        return (self.gain() + lp) / (1.0 + lp)

    # ---- the convex problem ----------------------------------------------------------

    def project(self, z: Tensor) -> Tensor:
        """``Π_K``: the activation."""
        if self.activation == "relu":
            return torch.relu(z)
        if self.activation == "hardtanh":
            return torch.clamp(z, -1.0, 1.0)
        return z

    def feasible(self, z: Tensor) -> Tensor:
        """Per-sample ``z ∈ K`` (up to a few ulps), shape ``(B,)``."""
        tol = 16 * torch.finfo(z.dtype).eps
        if self.activation == "relu":
            return (z >= -tol).all(dim=-1)
        if self.activation == "hardtanh":
            return (z.abs() <= 1.0 + tol).all(dim=-1)
        return torch.ones(z.shape[0], dtype=torch.bool, device=z.device)

    def _check(self, z: Tensor, x: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.state_dim:
            raise ValueError(
                f"OptEqLayer z must have shape (B, {self.state_dim}), got {tuple(z.shape)}"
            )
        if x.ndim != 2 or x.shape[1] != self.input_dim or x.shape[0] != z.shape[0]:
            raise ValueError(
                f"OptEqLayer x must have shape ({z.shape[0]}, {self.input_dim}), "
                f"got {tuple(x.shape)}"
            )

    def smooth_gradient(self, z: Tensor, x: Tensor) -> Tensor:
        """``∇_z`` of the smooth part: ``(I − W) z − (Ux + b) + ∇P(z)``."""
        self._check(z, x)
        g: Tensor = z - z @ self.weight() - self.inp(x)
        if self.prior is not None:
            g = g + self.prior.grad(z)
        return g

    def energy(self, z: Tensor, x: Tensor) -> Tensor:
        """``E(z; x)`` per sample ``(B,)``; ``+inf`` where ``z ∉ K``."""
        self._check(z, x)
        e = 0.5 * (z * (z - z @ self.weight())).sum(dim=-1) - (self.inp(x) * z).sum(dim=-1)
        if self.prior is not None:
            e = e + self.prior.value(z)
        return torch.where(self.feasible(z), e, torch.full_like(e, math.inf))

    def stationarity(self, z: Tensor, x: Tensor) -> Tensor:
        """Per-sample norm of the projected-gradient map ``z − Π_K(z − ∇g(z))``: zero exactly at
        the minimiser of ``E`` (the KKT conditions of the convex problem)."""
        r = z - self.project(z - self.smooth_gradient(z, x))
        out: Tensor = torch.linalg.vector_norm(r, dim=-1)
        return out

    # ---- Layer -----------------------------------------------------------------------

    def init_state(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], self.state_dim, dtype=x.dtype, device=x.device)

    def forward(self, z: State, x: Tensor) -> Tensor:
        if isinstance(z, tuple):
            if len(z) != 1:
                raise ValueError(f"OptEqLayer state is one (B, n) tensor, got a tuple of {len(z)}")
            z = z[0]
        self._check(z, x)
        pre: Tensor = z @ self.weight() + self.inp(x)
        if self.prior is not None:
            t = self.step_size
            pre = (1.0 - t) * z + t * (pre - self.prior.grad(z))
        return self.project(pre)

"""The augmented map ``v = (z, μ, x) ↦ G(v)`` of eq. 11 and its KKT residual (eq. 14).

Units. The objective declares ``s = loss_scale(y)``, the number of terms its per-sample loss
averages over; the x-step and the μ- and x-blocks of the residual are measured on the summed
loss ``s·ℓ`` (``μ`` itself stays the adjoint of ``ℓ``), so ``α_x`` means the same for a mean
and a sum. Each block of the residual is relative to its own size:

```
r_z = ‖f(z, x) − z‖ / max(1, ‖z‖)
r_μ = s‖J_zᵀμ + ∇_zℓ − μ‖ / max(1, s‖μ‖)
r_x = ‖x − Π_C(x − s(J_xᵀμ + ∇_xℓ))‖ / max(1, ‖x‖)
```

and the KKT residual is their maximum, so ``tol`` bounds all three.

With a non-smooth part ``g`` (the objective's [`InnerObjective.nonsmooth`][jiio_core.objective.InnerObjective.nonsmooth],
[`jiio_core.prox`][jiio_core.prox]) the x-step is a proximal-gradient step and ``r_x`` the proximal-gradient
mapping with unit step:

```
x⁺  = prox_{α_x g + ι_C}(x − α_x·s(J_xᵀμ + ∇_xℓ))
r_x = ‖x − prox_{g + ι_C}(x − s(J_xᵀμ + ∇_xℓ))‖ / max(1, ‖x‖)
```

and the cost is ``ℓ + g(x)/s``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core.constraint import Constraint
from jiio_core.damping import Damping
from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.prox import NonSmooth, composition_error
from jiio_core.solver import StepOutput
from jiio_core.state import State, StateSpec


@attrs.frozen(eq=False)
class Evaluation:
    """Everything one evaluation of the augmented map yields at ``v``."""

    value: Tensor  # G(v), (B, N)
    cost: Tensor  # ℓ(z, x, y) + g(x)/s, (B,)
    kkt: Tensor  # max(r_z, r_μ, r_x), (B,)
    blocks: Tensor  # (r_z, r_μ, r_x), (B, 3)


@attrs.frozen(eq=False)
class AugmentedMap:
    """Packs ``v = [z | μ | x]`` per sample and evaluates eq. 11.

    One backward pass of ``f`` and ``ℓ`` with ``μ`` as the output cotangent gives both
    ``∇_z ℓ + J_zᵀ μ`` and ``∇_x ℓ + J_xᵀ μ``.
    """

    layer: Layer
    objective: InnerObjective
    constraint: Constraint
    damping: Damping
    z_spec: StateSpec
    x_shape: tuple[int, ...]  # without batch
    normalized_x_step: bool = False
    loss_scale: Tensor | float = 1.0
    """``s``: the objective's [`InnerObjective.loss_scale`][jiio_core.objective.InnerObjective.loss_scale] for this batch."""
    equilibrium_tol: float = 1e-3
    """An iterate is at equilibrium when ``r_z ≤ equilibrium_tol`` (see [`step`][jiio_core.augmented.AugmentedMap.step])."""
    context: Any = None
    """This solve's per-batch context ([`jiio_core.context`][jiio_core.context]), handed to every evaluation of
    the layer and the objective ([`f`][jiio_core.augmented.AugmentedMap.f], [`loss`][jiio_core.augmented.AugmentedMap.loss]), also in the backward passes."""
    nonsmooth: NonSmooth | None = attrs.field(
        default=attrs.Factory(lambda self: self.objective.nonsmooth(), takes_self=True)
    )
    """``g``: the objective's [`InnerObjective.nonsmooth`][jiio_core.objective.InnerObjective.nonsmooth] (default),
    or ``None``; it must compose exactly with ``constraint`` ([`jiio_core.prox`][jiio_core.prox]), and the
    normalised x-step is not defined with it (both raise ``ValueError`` here)."""

    def __attrs_post_init__(self) -> None:
        g = self.nonsmooth
        if g is None:
            return
        if not isinstance(g, NonSmooth):
            raise TypeError(f"the non-smooth part must be a jiio_core.NonSmooth or None, got {type(g).__name__}")
        if not g.composes_with(self.constraint):
            raise ValueError(composition_error(g, self.constraint))
        if self.normalized_x_step:
            raise ValueError(
                f"normalized_x_step is not defined with a non-smooth part ({type(g).__name__}): "
                "a unit-length step has no proximal counterpart with the same fixed points at every "
                "length; use the plain x-step (x_step='gradient')"
            )

    BLOCKS = ("z", "mu", "x")

    @property
    def nz(self) -> int:
        return self.z_spec.numel

    @property
    def nx(self) -> int:
        n = 1
        for s in self.x_shape:
            n *= s
        return n

    def pack(self, z: State, mu: Tensor, x: Tensor) -> Tensor:
        return torch.cat([self.z_spec.pack(z), mu, x.reshape(x.shape[0], -1)], dim=1)

    def split(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        zf, mu, xf = torch.split(v, [self.nz, self.nz, self.nx], dim=1)
        return zf, mu, xf

    def unpack_x(self, xf: Tensor) -> Tensor:
        return xf.reshape(xf.shape[0], *self.x_shape)

    def prox_step(self, v: Tensor, step: Tensor | float) -> Tensor:
        """``prox_{step·g + ι_C}(v)``: ``Π_C(v)`` without a non-smooth part; with ``step = 0``
        the projection onto ``C ∩ dom g``, where the solve's returned ``x`` lies."""
        g = self.nonsmooth
        return self.constraint.project(v) if g is None else g.prox_onto(v, step, self.constraint)

    def f(self, z: State, x: Tensor) -> State:
        """``f_θ(z, x)`` with this solve's context."""
        return self.layer(z, x, self.context)

    def loss(self, z: State, x: Tensor, y: Any) -> Tensor:
        """``ℓ(z, x, y)`` per sample, with this solve's context."""
        return self.objective(z, x, y, self.context)

    def evaluate(
        self,
        v: Tensor,
        y: Any,
        k: int,
        *,
        create_graph: bool = False,
        normalized: bool | None = None,
        damping_iter: int | None = None,
    ) -> Evaluation:
        """``G(v)``, the per-sample cost and KKT residual at ``v``.

        With ``create_graph`` the result stays differentiable in ``v`` and ``θ`` (double
        backward); otherwise everything returned is detached.
        """
        normalized = self.normalized_x_step if normalized is None else normalized
        zf, mu, xf = self.split(v)
        with torch.enable_grad():
            if not create_graph:
                zf, mu, xf = zf.detach(), mu.detach(), xf.detach()
            if not zf.requires_grad:
                zf = zf.detach().requires_grad_()
            if not xf.requires_grad:
                xf = xf.detach().requires_grad_()
            z = self.z_spec.unpack(zf)
            x = self.unpack_x(xf)
            fz = self.z_spec.pack(self.f(z, x))
            cost = self.loss(z, x, y)
            if cost.shape != (v.shape[0],):
                raise ValueError(
                    f"{type(self.objective).__name__} must return a per-sample loss of shape "
                    f"({v.shape[0]},), got {tuple(cost.shape)}"
                )
            gz, gx = torch.autograd.grad(
                [cost.sum(), fz],
                [zf, xf],
                grad_outputs=[torch.ones((), dtype=cost.dtype, device=cost.device), mu],
                create_graph=create_graph,
                allow_unused=True,
            )
        if gz is None:
            gz = torch.zeros_like(zf)
        if gx is None:
            gx = torch.zeros_like(xf)
        if not create_graph:
            fz, cost, gz, gx = fz.detach(), cost.detach(), gz.detach(), gx.detach()
            zf, xf = zf.detach(), xf.detach()
        d = self.damping
        a_x = d.alpha_x(k if damping_iter is None else damping_iter)
        dz, dmu = fz - zf, gz - mu  # each used by the step and by its block's residual
        x = self.unpack_x(xf)
        s = self.loss_scale
        s_col = s.reshape(-1, 1) if isinstance(s, Tensor) else s
        gxs = self.unpack_x(gx * s_col)  # gradient of the summed loss s·ℓ
        if normalized:
            norm = torch.linalg.vector_norm(gx, dim=1).clamp(min=torch.finfo(gx.dtype).tiny)
            direction = self.unpack_x(gx / norm.unsqueeze(1))
        else:
            direction = gxs
        x_next = self.prox_step(x - a_x * direction, a_x)
        # KKT residual (eq. 14), each block relative to its own size; the projected-gradient
        # (with g: the proximal-gradient) mapping for x
        if self.nonsmooth is None and self.constraint.is_unconstrained:
            rx = gxs.reshape(xf.shape)
        else:
            rx = xf - self.prox_step(x - gxs, 1.0).reshape(xf.shape)
        s_b = s.reshape(-1) if isinstance(s, Tensor) else s
        if self.nonsmooth is not None:
            cost = cost + self.nonsmooth.value(x) / s_b
        norm = torch.linalg.vector_norm
        r_z = norm(dz, dim=1) / norm(zf, dim=1).clamp(min=1.0)
        r_mu = s_b * norm(dmu, dim=1) / (s_b * norm(mu, dim=1)).clamp(min=1.0)
        r_x = norm(rx, dim=1) / norm(xf, dim=1).clamp(min=1.0)
        blocks = torch.stack([r_z, r_mu, r_x], dim=1)
        if create_graph:
            value = torch.cat([zf + d.z * dz, mu + d.mu * dmu, x_next.reshape(xf.shape)], dim=1)
        else:  # the same sums written straight into G(v): no per-block temporaries, no concatenation
            value = torch.empty_like(v)
            vz, vmu, vx = self.split(value)
            torch.add(zf, dz.mul_(d.z), out=vz)
            torch.add(mu, dmu.mul_(d.mu), out=vmu)
            vx.copy_(x_next.reshape(xf.shape))
        return Evaluation(value=value, cost=cost, kkt=blocks.amax(dim=1), blocks=blocks)

    def step(self, y: Any, *, create_graph: bool = False) -> Any:
        """The driver's ``step(v, k)`` callable: the residual is already relative (compared
        with ``tol`` directly) and an iterate counts as feasible for selection when its
        DEQ block is at equilibrium (``r_z ≤ equilibrium_tol``)."""

        def _step(v: Tensor, k: int) -> StepOutput:
            ev = self.evaluate(v, y, k, create_graph=create_graph)
            return StepOutput(
                value=ev.value,
                residual=ev.kkt,
                cost=ev.cost,
                relative=True,
                blocks=ev.blocks,
                feasible=ev.blocks[:, 0] <= self.equilibrium_tol,
            )

        return _step

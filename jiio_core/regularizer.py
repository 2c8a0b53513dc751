"""Jacobian regularisation (paper A.1): a Hutchinson estimate of ``‖J_z‖_F²``."""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from jiio_core.layer import Layer
from jiio_core.state import State, StateSpec
from jiio_core.validators import int_in


@attrs.frozen
class JacobianPenalty:
    """Estimate ``‖∂f/∂z‖_F² / N`` per sample at one iterate drawn uniformly from those the
    solver evaluated at or after iteration ``start`` (the final iterate if none), with ``probes``
    Gaussian probe vectors. The estimate is differentiable in ``θ``: add ``λ · penalty.mean()``
    to the training loss."""

    probes: int = attrs.field(default=2, validator=int_in(1))
    start: int = attrs.field(default=15, validator=int_in(0))


def hutchinson_jacobian_norm(
    layer: Layer,
    z: State,
    x: Tensor,
    *,
    context: Any = None,
    probes: int = 2,
    create_graph: bool | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased per-sample estimate of ``‖∂f(z, x)/∂z‖_F² / N`` (``N`` = state size).

    Uses ``E_ε ‖εᵀ J‖² = ‖J‖_F²`` for ``ε ~ N(0, I)``. ``z`` and ``x`` are treated as constants;
    the result is differentiable in the layer's parameters when ``create_graph`` (default:
    whether grad mode is on). ``context``: the batch's context ([`jiio_core.context`][jiio_core.context]),
    passed to the layer as by the solves.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes!r}")
    create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
    spec = StateSpec.of(z)
    with torch.enable_grad():
        zf = spec.pack(z).detach().requires_grad_()
        fz = spec.pack(layer(spec.unpack(zf), x.detach(), context))
        total = torch.zeros(zf.shape[0], dtype=zf.dtype, device=zf.device)
        for i in range(probes):
            eps = torch.randn(fz.shape, dtype=fz.dtype, device=fz.device, generator=generator)
            (vjp,) = torch.autograd.grad(
                fz, zf, eps, create_graph=create_graph, retain_graph=i < probes - 1 or create_graph
            )
            total = total + (vjp * vjp).sum(1)
    return total / (probes * spec.numel)

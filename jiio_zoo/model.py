"""``ZooModel``: a layer (with its injection), a head and the config they were built from."""

from __future__ import annotations

from torch import Tensor, nn

from jiio_core.layer import Layer
from jiio_core.objective import InnerObjective
from jiio_core.state import State
from jiio_zoo.configs import MDEQConfig, OptEqConfig, ZooConfig
from jiio_zoo.heads import (
    Head,
    ImageHead,
    MDEQClassificationHead,
    PooledClassificationHead,
    TaskLinearHead,
)
from jiio_zoo.injections import FiLMInjection, ImageInjection, Injection, LatentInjection
from jiio_zoo.mdeq import MDEQCell, MDEQLayer, branch_shapes
from jiio_zoo.objectives import AdversarialObjective, FewShotObjective, ReconstructionObjective
from jiio_zoo.opteq import OptEqLayer

__all__ = ["LinearHead", "ZooModel", "build_model"]


class LinearHead(Head):
    """``z ↦ Vz + c`` for vector states ``(B, n)`` (the OptEq models)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, z: State) -> Tensor:
        if isinstance(z, tuple):
            (z,) = z
        out: Tensor = self.linear(z)
        return out


class ZooModel(nn.Module):
    """A bundle ``(layer, head, config)``, callable as ``model(x) = h_θ(z*(x))``.

    ``layer`` is the equilibrium cell ``f_θ(z, x)`` (a [`jiio_core.layer.Layer`][jiio_core.layer.Layer]; for MDEQ
    it owns the injection), ``head`` is ``h_θ(z)``. [`objective`][jiio_zoo.model.ZooModel.objective] builds the inner loss of
    the config's task, ready for ``jiio_core.problem.JointProblem``.
    """

    def __init__(self, config: ZooConfig, layer: Layer, head: Head) -> None:
        super().__init__()
        self.config = config
        self.layer = layer
        self.head = head

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one sample of the optimised input ``x``."""
        m = self.config.model
        if isinstance(m, OptEqConfig):
            return (m.input_dim,)
        if m.injection == "image":
            return (m.image_channels, m.image_size, m.image_size)
        return (m.x_size,)

    def cell_parameters(self) -> list[nn.Parameter]:
        """Parameters of ``f`` alone (the MDEQ cell, or the whole OptEq layer), without
        injection and head."""
        if isinstance(self.layer, MDEQLayer):
            return list(self.layer.cell.parameters())
        return list(self.layer.parameters())

    def injection_parameters(self) -> list[nn.Parameter]:
        if isinstance(self.layer, MDEQLayer):
            return list(self.layer.injection.parameters())
        return []

    def decode(self, z: State) -> Tensor:
        """``h_θ(z)``."""
        return self.head(z)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``h_θ(z*(x))``: the model as a plain function of its input (logits of a classifier,
        the image of a latent), by the config's DEQ solver ([`jiio_zoo.recipe.deq_solver`][jiio_zoo.recipe.deq_solver])
        with an implicit backward pass, so ``model(x)`` is differentiable in ``x`` and ``θ``
        (e.g. for an attack library). ``context``: the batch's fixed conditioning where the
        model reads one (clean images under which ``x`` is a perturbation, a task's images),
        passed to the solve ([`jiio_core.context`][jiio_core.context])."""
        from jiio_zoo.recipe import deq_solver  # the recipe imports this module

        return self.decode(deq_solver(self).solve(self.layer, x, context=context).z)

    def objective(self, *, support: int | None = None) -> InnerObjective:
        """The inner loss of the config's task: reconstruction (generative, inverse, toy),
        ``−CE`` (adversarial) or support cross-entropy (meta; ``support`` samples per task)."""
        task = self.config.task
        if task == "adversarial":
            return AdversarialObjective(self.head)
        if task == "meta":
            if support is None:
                raise ValueError("objective() for a meta-learning model needs support=<int>")
            return FewShotObjective(self.head, support)
        return ReconstructionObjective(self.head)


def _build_mdeq(m: MDEQConfig) -> tuple[MDEQLayer, Head]:
    shapes = branch_shapes(m.channels, m.image_size)
    cell = MDEQCell(
        m.channels,
        expansion=m.expansion,
        groups=m.groups,
        dropout=m.dropout,
        weight_norm=m.weight_norm,
        init_std=m.init_std,
        post_norm_init=m.post_norm_init,
    )
    injection: Injection
    if m.injection == "latent":
        injection = LatentInjection(m.latent_dim, shapes)
    elif m.injection == "image":
        injection = ImageInjection(
            m.image_channels, shapes, m.groups, m.init_std, m.inject_all_branches
        )
    else:
        injection = FiLMInjection(
            m.image_channels,
            shapes,
            m.groups,
            m.latent_dim,
            m.expansion,
            m.init_std,
            m.inject_all_branches,
            extra_dim=m.num_classes * m.task_head_dim,
        )
    head: Head
    if m.head == "image":
        head = ImageHead(m.channels, m.image_channels, m.groups, m.output_activation, m.init_std)
    elif m.head_channels:
        head = MDEQClassificationHead(
            m.channels, m.head_channels, m.final_channels, m.num_classes, m.groups, m.init_std
        )
    elif m.task_head_dim:
        head = TaskLinearHead(m.channels, m.num_classes, m.groups, m.pool_size, m.task_head_dim, m.latent_dim)
    else:
        head = PooledClassificationHead(m.channels, m.num_classes, m.groups, m.pool_size)
    return MDEQLayer(cell, injection), head


def build_model(config: ZooConfig) -> ZooModel:
    """A freshly initialised model for ``config`` (on the current default device and dtype)."""
    if not isinstance(config, ZooConfig):
        raise TypeError(f"config must be a ZooConfig, got {type(config).__name__}")
    m = config.model
    if isinstance(m, MDEQConfig):
        layer, head = _build_mdeq(m)
        return ZooModel(config, layer, head)
    opteq = OptEqLayer(m.state_dim, m.input_dim, m.activation, m.max_gain)
    return ZooModel(config, opteq, LinearHead(m.state_dim, m.output_dim))

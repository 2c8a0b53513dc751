"""Input injections: maps from the optimised input ``x`` to what each MDEQ branch receives.

An [`Injection`][jiio_zoo.injections.Injection] turns ``x`` into [`BranchInputs`][jiio_zoo.injections.BranchInputs]: one additive injection map per
branch (shape ``(B, *lead, C_i, H_i, W_i)``) and, optionally, one FiLM vector per branch
(``(B, 2·expansion·C_i)``, scale then shift). [`jiio_zoo.mdeq.MDEQLayer`][jiio_zoo.mdeq.MDEQLayer] calls its
injection inside every ``forward(z, x, context)``, so JIIO differentiates through it with
respect to ``x``. Fixed per-sample conditioning (a clean image, a task's images) is the solve's
``context`` argument ([`jiio_core.context`][jiio_core.context]), passed down on every call and never stored.

``lead`` is ``()`` except for [`FiLMInjection`][jiio_zoo.injections.FiLMInjection], where each batch row is a *task* holding
``S`` context images: the state then has shape ``(B, S, C_i, H_i, W_i)`` and the task vector
``x`` of shape ``(B, D)`` modulates all ``S`` images of its task.

Three injections cover the paper's settings:

- [`LatentInjection`][jiio_zoo.injections.LatentInjection] — generative models and inverse problems: ``x`` is a latent
  vector, mapped to every branch by one linear layer per branch (Appendix C.2).
- [`ImageInjection`][jiio_zoo.injections.ImageInjection] — adversarial training: ``x`` is an image, or, given a batch of
  clean images as the context, a perturbation ``δ`` so that the image seen is ``clean + δ``. A conv stem feeds branch 0; the coarser branches get either zeros
  (``all_branches=False``, as the original MDEQ) or the stem output average-pooled to their
  resolution through a 1×1 conv + GN (``all_branches=True``, the default: a branch without
  injection makes ``f`` depend on its state only through scale-invariant GroupNorms, so plain
  damped iteration does not contract at initialisation; see ``tests/zoo/test_mdeq.py``).
- [`FiLMInjection`][jiio_zoo.injections.FiLMInjection] — meta-learning: ``x`` is a task vector; the support/query images are
  the context (required) fed through the conv stem into branch 0,
  and ``x`` goes through one linear layer to FiLM scale/shift applied after the first
  GroupNorm of every residual block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from jiio_zoo._nn import conv, flatten_lead, group_norm, restore_lead

BranchShape = tuple[int, int, int]
"""``(C_i, H_i, W_i)`` of one branch."""


@attrs.frozen(eq=False)
class BranchInputs:
    """What an injection hands the MDEQ cell.

    ``maps[i]``: additive injection of branch ``i``, shape ``(B, *lead, C_i, H_i, W_i)``.
    ``film``: ``None``, or per branch a ``(B, 2·E·C_i)`` tensor holding the FiLM scale ``γ``
    then shift ``β`` applied as ``GN(u)·(1 + γ) + β`` after the block's first GroupNorm.
    """

    maps: tuple[Tensor, ...]
    film: tuple[Tensor, ...] | None = None


def _check_shapes(shapes: Sequence[BranchShape]) -> tuple[BranchShape, ...]:
    out = tuple(tuple(int(v) for v in s) for s in shapes)
    if not out or any(len(s) != 3 or min(s) < 1 for s in out):
        raise ValueError(
            f"shapes must be a non-empty sequence of (C, H, W) triples, got {shapes!r}"
        )
    return out  # type: ignore[return-value]


class Injection(nn.Module, ABC):
    """Maps the optimised input ``x`` to per-branch [`BranchInputs`][jiio_zoo.injections.BranchInputs].

    ``shapes`` are the branches' ``(C_i, H_i, W_i)``. Subclasses implement
    [`forward`][jiio_zoo.injections.Injection.forward], which receives the solve's ``context`` (``None`` when the solve has none);
    those that read fixed per-sample conditioning (a clean image, context images) validate it,
    the others ignore it (a problem's context may be meant for its objective alone).
    """

    def __init__(self, shapes: Sequence[BranchShape]) -> None:
        super().__init__()
        self.shapes = _check_shapes(shapes)

    @abstractmethod
    def forward(self, x: Tensor, context: Any = None) -> BranchInputs:
        """Per-branch injections for input ``x`` under this batch's ``context``."""

    def __call__(self, x: Tensor, context: Any = None) -> BranchInputs:
        out: BranchInputs = super().__call__(x, context)
        return out

    def lead_shape(self, x: Tensor, context: Any = None) -> tuple[int, ...]:
        """Dimensions between the batch and ``(C, H, W)`` in the state (``()`` by default)."""
        del x, context
        return ()

    def _zeros(self, batch_shape: tuple[int, ...], like: Tensor, first: int) -> list[Tensor]:
        return [
            torch.zeros(*batch_shape, *s, dtype=like.dtype, device=like.device)
            for s in self.shapes[first:]
        ]


class LatentInjection(Injection):
    """``x`` (``(B, latent_dim)``) ↦ one linear map per branch to ``(C_i, H_i, W_i)``. Reads no
    context (a generative problem's context, the measurement operator, is its objective's)."""

    def __init__(self, latent_dim: int, shapes: Sequence[BranchShape]) -> None:
        super().__init__(shapes)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.maps = nn.ModuleList(
            nn.Linear(latent_dim, c * h * w) for c, h, w in self.shapes
        )

    def forward(self, x: Tensor, context: Any = None) -> BranchInputs:
        del context
        if x.ndim != 2 or x.shape[1] != self.latent_dim:
            raise ValueError(
                f"LatentInjection expects x of shape (B, {self.latent_dim}), got {tuple(x.shape)}"
            )
        outs = []
        for linear, (c, h, w) in zip(self.maps, self.shapes, strict=True):
            outs.append(rearrange(linear(x), "b (c h w) -> b c h w", c=c, h=h, w=w))
        return BranchInputs(tuple(outs))


class ImageStem(nn.Sequential):
    """MDEQ classification stem (no downsampling): conv3×3 → GN → ReLU → conv3×3 → GN → ReLU."""

    def __init__(self, in_channels: int, channels: int, groups: int, init_std: float) -> None:
        super().__init__(
            conv(in_channels, channels, 3, init_std=init_std),
            group_norm(groups, channels),
            nn.ReLU(),
            conv(channels, channels, 3, init_std=init_std),
            group_norm(groups, channels),
            nn.ReLU(),
        )

    def __call__(self, x: Tensor) -> Tensor:
        out: Tensor = super().__call__(x)
        return out


class BranchSpread(nn.Module):
    """Injections of the coarser branches from branch 0's: per branch ``i ≥ 1``, average
    pooling to ``(H_i, W_i)``, 1×1 conv ``C_0 → C_i`` and GN."""

    def __init__(self, shapes: Sequence[BranchShape], groups: int, init_std: float) -> None:
        super().__init__()
        self.sizes = tuple((h, w) for _, h, w in shapes[1:])
        c0 = shapes[0][0]
        self.maps = nn.ModuleList(
            nn.Sequential(conv(c0, c, 1, init_std=init_std), group_norm(groups, c))
            for c, _, _ in shapes[1:]
        )

    def forward(self, first: Tensor) -> list[Tensor]:
        return [
            m(F.adaptive_avg_pool2d(first, size))
            for m, size in zip(self.maps, self.sizes, strict=True)
        ]


def _coarser(
    injection: Injection, spread: BranchSpread | None, first: Tensor, lead: tuple[int, ...]
) -> list[Tensor]:
    """Injections of branches 1.. from branch 0's flattened ``first`` (``(N, C_0, H, W)``)."""
    if spread is None:
        return injection._zeros(lead, first, 1)
    return [restore_lead(t, lead) for t in spread(first)]


class ImageInjection(Injection):
    """``x`` is an image ``(B, C_in, H, W)``: the stem's output feeds branch 0, zeros elsewhere.

    With a context (a clean image batch of ``x``'s shape, passed to the solve as
    ``context=clean``), ``x`` is read as a perturbation and the stem sees ``context + x``
    (adversarial training with ``x = δ``); without one, ``x`` is the image.
    """

    def __init__(
        self,
        in_channels: int,
        shapes: Sequence[BranchShape],
        groups: int,
        init_std: float = 0.01,
        all_branches: bool = True,
    ) -> None:
        super().__init__(shapes)
        self.in_channels = in_channels
        self.stem = ImageStem(in_channels, self.shapes[0][0], groups, init_std)
        self.spread = BranchSpread(self.shapes, groups, init_std) if all_branches else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one input image, ``(C_in, H, W)``."""
        return (self.in_channels, self.shapes[0][1], self.shapes[0][2])

    def forward(self, x: Tensor, context: Any = None) -> BranchInputs:
        shape = ", ".join(map(str, self.image_shape))
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"ImageInjection expects x of shape (B, {shape}), got {tuple(x.shape)}")
        image = x
        if context is not None:
            if not isinstance(context, Tensor) or context.ndim != 4 or tuple(context.shape[1:]) != self.image_shape:
                got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
                raise ValueError(
                    f"ImageInjection context (the clean images) must be a (B, {shape}) tensor, got {got}"
                )
            if context.shape[0] != x.shape[0]:
                raise ValueError(
                    f"ImageInjection context has batch {context.shape[0]} but x has batch "
                    f"{x.shape[0]}; pass this batch's clean images as the context"
                )
            image = context + x
        first = self.stem(image)
        return BranchInputs((first, *_coarser(self, self.spread, first, (x.shape[0],))))


class FiLMInjection(Injection):
    """Meta-learning injection: task vector ``x`` ``(B, task_dim)`` → FiLM; context images →
    branch 0.

    Each batch row is a task with ``S`` context images ``(B, S, C_in, H, W)``, the solve's
    required ``context`` (e.g. its support images followed by its query images). The state of
    [`MDEQLayer`][jiio_zoo.mdeq.MDEQLayer] then has shape ``(B, S, C_i, H_i, W_i)``; the injection
    maps are the stem applied to each image, zeros on coarser branches. One linear layer maps
    ``x`` to the FiLM ``(γ, β)`` of every branch (``2·expansion·C_i`` values each), used as
    ``GN(u)·(1 + γ) + β`` after the first GroupNorm of each residual block; its bias starts at
    zero, so ``x = 0`` is the unmodulated MDEQ at initialisation. Coarser branches are fed as in
    [`ImageInjection`][jiio_zoo.injections.ImageInjection] (``all_branches``). With ``extra_dim > 0``
    the task vector is ``(B, task_dim + extra_dim)`` and the FiLM reads its first ``task_dim``
    entries (the rest is for a head that reads ``x``, [`TaskLinearHead`][jiio_zoo.heads.TaskLinearHead]).
    """

    def __init__(
        self,
        in_channels: int,
        shapes: Sequence[BranchShape],
        groups: int,
        task_dim: int,
        expansion: int,
        init_std: float = 0.01,
        all_branches: bool = True,
        extra_dim: int = 0,
    ) -> None:
        super().__init__(shapes)
        if not isinstance(task_dim, int) or task_dim < 1:
            raise ValueError(f"task_dim must be an int >= 1, got {task_dim!r}")
        if not isinstance(extra_dim, int) or extra_dim < 0:
            raise ValueError(f"extra_dim must be an int >= 0, got {extra_dim!r}")
        self.extra_dim = extra_dim
        self.in_channels = in_channels
        self.task_dim = task_dim
        self.film_sizes = tuple(2 * expansion * c for c, _, _ in self.shapes)
        self.stem = ImageStem(in_channels, self.shapes[0][0], groups, init_std)
        self.spread = BranchSpread(self.shapes, groups, init_std) if all_branches else None
        self.film = nn.Linear(task_dim, sum(self.film_sizes))
        nn.init.zeros_(self.film.bias)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.shapes[0][1], self.shapes[0][2])

    def _require_context(self, x: Tensor, context: Any) -> Tensor:
        shape = ", ".join(map(str, self.image_shape))
        if context is None:
            raise TypeError(
                f"FiLMInjection needs a context: each task's images, a (B, S, {shape}) tensor; "
                "pass it to the solve as context=images (JointProblem.solve, DEQSolver.solve, "
                "or the layer call)"
            )
        if not isinstance(context, Tensor) or context.ndim != 5 or tuple(context.shape[2:]) != self.image_shape:
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"FiLMInjection context (each task's images) must be a (B, S, {shape}) tensor, got {got}")
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"FiLMInjection context holds {context.shape[0]} tasks but x has batch {x.shape[0]}"
            )
        return context

    def lead_shape(self, x: Tensor, context: Any = None) -> tuple[int, ...]:
        return (int(self._require_context(x, context).shape[1]),)

    def forward(self, x: Tensor, context: Any = None) -> BranchInputs:
        if x.ndim != 2 or x.shape[1] != self.task_dim + self.extra_dim:
            raise ValueError(
                f"FiLMInjection expects x of shape (B, {self.task_dim + self.extra_dim}), got {tuple(x.shape)}"
            )
        images = self._require_context(x, context).to(dtype=x.dtype)
        flat, lead = flatten_lead(images, 3)
        first = self.stem(flat)
        coarser = _coarser(self, self.spread, first, lead)
        film = torch.split(self.film(x[:, : self.task_dim] if self.extra_dim else x), list(self.film_sizes), dim=1)
        return BranchInputs((restore_lead(first, lead), *coarser), tuple(film))

"""Measurement operators of the inverse problems (paper §4.2) and image metrics.

Each operator is a linear map ``A`` ([`Measurement.apply`][jiio_tasks.imaging.operators.Measurement.apply]) used inside the inner loss
``‖ŷ − A h(z)‖²`` (eq. 22), plus [`Measurement.corrupt`][jiio_tasks.imaging.operators.Measurement.corrupt], which maps a clean batch ``y``
to its observation ``ŷ = A y (+ noise)``. Operators whose ``A`` depends on the sample (the
random inpainting square) are drawn per batch by a [`Corruption`][jiio_tasks.imaging.operators.Corruption] (a factory).

Images are ``(B, C, H, W)``. Metrics use the data range ``[0, 1]``: PSNR is
``10·log10(1 / MSE)`` per image, with MSE the mean over pixels and channels.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DATA_RANGE",
    "Blur",
    "BoxMask",
    "Corruption",
    "GaussianBlur",
    "GaussianNoise",
    "Identity",
    "Inpainting",
    "Measurement",
    "corruption",
    "gaussian_kernel",
    "mse",
    "psnr",
]

#: Data range of all images and metrics in this package: pixels in [0, 1].
DATA_RANGE = 1.0


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")


class Measurement(ABC):
    """A linear measurement ``A`` of images and the corruption ``y ↦ ŷ`` it models."""

    @abstractmethod
    def apply(self, images: Tensor) -> Tensor:
        """``A`` applied to ``(B, C, H, W)`` images (linear; differentiable)."""

    def corrupt(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The observation ``ŷ`` of a clean batch (``A y`` unless the operator adds noise)."""
        del generator
        _check_images("clean", clean)
        return self.apply(clean)

    def select(self, start: int, stop: int) -> Measurement:
        """The operator of samples ``start:stop`` of the batch (itself if not per-sample)."""
        del start, stop
        return self


@attrs.frozen
class Identity(Measurement):
    """``A = I`` (the measurement of denoising)."""

    def apply(self, images: Tensor) -> Tensor:
        _check_images("images", images)
        return images


def _positive(_: object, a: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{a.name} must be a finite number > 0, got {value!r}")


@attrs.frozen
class GaussianNoise(Identity):
    """Denoising: ``A = I`` and ``ŷ = y + σ ε``, ``ε ~ N(0, I)`` drawn from ``generator``
    (σ in units of the data range [0, 1]; the paper uses 0.2 and 0.4). No clamping."""

    sigma: float = attrs.field(validator=_positive)

    def corrupt(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images("clean", clean)
        where = generator.device if generator is not None else clean.device  # CPU seed: same noise anywhere
        eps = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=where).to(clean.device)
        return clean + self.sigma * eps


@attrs.frozen(eq=False)
class BoxMask(Measurement):
    """Inpainting: ``A y = m ⊙ y`` with a per-sample mask ``m`` of shape ``(B, 1, H, W)``
    (1 = observed, 0 = missing)."""

    mask: Tensor

    def __attrs_post_init__(self) -> None:
        m = self.mask
        if not isinstance(m, Tensor) or m.ndim != 4 or m.shape[1] != 1:
            raise ValueError(f"mask must be a (B, 1, H, W) tensor, got {getattr(m, 'shape', m)!r}")

    def apply(self, images: Tensor) -> Tensor:
        _check_images("images", images)
        if images.shape[0] != self.mask.shape[0] or images.shape[-2:] != self.mask.shape[-2:]:
            raise ValueError(
                f"images {tuple(images.shape)} do not match the mask {tuple(self.mask.shape)} "
                "(batch and spatial size must agree)"
            )
        return images * self.mask.to(images.dtype)

    def select(self, start: int, stop: int) -> BoxMask:
        return BoxMask(self.mask[start:stop])


def gaussian_kernel(sigma: float, size: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Normalised 2-D Gaussian ``(size, size)``: ``k_ij ∝ exp(−(i² + j²)/(2σ²))``, centred."""
    half = (size - 1) / 2
    t = torch.arange(size, dtype=torch.float64, device=device) - half
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(dtype)


def _odd(_: object, a: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
        raise ValueError(f"{a.name} must be an odd int >= 1, got {value!r}")


@attrs.frozen
class Blur(Measurement):
    """Deblurring: ``A y = k * y``, a per-channel 2-D convolution with the Gaussian kernel of
    standard deviation ``sigma`` pixels and side ``size``, zero padding (so ``A`` is linear and
    keeps the image size). No noise is added."""

    sigma: float = attrs.field(default=1.0, validator=_positive)
    size: int = attrs.field(default=5, validator=_odd)

    def apply(self, images: Tensor) -> Tensor:
        _check_images("images", images)
        c = images.shape[1]
        k = gaussian_kernel(self.sigma, self.size, images.dtype, images.device)
        weight = k.expand(c, 1, self.size, self.size)
        return F.conv2d(images, weight, padding=self.size // 2, groups=c)


GaussianBlur = Blur


# --------------------------------------------------------------------------- corruptions


class Corruption(ABC):
    """A kind of inverse problem: draws the measurement operator for a batch."""

    name: str

    @abstractmethod
    def operator(self, clean: Tensor, generator: torch.Generator | None = None) -> Measurement:
        """The operator for this batch of clean images (may be random, e.g. the mask)."""

    def __call__(
        self, clean: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Measurement, Tensor]:
        """``(A, ŷ)`` for a clean batch: the operator and the corrupted observation."""
        _check_images("clean", clean)
        op = self.operator(clean, generator)
        return op, op.corrupt(clean, generator)


@attrs.frozen
class _Fixed(Corruption):
    op: Measurement
    name: str

    def operator(self, clean: Tensor, generator: torch.Generator | None = None) -> Measurement:
        return self.op


def _pos_int(_: object, a: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{a.name} must be an int >= 1, got {value!r}")


@attrs.frozen
class Inpainting(Corruption):
    """One missing square per image, side ``size`` at a ``reference``-pixel image (the paper:
    20 at 64×64), scaled as ``max(1, round(size · W / reference))`` for other widths ``W``
    (e.g. 10 at 32×32, 8 at 25×25). With ``s`` the side and ``h = s // 2``, each image's
    centre row and column are uniform integers in ``[h, W − h)`` (the paper's code: ``[10, 54)``
    at 64), and the square covers ``[c − h, c − h + s)``."""

    size: int = attrs.field(default=20, validator=_pos_int)
    reference: int = attrs.field(default=64, validator=_pos_int)
    name: str = "inpaint"

    def side(self, height: int, width: int) -> int:
        return max(1, min(height, width, round(self.size * width / self.reference)))

    def operator(self, clean: Tensor, generator: torch.Generator | None = None) -> BoxMask:
        _check_images("clean", clean)
        b, _, hgt, wid = clean.shape
        s = self.side(hgt, wid)
        h = s // 2
        rows = torch.randint(h, hgt - h, (b,), generator=generator).to(clean.device) - h
        cols = torch.randint(h, wid - h, (b,), generator=generator).to(clean.device) - h
        r = torch.arange(hgt, device=clean.device).view(1, hgt, 1)
        c = torch.arange(wid, device=clean.device).view(1, 1, wid)
        inside = (
            (r >= rows.view(b, 1, 1)) & (r < rows.view(b, 1, 1) + s)
            & (c >= cols.view(b, 1, 1)) & (c < cols.view(b, 1, 1) + s)
        )
        mask = (~inside).to(clean.dtype).unsqueeze(1)
        return BoxMask(mask)


CORRUPTIONS = ("denoise0.2", "denoise0.4", "inpaint", "blur")


def corruption(name: str, scale: float = 1.0) -> Corruption:
    """The named inverse problem: ``denoise0.2``, ``denoise0.4`` (Gaussian noise, σ in units
    of the [0, 1] data range), ``inpaint`` (20×20 at 64×64, scaled) or ``blur`` (Gaussian,
    σ = 1 px, 5×5). ``scale`` is the width of the space the operator acts in relative to
    [0, 1] (2 for models working on [−1, 1] images): the noise σ is multiplied by it."""
    if name == "denoise0.2":
        return _Fixed(GaussianNoise(0.2 * scale), name)
    if name == "denoise0.4":
        return _Fixed(GaussianNoise(0.4 * scale), name)
    if name == "inpaint":
        return Inpainting()
    if name == "blur":
        return _Fixed(Blur(), name)
    raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")


# --------------------------------------------------------------------------- metrics


def mse(estimate: Tensor, target: Tensor) -> Tensor:
    """Per-image mean squared error ``(B,)`` over channels and pixels."""
    if estimate.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
    return (estimate - target).pow(2).reshape(estimate.shape[0], -1).mean(dim=1)


def psnr(estimate: Tensor, target: Tensor, data_range: float = DATA_RANGE) -> Tensor:
    """Per-image PSNR in dB, ``10·log10(data_range² / MSE)``; the default range is [0, 1]
    (on [−1, 1] data pass ``data_range=2``). The tensors are compared as given (no clamping)."""
    err = mse(estimate, target)
    return 10.0 * torch.log10(data_range**2 / err)

"""Feature spaces for the Fréchet distance of image sets.

- [`InceptionFeatures`][jiio_tasks.generative.features.InceptionFeatures]: FID proper. torchvision's ``inception_v3(weights=None,
  aux_logits=True, init_weights=False)`` with a user-supplied local state dict (nothing is
  downloaded); the 2048-d pool3 activations (the input of ``fc``) of images resized to 299×299
  (bilinear), grey repeated to 3 channels, mapped from [0, 1] to [−1, 1] (what the ported
  TF-Inception weights expect; ``transform_input`` stays off).
- [`RotationFeatures`][jiio_tasks.generative.features.RotationFeatures]: the default when no Inception weights are given. A small CNN
  ([`RotationNet`][jiio_tasks.generative.features.RotationNet]) trained on the 80 embedded training faces to predict which of four
  rotations (0°, 90°, 180°, 270°) was applied: faces have no labels, and recognising the
  upright orientation needs the layout of eyes, nose, mouth and chin, so its features see face
  structure. Features: its 32-d embedding (the layer before the 4-way classifier) of images
  converted to grey (ITU-R 601 luma for RGB) and resized to 32×32. Its weights ship in
  ``jiio_tasks/data/embedded/faces_rotnet.pt`` so that numbers are comparable across runs;
  ``jiio train features`` ([`train_rotation_net`][jiio_tasks.generative.features.train_rotation_net]) rebuilds them.

Numbers from different feature spaces are not comparable; every metrics file records
[`FeatureSpace.describe`][jiio_tasks.generative.features.FeatureSpace.describe].
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_tasks.data.faces import resize
from jiio_tasks.progress import progress_bar
from jiio_tasks.runs import atomic_torch_save

__all__ = [
    "DEFAULT_ROTNET",
    "FeatureSpace",
    "InceptionFeatures",
    "RotationFeatures",
    "RotationNet",
    "feature_space",
    "rotate_batch",
    "train_rotation_net",
]

ROTNET_FORMAT = "jiio-rotation-features"
ROTNET_VERSION = 1
DEFAULT_ROTNET = "faces_rotnet.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W) in [0, 1], got shape {tuple(images.shape)}")


class FeatureSpace(ABC):
    """Maps ``(N, C, H, W)`` images in [0, 1] to ``(N, d)`` features (no grad, float32).

    ``batch``: how many images [`features`][jiio_tasks.generative.features] processes at a time; a caller that splits a
    large set into calls of this size gets the same numbers (and can report progress)."""

    batch: int = 256

    @abstractmethod
    def features(self, images: Tensor) -> Tensor: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What to record next to every number computed in this space."""


class RotationNet(nn.Module):
    """``1×32×32`` → four stride-1/2 conv + GroupNorm + ReLU blocks → global average pool (64)
    → linear embedding (``dim``) → ReLU → linear to the 4 rotation classes."""

    size = 32

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.dim = dim

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU()]

        self.trunk = nn.Sequential(
            *block(1, 16, 1), *block(16, 32, 2), *block(32, 32, 2), *block(32, 64, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Linear(64, dim)
        self.classify = nn.Sequential(nn.ReLU(), nn.Linear(dim, 4))

    def embedding(self, images: Tensor) -> Tensor:
        out: Tensor = self.embed(self.trunk(images))
        return out

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.classify(self.embedding(images))
        return out


def _to_grey32(images: Tensor) -> Tensor:
    _check_images(images)
    x = images.to(torch.float32)
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    return resize(x.clamp(0, 1), RotationNet.size)


def rotate_batch(images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Each image rotated by ``k · 90°`` counter-clockwise with ``k`` uniform in {0, 1, 2, 3}
    (square images); returns ``(rotated, k)``."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    k = torch.randint(0, 4, (images.shape[0],), generator=generator).to(images.device)
    out = torch.stack([torch.rot90(img, r, dims=(-2, -1)) for img, r in zip(images, k.tolist(), strict=True)])
    return out, k


def _default_rotnet_path() -> Path:
    return Path(str(resources.files("jiio_tasks.data").joinpath("embedded").joinpath(DEFAULT_ROTNET)))


class RotationFeatures(FeatureSpace):
    """The 32-d embedding of a [`RotationNet`][jiio_tasks.generative.features.RotationNet] read from ``path`` (default: the shipped
    ``jiio_tasks/data/embedded/faces_rotnet.pt``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = _default_rotnet_path() if path is None else Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"rotation-feature weights {self.path} do not exist; train them with "
                "`jiio train features --out PATH`"
            )
        raw = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or raw.get("format") != ROTNET_FORMAT:
            raise ValueError(f"{self.path} is not a rotation-feature file (format {ROTNET_FORMAT!r})")
        if raw.get("format_version") != ROTNET_VERSION:
            raise ValueError(
                f"{self.path} has format_version {raw.get('format_version')!r}, expected {ROTNET_VERSION}"
            )
        self.net = RotationNet(int(raw["dim"]))
        self.net.load_state_dict(raw["state_dict"])
        self.net.eval()
        self.extra: dict[str, Any] = dict(raw.get("extra", {}))
        self.sha256 = _sha256(self.path)

    def features(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.net.embedding(_to_grey32(part)) for part in images.split(self.batch)])

    def describe(self) -> dict[str, Any]:
        return {
            "feature_space": f"rotation-net embedding ({self.net.dim}-d)",
            "weights": self.path.name,
            "sha256": self.sha256[:16],
            "note": "Fréchet distance in the feature space of a 4-way rotation classifier trained on "
            "the 80 embedded training faces; not comparable with FID (Inception-v3)",
        }


class InceptionFeatures(FeatureSpace):
    """Inception-v3 pool3 (2048-d) with weights from a local torchvision state dict
    (a ``state_dict`` or a dict holding one under ``"state_dict"``)."""

    def __init__(self, path: str | Path, *, batch: int = 16) -> None:
        from torchvision.models import inception_v3

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"--inception weights {self.path} do not exist")
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"--inception weights {self.path}: expected a state dict, got {type(state).__name__}")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"--inception weights {self.path} do not fit torchvision's inception_v3(aux_logits=True): "
                f"{str(err).splitlines()[0]}"
            ) from err
        net.fc = nn.Identity()
        self.net = net.eval()
        self.batch = batch
        self.sha256 = _sha256(self.path)

    def features(self, images: Tensor) -> Tensor:
        _check_images(images)
        outs = []
        with torch.no_grad():
            for part in images.split(self.batch):
                x = part.to(torch.float32).clamp(0, 1)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                outs.append(self.net(2 * x - 1))
        return torch.cat(outs)

    def describe(self) -> dict[str, Any]:
        return {
            "feature_space": "inception-v3 pool3 (2048-d): FID",
            "weights": self.path.name,
            "sha256": self.sha256[:16],
        }


def feature_space(inception: str | Path | None = None, rotnet: str | Path | None = None) -> FeatureSpace:
    """Inception-v3 features if ``inception`` (a weights file) is given, else the rotation
    net (``rotnet`` or the shipped weights)."""
    return InceptionFeatures(inception) if inception is not None else RotationFeatures(rotnet)


def train_rotation_net(
    train_images: Any,
    test_images: Tensor,
    out: str | Path,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    dim: int = 32,
    seed: int = 0,
    command: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Train a [`RotationNet`][jiio_tasks.generative.features.RotationNet] on batches from ``train_images`` (an object with
    ``batch(n)`` returning augmented ``(n, 1, H, W)`` [0, 1] images, e.g. an
    [`ImageSource`][jiio_tasks.imaging.data.ImageSource]); Adam with a cosine learning-rate decay.
    Reports the rotation accuracy on all four rotations of ``test_images`` and writes the
    weights file ``out`` (atomically). ``progress`` shows the steps on stderr."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    torch.manual_seed(seed)
    net = RotationNet(dim)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    net.train()
    loss = torch.zeros(())
    bar = progress_bar(steps, "train features", enabled=progress, unit="step")
    for _ in range(steps):
        x, k = rotate_batch(_to_grey32(train_images.batch(batch_size)))
        loss = F.cross_entropy(net(x), k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
    bar.close()
    net.eval()
    with torch.no_grad():
        x = _to_grey32(test_images)
        correct = sum(
            int((net(torch.rot90(x, r, dims=(-2, -1))).argmax(1) == r).sum()) for r in range(4)
        )
    accuracy = correct / (4 * x.shape[0])
    extra = {
        "task": "4-way rotation prediction on the embedded faces (train split, augmented)",
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "final_train_loss": float(loss.detach()),
        "test_rotation_accuracy": accuracy,
        "seconds": time.perf_counter() - t0,
        "command": command,
    }
    path = Path(out)
    atomic_torch_save(path, {
        "format": ROTNET_FORMAT,
        "format_version": ROTNET_VERSION,
        "dim": dim,
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "extra": extra,
    })
    return {"out": str(path), **extra}

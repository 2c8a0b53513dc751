"""Baselines of the inverse-problem comparison (paper §4.2, Table 4): the supervised models of
eq. 23, Adam on eq. 21 over a generator, and the median PSNR with a bootstrap interval.

- **Supervised (eq. 23)**: a network ``G_θ`` maps the observation ``ŷ = A y`` straight to the
  clean image and is trained on ``‖y − G_θ(A y)‖²``:
  [`ConvAE`][jiio_tasks.inverse.baselines.ConvAE] (``"ae"``, a conv encoder–decoder through a
  ``H/8 × W/8`` bottleneck) and [`MDEQAutoencoder`][jiio_tasks.inverse.baselines.MDEQAutoencoder]
  (``"mdeq-ae"``, a zoo MDEQ with the corrupted image injected and the zoo's image head,
  ``G_θ(ŷ) = h(z*(ŷ))``, trained through the DEQ's implicit backward pass).
  [`train_supervised_baseline`][jiio_tasks.inverse.baselines.train_supervised_baseline] trains
  either on the one loop ([`jiio_tasks.loop.Loop`][jiio_tasks.loop.Loop]). The supervised JIIO
  model of eq. 24 is [`jiio_tasks.inverse.train`][jiio_tasks.inverse.train].
- **Unsupervised (eq. 21)**: [`adam_inverse`][jiio_tasks.inverse.baselines.adam_inverse] runs
  Adam on the latent of any differentiable generator (a ConvVAE's ``decode``; for a zoo decoder
  the [`ZooModel`][jiio_zoo.model.ZooModel] itself, whose call is ``h(z*(x))`` by the config's DEQ
  solve with an implicit backward pass). [`decode`][jiio_tasks.inverse.baselines.decode] decodes
  the latents it returns for scoring, a zoo decoder at a tight equilibrium. JIIO on eq. 22 is
  [`jiio_tasks.imaging.inversion.infer`][jiio_tasks.imaging.inversion.infer].
- **Scoring**: PSNR per face on [0, 1] ([`psnr`][jiio_tasks.imaging.operators.psnr]) as
  [`evaluate_inverse`][jiio_tasks.inverse.evaluate.evaluate_inverse] does, summarised by
  [`median_ci`][jiio_tasks.inverse.baselines.median_ci]: the median over faces and its percentile
  bootstrap interval.

Images are in [0, 1] throughout: both supervised models end in a sigmoid, as the
``faces_gen_small`` decoder does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from torch import Tensor, nn

from jiio_core import DEQSolution, DEQSolver
from jiio_core.validators import int_in, number_in, optional
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.inversion import decode_latents
from jiio_tasks.imaging.operators import CORRUPTIONS, Measurement, corruption, mse
from jiio_tasks.imaging.splits import training_stream
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.penalty import PenaltyDraw, penalty_seed
from jiio_tasks.runs import RunDir, atomic_torch_save
from jiio_zoo.configs import MDEQConfig, ZooConfig, get_config
from jiio_zoo.model import ZooModel, _build_mdeq
from jiio_zoo.recipe import deq_solver
from jiio_zoo.recipe import settings as solve_settings

__all__ = [
    "KINDS",
    "ConvAE",
    "MDEQAutoencoder",
    "MedianCI",
    "SupervisedSettings",
    "adam_inverse",
    "build_supervised_model",
    "conv_ae_width",
    "decode",
    "load_supervised_baseline",
    "median_ci",
    "train_supervised_baseline",
]

Kind = Literal["ae", "mdeq-ae"]
KINDS: tuple[Kind, ...] = ("ae", "mdeq-ae")
"""The supervised eq. 23 baselines: ``"ae"`` ([`ConvAE`][jiio_tasks.inverse.baselines.ConvAE]) and
``"mdeq-ae"`` ([`MDEQAutoencoder`][jiio_tasks.inverse.baselines.MDEQAutoencoder])."""

#: Tolerance and budget multiple of the tight DEQ solve that supervised MDEQ outputs are scored at
#: (the same as [`decode_latents`][jiio_tasks.imaging.inversion.decode_latents]'s).
SCORE_TOL = 1e-5
SCORE_ITER_FACTOR = 4


def _check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


# --------------------------------------------------------------------------- supervised models


class ConvAE(nn.Module):
    """The ``"ae"`` baseline: ``(C, H, W)`` → three 4×4 stride-2 convs (``w, 2w, 4w`` channels,
    ReLU) to a ``(4w, H/8, W/8)`` bottleneck → three 4×4 stride-2 transposed convs back
    (``2w, w, C``; ReLU between) → sigmoid. No skip connection: everything passes the
    bottleneck (4×4 for 32×32 faces)."""

    def __init__(self, image_size: int, channels: int, width: int) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size < 8 or image_size % 8:
            raise ValueError(f"ConvAE image_size must be a multiple of 8 (>= 8), got {image_size!r}")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"ConvAE width must be an int >= 1, got {width!r}")
        self.image_size, self.channels, self.width = image_size, channels, width
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def forward(self, observed: Tensor) -> Tensor:
        """``G(ŷ)`` for ``(B, C, H, W)`` observations: the clean-image estimate in [0, 1]."""
        return torch.sigmoid(self.decoder(self.encoder(observed)))

    def reconstruct(self, observed: Tensor) -> Tensor:
        """``G(ŷ)`` without a graph (what the table scores)."""
        with torch.no_grad():
            out: Tensor = self(observed)
        return out


def conv_ae_width(target: int, image_size: int, channels: int) -> int:
    """The smallest [`ConvAE`][jiio_tasks.inverse.baselines.ConvAE] width with at least ``target``
    parameters (to size the AE like another model)."""
    for width in range(1, 1025):
        if sum(p.numel() for p in ConvAE(image_size, channels, width).parameters()) >= target:
            return width
    raise ValueError(f"no ConvAE width up to 1024 reaches {target} parameters")


class MDEQAutoencoder(nn.Module):
    """The ``"mdeq-ae"`` baseline: the MDEQ of a zoo decoder config with the *image* injection
    (the observation ``ŷ`` is the DEQ's input, through the zoo's conv stem) and the same image
    head: ``G(ŷ) = h(z*(ŷ))``.

    ``config`` is a latent-to-image zoo config (e.g. ``faces_gen_small``): its model is rebuilt
    with ``injection="image"`` (everything else, the head included, as in the config) and its
    solver settings give the DEQ solve ([`jiio_zoo.recipe.deq_solver`][jiio_zoo.recipe.deq_solver]:
    the config's accelerator and forward budget, implicit backward of the config's backward budget)
    unless ``deq`` is given. ``layer`` and ``head`` are built exactly as the zoo builds them."""

    def __init__(self, config: ZooConfig, deq: DEQSolver | None = None) -> None:
        super().__init__()
        m = config.model
        if not isinstance(m, MDEQConfig) or m.head != "image":
            raise ValueError(f"MDEQAutoencoder needs an MDEQ config with the image head, got {config.name!r}")
        if m.output_activation == "tanh":
            raise ValueError(f"MDEQAutoencoder works on [0, 1] images; {config.name!r} has a tanh head")
        self.config = config
        self.model_config = attrs.evolve(m, injection="image", latent_dim=0)
        # the zoo's own builder: no ZooConfig task pairs the image injection with the image head,
        # so build_model refuses this model, but its layer and head are the zoo's
        self.layer, self.head = _build_mdeq(self.model_config)
        self.deq = deq_solver(config) if deq is None else deq

    def solve(self, observed: Tensor, deq: DEQSolver | None = None) -> DEQSolution:
        """The equilibrium ``z*(ŷ)`` (differentiable in the parameters when grad mode is on)."""
        return (self.deq if deq is None else deq).solve(self.layer, observed)

    def forward(self, observed: Tensor) -> Tensor:
        """``h(z*(ŷ))`` by this model's DEQ solve, with the implicit backward pass."""
        return self.head(self.solve(observed).z)

    def reconstruct(self, observed: Tensor) -> Tensor:
        """``h(z*(ŷ))`` at a tight equilibrium (relative residual ``SCORE_TOL``, ``SCORE_ITER_FACTOR``
        times the forward budget), without a graph: what the table scores."""
        tight = attrs.evolve(self.deq, max_iter=SCORE_ITER_FACTOR * self.deq.max_iter, tol=SCORE_TOL)
        with torch.no_grad():
            return self.head(self.solve(observed, tight).z)


SupervisedModel = ConvAE | MDEQAutoencoder


def build_supervised_model(kind: str, config: str | ZooConfig = "faces_gen_small", *,
                           width: int | None = None) -> SupervisedModel:
    """A fresh ``kind`` model for the images of ``config`` (a zoo decoder config; initialised
    from torch's global generator). ``width`` (``"ae"`` only; ``None``: the smallest width with
    at least the parameters of the ``"mdeq-ae"`` of ``config``, so both baselines have the same
    size)."""
    _check_choice("kind", kind, KINDS)
    cfg = get_config(config) if isinstance(config, str) else config
    if kind == "mdeq-ae":
        if width is not None:
            raise ValueError(f"width is the ConvAE's size; kind 'mdeq-ae' takes none, got {width!r}")
        return MDEQAutoencoder(cfg)
    m = cfg.model
    if not isinstance(m, MDEQConfig):
        raise ValueError(f"config {cfg.name!r} is not an MDEQ image config")
    if width is None:
        with torch.random.fork_rng(devices=[]):  # sizing draws no numbers from the caller's stream
            target = sum(p.numel() for p in MDEQAutoencoder(cfg).parameters())
            width = conv_ae_width(target, m.image_size, m.image_channels)
    return ConvAE(m.image_size, m.image_channels, width)


# --------------------------------------------------------------------------- supervised training


@attrs.frozen(kw_only=True)
class SupervisedSettings:
    """One supervised eq. 23 run: ``steps`` in total (counted across resumes), or fewer when
    ``max_minutes`` of training time (by the trainer's ``clock``) are spent first; Adam at
    ``learning_rate`` on batches of ``batch_size`` training images, each corrupted afresh.
    ``jac_reg`` (``"mdeq-ae"`` only; ``None``: the config's ``jac_reg``; 0: none) weighs the
    Hutchinson Jacobian penalty at the equilibrium, as for the other MDEQ trainers. ``width``:
    the ConvAE's (see [`build_supervised_model`][jiio_tasks.inverse.baselines.build_supervised_model])."""

    steps: int = attrs.field(validator=int_in(1))
    batch_size: int = attrs.field(default=16, validator=int_in(1))
    learning_rate: float = attrs.field(default=1e-3, validator=number_in(0.0, low_open=True))
    jac_reg: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))
    width: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    max_minutes: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    save_every: int = attrs.field(default=10, validator=int_in(1))
    log_every: int = attrs.field(default=1, validator=int_in(1))
    seed: int = attrs.field(default=0, validator=int_in(0))


def train_supervised_baseline(
    run: RunDir,
    kind: str,
    task: str,
    settings: SupervisedSettings,
    *,
    source: ImageSource | None = None,
    config: str | ZooConfig = "faces_gen_small",
    progress: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[SupervisedModel, dict[str, Any]]:
    """Train a fresh ``kind`` model (``"ae"`` or ``"mdeq-ae"``) on eq. 23 for the corruption
    ``task`` (one of [`CORRUPTIONS`][jiio_tasks.imaging.operators.CORRUPTIONS]), resuming from
    ``run`` if it holds a state; returns the trained model and the final metrics entry.

    Each step draws a batch from ``source`` (default: the whole training stream,
    [`training_stream`][jiio_tasks.imaging.splits.training_stream]), corrupts it with a fresh
    operator and noise from torch's global generator (seeded by the loop with
    ``settings.seed`` and saved with the run, so a killed and resumed run is bit-identical to a
    straight one) and minimises the batch mean of the per-image MSE ``mean((y − G(ŷ))²)`` (plus
    ``λ ·`` the Jacobian penalty for the MDEQ, seeded by ``(seed, step)``). ``clock`` times the
    steps (``time.process_time`` for a CPU-time budget, ``settings.max_minutes``). The weights
    also go to ``run/model.pt`` (``{"kind", "task", "config", "width", "state_dict"}``); see
    [`load_supervised_baseline`][jiio_tasks.inverse.baselines.load_supervised_baseline]."""
    _check_choice("kind", kind, KINDS)
    _check_choice("task", task, CORRUPTIONS)
    if not isinstance(settings, SupervisedSettings):
        raise TypeError(f"settings must be a SupervisedSettings, got {type(settings).__name__}")
    cfg = get_config(config) if isinstance(config, str) else config
    m = cfg.model
    if not isinstance(m, MDEQConfig):
        raise ValueError(f"config {cfg.name!r} is not an MDEQ image config")
    if source is None:
        source = training_stream(size=m.image_size, channels=m.image_channels)
    if (source.channels, source.size) != (m.image_channels, m.image_size):
        raise ValueError(f"source images are {source.channels}×{source.size}×{source.size}, the model's "
                         f"{m.image_channels}×{m.image_size}×{m.image_size}")
    lam = 0.0
    if kind == "mdeq-ae":
        lam = float(cfg.train.jac_reg if settings.jac_reg is None else settings.jac_reg)
    torch.manual_seed(settings.seed)  # the initial weights (a resumed run loads its own)
    model = build_supervised_model(kind, cfg, width=settings.width)
    width = model.width if isinstance(model, ConvAE) else None
    probes = solve_settings(cfg).jacobian_probes
    corr = corruption(task)
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    panels = {"loss": "supervised loss (per-pixel MSE)"}
    if isinstance(model, MDEQAutoencoder):
        panels.update(jacobian="Jacobian penalty", forward_residual="forward residual (median)")
    loop = Loop(
        run_dir=run, model=model, optimizer=opt,
        config={"family": "inverse-baseline", "kind": kind, "task": task, "model": cfg.name,
                "settings": attrs.asdict(settings), "width": width, "jac_reg": lam,
                "parameters": sum(p.numel() for p in model.parameters()), "data": source.name,
                "clock": getattr(clock, "__name__", repr(clock)), "data_range": "[0, 1]"},
        steps=settings.steps, save_every=settings.save_every, log_every=settings.log_every,
        max_seconds=None if settings.max_minutes is None else 60.0 * settings.max_minutes,
        seed=settings.seed, progress=progress, title=f"supervised {kind} {task}", panels=panels, clock=clock,
    )

    def step_fn(step: int) -> StepResult:
        clean = source.batch(settings.batch_size)
        _, observed = corr(clean)
        if isinstance(model, MDEQAutoencoder):
            sol = model.solve(observed)
            err = mse(model.head(sol.z), clean).mean()
            sums = {"loss": float(err.detach()), "forward_residual": float(sol.residual.median())}
            if lam == 0:
                return StepResult(err, sums)
            z = tuple(t.detach() for t in sol.z) if isinstance(sol.z, tuple) else sol.z.detach()
            pen = PenaltyDraw(penalty_seed(settings.seed, step)).penalty(model.layer, z, observed, probes=probes)
            return StepResult(err + lam * pen.mean(), {**sums, "jacobian": float(pen.detach().mean())})
        err = mse(model(observed), clean).mean()
        return StepResult(err, {"loss": float(err.detach())})

    result = loop.run(step_fn)
    model.eval()

    def checkpoint(path: Path) -> Path:
        atomic_torch_save(path, {"kind": kind, "task": task, "config": cfg.name, "width": width,
                                 "state_dict": model.state_dict()})
        return path

    final = loop.finish(result, {"kind": kind, "task": task, "parameters": loop.config["parameters"]}, checkpoint)
    return model, final


def load_supervised_baseline(run: RunDir, config: str | ZooConfig | None = None) -> SupervisedModel:
    """The model a [`train_supervised_baseline`][jiio_tasks.inverse.baselines.train_supervised_baseline]
    run holds (its latest state, read as data only), in eval mode. ``config``: the zoo config it
    was trained with when it is not a named one (default: the name recorded in the run)."""
    recorded = run.read_metrics().get("config", {})
    if recorded.get("family") != "inverse-baseline":
        raise ValueError(f"{run.root} holds no supervised baseline run (metrics.json config family "
                         f"{recorded.get('family')!r})")
    cfg = config if config is not None else recorded["model"]
    model = build_supervised_model(recorded["kind"], cfg, width=recorded.get("width"))
    run.load_model(model)
    return model.eval()


# --------------------------------------------------------------------------- unsupervised (eq. 21)


def adam_inverse(
    decoder: Callable[[Tensor], Tensor],
    observed: Tensor,
    operator: Measurement,
    latent_dim: int,
    *,
    steps: int = 40,
    lr: float = 0.1,
    x0: Tensor | None = None,
) -> Tensor:
    """Adam on eq. 21, ``min_x mean((ŷ − A G(x))²)`` per sample, for ``steps`` steps from
    ``x0`` (default zeros: the mean of the ``N(0, I)`` prior of the VAEs); returns the
    ``(B, latent_dim)`` latents, per sample the iterate of lowest loss among the ``steps + 1``
    visited (the last one included), as [`jiio_core.baselines.optimize_input`][jiio_core.baselines.optimize_input] does.

    ``decoder`` maps ``(B, latent_dim)`` latents to ``(B, C, H, W)`` images differentiably (a
    ConvVAE's ``decode``; a [`ZooModel`][jiio_zoo.model.ZooModel] decoder itself, whose call solves
    the DEQ with the config's solver and an implicit backward pass: each step one forward and one
    backward solve). ``operator`` is the batch's measurement ``A``. Samples are independent
    (Adam is elementwise and the loss a sum of per-sample terms). The decoder's parameters get no
    gradient; its mode is left as it is (put it in eval mode first)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not bool(torch.isfinite(observed).all()):
        raise ValueError(f"observed must be finite, got {int((~torch.isfinite(observed)).sum())} NaN/Inf values")
    shape = (observed.shape[0], latent_dim)
    if x0 is not None and not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 must be finite, got NaN/Inf values")
    if x0 is not None and tuple(x0.shape) != shape:
        raise ValueError(f"x0 must have shape {shape}, got {tuple(x0.shape)}")
    x = (torch.zeros(shape, dtype=observed.dtype, device=observed.device) if x0 is None
         else x0.detach().to(observed.dtype).clone()).requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    best_x = x.detach().clone()
    best = torch.full((shape[0],), math.inf, dtype=observed.dtype, device=observed.device)

    def loss_of(latent: Tensor) -> Tensor:
        return (operator.apply(decoder(latent)) - observed).pow(2).flatten(1).mean(1)

    for k in range(steps + 1):
        with torch.enable_grad():
            loss = loss_of(x)
            keep = loss.detach() < best
            best = torch.where(keep, loss.detach(), best)
            best_x = torch.where(keep.unsqueeze(1), x.detach(), best_x)
            if k == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), x)
        x.grad = grad
        opt.step()
    return best_x


def decode(decoder: Callable[[Tensor], Tensor], latents: Tensor) -> Tensor:
    """The images of ``latents`` for scoring, without a graph: a
    [`ZooModel`][jiio_zoo.model.ZooModel] at a tight equilibrium
    ([`decode_latents`][jiio_tasks.imaging.inversion.decode_latents]: relative residual 1e-5), any
    other decoder by calling it."""
    if isinstance(decoder, ZooModel):
        return decode_latents(decoder, latents)
    with torch.no_grad():
        return decoder(latents)


# --------------------------------------------------------------------------- scoring


@attrs.frozen
class MedianCI:
    """A median over faces and its percentile bootstrap interval at ``level``."""

    median: float
    low: float
    high: float
    level: float
    resamples: int

    def as_dict(self) -> dict[str, float]:
        """``{"median", "ci95_low", "ci95_high"}`` (the keys name the 95 % level, the default)."""
        tag = f"ci{round(100 * self.level)}"
        return {"median": self.median, f"{tag}_low": self.low, f"{tag}_high": self.high}


def median_ci(values: Tensor | Sequence[float], *, resamples: int = 2000, level: float = 0.95,
              seed: int = 0) -> MedianCI:
    """The median of ``values`` (torch's median: for an even count the lower of the two middle
    values, as [`evaluate_inverse`][jiio_tasks.inverse.evaluate.evaluate_inverse] reports) and its
    percentile bootstrap interval: ``resamples`` resamples of the values with replacement (drawn
    from a generator seeded ``seed``), the median of each, and their ``(1 − level)/2`` and
    ``(1 + level)/2`` quantiles (linear interpolation)."""
    v = torch.as_tensor(values, dtype=torch.float64, device="cpu").flatten()  # statistics on the CPU
    if v.numel() < 1 or not bool(torch.isfinite(v).all()):
        raise ValueError(f"values must be a non-empty sequence of finite numbers, got {v.numel()} values "
                         f"({int((~torch.isfinite(v)).sum())} not finite)")
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 1:
        raise ValueError(f"resamples must be an int >= 1, got {resamples!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=gen, device="cpu")
    medians = v[idx].median(dim=1).values
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64, device="cpu")
    low, high = torch.quantile(medians, q).tolist()
    return MedianCI(float(v.median()), float(low), float(high), level, resamples)

"""Adversarial training of a zoo DEQ classifier: clean, PGD or JIIO (eq. 26).

Every step draws a batch, builds its adversarial examples with the chosen adversary (none for
clean training) and takes a step of the config's optimiser ([`jiio_zoo.recipe.make_optimizer`][jiio_zoo.recipe.make_optimizer])
on the cross-entropy of the DEQ at those examples plus ``λ ·`` the Jacobian penalty (paper
Appendix A.1; λ = the config's ``jac_reg`` unless overridden): a Hutchinson estimate of
``‖∂f/∂z‖_F²/N`` at the DEQ equilibrium of those examples, or, with the JIIO shortcut gradient, at
a random iterate of the joint solve. λ = 0 computes no penalty.

For JIIO two gradients are offered (``jiio_gradient``):

- ``"examples"`` (default): the examples returned by the JIIO attack (re-projected and clamped)
  are fed to the DEQ like PGD's, and the loss is differentiated by the implicit DEQ backward
  pass. This gradient is exact for the examples actually used whatever the KKT residual of the
  joint solve (which plateaus around 0.1 on these small classifiers, so the envelope theorem
  behind the shortcut holds only approximately), and it makes JIIO and PGD training differ in
  the adversary alone.
- ``"shortcut"``: the paper's adjoint shortcut (eq. 19 with ``Relation.NEGATED``): the outer
  loss is ``solution.outer_loss = CE`` at ``(z*, δ*, μ*)`` and ``θ`` gets ``−μ*ᵀ∂f/∂θ − ∂ℓ/∂θ``
  with no extra solve (cheaper; exact only at a converged solve).

Launched by ``torchrun`` (see docs/distributed.md), every rank draws the same global batch,
trains on its shard through ``DistributedDataParallel`` around [`TrainingStep`][jiio_tasks.adversarial.train.TrainingStep], and rank 0
alone writes the run directory; the saved state is that of the unwrapped model, so a run can be
resumed with any number of processes.

The penalty's randomness comes from a generator seeded by [`penalty_seed`][jiio_tasks.penalty.penalty_seed] ``(seed, step)``,
not from torch's global stream: a resumed run draws the same probes, the batches drawn are those
of a run without the penalty, and the probes of a sample do not depend on which rank holds it
([`PenaltyDraw`][jiio_tasks.penalty.PenaltyDraw]), so a data-parallel step at the equilibrium equals the single-process
one. (The JIIO shortcut's random iterate is drawn per shard: there a data-parallel step equals
the single-process one in distribution only.)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core.validators import int_in, number_in, one_of, optional
from jiio_tasks.adversarial.attacks import (
    JIIOAttack,
    PGDAttack,
    default_deq,
    deq_logits,
    evaluating,
)
from jiio_tasks.adversarial.splits import (
    DATA_KINDS,
    held_out_digits,
    training_digits,
)
from jiio_tasks.distributed import DistEnv
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.penalty import PenaltyDraw, penalty_seed
from jiio_tasks.runs import RunDir, backward_and_step
from jiio_zoo.checkpoint import save
from jiio_zoo.configs import get_config
from jiio_zoo.model import ZooModel, build_model
from jiio_zoo.recipe import make_optimizer, settings

Method = Literal["clean", "pgd", "jiio"]
METHODS: tuple[Method, ...] = ("clean", "pgd", "jiio")


def _check_jac_reg(value: object, what: str = "jac_reg must be") -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0):
        raise ValueError(f"{what} a finite number >= 0, got {value!r}")
    return float(value)


@attrs.frozen(kw_only=True)
class AdvTrainConfig:
    """One adversarial-training run. ``eps``/``batch_size``/``lr``/``jac_reg`` default to the zoo
    config (``lr`` is that of the config's optimiser, [`jiio_zoo.recipe.make_optimizer`][jiio_zoo.recipe.make_optimizer])."""

    config: str = "digits_adv_small"
    method: Method = attrs.field(default="jiio", validator=one_of(*METHODS))
    steps: int = attrs.field(default=300, validator=int_in(1))
    seed: int = attrs.field(default=0, validator=int_in(0))
    eps: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    batch_size: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    lr: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    pgd_steps: int = attrs.field(default=10, validator=int_in(1))
    jiio_iterations: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    jiio_gradient: Literal["examples", "shortcut"] = attrs.field(
        default="examples", validator=one_of("examples", "shortcut")
    )
    eval_size: int = attrs.field(default=200, validator=int_in(1))
    log_every: int = attrs.field(default=10, validator=int_in(1))
    save_every: int = attrs.field(default=50, validator=int_in(1))
    data: str = attrs.field(default="embedded", validator=one_of(*DATA_KINDS))
    data_root: str | None = None
    init: str | None = None
    """A ``jiio_zoo`` checkpoint to start from (e.g. a clean-trained model: adversarial
    fine-tuning); ignored when the run resumes from its own state."""
    max_minutes: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    """Stop (after saving the state) once this much training time has been spent; the run
    can be resumed later with the same command."""
    jac_reg: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))
    """λ of the Jacobian penalty (``None``: the config's ``train.jac_reg``; 0: no penalty)."""
    lr_schedule: Literal["constant", "cosine"] = attrs.field(default="constant",
                                                             validator=one_of("constant", "cosine"))
    """``"cosine"``: the learning rate of step ``s`` (0-based) is ``lr · ½(1 + cos(π s / steps))``,
    decaying to 0 at ``steps`` (so ``steps`` is the run's horizon, not only a cap)."""
    shift: int = attrs.field(default=0, validator=int_in(0))
    """Random translation of each training image by up to ``shift`` pixels along each axis
    (zero filled; drawn per image and step, before the adversary), 0 for none."""

    def resolved(self) -> dict[str, Any]:
        zc = get_config(self.config)
        eps = self.eps if self.eps is not None else zc.solver.epsilon
        if eps is None or eps <= 0:
            raise ValueError(f"config {self.config!r} has no epsilon; pass eps")
        return {
            **attrs.asdict(self),
            "eps": float(eps),
            "batch_size": self.batch_size or zc.train.batch_size,
            "lr": self.lr or zc.train.learning_rate,
            "jiio_iterations": self.jiio_iterations or zc.solver.jiio_iterations,
            "jac_reg": float(zc.train.jac_reg if self.jac_reg is None else self.jac_reg),
        }


class StepLoss(NamedTuple):
    """One training step's loss on a shard (what to differentiate), the examples it was taken
    at, and for logging (detached, the same reduction as ``loss``) the cross-entropy part and
    the shard's *sum* of the per-sample Jacobian penalty (0 when λ = 0)."""

    loss: Tensor
    examples: Tensor
    task_loss: Tensor
    jacobian_sum: Tensor


def scheduled_lr(lr: float, step: int, steps: int, schedule: str) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps`` under ``schedule``
    (``"constant"`` or ``"cosine"``, see [`AdvTrainConfig.lr_schedule`][jiio_tasks.adversarial.train.AdvTrainConfig.lr_schedule])."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")


def random_shift(images: Tensor, offsets: Tensor, shift: int) -> Tensor:
    """``images`` ``(N, C, H, W)`` each translated by its row of ``offsets`` ``(N, 2)`` (integers
    in ``[-shift, shift]``: rows down, columns right), zero filled."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be an int >= 0, got {shift!r}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if offsets.shape != (images.shape[0], 2):
        raise ValueError(f"offsets must have shape ({images.shape[0]}, 2), got {tuple(offsets.shape)}")
    if shift == 0:
        return images
    h, w = images.shape[-2:]
    padded = F.pad(images, (shift, shift, shift, shift))
    out = torch.empty_like(images)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        if abs(dy) > shift or abs(dx) > shift:
            raise ValueError(f"offsets must lie in [-{shift}, {shift}], got ({dy}, {dx}) in row {i}")
        out[i] = padded[i, :, shift - dy : shift - dy + h, shift - dx : shift - dx + w]
    return out


def _reduce(per_sample: Tensor, global_batch: int | None) -> Tensor:
    return per_sample.mean() if global_batch is None else per_sample.sum() / global_batch


def training_loss(model: ZooModel, images: Tensor, labels: Tensor, cfg: dict[str, Any],
                  global_batch: int | None = None, *, draw: PenaltyDraw | None = None) -> StepLoss:
    """The loss of one training step for ``cfg["method"]``, the images it was computed at, and
    its parts ([`StepLoss`][jiio_tasks.adversarial.train.StepLoss]).

    The loss is the mean over ``images``; with ``global_batch`` it is the sum over ``images``
    divided by ``global_batch``: this shard's part of the mean over a global batch split over
    ranks (whose gradients are then summed). Each sample's cotangent is then the same as in
    one process, which matters because the implicit backward solve stops at an absolute
    tolerance: scaling its right-hand side changes where it stops.

    ``cfg["jac_reg"]`` (λ; default the model config's ``train.jac_reg``) > 0 adds ``λ ·`` the
    Jacobian penalty, reduced like the cross-entropy: at the DEQ equilibrium of the examples
    (``draw.penalty``) or, for ``jiio`` with the ``shortcut`` gradient, at a random iterate of
    the joint solve. ``draw`` (default: seeded from torch's global stream) holds its randomness
    and this shard's rows of the global batch."""
    method = cfg["method"]
    lam = _check_jac_reg(cfg["jac_reg"] if cfg.get("jac_reg") is not None else model.config.train.jac_reg)
    if lam > 0 and draw is None:
        draw = PenaltyDraw.from_global_stream()
    deq = default_deq(model)
    adv = images
    if method == "pgd":
        adv = PGDAttack(cfg["eps"], steps=cfg["pgd_steps"], random_start=True).perturb(model, images, labels, deq)
    elif method == "jiio":
        attack = JIIOAttack(cfg["eps"], iterations=cfg["jiio_iterations"])
        if cfg["jiio_gradient"] == "shortcut":
            gen = None if draw is None or lam == 0 else draw.joint_generator(images.device)
            with torch.enable_grad():
                sol = attack.solve(model, images, labels, jacobian_penalty=gen is not None, generator=gen)
            task = _reduce(sol.outer_loss, global_batch)
            if gen is None:
                return StepLoss(task, images + sol.x.detach(), task.detach(), images.new_zeros(()))
            if sol.jacobian_penalty is None:
                raise RuntimeError("the JIIO solve returned no Jacobian penalty")
            pen = sol.jacobian_penalty
            return StepLoss(task + lam * _reduce(pen, global_batch), images + sol.x.detach(), task.detach(),
                            pen.detach().sum())
        adv, _ = attack.perturb(model, images, labels)
    z = deq.solve(model.layer, adv).z
    logits = model.head(z)
    if global_batch is None:
        task = F.cross_entropy(logits, labels)
    else:
        task = F.cross_entropy(logits, labels, reduction="sum") / global_batch
    if lam == 0 or draw is None:
        return StepLoss(task, adv, task.detach(), images.new_zeros(()))
    pen = draw.penalty(model.layer, z, adv, probes=settings(model.config).jacobian_probes)
    return StepLoss(task + lam * _reduce(pen, global_batch), adv, task.detach(), pen.detach().sum())


class TrainingStep(nn.Module):
    """[`training_loss`][jiio_tasks.adversarial.train.training_loss] as a module: what ``DistributedDataParallel`` wraps, since DDP
    synchronises the gradients of the parameters used in its wrapped module's ``forward``.
    ``global_batch`` as in [`training_loss`][jiio_tasks.adversarial.train.training_loss] (then wrap with ``reduce="sum"``);
    ``shard_start`` is the first row of this rank's shard in the global batch (the rows of the
    Jacobian penalty's probes it takes). Its state dict is the model's under the prefix
    ``model.``: checkpoint ``self.model``."""

    def __init__(self, model: ZooModel, cfg: dict[str, Any], global_batch: int | None = None,
                 shard_start: int = 0) -> None:
        super().__init__()
        if global_batch is not None and (not isinstance(global_batch, int) or global_batch < 1):
            raise ValueError(f"global_batch must be an int >= 1 or None, got {global_batch!r}")
        if not isinstance(shard_start, int) or shard_start < 0 or (global_batch is not None
                                                                   and shard_start >= global_batch):
            raise ValueError(f"shard_start must be an int in [0, global_batch), got {shard_start!r}")
        self.model = model
        self.cfg = dict(cfg)
        self.global_batch = global_batch
        self.shard_start = shard_start

    def forward(self, images: Tensor, labels: Tensor, seed: int | None = None) -> StepLoss:
        """The step's [`StepLoss`][jiio_tasks.adversarial.train.StepLoss]; ``seed`` (e.g. [`penalty_seed`][jiio_tasks.penalty.penalty_seed]) seeds the Jacobian
        penalty's randomness (default: drawn from torch's global stream when λ > 0)."""
        draw = None if seed is None else PenaltyDraw(seed, self.shard_start, self.global_batch)
        return training_loss(self.model, images, labels, self.cfg, self.global_batch, draw=draw)


def optimizer_step(step: nn.Module, opt: torch.optim.Optimizer, images: Tensor, labels: Tensor,
                   seed: int | None = None, stats: dict[str, float] | None = None,
                   step_index: int | None = None) -> float:
    """One optimiser step on ``step(images, labels, seed)``'s loss; returns the loss. ``step``
    is a [`TrainingStep`][jiio_tasks.adversarial.train.TrainingStep], or one wrapped by [`DistEnv.wrap`][jiio_tasks.distributed.DistEnv.wrap] (then ``images`` and
    ``labels`` are this rank's shard, the gradient is combined over the ranks before the
    step, and the loss returned is this rank's). ``stats``, if given, receives this rank's
    ``task_loss`` (the cross-entropy part of the loss) and ``jacobian_sum``."""
    out: StepLoss = step(images, labels, seed)
    backward_and_step(opt, out.loss, -1 if step_index is None else step_index)
    if stats is not None:
        stats["task_loss"] = float(out.task_loss)
        stats["jacobian_sum"] = float(out.jacobian_sum)
    return float(out.loss.detach())


def accuracy(model: ZooModel, images: Tensor, labels: Tensor, attack: JIIOAttack | PGDAttack | None,
             batch: int = 100, generator: torch.Generator | None = None) -> float:
    """Accuracy (fraction) on ``images`` under ``attack`` (``None``: clean), in eval mode."""
    correct = 0
    deq = default_deq(model)
    for i in range(0, len(labels), batch):
        x, y = images[i : i + batch], labels[i : i + batch]
        if attack is not None:
            x = attack(model, x, y, deq, generator).images
        with torch.no_grad(), evaluating(model):
            correct += int((deq_logits(model, x, deq).argmax(1) == y).sum())
    return correct / max(1, len(labels))


def robust_accuracies(model: ZooModel, images: Tensor, labels: Tensor, eps: float,
                      pgd_steps: int = 20, jiio_iterations: int = 40, seed: int = 0) -> dict[str, float]:
    """Clean, PGD-``pgd_steps`` and JIIO accuracy (the columns of Table 5)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "clean": accuracy(model, images, labels, None),
        "pgd": accuracy(model, images, labels, PGDAttack(eps, steps=pgd_steps), generator=g),
        "jiio": accuracy(model, images, labels, JIIOAttack(eps, iterations=jiio_iterations)),
    }


def train(run: RunDir, config: AdvTrainConfig, progress: bool = True, env: DistEnv | None = None, *,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Train (resuming from ``run`` if it holds a state); returns the final metrics.

    ``env`` (default: a single process on the CPU) is this process's place in a data-parallel
    job: every rank draws the same global batch of ``batch_size`` items and trains on its equal
    shard; only the main rank writes to ``run``; the final accuracies are computed on shards of
    the evaluation set and summed over the ranks.

    The history logs ``loss``, the cross-entropy part of the step's loss (the Lagrangian value
    with the JIIO shortcut) over the global batch, and, when λ > 0, ``jacobian``, the mean
    Jacobian penalty (the step minimises ``loss + λ · jacobian``).

    ``clock`` times the steps (the logged ``seconds`` and the ``max_minutes`` budget; a benchmark
    comparing training budgets passes ``time.process_time``). The final accuracies use the
    attacks of Table 5: PGD-20 and JIIO with the config's ``jiio_iterations``."""
    env = DistEnv() if env is None else env
    cfg = config.resolved()
    env.shard_bounds(cfg["batch_size"], name="batch_size")
    torch.manual_seed(config.seed)
    model = build_model(get_config(config.config))
    if config.init is not None and not run.state_path.exists():
        from jiio_zoo.checkpoint import load_into

        load_into(model, config.init)
    model.to(env.device)
    opt = make_optimizer(model.parameters(), model.config, lr=cfg["lr"])
    batch, lam = cfg["batch_size"], cfg["jac_reg"]
    loop = Loop(
        run_dir=run, model=model, optimizer=opt, config={**cfg, "world_size": env.world_size},
        steps=config.steps, save_every=config.save_every, log_every=config.log_every,
        max_seconds=None if config.max_minutes is None else 60.0 * config.max_minutes,
        progress=progress, title=f"adversarial/{config.method}", env=env, clock=clock,
        panels={"loss": "training loss (CE at the adversarial examples)", "jacobian": "Jacobian penalty"},
        metrics=lambda s: {"loss": s["task_loss"], **({"jacobian": s["jacobian_sum"] / batch} if lam > 0 else {})},
    )
    # the data first: a missing data root is an error before the run directory is touched
    tr_x, tr_y = training_digits(model, data=config.data, data_root=config.data_root)
    ev_x, ev_y = held_out_digits(model, config.eval_size, data=config.data, data_root=config.data_root)
    n_eval = len(ev_y)
    loop.resume()  # every rank restores the same state (model, optimiser, the RNG that draws the batches)
    # each rank's loss is its shard's part of the global mean, so gradients are summed
    shard_start, _ = env.shard_bounds(batch, name="batch_size")
    step_module = env.wrap(TrainingStep(model, cfg, batch if env.is_distributed else None, shard_start),
                           reduce="sum")

    def step_fn(step: int) -> StepResult:
        # CPU indices into the CPU split from the global CPU stream: the same batches on every
        # device and rank; the shifts drawn after them (a run without shifts draws the same batches)
        idx = torch.randint(0, len(tr_y), (batch,), device="cpu")
        offsets = (torch.randint(-config.shift, config.shift + 1, (batch, 2), device="cpu") if config.shift > 0
                   else torch.zeros(batch, 2, dtype=torch.long, device="cpu"))
        idx, offsets = env.shard((idx, offsets))
        x, y = random_shift(tr_x[idx], offsets, config.shift).to(env.device), tr_y[idx].to(env.device)
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(cfg["lr"], step, config.steps, config.lr_schedule)
        model.train()
        # the penalty's seed is a function of (seed, step): same on every rank and on resume
        seed = penalty_seed(config.seed, step) if lam > 0 else None
        with env.rank_rng(config.seed, step), _default_device(env.device):
            out: StepLoss = step_module(x, y, seed)
        return StepResult(out.loss, {"task_loss": float(out.task_loss), "jacobian_sum": float(out.jacobian_sum)})

    result = loop.run(step_fn)
    model.eval()
    lo, hi = _eval_part(n_eval, env)
    with _default_device(env.device):
        part = robust_accuracies(model, ev_x[lo:hi].to(env.device), ev_y[lo:hi].to(env.device),
                                 cfg["eps"], jiio_iterations=model.config.solver.jiio_iterations,
                                 seed=config.seed)
    if env.is_distributed:  # fractions of each rank's part -> counts -> fractions of the whole
        counts = env.sum({k: round(v * (hi - lo)) for k, v in part.items()})
        part = {k: v / n_eval for k, v in counts.items()}
    return loop.finish(result, {**part, "eval_size": n_eval},
                       lambda path: save(model, path, extra={"method": config.method, "seed": config.seed}))


def _eval_part(size: int, env: DistEnv) -> tuple[int, int]:
    """This rank's contiguous part of ``size`` evaluation items (as equal as possible)."""
    return size * env.rank // env.world_size, size * (env.rank + 1) // env.world_size


def _default_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """New tensors made without a device (e.g. a random attack start) on ``device``; nothing
    to do on the CPU (where the device context would only add dispatch overhead)."""
    return contextlib.nullcontext() if device.type == "cpu" else device

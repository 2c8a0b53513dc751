"""Meta-training and evaluation: JIIO (FixedInput or ImplicitKKT), Adam inner loop on the same
DEQ, and MAML on a small CNN (learn2learn).

The outer loss of every method is the query cross-entropy. For the DEQ methods it is taken
at the equilibrium of the query images under the task vector ``x*`` found from the support
set; with ``FixedInput`` (the paper's choice) ``dx*/dθ`` is dropped, with ``ImplicitKKT`` it
is kept (differentiating the whole augmented fixed point). The DEQ methods add ``λ ·`` the
Jacobian penalty (paper Appendix A.1; λ = the config's ``jac_reg`` unless overridden): a
Hutchinson estimate of ``‖∂f/∂z‖_F²/N`` per task at the query images' equilibrium (``jiio``,
``adam``) or at a random iterate of the joint solve (``jiio-kkt``); the config's optimiser
([`jiio_zoo.recipe.make_optimizer`][jiio_zoo.recipe.make_optimizer]) takes the outer step. The penalty's randomness is
seeded by ``(seed, step)`` ([`jiio_tasks.penalty.penalty_seed`][jiio_tasks.penalty.penalty_seed]), so resumed
and data-parallel runs draw what one uninterrupted process draws (``jiio-kkt``'s random iterate
is drawn per shard: there a data-parallel step matches one process in distribution only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jiio_core.baselines import Adam, InputOptimizationResult, optimize_input
from jiio_core.deq import DEQSolver
from jiio_core.problem import JointProblem, JointSolution
from jiio_core.recipe import SolveSettings
from jiio_core.state import State
from jiio_core.validators import int_in, number_in, one_of, optional
from jiio_tasks.data import TaskSet
from jiio_tasks.distributed import DistEnv
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.meta.evaluate import evaluate
from jiio_tasks.meta.splits import meta_test_tasks, meta_train_tasks
from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, sample_batch
from jiio_tasks.penalty import PenaltyDraw, penalty_seed
from jiio_tasks.runs import RunDir, RunError, atomic_torch_save
from jiio_zoo.checkpoint import save
from jiio_zoo.configs import MDEQConfig, get_config
from jiio_zoo.heads import head_output
from jiio_zoo.injections import FiLMInjection
from jiio_zoo.mdeq import MDEQLayer
from jiio_zoo.model import ZooModel, build_model
from jiio_zoo.recipe import make_optimizer, settings

Method = Literal["jiio", "jiio-kkt", "adam", "maml"]
METHODS: tuple[str, ...] = ("jiio", "jiio-kkt", "adam", "maml")


@attrs.frozen(kw_only=True)
class InnerSettings:
    """Inner-loop settings of the DEQ methods.

    ``iterations``: JIIO iterations (``None``: the config's ``jiio_iterations``).
    ``normalized_x_step``: ``None`` uses the config's ``x_step``; ``True``/``False`` override it
    (normalised: JIIO moves ``x`` by ``α_x`` along the normalised ``J_xᵀμ``, which keeps the
    task vector's step independent of the gradient's scale, tiny at initialisation). ``adam_steps``/``adam_lr``: the Adam inner loop, each step a full DEQ
    solve of ``deq_iterations`` iterations and an implicit backward. ``deq_iterations`` also
    bounds the query images' DEQ solve; ``backward_iterations`` its implicit backward
    (``None``: the config's ``backward_threshold``), both stopping at residual ``deq_tol``.
    """

    iterations: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    reg: float = attrs.field(default=0.01, validator=number_in(0.0))
    normalized_x_step: bool | None = attrs.field(default=None, validator=optional(one_of(True, False)))
    adam_steps: int = attrs.field(default=20, validator=int_in(1))
    adam_lr: float = attrs.field(default=0.1, validator=number_in(0.0, low_open=True))
    deq_iterations: int = attrs.field(default=30, validator=int_in(1))
    backward_iterations: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    deq_tol: float = attrs.field(default=1e-4, validator=number_in(0.0, low_open=True))


def query_ce(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Mean query cross-entropy of query logits ``(B, Q, K)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.query_labels.reshape(-1))


def query_accuracy(logits: Tensor, batch: TaskBatch) -> float:
    return float((logits.argmax(-1) == batch.query_labels).float().mean())


def support_part(batch: TaskBatch) -> TaskBatch:
    """The support images and labels of every task (what the inner problem sees)."""
    s = batch.support
    return TaskBatch(batch.images[:, :s], batch.labels[:, :s], s)


def query_part(batch: TaskBatch) -> TaskBatch:
    """The query images and labels of every task, as a batch with ``support = 0``."""
    s = batch.support
    return TaskBatch(batch.images[:, s:], batch.labels[:, s:], 0)


def _settings(model: ZooModel, inner: InnerSettings) -> SolveSettings:
    """The config's solve recipe with the inner-loop overrides of ``inner``."""
    overrides: dict[str, object] = {
        "tol": 0.0,
        "backward_tol": inner.deq_tol,
        "forward_max_iter": inner.deq_iterations,
        "forward_tol": inner.deq_tol,
    }
    if inner.normalized_x_step is not None:
        overrides["x_step"] = "normalized" if inner.normalized_x_step else "gradient"
    if inner.backward_iterations is not None:
        overrides["backward_max_iter"] = inner.backward_iterations
    return settings(model.config, iterations=inner.iterations, **overrides)


def jiio_problem(model: ZooModel, support: int, inner: InnerSettings, kkt: bool = False) -> JointProblem:
    return _settings(model, inner).problem(
        model.layer,
        RegularizedFewShot(model.head, support, inner.reg),
        outer="kkt" if kkt else "fixed-input",
        x_shape=model.x_shape,
    )


def deq_solver(model: ZooModel, inner: InnerSettings) -> DEQSolver:
    return _settings(model, inner).deq_solver()


def jiio_inner(model: ZooModel, batch: TaskBatch, inner: InnerSettings) -> JointSolution:
    """JIIO on the support images only, without gradients: ``x*`` and the support loss."""
    sb = support_part(batch)
    with torch.no_grad():
        return jiio_problem(model, sb.support, inner).solve(sb.labels, context=sb.images)


def adam_inner(model: ZooModel, batch: TaskBatch, inner: InnerSettings) -> InputOptimizationResult:
    """Adam over the task vector on the support images only (each step a DEQ solve and an
    implicit backward); no gradient reaches θ."""
    sb = support_part(batch)
    objective = RegularizedFewShot(model.head, sb.support, inner.reg)
    x0 = torch.zeros(sb.images.shape[0], *model.x_shape, dtype=sb.images.dtype, device=sb.images.device)
    return optimize_input(model.layer, objective, sb.labels, x0, Adam(inner.adam_lr),
                          inner.adam_steps, deq=deq_solver(model, inner), context=sb.images)


def support_loss(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings) -> Tensor:
    """Per-task inner loss (support CE + ``reg · ‖x‖²``) at the DEQ equilibrium of the support
    images under ``x``: the common yardstick of inner loops that stop at different iterates."""
    sb = support_part(batch)
    with torch.no_grad():
        z = deq_solver(model, inner).solve(model.layer, x.detach(), context=sb.images).z
        out: Tensor = RegularizedFewShot(model.head, sb.support, inner.reg)(z, x.detach(), sb.labels)
        return out


def query_logits(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings) -> Tensor:
    """Query logits ``(B, Q, K)`` at the equilibrium of the query images under the fixed task
    vectors ``x``, differentiable in θ by implicit differentiation (``dx/dθ`` dropped)."""
    images = query_part(batch).images
    return head_output(model.head, deq_solver(model, inner).solve(model.layer, x.detach(), context=images).z,
                       x.detach())


class DEQForward(NamedTuple):
    """What [`deq_forward`][jiio_tasks.meta.train.deq_forward] returns: query logits ``(B, Q, K)`` (differentiable in θ per
    the method), the task vectors ``x*``, the per-task support loss (detached), when asked
    for, the per-task Jacobian penalty ``(B,)`` (differentiable in θ; else ``None``), and the
    per-task relative residual ``‖f(z) − z‖ / ‖z‖`` ``(B,)`` where the query solve stopped
    (``jiio``, ``adam``; ``None`` for ``jiio-kkt``, whose query states are part of the joint solve)."""

    logits: Tensor
    x: Tensor
    support_loss: Tensor
    jacobian: Tensor | None = None
    query_residual: Tensor | None = None


def relative_residual(residual: Tensor, z: State) -> Tensor:
    """``residual / ‖z‖`` per batch row, ``z`` a state (a tensor or a tuple of branch tensors
    with the batch first)."""
    parts = z if isinstance(z, tuple) else (z,)
    norm = torch.stack([p.detach().flatten(1).pow(2).sum(dim=1) for p in parts]).sum(dim=0).sqrt()
    return residual / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def _query_forward(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings,
                   draw: PenaltyDraw | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """[`query_logits`][jiio_tasks.meta.train.query_logits], the Jacobian penalty at the same
    query equilibrium if ``draw``, and the query solve's relative residual per task."""
    images = query_part(batch).images
    sol = deq_solver(model, inner).solve(model.layer, x.detach(), context=images)
    z = sol.z
    logits = head_output(model.head, z, x.detach())
    rel = relative_residual(sol.residual, z)
    if draw is None:
        return logits, None, rel
    return logits, draw.penalty(model.layer, z, x.detach(), context=images,
                                probes=_settings(model, inner).jacobian_probes), rel


def deq_forward(model: ZooModel, batch: TaskBatch, method: str, inner: InnerSettings,
                draw: PenaltyDraw | None = None) -> DEQForward:
    """Query logits ``(B, Q, K)`` at the inferred task vectors (differentiable in θ per the
    method), the task vectors, the per-task support loss and, with ``draw`` (its randomness
    and this shard's rows of the global batch of tasks), the per-task Jacobian penalty.

    ``jiio`` and ``adam`` infer ``x*`` from the support images alone and then solve the query
    images' DEQ at the fixed ``x*`` with an implicit backward: with ``dx*/dθ`` dropped this is
    exactly the ``FixedInput`` gradient of a joint solve over support and query images (each
    image's equilibrium depends on the others only through ``x``), at a third of the cost.
    ``jiio-kkt`` needs ``dx*/dθ`` and solves support and query jointly with ``ImplicitKKT``.
    The penalty is taken at the query images' equilibrium (``jiio``, ``adam``) or at a random
    iterate of the joint solve (``jiio-kkt``).
    """
    if method == "jiio":
        sol = jiio_inner(model, batch, inner)
        logits, jac, rel = _query_forward(model, batch, sol.x, inner, draw)
        return DEQForward(logits, sol.x, sol.loss.detach(), jac, rel)
    if method == "adam":
        res = adam_inner(model, batch, inner)
        logits, jac, rel = _query_forward(model, batch, res.x, inner, draw)
        return DEQForward(logits, res.x, res.loss.detach(), jac, rel)
    if method == "jiio-kkt":
        if draw is None:
            ksol = jiio_problem(model, batch.support, inner, kkt=True).solve(batch.labels, context=batch.images)
        else:  # jiio_problem's problem, with the penalty at a random iterate
            problem = _settings(model, inner).problem(
                model.layer, RegularizedFewShot(model.head, batch.support, inner.reg), outer="kkt",
                x_shape=model.x_shape, jacobian_penalty=True,
            )
            ksol = problem.solve(batch.labels, context=batch.images,
                                 generator=draw.joint_generator(batch.images.device))
            if ksol.jacobian_penalty is None:
                raise RuntimeError("the joint solve returned no Jacobian penalty")
        return DEQForward(head_output(model.head, ksol.z, ksol.x)[:, batch.support :], ksol.x, ksol.loss.detach(),
                          ksol.jacobian_penalty)
    raise ValueError(f"unknown DEQ method {method!r}")


class SmallCNN(nn.Module):
    """The MAML baseline's network: 3 × (conv3×3 → GN → ReLU → max-pool 2) → linear."""

    def __init__(self, ways: int, channels: int = 32, in_channels: int = 1, groups: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(3):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.ReLU(), nn.MaxPool2d(2)]
            c = channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, ways)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.features(x))
        return out


def maml_network(kind: str, ways: int, in_channels: int, image_size: int) -> nn.Module:
    """A fresh network of the MAML baseline (see ``MetaTrainConfig.maml_net``)."""
    if kind == "cnn":
        return SmallCNN(ways, in_channels=in_channels)
    if kind == "l2l-fc":
        from learn2learn.vision.models import OmniglotFC

        net: nn.Module = OmniglotFC(in_channels * image_size * image_size, ways)
        return net
    raise ValueError(f"maml_net must be 'cnn' or 'l2l-fc', got {kind!r}")


def maml_step(maml: Any, batch: TaskBatch, adapt_steps: int) -> tuple[Tensor, float]:
    """Mean query loss (differentiable in the meta-parameters) and accuracy over the batch."""
    losses, accs = [], []
    s = batch.support
    for b in range(batch.images.shape[0]):
        learner = maml.clone()
        for _ in range(adapt_steps):
            learner.adapt(F.cross_entropy(learner(batch.images[b, :s]), batch.labels[b, :s]))
        logits = learner(batch.images[b, s:])
        losses.append(F.cross_entropy(logits, batch.labels[b, s:]))
        accs.append(float((logits.argmax(-1) == batch.labels[b, s:]).float().mean()))
    return torch.stack(losses).mean(), sum(accs) / len(accs)


@attrs.frozen(kw_only=True)
class MetaTrainConfig:
    """One meta-training run. ``lr`` (of the config's optimiser; MAML: Adam at 1e-3) and
    ``jac_reg`` (λ of the DEQ methods' Jacobian penalty; MAML has none) default to the zoo
    config's values."""

    config: str = "glyphs_meta_small"
    method: str = attrs.field(default="jiio", validator=one_of(*METHODS))
    steps: int = attrs.field(default=200, validator=int_in(1))
    seed: int = attrs.field(default=0, validator=int_in(0))
    meta_batch: int = attrs.field(default=8, validator=int_in(1))
    ways: int = attrs.field(default=5, validator=int_in(2))
    shots: int = attrs.field(default=1, validator=int_in(1))
    query_shots: int = attrs.field(default=2, validator=int_in(1))
    lr: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    inner: InnerSettings = attrs.field(factory=InnerSettings, validator=attrs.validators.instance_of(InnerSettings))
    maml_lr: float = attrs.field(default=0.4, validator=number_in(0.0, low_open=True))
    maml_steps: int = attrs.field(default=1, validator=int_in(1))
    maml_net: str = attrs.field(default="cnn", validator=one_of("cnn", "l2l-fc"))
    """The MAML baseline's network: ``"cnn"`` ([`SmallCNN`][jiio_tasks.meta.train.SmallCNN]) or ``"l2l-fc"``,
    learn2learn's ``OmniglotFC`` (4 linear–BatchNorm–ReLU blocks, 256-128-64-64), the network of
    learn2learn's Omniglot MAML example (whose other settings are fast lr 0.5, 1 adaptation step,
    Adam at 3e-3 over 32 tasks per step: ``--maml-lr 0.5 --lr 0.003 --meta-batch 32``)."""
    eval_tasks: int = attrs.field(default=100, validator=int_in(1))
    log_every: int = attrs.field(default=10, validator=int_in(1))
    save_every: int = attrs.field(default=50, validator=int_in(1))
    max_minutes: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    #: the FiLM layer's initial weights (PyTorch's default Linear init) are multiplied by this:
    #: at 1 the task vector barely moves the logits of a fresh model, the inner loop cannot
    #: lower the support loss and the outer loop gets no signal
    film_init_scale: float = attrs.field(default=4.0, validator=number_in(0.0, low_open=True))
    data: str = attrs.field(default="embedded", validator=one_of("embedded", "omniglot"))
    """Where the tasks come from: the embedded glyphs, or Omniglot under ``data_root``
    ([`jiio_tasks.meta.splits`][jiio_tasks.meta.splits])."""
    data_root: str | None = None
    jac_reg: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))


def _model(cfg: MetaTrainConfig) -> nn.Module:
    if cfg.method == "maml":
        import learn2learn as l2l

        m = get_config(cfg.config).model
        channels = m.image_channels if isinstance(m, MDEQConfig) else 1
        size = m.image_size if isinstance(m, MDEQConfig) else 28
        return l2l.algorithms.MAML(maml_network(cfg.maml_net, cfg.ways, channels, size),  # type: ignore[no-any-return]
                                   lr=cfg.maml_lr)
    zm = build_model(get_config(cfg.config))
    layer = zm.layer
    if isinstance(layer, MDEQLayer) and isinstance(layer.injection, FiLMInjection):
        with torch.no_grad():  # FiLM stays the identity at x = 0 (zero bias); see film_init_scale
            layer.injection.film.weight.mul_(cfg.film_init_scale)
    head_classes = zm.config.model.num_classes if isinstance(zm.config.model, MDEQConfig) else 0
    if head_classes != cfg.ways:
        raise ValueError(f"config {cfg.config!r} has {head_classes} classes, tasks are {cfg.ways}-way")
    return zm


def step_loss(model: nn.Module, batch: TaskBatch, cfg: MetaTrainConfig) -> tuple[Tensor, float]:
    """Outer loss and query accuracy of one meta-batch."""
    if cfg.method == "maml":
        return maml_step(model, batch, cfg.maml_steps)
    assert isinstance(model, ZooModel)
    logits = deq_forward(model, batch, cfg.method, cfg.inner).logits
    return query_ce(logits, batch), query_accuracy(logits, batch)


class MetaStep(nn.Module):
    """The outer loss of a DEQ method on a meta-batch, as a module (what [`DistEnv.wrap`][jiio_tasks.distributed.DistEnv.wrap]
    puts in DDP). With ``global_tasks`` (data-parallel runs) the loss is the sum of the query
    cross-entropies of this shard divided by the global number of query items, plus ``lam ·``
    the sum of the shard's per-task Jacobian penalties divided by ``global_tasks``, to be summed
    over the ranks; without it, the mean query cross-entropy plus ``lam ·`` the mean penalty.
    ``shard_start``: this shard's first task in the global meta-batch (the rows of the
    penalty's probes it takes). Returns the loss, the number of correct queries and, detached,
    the cross-entropy part of the loss and the shard's sum of the penalty (0 when ``lam`` = 0)."""

    def __init__(self, model: ZooModel, cfg: MetaTrainConfig, global_tasks: int | None = None, *,
                 lam: float = 0.0, shard_start: int = 0) -> None:
        super().__init__()
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam (λ of the Jacobian penalty) must be a finite number >= 0, got {lam!r}")
        if not isinstance(shard_start, int) or shard_start < 0 or (global_tasks is not None
                                                                   and shard_start >= global_tasks):
            raise ValueError(f"shard_start must be an int in [0, global_tasks), got {shard_start!r}")
        self.model = model
        object.__setattr__(self, "cfg", cfg)
        self.global_tasks = global_tasks
        self.lam = float(lam)
        self.shard_start = shard_start

    def forward(self, images: Tensor, labels: Tensor, support: int,
                seed: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``seed`` (e.g. [`penalty_seed`][jiio_tasks.penalty.penalty_seed]) seeds the penalty's
        randomness (default: drawn from torch's global stream when ``lam`` > 0)."""
        cfg: MetaTrainConfig = self.cfg  # type: ignore[assignment]
        batch = TaskBatch(images, labels, support)
        draw = None
        if self.lam > 0:
            draw = (PenaltyDraw.from_global_stream() if seed is None
                    else PenaltyDraw(seed, self.shard_start, self.global_tasks))
        out = deq_forward(self.model, batch, cfg.method, cfg.inner, draw)
        logits = out.logits
        flat, target = logits.reshape(-1, logits.shape[-1]), batch.query_labels.reshape(-1)
        if self.global_tasks is None:
            task = F.cross_entropy(flat, target)
        else:
            per_task = target.shape[0] // images.shape[0]
            task = F.cross_entropy(flat, target, reduction="sum") / (self.global_tasks * per_task)
        correct = (flat.detach().argmax(-1) == target).sum()
        if draw is None:
            return task, correct, task.detach(), task.new_zeros(())
        if out.jacobian is None:
            raise RuntimeError(f"method {cfg.method!r} returned no Jacobian penalty")
        jac = out.jacobian
        pen = jac.mean() if self.global_tasks is None else jac.sum() / self.global_tasks
        return task + self.lam * pen, correct, task.detach(), jac.detach().sum()


def tasksets(cfg: MetaTrainConfig) -> tuple[TaskSet, TaskSet]:
    """The meta-train task stream of ``cfg`` (seeded by ``cfg.seed``) and its fixed meta-test
    tasks (``cfg.eval_tasks`` of them): [`meta_train_tasks`][jiio_tasks.meta.splits.meta_train_tasks] and
    [`meta_test_tasks`][jiio_tasks.meta.splits.meta_test_tasks]."""
    shape = {"ways": cfg.ways, "shots": cfg.shots, "query_shots": cfg.query_shots}
    train_ts = meta_train_tasks(config=cfg.config, **shape, seed=cfg.seed, data=cfg.data, data_root=cfg.data_root)
    test_ts = meta_test_tasks(config=cfg.config, **shape, count=cfg.eval_tasks, data=cfg.data,
                              data_root=cfg.data_root)
    return train_ts, test_ts


def train(run: RunDir, cfg: MetaTrainConfig, progress: bool = True, env: DistEnv | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Meta-train for ``cfg.steps`` steps in total (resuming from ``run`` if it holds a state);
    returns the final metrics (meta-test accuracy) written to ``metrics.json``. ``clock`` times
    the steps (the logged ``seconds`` and the ``max_minutes`` budget; ``time.process_time`` for
    CPU time).

    ``env`` (default: one process) is this process's place in a data-parallel job (DEQ
    methods only; docs/distributed.md): every rank draws the same global meta-batch of tasks
    from the same task stream and trains on its contiguous shard of tasks; the loss is the
    shard's sum over the global number of query items (plus ``λ ·`` its sum of the per-task
    penalty over the global number of tasks) and DDP sums the gradients; rank 0
    writes the run directory (world-size independent) and runs the final evaluation.

    The history logs ``loss``, the mean query cross-entropy of the step, ``query_accuracy``
    and, for the DEQ methods with λ > 0, ``jacobian``, the mean per-task Jacobian penalty (the
    step minimises ``loss + λ · jacobian``)."""
    env = DistEnv() if env is None else env
    if env.is_distributed and cfg.method == "maml":
        raise ValueError("method 'maml' does not run data-parallel; use one process (or a DEQ method)")
    env.shard_bounds(cfg.meta_batch, name="meta_batch")
    torch.manual_seed(cfg.seed)
    model = _model(cfg)
    zc = get_config(cfg.config)
    lr = cfg.lr or (1e-3 if cfg.method == "maml" else zc.train.learning_rate)
    lam = 0.0 if cfg.method == "maml" else float(zc.train.jac_reg if cfg.jac_reg is None else cfg.jac_reg)
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if cfg.method == "maml"
           else make_optimizer(model.parameters(), zc, lr=lr))
    train_ts, test_ts = tasksets(cfg)

    def logged(s: Mapping[str, float]) -> dict[str, float]:
        out = {"loss": s["task"], "query_accuracy": s["correct"] / s["queries"]}
        return {**out, "jacobian": s["jac"] / cfg.meta_batch} if lam > 0 else out

    loop = Loop(
        run_dir=run, model=model, optimizer=opt,
        config={**attrs.asdict(cfg), "lr": lr, "jac_reg": lam, "world_size": env.world_size},
        steps=cfg.steps, save_every=cfg.save_every, log_every=cfg.log_every,
        max_seconds=None if cfg.max_minutes is None else 60.0 * cfg.max_minutes,
        progress=progress, title=f"meta/{cfg.method}", env=env, metrics=logged, clock=clock,
        panels={"loss": "query cross-entropy", "query_accuracy": "query accuracy", "jacobian": "Jacobian penalty"},
        # the task stream (TaskSet's private `random` state) continues where the saved run left it
        state=lambda: {"taskset_rng": train_ts.rng_state()},
        restore=lambda family: train_ts.set_rng_state(family["taskset_rng"]),
    )
    step_module: nn.Module | None = None
    if isinstance(model, ZooModel):  # DDP around it when distributed, the module itself otherwise
        shard_start, _ = env.shard_bounds(cfg.meta_batch, name="meta_batch")
        step_module = env.wrap(MetaStep(model, cfg, cfg.meta_batch if env.is_distributed else None,
                                        lam=lam, shard_start=shard_start), reduce="sum")

    def step_fn(step: int) -> StepResult:
        batch = sample_batch(train_ts, cfg.meta_batch)  # the same global meta-batch on every rank
        model.train()
        queries = float(batch.query_labels.numel()) / env.world_size  # summed over the ranks
        if step_module is None:  # MAML (one process)
            loss, acc = step_loss(model, batch, cfg)
            return StepResult(loss, {"task": float(loss.detach()), "correct": acc * queries, "queries": queries,
                                     "jac": 0.0})
        images, labels = env.shard((batch.images, batch.labels))
        # the penalty's seed is a function of (seed, step): the same on every rank and on resume
        seed = penalty_seed(cfg.seed, step) if lam > 0 else None
        with env.rank_rng(cfg.seed, step):
            loss, correct, task, jac = step_module(images, labels, batch.support, seed)
        return StepResult(loss, {"task": float(task), "jac": float(jac), "correct": float(correct),
                                 "queries": queries})

    result = loop.run(step_fn)
    final: dict[str, Any] = {"chance": 1.0 / cfg.ways}
    if env.is_main:
        final = {**evaluate(model, test_ts, cfg), **final}

    def checkpoint(path: Path) -> Path:
        if isinstance(model, ZooModel):  # the zoo checkpoint that jiio_zoo.load(..., weights=) reads
            return save(model, path, extra={"method": cfg.method, "steps": result.steps_done, "seed": cfg.seed,
                                            **final})
        return save_maml(model, path, cfg)

    return loop.finish(result, final, checkpoint)


MAML_FORMAT = "jiio-maml-cnn"


def save_maml(maml: nn.Module, path: Path, cfg: MetaTrainConfig) -> Path:
    """Write the MAML baseline's meta-learned network ([`SmallCNN`][jiio_tasks.meta.train.SmallCNN] weights, its shape and
    the MAML settings) atomically to ``path``; read back with [`load_maml`][jiio_tasks.meta.train.load_maml]."""
    net: Any = getattr(maml, "module", maml)  # learn2learn's MAML wraps the network as .module
    m = get_config(cfg.config).model
    channels = m.image_channels if isinstance(m, MDEQConfig) else 1
    size = m.image_size if isinstance(m, MDEQConfig) else 28
    payload = {"format": MAML_FORMAT, "ways": cfg.ways, "in_channels": channels, "image_size": size,
               "net": cfg.maml_net, "maml_lr": cfg.maml_lr, "maml_steps": cfg.maml_steps,
               "state_dict": net.state_dict()}
    atomic_torch_save(path, payload)
    return path


def load_maml(path: str | Path) -> nn.Module:
    """The MAML network ([`SmallCNN`][jiio_tasks.meta.train.SmallCNN] or learn2learn's ``OmniglotFC``) saved by
    [`save_maml`][jiio_tasks.meta.train.save_maml] (read as data only)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RunError(f"cannot read MAML checkpoint {path}: {str(err).strip().splitlines()[0]}") from err
    if not isinstance(payload, dict) or payload.get("format") != MAML_FORMAT:
        raise RunError(f"{path} is not a MAML checkpoint of jiio (format {payload.get('format')!r})")
    net = maml_network(str(payload.get("net", "cnn")), int(payload["ways"]), int(payload["in_channels"]),
                       int(payload.get("image_size", 28)))
    net.load_state_dict(payload["state_dict"])
    return net

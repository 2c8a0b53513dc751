"""Meta-training and evaluation: JIIO (FixedInput or ImplicitKKT), Adam inner loop on the same
DEQ, and MAML on a small CNN (learn2learn).

The outer loss of every method is the query cross-entropy. For the DEQ methods it is taken
at the equilibrium of the query images under the task vector ``x*`` found from the support
set; with ``FixedInput`` (the paper's choice) ``dx*/dθ`` is dropped, with ``ImplicitKKT`` it
is kept (differentiating the whole augmented fixed point). The DEQ methods add ``λ ·`` the
Jacobian penalty (paper Appendix A.1; λ = the config's ``jac_reg`` unless overridden): a
Hutchinson estimate of ``‖∂f/∂z‖_F²/N`` per task at the query images' equilibrium (``jiio``,
``adam``) or at a random iterate of the joint solve (``jiio-kkt``); the config's optimiser
(:func:`jiio_zoo.recipe.make_optimizer`) takes the outer step. The penalty's randomness is
seeded by ``(seed, step)`` (:func:`jiio_tasks.penalty.penalty_seed`), so resumed
and data-parallel runs draw what one uninterrupted process draws (``jiio-kkt``'s random iterate
is drawn per shard: there a data-parallel step matches one process in distribution only).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # type: ignore[import-untyped]

from jiio_core.baselines import Adam, DEQSolver, InputOptimizationResult, optimize_input
from jiio_core.problem import JointProblem, JointSolution
from jiio_core.recipe import SolveSettings
from jiio_tasks.distributed import DistEnv
from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, sample_batch
from jiio_tasks.penalty import PenaltyDraw, penalty_seed
from jiio_tasks.runs import RunDir, backward_and_step
from jiio_zoo.checkpoint import save
from jiio_zoo.configs import MDEQConfig, get_config
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

    iterations: int | None = None
    reg: float = 0.01
    normalized_x_step: bool | None = None
    adam_steps: int = 20
    adam_lr: float = 0.1
    deq_iterations: int = 30
    backward_iterations: int | None = None
    deq_tol: float = 1e-4


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
    model.set_context(sb.images)
    try:
        with torch.no_grad():
            return jiio_problem(model, sb.support, inner).solve(sb.labels)
    finally:
        model.set_context(None)


def adam_inner(model: ZooModel, batch: TaskBatch, inner: InnerSettings) -> InputOptimizationResult:
    """Adam over the task vector on the support images only (each step a DEQ solve and an
    implicit backward); no gradient reaches θ."""
    sb = support_part(batch)
    model.set_context(sb.images)
    try:
        objective = RegularizedFewShot(model.head, sb.support, inner.reg)
        x0 = torch.zeros(sb.images.shape[0], *model.x_shape, dtype=sb.images.dtype, device=sb.images.device)
        return optimize_input(model.layer, objective, sb.labels, x0, Adam(inner.adam_lr),
                              inner.adam_steps, deq=deq_solver(model, inner))
    finally:
        model.set_context(None)


def support_loss(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings) -> Tensor:
    """Per-task inner loss (support CE + ``reg · ‖x‖²``) at the DEQ equilibrium of the support
    images under ``x``: the common yardstick of inner loops that stop at different iterates."""
    sb = support_part(batch)
    model.set_context(sb.images)
    try:
        with torch.no_grad():
            z = deq_solver(model, inner).solve(model.layer, x.detach()).z
            out: Tensor = RegularizedFewShot(model.head, sb.support, inner.reg)(z, x.detach(), sb.labels)
            return out
    finally:
        model.set_context(None)


def query_logits(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings) -> Tensor:
    """Query logits ``(B, Q, K)`` at the equilibrium of the query images under the fixed task
    vectors ``x``, differentiable in θ by implicit differentiation (``dx/dθ`` dropped)."""
    model.set_context(query_part(batch).images)
    try:
        out: Tensor = model.head(deq_solver(model, inner).solve(model.layer, x.detach()).z)
        return out
    finally:
        model.set_context(None)


class DEQForward(NamedTuple):
    """What :func:`deq_forward` returns: query logits ``(B, Q, K)`` (differentiable in θ per
    the method), the task vectors ``x*``, the per-task support loss (detached) and, when asked
    for, the per-task Jacobian penalty ``(B,)`` (differentiable in θ; else ``None``)."""

    logits: Tensor
    x: Tensor
    support_loss: Tensor
    jacobian: Tensor | None = None


def _query_forward(model: ZooModel, batch: TaskBatch, x: Tensor, inner: InnerSettings,
                   draw: PenaltyDraw | None) -> tuple[Tensor, Tensor | None]:
    """:func:`query_logits`, and the Jacobian penalty at the same query equilibrium if ``draw``."""
    model.set_context(query_part(batch).images)
    try:
        z = deq_solver(model, inner).solve(model.layer, x.detach()).z
        logits: Tensor = model.head(z)
        if draw is None:
            return logits, None
        return logits, draw.penalty(model.layer, z, x.detach(), probes=_settings(model, inner).jacobian_probes)
    finally:
        model.set_context(None)


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
        logits, jac = _query_forward(model, batch, sol.x, inner, draw)
        return DEQForward(logits, sol.x, sol.loss.detach(), jac)
    if method == "adam":
        res = adam_inner(model, batch, inner)
        logits, jac = _query_forward(model, batch, res.x, inner, draw)
        return DEQForward(logits, res.x, res.loss.detach(), jac)
    if method == "jiio-kkt":
        model.set_context(batch.images)
        try:
            if draw is None:
                ksol = jiio_problem(model, batch.support, inner, kkt=True).solve(batch.labels)
            else:  # jiio_problem's problem, with the penalty at a random iterate
                problem = _settings(model, inner).problem(
                    model.layer, RegularizedFewShot(model.head, batch.support, inner.reg), outer="kkt",
                    x_shape=model.x_shape, jacobian_penalty=True,
                )
                ksol = problem.solve(batch.labels, generator=draw.joint_generator(batch.images.device))
                if ksol.jacobian_penalty is None:
                    raise RuntimeError("the joint solve returned no Jacobian penalty")
            return DEQForward(model.head(ksol.z)[:, batch.support :], ksol.x, ksol.loss.detach(),
                              ksol.jacobian_penalty)
        finally:
            model.set_context(None)
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


def _opt_jac_reg(_: object, a: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                              or not math.isfinite(value) or value < 0):
        raise ValueError(f"MetaTrainConfig.{a.name} (λ of the Jacobian penalty; None: the config's) must be "
                         f"a finite number >= 0 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class MetaTrainConfig:
    """One meta-training run. ``lr`` (of the config's optimiser; MAML: Adam at 1e-3) and
    ``jac_reg`` (λ of the DEQ methods' Jacobian penalty; MAML has none) default to the zoo
    config's values."""

    config: str = "glyphs_meta_small"
    method: str = attrs.field(default="jiio", validator=attrs.validators.in_(METHODS))
    steps: int = 200
    seed: int = 0
    meta_batch: int = 8
    ways: int = 5
    shots: int = 1
    query_shots: int = 2
    lr: float | None = None
    inner: InnerSettings = attrs.field(factory=InnerSettings)
    maml_lr: float = 0.4
    maml_steps: int = 1
    eval_tasks: int = 100
    log_every: int = 10
    save_every: int = 50
    max_minutes: float | None = None
    #: the FiLM layer's initial weights (PyTorch's default Linear init) are multiplied by this:
    #: at 1 the task vector barely moves the logits of a fresh model, the inner loop cannot
    #: lower the support loss and the outer loop gets no signal
    film_init_scale: float = 4.0
    jac_reg: float | None = attrs.field(default=None, validator=_opt_jac_reg)


def _model(cfg: MetaTrainConfig) -> nn.Module:
    if cfg.method == "maml":
        import learn2learn as l2l

        m = get_config(cfg.config).model
        channels = m.image_channels if isinstance(m, MDEQConfig) else 1
        return l2l.algorithms.MAML(SmallCNN(cfg.ways, in_channels=channels), lr=cfg.maml_lr)  # type: ignore[no-any-return]
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
    """The outer loss of a DEQ method on a meta-batch, as a module (what :meth:`DistEnv.wrap`
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
        """``seed`` (e.g. :func:`~jiio_tasks.penalty.penalty_seed`) seeds the penalty's
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


def tasksets(cfg: MetaTrainConfig) -> tuple[Any, Any]:
    """The meta-train task stream (seeded by ``cfg.seed``) and the fixed meta-test tasks
    (``cfg.eval_tasks`` of them, always the same for the same ways/shots/query shots)."""
    from jiio_tasks.data import EmbeddedGlyphs, make_taskset

    m = get_config(cfg.config).model
    size = m.image_size if isinstance(m, MDEQConfig) else 28
    train_ts = make_taskset(EmbeddedGlyphs("train", size=size), cfg.ways, cfg.shots, cfg.query_shots, seed=cfg.seed)
    test_ts = make_taskset(EmbeddedGlyphs("test", size=size, seed=1), cfg.ways, cfg.shots, cfg.query_shots,
                           num_tasks=cfg.eval_tasks, seed=12345)
    return train_ts, test_ts


def evaluate(model: nn.Module, tasks: Any, cfg: MetaTrainConfig, batch: int = 10) -> dict[str, float]:
    """Mean query accuracy over the fixed meta-test tasks, and the inner-loop seconds."""
    accs: list[float] = []
    seconds = 0.0
    items = list(tasks)
    model.eval()
    for i in range(0, len(items), batch):
        from jiio_tasks.meta.tasks import collate

        tb = collate(items[i : i + batch])
        t0 = time.perf_counter()
        if cfg.method == "maml":
            _, acc = maml_step(model, tb, cfg.maml_steps)
        else:
            with torch.no_grad():
                _, acc = step_loss(model, tb, cfg)
        seconds += time.perf_counter() - t0
        accs.append(acc * tb.images.shape[0])
    return {"accuracy": sum(accs) / len(items), "inner_seconds": seconds, "tasks": float(len(items))}


def train(run: RunDir, cfg: MetaTrainConfig, progress: bool = True, env: DistEnv | None = None) -> dict[str, Any]:
    """Meta-train for ``cfg.steps`` steps in total (resuming from ``run`` if it holds a state);
    returns the final metrics (meta-test accuracy) written to ``metrics.json``.

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
    start, extra = run.resume({"model": model}, {"opt": opt})
    elapsed = float(extra.get("seconds", 0.0))
    if env.is_main:  # records the settings; on resume refuses changed ones (jiio_tasks.runs)
        run.begin({**attrs.asdict(cfg), "lr": lr, "jac_reg": lam, "world_size": env.world_size}, start, cfg.steps)
    train_ts, test_ts = tasksets(cfg)
    # the task stream (TaskSet's private `random` state) continues where the saved run left it
    if "taskset_rng" in extra:
        train_ts.set_rng_state(extra["taskset_rng"])
    step_module: nn.Module | None = None
    if isinstance(model, ZooModel):  # DDP around it when distributed, the module itself otherwise
        shard_start, _ = env.shard_bounds(cfg.meta_batch, name="meta_batch")
        step_module = env.wrap(MetaStep(model, cfg, cfg.meta_batch if env.is_distributed else None,
                                        lam=lam, shard_start=shard_start), reduce="sum")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not (progress and env.is_main),
               desc=f"train meta/{cfg.method}")
    for step in bar:
        batch = sample_batch(train_ts, cfg.meta_batch)  # the same global meta-batch on every rank
        t0 = time.perf_counter()
        model.train()
        stats: dict[str, float]
        if step_module is None:
            loss, acc = step_loss(model, batch, cfg)
            stats = {"task": float(loss.detach())}
        else:
            images, labels = env.shard((batch.images, batch.labels))
            # the penalty's seed is a function of (seed, step): the same on every rank and on resume
            seed = penalty_seed(cfg.seed, step) if lam > 0 else None
            with env.rank_rng(cfg.seed, step):
                loss, correct, task, jac = step_module(images, labels, batch.support, seed)
            stats = {"task": float(task), "jac": float(jac), "correct": float(correct)}
        backward_and_step(opt, loss, step)
        elapsed += time.perf_counter() - t0
        if env.is_distributed:
            stats = env.sum(stats)
            elapsed = env.max({"seconds": elapsed})["seconds"]
        if step_module is not None:
            acc = stats["correct"] / batch.query_labels.numel()
        lv = stats["task"]
        logged = {"loss": lv, "query_accuracy": acc}
        if lam > 0:
            logged["jacobian"] = stats["jac"] / cfg.meta_batch
        done = step + 1
        bar.set_postfix(loss=f"{lv:.3f}", acc=f"{acc:.2f}")
        out_of_time = cfg.max_minutes is not None and elapsed >= 60.0 * cfg.max_minutes
        if env.is_main and (done % cfg.log_every == 0 or done == cfg.steps or out_of_time):
            run.log(done, **logged, seconds=elapsed)
        if env.is_main and (done % cfg.save_every == 0 or done == cfg.steps or out_of_time):
            run.save_state(done, {"model": model}, {"opt": opt},
                           {"seconds": elapsed, "taskset_rng": train_ts.rng_state()})
        if out_of_time:
            break
    final: dict[str, Any] = {"train_seconds": elapsed, "chance": 1.0 / cfg.ways}
    if env.is_main:
        final = {**evaluate(model, test_ts, cfg), **final}
        run.update(final=final)
        run.plot_history({"loss": "query cross-entropy", "query_accuracy": "query accuracy",
                          "jacobian": "Jacobian penalty"}, title=f"meta/{cfg.method}")
        if isinstance(model, ZooModel):  # the zoo checkpoint that jiio_zoo.load(..., weights=) reads
            save(model, run.root / "model.pt",
                 extra={"method": cfg.method, "steps": done_steps(run), "seed": cfg.seed, **final})
    env.barrier()
    return final


def done_steps(run: RunDir) -> int:
    """Steps completed by the run (0 before its first save)."""
    history = run.read_metrics().get("history", [])
    return int(history[-1]["step"]) if history else 0

"""Meta-training and evaluation: JIIO (FixedInput or ImplicitKKT), Adam inner loop on the same
DEQ, and MAML on a small CNN (learn2learn).

The outer loss of every method is the query cross-entropy. For the DEQ methods it is taken
at the equilibrium of the query images under the task vector ``x*`` found from the support
set; with ``FixedInput`` (the paper's choice) ``dx*/dθ`` is dropped, with ``ImplicitKKT`` it
is kept (differentiating the whole augmented fixed point).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # type: ignore[import-untyped]

from jiio_core.accelerators import AndersonII
from jiio_core.baselines import Adam, DEQSolver, InputOptimizationResult, optimize_input
from jiio_core.damping import Damping
from jiio_core.outer import FixedInput, ImplicitKKT
from jiio_core.problem import JointProblem, JointSolution
from jiio_tasks.distributed import DistEnv
from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, sample_batch
from jiio_tasks.runs import RunDir
from jiio_zoo.checkpoint import save
from jiio_zoo.configs import MDEQConfig, get_config
from jiio_zoo.injections import FiLMInjection
from jiio_zoo.mdeq import MDEQLayer
from jiio_zoo.model import ZooModel, build_model

Method = Literal["jiio", "jiio-kkt", "adam", "maml"]
METHODS: tuple[str, ...] = ("jiio", "jiio-kkt", "adam", "maml")


@attrs.frozen(kw_only=True)
class InnerSettings:
    """Inner-loop settings of the DEQ methods.

    ``iterations``: JIIO iterations (``None``: the config's ``jiio_iterations``).
    ``normalized_x_step``: JIIO moves ``x`` by ``α_x`` along the normalised ``J_xᵀμ`` (keeps
    the task vector's step independent of the gradient's scale, which is tiny at
    initialisation). ``adam_steps``/``adam_lr``: the Adam inner loop, each step a full DEQ
    solve of ``deq_iterations`` iterations and an implicit backward. ``deq_iterations`` also
    bounds the query images' DEQ solve; ``backward_iterations`` its implicit backward
    (``None``: the config's ``backward_threshold``), both stopping at residual ``deq_tol``.
    """

    iterations: int | None = None
    reg: float = 0.01
    normalized_x_step: bool = True
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


def jiio_problem(model: ZooModel, support: int, inner: InnerSettings, kkt: bool = False) -> JointProblem:
    s = model.config.solver
    az, amu, ax = s.damping
    return JointProblem(
        model.layer,
        RegularizedFewShot(model.head, support, inner.reg),
        accelerator=AndersonII(memory=s.anderson_memory),
        damping=Damping(z=az, mu=amu, x=ax, x_late=s.damping_x_switch, switch_at=s.damping_x_switch_iter),
        outer=ImplicitKKT(max_iter=s.backward_threshold, tol=1e-4)
        if kkt
        else FixedInput(max_iter=s.backward_threshold, tol=1e-4),
        max_iter=inner.iterations or s.jiio_iterations,
        tol=0.0,
        x_shape=model.x_shape,
        normalized_x_step=inner.normalized_x_step,
    )


def deq_solver(model: ZooModel, inner: InnerSettings) -> DEQSolver:
    s = model.config.solver
    return DEQSolver(accelerator=AndersonII(memory=s.anderson_memory), max_iter=inner.deq_iterations,
                     tol=inner.deq_tol, backward_max_iter=inner.backward_iterations or s.backward_threshold,
                     backward_tol=inner.deq_tol)


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
        x0 = torch.zeros(sb.images.shape[0], *model.x_shape, dtype=sb.images.dtype)
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


def deq_forward(model: ZooModel, batch: TaskBatch, method: str, inner: InnerSettings) -> tuple[Tensor, Tensor, Tensor]:
    """Query logits ``(B, Q, K)`` at the inferred task vectors (differentiable in θ per the
    method), the task vectors and the per-task support loss.

    ``jiio`` and ``adam`` infer ``x*`` from the support images alone and then solve the query
    images' DEQ at the fixed ``x*`` with an implicit backward: with ``dx*/dθ`` dropped this is
    exactly the ``FixedInput`` gradient of a joint solve over support and query images (each
    image's equilibrium depends on the others only through ``x``), at a third of the cost.
    ``jiio-kkt`` needs ``dx*/dθ`` and solves support and query jointly with ``ImplicitKKT``.
    """
    if method == "jiio":
        sol = jiio_inner(model, batch, inner)
        return query_logits(model, batch, sol.x, inner), sol.x, sol.loss.detach()
    if method == "adam":
        res = adam_inner(model, batch, inner)
        return query_logits(model, batch, res.x, inner), res.x, res.loss.detach()
    if method == "jiio-kkt":
        model.set_context(batch.images)
        try:
            ksol = jiio_problem(model, batch.support, inner, kkt=True).solve(batch.labels)
            return model.head(ksol.z)[:, batch.support :], ksol.x, ksol.loss.detach()
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


@attrs.frozen(kw_only=True)
class MetaTrainConfig:
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
    logits, _, _ = deq_forward(model, batch, cfg.method, cfg.inner)
    return query_ce(logits, batch), query_accuracy(logits, batch)


class MetaStep(nn.Module):
    """The outer loss of a DEQ method on a meta-batch, as a module (what :meth:`DistEnv.wrap`
    puts in DDP). With ``global_tasks`` (data-parallel runs) the loss is the sum of the query
    cross-entropies of this shard divided by the global number of query items, to be summed
    over the ranks; without it, the mean. Returns the loss and the number of correct queries."""

    def __init__(self, model: ZooModel, cfg: MetaTrainConfig, global_tasks: int | None = None) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "cfg", cfg)
        self.global_tasks = global_tasks

    def forward(self, images: Tensor, labels: Tensor, support: int) -> tuple[Tensor, Tensor]:
        cfg: MetaTrainConfig = self.cfg  # type: ignore[assignment]
        batch = TaskBatch(images, labels, support)
        logits, _, _ = deq_forward(self.model, batch, cfg.method, cfg.inner)
        flat, target = logits.reshape(-1, logits.shape[-1]), batch.query_labels.reshape(-1)
        if self.global_tasks is None:
            loss = F.cross_entropy(flat, target)
        else:
            per_task = target.shape[0] // images.shape[0]
            loss = F.cross_entropy(flat, target, reduction="sum") / (self.global_tasks * per_task)
        return loss, (flat.detach().argmax(-1) == target).sum()


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
    shard's sum over the global number of query items and DDP sums the gradients; rank 0
    writes the run directory (world-size independent) and runs the final evaluation."""
    env = DistEnv() if env is None else env
    if env.is_distributed and cfg.method == "maml":
        raise ValueError("method 'maml' does not run data-parallel; use one process (or a DEQ method)")
    env.shard_bounds(cfg.meta_batch, name="meta_batch")
    torch.manual_seed(cfg.seed)
    model = _model(cfg)
    zc = get_config(cfg.config)
    lr = cfg.lr or (1e-3 if cfg.method == "maml" else zc.train.learning_rate)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start, extra = run.resume({"model": model}, {"opt": opt})
    elapsed = float(extra.get("seconds", 0.0))
    if env.is_main:
        run.update(config={**attrs.asdict(cfg), "lr": lr, "world_size": env.world_size})
    train_ts, test_ts = tasksets(cfg)
    # the task stream (TaskSet's private `random` state) continues where the saved run left it
    if "taskset_rng" in extra:
        train_ts.set_rng_state(extra["taskset_rng"])
    step_module: nn.Module | None = None
    if isinstance(model, ZooModel) and env.is_distributed:
        step_module = env.wrap(MetaStep(model, cfg, cfg.meta_batch), reduce="sum")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not (progress and env.is_main),
               desc=f"train meta/{cfg.method}")
    for step in bar:
        batch = sample_batch(train_ts, cfg.meta_batch)  # the same global meta-batch on every rank
        t0 = time.perf_counter()
        model.train()
        if step_module is None:
            loss, acc = step_loss(model, batch, cfg)
        else:
            images, labels = env.shard((batch.images, batch.labels))
            with env.rank_rng(cfg.seed, step):
                loss, correct = step_module(images, labels, batch.support)
            queries = batch.query_labels.numel()
            acc = env.sum({"c": float(correct)})["c"] / queries
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t0
        lv = float(loss.detach())
        if env.is_distributed:
            lv = env.sum({"loss": lv})["loss"]
            elapsed = env.max({"seconds": elapsed})["seconds"]
        done = step + 1
        bar.set_postfix(loss=f"{lv:.3f}", acc=f"{acc:.2f}")
        out_of_time = cfg.max_minutes is not None and elapsed >= 60.0 * cfg.max_minutes
        if env.is_main and (done % cfg.log_every == 0 or done == cfg.steps or out_of_time):
            run.log(done, loss=lv, query_accuracy=acc, seconds=elapsed)
        if env.is_main and (done % cfg.save_every == 0 or done == cfg.steps or out_of_time):
            run.save_state(done, {"model": model}, {"opt": opt},
                           {"seconds": elapsed, "taskset_rng": train_ts.rng_state()})
        if out_of_time:
            break
    final: dict[str, Any] = {"train_seconds": elapsed, "chance": 1.0 / cfg.ways}
    if env.is_main:
        final = {**evaluate(model, test_ts, cfg), **final}
        run.update(final=final)
        if isinstance(model, ZooModel):  # the zoo checkpoint that jiio_zoo.load(..., weights=) reads
            save(model, run.root / "model.pt",
                 extra={"method": cfg.method, "steps": done_steps(run), "seed": cfg.seed, **final})
    env.barrier()
    return final


def done_steps(run: RunDir) -> int:
    """Steps completed by the run (0 before its first save)."""
    history = run.read_metrics().get("history", [])
    return int(history[-1]["step"]) if history else 0

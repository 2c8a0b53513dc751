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
from jiio_core.baselines import Adam, DEQSolver, optimize_input
from jiio_core.damping import Damping
from jiio_core.outer import FixedInput, ImplicitKKT
from jiio_core.problem import JointProblem
from jiio_tasks.meta.tasks import RegularizedFewShot, TaskBatch, sample_batch
from jiio_tasks.runs import RunDir
from jiio_zoo.configs import MDEQConfig, get_config
from jiio_zoo.model import ZooModel, build_model

Method = Literal["jiio", "jiio-kkt", "adam", "maml"]
METHODS: tuple[str, ...] = ("jiio", "jiio-kkt", "adam", "maml")


@attrs.frozen(kw_only=True)
class InnerSettings:
    """Inner-loop settings of the DEQ methods."""

    iterations: int = 40
    reg: float = 0.01
    adam_steps: int = 20
    adam_lr: float = 0.1
    deq_iterations: int = 30


def query_ce(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Mean query cross-entropy of logits ``(B, S, K)``."""
    q = logits[:, batch.support :]
    return F.cross_entropy(q.reshape(-1, q.shape[-1]), batch.query_labels.reshape(-1))


def query_accuracy(logits: Tensor, batch: TaskBatch) -> float:
    q = logits[:, batch.support :]
    return float((q.argmax(-1) == batch.query_labels).float().mean())


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
        max_iter=inner.iterations,
        tol=0.0,
        x_shape=model.x_shape,
    )


def deq_forward(model: ZooModel, batch: TaskBatch, method: str, inner: InnerSettings) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``(B, S, K)`` at the inferred task vectors (differentiable in θ per the method),
    the task vectors and the per-task support loss."""
    model.set_context(batch.images)
    try:
        if method in ("jiio", "jiio-kkt"):
            problem = jiio_problem(model, batch.support, inner, kkt=method == "jiio-kkt")
            sol = problem.solve(batch.labels)
            return model.head(sol.z), sol.x, sol.loss.detach()
        if method == "adam":
            objective = RegularizedFewShot(model.head, batch.support, inner.reg)
            x0 = torch.zeros(batch.images.shape[0], *model.x_shape, dtype=batch.images.dtype)
            deq = DEQSolver(accelerator=AndersonII(memory=model.config.solver.anderson_memory),
                            max_iter=inner.deq_iterations)
            res = optimize_input(model.layer, objective, batch.labels, x0, Adam(inner.adam_lr),
                                 inner.adam_steps, deq=deq)
            sol_z = deq.solve(model.layer, res.x.detach()).z
            return model.head(sol_z), res.x, res.loss.detach()
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


def _model(cfg: MetaTrainConfig) -> nn.Module:
    if cfg.method == "maml":
        import learn2learn as l2l

        m = get_config(cfg.config).model
        channels = m.image_channels if isinstance(m, MDEQConfig) else 1
        return l2l.algorithms.MAML(SmallCNN(cfg.ways, in_channels=channels), lr=cfg.maml_lr)  # type: ignore[no-any-return]
    zm = build_model(get_config(cfg.config))
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


def _tasksets(cfg: MetaTrainConfig) -> tuple[Any, Any]:
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


def train(run: RunDir, cfg: MetaTrainConfig, progress: bool = True) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model = _model(cfg)
    zc = get_config(cfg.config)
    lr = cfg.lr or (1e-3 if cfg.method == "maml" else zc.train.learning_rate)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start, extra = run.resume({"model": model}, {"opt": opt})
    elapsed = float(extra.get("seconds", 0.0))
    run.update(config={**attrs.asdict(cfg), "lr": lr})
    train_ts, test_ts = _tasksets(cfg)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress,
               desc=f"train meta/{cfg.method}")
    for step in bar:
        batch = sample_batch(train_ts, cfg.meta_batch)
        t0 = time.perf_counter()
        model.train()
        loss, acc = step_loss(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t0
        done = step + 1
        lv = float(loss.detach())
        bar.set_postfix(loss=f"{lv:.3f}", acc=f"{acc:.2f}")
        out_of_time = cfg.max_minutes is not None and elapsed >= 60.0 * cfg.max_minutes
        if done % cfg.log_every == 0 or done == cfg.steps or out_of_time:
            run.log(done, loss=lv, query_accuracy=acc, seconds=elapsed)
        if done % cfg.save_every == 0 or done == cfg.steps or out_of_time:
            run.save_state(done, {"model": model}, {"opt": opt}, {"seconds": elapsed})
        if out_of_time:
            break
    final = {**evaluate(model, test_ts, cfg), "train_seconds": elapsed, "chance": 1.0 / cfg.ways}
    run.update(final=final)
    return final

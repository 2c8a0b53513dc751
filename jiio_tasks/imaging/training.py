"""Training a zoo decoder through JIIO solves: the part the generative family (eq. 20) and the
supervised inverse-problem family (eq. 24) share.

Every step solves a [`jiio_core.JointProblem`][jiio_core.problem.JointProblem] for the batch from ``x = 0`` (no latent is
stored between steps): the latent codes are inferred jointly with the equilibrium. The
generative step fits the clean batch (outer loss = inner loss, the per-pixel MSE); the
inverse step corrupts it ([`operators`][jiio_tasks.imaging.operators]), solves for the observation
and scores the decoded equilibrium against the clean batch. Both add ``λ ·`` the Hutchinson
Jacobian penalty at a random iterate (λ = the config's ``jac_reg`` unless overridden); the
config's optimiser updates ``θ`` (layer, injection and head). The run goes through
[`jiio_tasks.loop.Loop`][jiio_tasks.loop.Loop] (resumable, locked, ``metrics.json``, ``training_curve.png``);
the final weights go to ``model.pt`` in the run directory (a [`jiio_zoo.checkpoint`][jiio_zoo.checkpoint] file,
loadable with ``jiio_zoo.load(name, weights=...)``) and ``reconstructions.png`` shows the
first training images reconstructed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from jiio_core import JointProblem, Relation
from jiio_core.state import State, StateSpec
from jiio_core.validators import int_in, number_in, one_of, optional
from jiio_tasks.distributed import DistEnv
from jiio_tasks.imaging.data import ImageSource, from_model, to_model
from jiio_tasks.imaging.inversion import activation, infer, save_grid
from jiio_tasks.imaging.objectives import MeasurementObjective
from jiio_tasks.imaging.operators import Corruption, Measurement, corruption, mse
from jiio_tasks.imaging.problem import jiio_problem, outer_gradient
from jiio_tasks.imaging.warmstart import LatentCache
from jiio_tasks.loop import Loop, StepResult
from jiio_tasks.runs import RunDir
from jiio_zoo.checkpoint import save
from jiio_zoo.model import ZooModel
from jiio_zoo.recipe import make_optimizer

__all__ = ["DecoderSettings", "DecoderStep", "reconstruction_grid", "train_decoder"]


@attrs.frozen(kw_only=True)
class DecoderSettings:
    """What both families' settings hold: how long and how to train (``None`` fields take the
    model config's value)."""

    steps: int = attrs.field(validator=int_in(1))
    batch_size: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    learning_rate: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))
    jac_reg: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))
    iterations: int | None = attrs.field(default=None, validator=optional(int_in(1)))
    save_every: int = attrs.field(default=10, validator=int_in(1))
    seed: int = attrs.field(default=0, validator=int_in(0))
    warm_start: bool = attrs.field(default=False, validator=one_of(True, False))
    """Start each example's solve from its latent of the last visit
    ([`LatentCache`][jiio_tasks.imaging.warmstart.LatentCache]) instead of ``x = 0``."""
    warm_start_max_age: int | None = attrs.field(default=None, validator=optional(int_in(0)))
    """With ``warm_start``: ignore cached latents older than this many steps (``None``: never)."""
    warm_start_state: bool = attrs.field(default=False, validator=one_of(True, False))
    """With ``warm_start``: also start ``z`` from the example's cached equilibrium state (else
    the layer's initial state)."""


class DecoderStep(nn.Module):
    """One training loss as a module (what [`DistEnv.wrap`][jiio_tasks.distributed.DistEnv.wrap] puts in DDP): the JIIO solve of
    a batch and its outer loss plus ``λ ·`` the Jacobian penalty.

    With ``global_batch`` (data-parallel runs) the loss is the sum over this shard divided by
    the global batch size, to be summed over the ranks (``wrap(..., reduce="sum")``): every
    sample's cotangent is then the same as in one process, which matters because the implicit
    backward solves stop at an absolute tolerance. Without it the loss is the batch mean.
    ``x0``/``z0``: the solve's starting latents and state (default zeros and the layer's
    initial state; warm starts). Returns the loss and, detached, the shard's sums of the outer
    loss, inner loss and penalty, the per-sample KKT residuals (for logging), the latents found
    and their states (detached; packed by the caller only when a warm-start cache keeps them).
    """

    def __init__(self, model: ZooModel, problem: JointProblem, lam: float, global_batch: int | None = None) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "problem", problem)  # shares the model's parameters: not a submodule
        self.lam = float(lam)
        self.global_batch = global_batch

    def forward(
        self, clean: Tensor, observed: Tensor | None = None, operator: Measurement | None = None,
        x0: Tensor | None = None, z0: State | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, State]:
        problem: JointProblem = self.problem  # type: ignore[assignment]
        if observed is not None:
            if operator is None:
                raise ValueError("DecoderStep: an observed batch needs its measurement operator")
            sol = problem.solve(observed, x0, context=operator, z0=z0)
            outer = mse(self.model.decode(sol.z), clean)
        else:
            sol = problem.solve(clean, x0, z0=z0)
            outer = sol.loss
        n = clean.shape[0]
        jac = sol.jacobian_penalty
        jac_sum = clean.new_zeros(()) if jac is None else (jac.sum() if jac.ndim else jac * n)
        if self.global_batch is None:
            loss = outer.mean() + (0.0 if jac is None else self.lam * jac_sum / n)
        else:
            loss = (outer.sum() + self.lam * jac_sum) / self.global_batch
        z = sol.z
        return (loss, outer.detach().sum(), sol.loss.detach().sum(), jac_sum.detach(),
                sol.kkt_residual.detach(), sol.x.detach(),
                tuple(p.detach() for p in z) if isinstance(z, tuple) else z.detach())


def train_decoder(
    model: ZooModel,
    source: ImageSource,
    run: RunDir,
    settings: DecoderSettings,
    *,
    outer: str,
    task: str | None = None,
    family: str,
    progress: bool = True,
    env: DistEnv | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Train ``model`` in place for ``settings.steps`` steps in total (resuming from ``run``
    if it holds a state) with the ``outer`` gradient ([`outer_gradient`][jiio_tasks.imaging.problem.outer_gradient]);
    ``task`` (a corruption name) makes it supervised inverse training, ``None`` generative.
    ``family`` names the run in the progress bar, the plot and the checkpoint. Returns the
    final metrics entry written to ``metrics.json``.

    ``env`` (default: one process on the CPU) is this process's place in a data-parallel job
    (``torchrun``; docs/distributed.md): every rank draws the same global batch and solves
    its contiguous shard; DDP sums the gradients of the per-shard losses (each divided by the
    global batch size); only rank 0 writes the run directory, whose checkpoints do not depend
    on the world size. Randomness inside a sample's computation (corruptions, the penalty's
    random iterate and probes) comes from a per-rank stream when there are 2+ processes.
    ``clock`` times the steps (the loop's ``seconds``; ``time.process_time`` for CPU time)."""
    env = DistEnv() if env is None else env
    cfg = model.config
    lr = cfg.train.learning_rate if settings.learning_rate is None else settings.learning_rate
    lam = cfg.train.jac_reg if settings.jac_reg is None else settings.jac_reg
    batch = cfg.train.batch_size if settings.batch_size is None else settings.batch_size
    env.shard_bounds(batch, name="batch_size")
    model.to(env.device)
    act = activation(model)
    scale = 2.0 if act == "tanh" else 1.0
    supervised = task is not None
    objective = MeasurementObjective(model.head, relation=Relation.OTHER if supervised else Relation.SAME)
    problem = jiio_problem(
        model,
        objective,
        outer=outer_gradient(outer),
        iterations=settings.iterations,
        jacobian_penalty=lam > 0,
    )
    corr = None if task is None else corruption(task, scale)
    opt = make_optimizer(model.parameters(), cfg, lr=lr)
    cache = None
    spec: StateSpec | None = None
    if settings.warm_start:
        dtype = next(model.parameters()).dtype
        if settings.warm_start_state:
            with torch.no_grad():
                spec = StateSpec.of(model.layer.initial_state(
                    torch.zeros(1, *model.x_shape, dtype=dtype, device=env.device)))
        cache = LatentCache(len(source), tuple(model.x_shape), settings.warm_start_max_age, dtype,
                            state_size=None if spec is None else spec.numel)
    loop = Loop(
        run_dir=run,
        model=model,
        optimizer=opt,
        config={
            "model": cfg.name,
            "family": family,
            "settings": attrs.asdict(settings),
            "outer": outer,
            "task": task,
            "learning_rate": lr,
            "jac_reg": lam,
            "batch_size": batch,
            "iterations": problem.max_iter,
            "data": source.name,
            "data_range": "[0, 1] (metrics); model range " + ("[-1, 1]" if scale == 2.0 else "[0, 1]"),
            "world_size": env.world_size,
        },
        steps=settings.steps,
        save_every=settings.save_every,
        seed=settings.seed,
        progress=progress,
        title=f"{family} {cfg.name}",
        panels={"loss": "outer loss (per-pixel MSE)", "jacobian": "Jacobian penalty",
                "kkt_residual_median": "KKT residual (median)", "warm_fraction": "warm-started fraction"},
        env=env,
        clock=clock,
        metrics=lambda s: {"loss": s["outer"] / batch, "inner_loss": s["inner"] / batch,
                           "jacobian": s["jac"] / batch,
                           "kkt_residual_median": s["kkt_median"] / env.world_size,
                           **({"warm_fraction": s["warm"] / batch} if "warm" in s else {})},
        state=None if cache is None else (lambda: {"latent_cache": cache.state()}),
        restore=None if cache is None else (lambda family: cache.restore(family["latent_cache"])),
    )
    step_module = env.wrap(DecoderStep(model, problem, lam, batch if env.is_distributed else None),
                           reduce="sum")

    def step_fn(step: int) -> StepResult:
        images, index = source.indexed_batch(batch)  # the same global batch on every rank
        clean = env.shard(to_model(images, act)).to(env.device)
        x0 = hit = z0 = None
        if cache is not None:
            start, hit = cache.lookup(index, step)
            x0 = env.shard(start).to(env.device, clean.dtype)
            if spec is not None:
                # rows without a usable entry start at the layer's initial state, as a cold solve
                init = spec.pack(model.layer.initial_state(x0))
                cached = env.shard(cache.lookup_state(index, step)).to(env.device, clean.dtype)
                z0 = spec.unpack(torch.where(env.shard(hit).to(env.device).unsqueeze(1), cached, init))
        with env.rank_rng(settings.seed, step):
            if corr is not None:
                op, observed = corr(clean)
                loss, outer_sum, inner_sum, jac_sum, kkt, x, z = step_module(clean, observed, op, x0, z0)
            else:
                loss, outer_sum, inner_sum, jac_sum, kkt, x, z = step_module(clean, None, None, x0, z0)
        if cache is not None:
            cache.store(index, env.gather(x), step, None if spec is None else env.gather(spec.pack(z)))
        # each shard's median KKT residual, averaged over the ranks by the metrics above
        sums = {"outer": float(outer_sum), "inner": float(inner_sum), "jac": float(jac_sum),
                "kkt_median": float(kkt.median())}
        if hit is not None:  # every rank sees the global batch's hits: its share of them
            sums["warm"] = float(hit.sum()) / env.world_size
        return StepResult(loss, sums)

    result = loop.run(step_fn)
    if env.is_main:
        with torch.random.fork_rng(devices=[]):  # the picture draws no numbers from the run's stream
            reconstruction_grid(model, source, corr, run.root / "reconstructions.png", iterations=settings.iterations)
    return loop.finish(
        result,
        {"steps": settings.steps, **{f"last_{k}": v for k, v in result.last.items()}},
        lambda path: save(model, path, extra={"steps": settings.steps, "family": family, "task": task}),
    )


def reconstruction_grid(model: ZooModel, source: ImageSource, corr: Corruption | None, path: Path, *,
                        count: int = 8, iterations: int | None = None) -> Path:
    """A PNG of the first ``count`` images of ``source`` (top row), their observations under
    ``corr`` when they are images, and their JIIO reconstructions (bottom row), in [0, 1]."""
    act = activation(model)
    device = next(model.parameters()).device
    clean = source.first(min(count, len(source))).to(device)
    model_clean = to_model(clean, act)
    rows = [clean]
    if corr is None:
        _, recon, _ = infer(model, model_clean, iterations=iterations)
    else:
        op, observed = corr(model_clean)
        if observed.shape == model_clean.shape:
            rows.append(from_model(observed, act))
        _, recon, _ = infer(model, observed, op, iterations=iterations)
    model.train()
    rows.append(from_model(recon, act))
    label = "clean / reconstruction" if len(rows) == 2 else "clean / observed / reconstruction"
    return save_grid(rows, path, title=f"{model.config.name}: {label} (JIIO)")

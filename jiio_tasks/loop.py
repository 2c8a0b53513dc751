"""The one training loop every task family runs: state, resume, locking, guards, progress,
metrics and plots in one place.

A family supplies a *step function* ``step_fn(step) -> StepResult`` (draw its batch, compute
the loss to minimise, say what to log), its settings, and a [`Loop`][jiio_tasks.loop.Loop] describing the run;
[`Loop.run`][jiio_tasks.loop.Loop.run] owns everything else:

- **resume**: the model, the optimiser, torch's and Python's RNG states, the training time
  spent and the family's own state (e.g. a task stream's position, `Loop.state` /
  `Loop.restore`) come back from ``state.pt`` (read with ``weights_only=True`` only), so
  a run killed at any point and resumed ends bit-identical to an uninterrupted one;
- **settings**: the run's settings are recorded in ``metrics.json`` when it starts, and a
  resume with changed ones is refused (or, for budgets, recorded; [`RunDir.begin`][jiio_tasks.runs.RunDir.begin]);
- **lock**: one writer per run directory ([`RunDir.acquire`][jiio_tasks.runs.RunDir.acquire]);
- **guards**: a NaN/Inf loss or gradient stops the run before the update and before any save
  ([`backward_and_step`][jiio_tasks.runs.backward_and_step]), so the last good checkpoint stays;
- **budget**: ``steps`` in total, and optionally ``max_seconds`` of training time (over all
  resumptions): the state is saved where it stops, and the same command continues it;
- **progress**: a tqdm bar on stderr with an ETA (``progress=False`` hides it);
- **metrics**: ``metrics.json`` holds ``config``, ``history`` (one record per logged step:
  ``step``, ``seconds`` = training time so far, then the family's values), ``final`` (always
  ``steps_done`` and ``train_seconds``, then the family's results) and ``resumed``;
- **plots**: ``training_curve.png`` of the logged values ([`Loop.finish`][jiio_tasks.loop.Loop.finish]).

Data-parallel runs ([`DistEnv`][jiio_tasks.distributed.DistEnv]): every rank runs the loop; the
step results' ``sums`` are summed over the ranks and the step time is the slowest rank's;
only the main rank writes the run directory.

The saved state has the same layout for every family: modules under ``"model"``, the
optimiser under ``"optimizer"``, ``extra = {"seconds": ..., "family": {...}}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from tqdm import tqdm  # type: ignore[import-untyped]

from jiio_core.validators import int_in, number_in, optional
from jiio_tasks.distributed import DistEnv
from jiio_tasks.runs import RunDir, backward_and_step

__all__ = ["Loop", "LoopResult", "StepResult"]


@attrs.frozen
class StepResult:
    """What a family's step function returns.

    ``loss``: the scalar to minimise (its gradient is combined over ranks by DDP when the
    family wrapped its model with [`DistEnv.wrap`][jiio_tasks.distributed.DistEnv.wrap]). ``sums``: detached numbers that add up
    over the ranks of a data-parallel step (e.g. a shard's sum of per-sample losses, its
    count of correct answers); `Loop.metrics` turns the summed values into the logged
    ones (default: logged as they are).
    """

    loss: Tensor
    sums: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen
class LoopResult:
    """Where [`Loop.run`][jiio_tasks.loop.Loop.run] stopped: ``steps_done`` in total, ``seconds`` of training time
    in total (all resumptions), ``start`` (the step this call resumed from) and the last
    logged values."""

    start: int
    steps_done: int
    seconds: float
    last: Mapping[str, float]


def _identity(sums: Mapping[str, float]) -> dict[str, float]:
    return dict(sums)


@attrs.define(kw_only=True)
class Loop:
    """One family's training run (see the module docstring for what the loop owns).

    ``model``: the module whose parameters are trained and saved (the unwrapped one; the step
    function may run it through DDP). ``config``: the run's settings as plain values (recorded
    in ``metrics.json``; a resume must match them). ``seed``: when given, ``torch`` is seeded
    with it before the first step of a new run (a resumed run gets its RNG states back).
    ``state``/``restore``: the family's extra resumable state (plain values and tensors).
    ``title`` names the progress bar and the plot; ``panels`` maps logged keys to plot labels.
    ``clock`` measures the training time of each step (wall time by default; a benchmark that
    compares CPU cost passes ``time.process_time``).
    """

    run_dir: RunDir
    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: Mapping[str, Any]
    steps: int = attrs.field(validator=int_in(1))
    save_every: int = attrs.field(default=10, validator=int_in(1))
    log_every: int = attrs.field(default=1, validator=int_in(1))
    max_seconds: float | None = attrs.field(default=None, validator=optional(number_in(0.0, low_open=True)))
    seed: int | None = None
    progress: bool = True
    title: str = "train"
    panels: Mapping[str, str] = attrs.field(factory=dict)
    env: DistEnv = attrs.field(factory=DistEnv)
    metrics: Callable[[Mapping[str, float]], dict[str, float]] = _identity
    state: Callable[[], dict[str, Any]] | None = None
    restore: Callable[[Mapping[str, Any]], None] | None = None
    clock: Callable[[], float] = time.perf_counter
    _start: int | None = attrs.field(default=None, init=False)
    _seconds: float = attrs.field(default=0.0, init=False)

    def resume(self) -> int:
        """Restore the saved state (if any) on every rank and record or check the settings on
        the main rank; returns the step to continue from. [`run`][jiio_tasks.loop.Loop.run] calls it if needed; call
        it first when the family must know the start (e.g. to seed its data before step 1)."""
        if self._start is not None:
            return self._start
        start, extra = self.run_dir.resume({"model": self.model}, {"optimizer": self.optimizer})
        self._seconds = float(extra.get("seconds", 0.0))
        if self.restore is not None and "family" in extra:
            self.restore(extra["family"])
        if self.env.is_main:
            self.run_dir.begin(self.config, start, self.steps)
        if start == 0 and self.seed is not None:
            torch.manual_seed(self.seed)
        self._start = start
        return start

    def _save(self, done: int) -> None:
        family = {} if self.state is None else self.state()
        self.run_dir.save_state(done, {"model": self.model}, {"optimizer": self.optimizer},
                                {"seconds": self._seconds, "family": family})

    def run(self, step_fn: Callable[[int], StepResult]) -> LoopResult:
        """Train from the resumed step to ``steps`` (or until ``max_seconds`` of training time),
        logging every ``log_every`` steps and saving every ``save_every`` steps and where it
        stops. A non-finite loss or gradient raises
        [`NonFiniteError`][jiio_tasks.runs.NonFiniteError] before that step's update and save."""
        env = self.env
        start = self.resume()
        bar = tqdm(range(start, self.steps), initial=start, total=self.steps,
                   disable=not (self.progress and env.is_main), desc=self.title)
        done, last = start, {}
        self.model.train()
        for step in bar:
            if self.max_seconds is not None and self._seconds >= self.max_seconds:
                break  # resumed with its budget already spent: no further step
            t0 = self.clock()
            out = step_fn(step)
            backward_and_step(self.optimizer, out.loss, step)
            seconds = self.clock() - t0
            sums = {k: float(v) for k, v in out.sums.items()}
            if env.is_distributed:
                sums = env.sum(sums)
                seconds = env.max({"s": seconds})["s"]
            self._seconds += seconds
            last = self.metrics(sums)
            done = step + 1
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:3]})
            out_of_time = self.max_seconds is not None and self._seconds >= self.max_seconds
            if env.is_main and (done % self.log_every == 0 or done == self.steps or out_of_time):
                self.run_dir.log(done, seconds=self._seconds, **last)
            if env.is_main and (done % self.save_every == 0 or done == self.steps or out_of_time):
                self._save(done)
            if out_of_time:
                break
        bar.close()
        return LoopResult(start=start, steps_done=done, seconds=self._seconds, last=last)

    def finish(self, result: LoopResult, final: Mapping[str, Any],
               checkpoint: Callable[[Path], Path] | None = None) -> dict[str, Any]:
        """On the main rank: write the final weights (``checkpoint(run_root / "model.pt")``),
        ``final`` (with ``steps_done``, ``train_seconds`` and ``checkpoint``) into
        ``metrics.json`` and ``training_curve.png``; then wait for every rank. Returns the
        final entry (the same on every rank)."""
        out: dict[str, Any] = {"steps_done": result.steps_done, "train_seconds": result.seconds, **final}
        if checkpoint is not None:  # the same entry on every rank; the main rank writes the file
            path = self.run_dir.root / "model.pt"
            out["checkpoint"] = str(checkpoint(path) if self.env.is_main else path)
        if self.env.is_main:
            self.run_dir.update(final=out)
            if self.panels:
                self.run_dir.plot_history(self.panels, title=self.title)
        self.env.barrier()
        return out

"""Table 4 of the paper on the embedded faces (``faces_gen_small``, 32×32 grey): median PSNR of
supervised and unsupervised inverse-problem solvers on the 20 held-out faces, with a bootstrap
95 % interval per cell (issue 11, item 3).

Rows (the paper's, plus the observation itself):
- ``observed``: the corrupted observation ``ŷ`` as the estimate;
- supervised, trained per task on eq. 23 / 24:
  - ``ae``: a conv encoder–decoder (``ConvAE``, 4×4 bottleneck, sized like the MDEQ-AE);
  - ``mdeq-ae``: the ``faces_gen_small`` MDEQ with the observation injected and its image head
    (``MDEQAutoencoder``), trained through the implicit DEQ backward pass;
  - ``jiio-sup-100``: the ``faces_gen_small`` decoder trained on eq. 24 (``jiio train inverse``'s
    step: 100 JIIO iterations per step, exact KKT gradient), started from the ``jiio-100``
    decoder below (``--jiio-sup-init decoder``, the default) or from scratch;
- unsupervised, one generator for all tasks, inverted per observation:
  - ``vae``: the ConvVAE of ``jiio train vae`` (width matched to the decoder, β = 1), Adam-40 on
    eq. 21 from the prior mean ``x = 0``;
  - ``mdeq-vae``: the MDEQ-VAE of ``jiio train mdeq-vae``, Adam-40 on eq. 21 over its MDEQ decoder
    (each step a forward and an implicit backward DEQ solve) from ``x = 0``;
  - ``jiio-40``: the shipped ``faces_gen_small`` weights (trained with 40 JIIO iterations on all
    80 training faces, so the validation faces below were among its training faces: no choice is
    made on them for this row);
  - ``jiio-100``: a fresh ``faces_gen_small`` decoder trained with 100 JIIO iterations per step;
  both JIIO rows solve eq. 22 with ``--iterations`` (100) JIIO iterations from ``x = 0``.

Protocol (fixed before any run):
- data: the embedded faces. Validation = the last ``--val`` (16) training faces, unaugmented (the
  convention of ``benchmarks/tv_prior.py``); every model trained here trains on the other
  training faces only (augmented batches of ``--batch-size``); held-out = the ``--faces`` (20)
  embedded test faces (``held_out_faces``), scored once per cell, after every choice was made;
- corruptions: the task's operator and noise drawn from a generator seeded ``--seed`` on the
  whole validation / held-out batch (the same observations for every row, as ``jiio eval
  inverse``); training draws fresh corruptions every step;
- choices, all on the validation faces by their median PSNR: the Adam learning rate of the
  unsupervised rows per row and task (``--adam-lrs``, ×2 grid extended until the best is
  interior); the training learning rate of the supervised rows per row and task (``--sup-lrs``,
  ``--jiio-sup-lrs``; ×√10 grid extended until interior; ``--tune-on TASK`` picks it on one task
  for all). Each candidate is trained to its full budget and the chosen one is the model scored
  (no retraining). Not chosen: the generators' training settings (the trainers' defaults: Adam
  1e-3, batch 16, the config's Jacobian penalty), which are trained once;
- budgets: training CPU time (``time.process_time``, one thread) per model, ``--cpu-minutes-*``.
  The supervised AE / MDEQ-AE loop stops itself at its budget (step time only); the JIIO
  trainers are resumed in chunks until the loop's step CPU time reaches the budget; the VAE
  trainers (whose loop clock is wall time) are resumed in chunks until the process CPU time
  around the calls reaches it (that count includes their checkpoint and plot writing);
- scoring: per face PSNR on [0, 1] (reconstructions clamped to [0, 1]), a DEQ model's output at
  a tight equilibrium (relative residual 1e-5); per cell the median over faces (torch's: the lower
  middle value for 20 faces, as ``jiio eval inverse``) and its percentile bootstrap 95 % interval
  over faces (``--resamples`` 2000, seeded).

Rows can be measured in separate sessions: ``--rows`` picks them, each row's result is written to
``RUNS/rows/ROW.json`` as soon as it is done, and ``--reuse DIR`` (a runs folder) or
``--reuse FILE.json`` (an earlier result) merges the rows not measured now, if their protocol
matches. Training runs live in ``--runs`` and are resumed by the same command.

Run: ``python benchmarks/table4.py [--rows observed,ae,...] [--runs runs/table4] [--reuse runs/table4]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import _common as C
import torch
from torch import Tensor
from torch.utils.data import Subset

import jiio_zoo
from jiio_tasks.data import EmbeddedFaces
from jiio_tasks.generative.cli import _vae_for
from jiio_tasks.generative.mdeq_vae import MDEQVAE, train_mdeq_vae
from jiio_tasks.generative.train import TrainSettings as GenerativeSettings
from jiio_tasks.generative.train import train as train_generative
from jiio_tasks.generative.vae import ConvVAE, train_vae
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.inversion import infer
from jiio_tasks.imaging.operators import CORRUPTIONS, Measurement, corruption, psnr
from jiio_tasks.imaging.splits import held_out_faces, training_faces
from jiio_tasks.imaging.training import train_decoder
from jiio_tasks.inverse.baselines import (
    SupervisedSettings,
    adam_inverse,
    decode,
    load_supervised_baseline,
    median_ci,
    train_supervised_baseline,
)
from jiio_tasks.inverse.train import TrainSettings as InverseSettings
from jiio_tasks.runs import RunDir, atomic_write_bytes
from jiio_tasks.speed import interior_sweep
from jiio_zoo.checkpoint import load_into
from jiio_zoo.configs import MDEQConfig

CONFIG = "faces_gen_small"
SIZE, CHANNELS = 32, 1
# row key: (group, label as in the paper's Table 4)
ROWS: dict[str, tuple[str, str]] = {
    "ae": ("supervised", "AE"),
    "mdeq-ae": ("supervised", "MDEQ-AE"),
    "jiio-sup-100": ("supervised", "JIIO-MDEQ-100"),
    "vae": ("unsupervised", "VAE (Adam-40)"),
    "mdeq-vae": ("unsupervised", "MDEQ-VAE (Adam-40)"),
    "jiio-40": ("unsupervised", "JIIO-MDEQ-40"),
    "jiio-100": ("unsupervised", "JIIO-MDEQ-100"),
    "observed": ("", "observed"),
}
SQRT10 = math.sqrt(10.0)
MAX_CHUNKS = 50


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


class Data:
    """The three splits of the protocol and the seeded observations of each task."""

    def __init__(self, args: argparse.Namespace) -> None:
        train_all = EmbeddedFaces("train", size=SIZE, augment=True)
        n = len(train_all)
        if not 1 <= args.val < n:
            raise SystemExit(f"--val must be in [1, {n - 1}], got {args.val}")
        self.train = ImageSource(Subset(train_all, range(n - args.val)), SIZE, CHANNELS,
                                 f"embedded faces: the first {n - args.val} training faces")
        self.val = training_faces(size=SIZE, channels=CHANNELS)[n - args.val:]
        self.test = held_out_faces(args.faces, size=SIZE, channels=CHANNELS)
        self.seed = args.seed

    def observe(self, split: str, task: str) -> tuple[Tensor, Measurement, Tensor]:
        """``(clean, A, ŷ)`` of ``split`` (``"val"`` or ``"test"``) under ``task``, seeded."""
        clean = self.val if split == "val" else self.test
        op, observed = corruption(task)(clean, torch.Generator().manual_seed(self.seed))
        return clean, op, observed


def face_psnr(recon: Tensor, clean: Tensor) -> Tensor:
    return psnr(recon.clamp(0, 1), clean)


def median(values: Tensor) -> float:
    return float(values.median())


def cell(values: Tensor, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    ci = median_ci(values, resamples=args.resamples, seed=args.seed)
    return {**ci.as_dict(), "psnr": [round(float(v), 4) for v in values], **extra}


def done_steps(run: RunDir) -> int:
    history = run.read_metrics().get("history", [])
    return int(history[-1]["step"]) if history else 0


def train_to_budget(run: RunDir, budget_s: float, call: Callable[[int], dict[str, Any]], model: torch.nn.Module,
                    *, loop_clock_is_cpu: bool) -> dict[str, Any]:
    """Resume ``call(total_steps)`` (a trainer without a CPU-time stop, training ``model``) in
    chunks until ``budget_s`` CPU seconds are spent: the loop's own step time when its clock is
    ``time.process_time`` (``loop_clock_is_cpu``), else the process CPU time around the calls.
    The count is kept in ``run/cpu_budget.json`` across sessions; each next chunk is sized from
    the loop's step time so far, and the last ends within half a step of the budget. A run whose
    budget is already spent is only loaded into ``model``. Returns the ledger (steps, CPU
    seconds, chunks)."""
    ledger_path = run.root / "cpu_budget.json"
    ledger: dict[str, Any] = (json.loads(ledger_path.read_text(encoding="utf8")) if ledger_path.exists()
                              else {"cpu_seconds": 0.0, "steps": 0, "chunks": 0, "seconds_per_step": 0.0,
                                    "clock": "loop step time (process_time)" if loop_clock_is_cpu
                                    else "process CPU time around the trainer calls"})
    if ledger["chunks"] and budget_s - ledger["cpu_seconds"] <= 0.5 * ledger["seconds_per_step"]:
        run.load_model(model)
        return ledger
    steps = max(1, done_steps(run), ledger["steps"])
    while True:
        t0 = time.process_time()
        final = call(steps)
        spent = time.process_time() - t0
        ledger["chunks"] += 1
        ledger["steps"] = int(final["steps_done"])
        ledger["cpu_seconds"] = float(final["train_seconds"]) if loop_clock_is_cpu else ledger["cpu_seconds"] + spent
        ledger["seconds_per_step"] = float(final["train_seconds"]) / max(1, ledger["steps"])
        atomic_write_bytes(ledger_path, json.dumps(ledger, indent=2).encode("utf8"))
        left = budget_s - ledger["cpu_seconds"]
        if left <= 0.5 * ledger["seconds_per_step"] or ledger["chunks"] >= MAX_CHUNKS:
            return ledger
        steps = ledger["steps"] + max(1, int(left / ledger["seconds_per_step"]))


def sweep(score: Callable[[float], float], grid: list[float], factor: float,
          args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """``interior_sweep`` on the validation median PSNR (maximised); the sweep as ``{lr: dB}``."""
    best, scores = interior_sweep(lambda lr: -score(lr), grid, factor=factor, max_extensions=args.lr_extensions)
    return best, {f"{k:g}": -v for k, v in scores.items()}


# --------------------------------------------------------------------------- the rows


def row_observed(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    cells = {}
    for task in args.tasks:
        clean, _, obs = data.observe("val", task)
        val = median(face_psnr(obs, clean))
        clean, _, obs = data.observe("test", task)
        cells[task] = cell(face_psnr(obs, clean), args, validation_median=val)
    return {"cells": cells, "settings": {}}


def _supervised(kind: str, args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    """``ae`` / ``mdeq-ae``: one model per task and learning rate, the rate chosen on validation."""
    minutes = args.cpu_minutes_ae if kind == "ae" else args.cpu_minutes_mdeq_ae
    models: dict[tuple[str, float], Any] = {}
    trained: dict[str, dict[str, Any]] = {}

    def model_for(task: str, lr: float) -> Any:
        if (task, lr) in models:
            return models[(task, lr)]
        run = RunDir(runs / kind / task / f"lr{lr:g}")
        final = run.read_metrics().get("final", {})
        if final.get("train_seconds", 0.0) >= 60 * minutes:  # budget spent: another call would add a step
            model = load_supervised_baseline(run)
        else:
            settings = SupervisedSettings(steps=10**9, batch_size=args.batch_size, learning_rate=lr,
                                          max_minutes=minutes, save_every=50, log_every=10, seed=args.seed)
            model, final = train_supervised_baseline(run, kind, task, settings, source=data.train, config=CONFIG,
                                                     progress=False, clock=time.process_time)
        trained[f"{task} lr{lr:g}"] = {"steps": final["steps_done"], "cpu_seconds": final["train_seconds"]}
        print(f"  {kind} {task} lr {lr:g}: {final['steps_done']} steps, {final['train_seconds']:.0f} CPU s",
              flush=True)
        models[(task, lr)] = model.eval()
        return model

    def val_score(task: str, lr: float) -> float:
        clean, _, obs = data.observe("val", task)
        return median(face_psnr(model_for(task, lr).reconstruct(obs), clean))

    cells = _choose_and_score(args, data, args.sup_lrs, val_score,
                              lambda task, lr, obs, op: model_for(task, lr).reconstruct(obs))
    return {"cells": cells, "trained": trained,
            "settings": {"cpu_minutes_per_model": minutes, "batch_size": args.batch_size, "lr_grid": args.sup_lrs,
                         "lr_factor": SQRT10, "tune_on": args.tune_on, "optimizer": "Adam",
                         "jac_reg": "config (0.1)" if kind == "mdeq-ae" else None}}


def _choose_and_score(args: argparse.Namespace, data: Data, grid: list[float],
                      val_score: Callable[[str, float], float],
                      reconstruct: Callable[[str, float, Tensor, Measurement], Tensor]) -> dict[str, Any]:
    """Per task: the learning rate of best validation median PSNR (on ``--tune-on`` only if
    given), then the held-out cell with it."""
    tuned = None if args.tune_on is None else sweep(partial(val_score, args.tune_on), grid, SQRT10, args)
    cells = {}
    for task in args.tasks:
        if tuned is None:
            lr, scores = sweep(partial(val_score, task), grid, SQRT10, args)
        else:
            lr = tuned[0]
            scores = tuned[1] if task == args.tune_on else {f"{lr:g}": val_score(task, lr)}
        clean, op, obs = data.observe("test", task)
        cells[task] = cell(face_psnr(reconstruct(task, lr, obs, op), clean), args, chosen_lr=lr,
                           validation_median=scores[f"{lr:g}"], validation_sweep=scores,
                           tuned_on=args.tune_on or task)
        print(f"  {task}: lr {lr:g} (validation {scores}) -> held-out median {cells[task]['median']:.2f} dB",
              flush=True)
    return cells


def row_ae(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    return _supervised("ae", args, data, runs)


def row_mdeq_ae(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    return _supervised("mdeq-ae", args, data, runs)


def jiio_decoder_100(args: argparse.Namespace, data: Data, runs: Path) -> tuple[jiio_zoo.ZooModel, dict[str, Any]]:
    """A fresh decoder trained with 100 JIIO iterations per step (eq. 20) to its budget."""
    run = RunDir(runs / "jiio-100")
    torch.manual_seed(args.seed)
    model = jiio_zoo.load(CONFIG, pretrained=False)

    def call(steps: int) -> dict[str, Any]:
        s = GenerativeSettings(steps=steps, batch_size=args.batch_size, iterations=100, save_every=5, seed=args.seed)
        return train_generative(model, data.train, run, s, progress=False, clock=time.process_time)

    ledger = train_to_budget(run, 60 * args.cpu_minutes_jiio100, call, model, loop_clock_is_cpu=True)
    print(f"  jiio-100 decoder: {ledger['steps']} steps, {ledger['cpu_seconds']:.0f} CPU s", flush=True)
    return model.eval(), ledger


def _jiio_rows(model: jiio_zoo.ZooModel, args: argparse.Namespace, data: Data) -> dict[str, Any]:
    cells = {}
    for task in args.tasks:
        got = {}
        for split in ("val", "test"):
            clean, op, obs = data.observe(split, task)
            _, recon, _ = infer(model, obs, op, iterations=args.iterations)
            got[split] = face_psnr(recon, clean)
        cells[task] = cell(got["test"], args, validation_median=median(got["val"]))
        print(f"  {task}: held-out median {cells[task]['median']:.2f} dB", flush=True)
    return cells


def row_jiio_40(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    model = jiio_zoo.load(CONFIG).eval()
    return {"cells": _jiio_rows(model, args, data),
            "settings": {"weights": "jiio_zoo/weights/faces_gen_small.pt (shipped; trained on all 80 training faces)",
                         "test_iterations": args.iterations}}


def row_jiio_100(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    model, ledger = jiio_decoder_100(args, data, runs)
    return {"cells": _jiio_rows(model, args, data), "trained": {"decoder": ledger},
            "settings": {"train_iterations": 100, "test_iterations": args.iterations,
                         "cpu_minutes": args.cpu_minutes_jiio100, "batch_size": args.batch_size,
                         "optimizer": "config (Adam 1e-3)", "jac_reg": "config (0.1)", "outer": "shortcut"}}


def row_jiio_sup_100(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    trained: dict[str, Any] = {}
    init = None
    if args.jiio_sup_init == "decoder":
        _, trained["init_decoder"] = jiio_decoder_100(args, data, runs)
        init = runs / "jiio-100" / "model.pt"
    models: dict[tuple[str, float], jiio_zoo.ZooModel] = {}

    def model_for(task: str, lr: float) -> jiio_zoo.ZooModel:
        if (task, lr) in models:
            return models[(task, lr)]
        run = RunDir(runs / "jiio-sup-100" / task / f"lr{lr:g}")
        torch.manual_seed(args.seed)
        model = jiio_zoo.load(CONFIG, pretrained=False)
        if init is not None and not run.state_path.exists():
            load_into(model, init)

        def call(steps: int) -> dict[str, Any]:
            s = InverseSettings(steps=steps, batch_size=args.batch_size, learning_rate=lr, iterations=100,
                                save_every=2, seed=args.seed, task=task, outer="kkt")
            return train_decoder(model, data.train, run, s, outer="kkt", task=task, family="inverse",
                                 progress=False, clock=time.process_time)

        ledger = train_to_budget(run, 60 * args.cpu_minutes_jiio_sup, call, model, loop_clock_is_cpu=True)
        trained[f"{task} lr{lr:g}"] = ledger
        print(f"  jiio-sup-100 {task} lr {lr:g}: {ledger['steps']} steps, {ledger['cpu_seconds']:.0f} CPU s",
              flush=True)
        models[(task, lr)] = model.eval()
        return model

    def recon(task: str, lr: float, obs: Tensor, op: Measurement) -> Tensor:
        return infer(model_for(task, lr), obs, op, iterations=args.iterations)[1]

    def val_score(task: str, lr: float) -> float:
        clean, op, obs = data.observe("val", task)
        return median(face_psnr(recon(task, lr, obs, op), clean))

    cells = _choose_and_score(args, data, args.jiio_sup_lrs, val_score, recon)
    return {"cells": cells, "trained": trained,
            "settings": {"init": args.jiio_sup_init, "train_iterations": 100, "test_iterations": args.iterations,
                         "outer": "kkt", "cpu_minutes_per_model": args.cpu_minutes_jiio_sup,
                         "batch_size": args.batch_size, "lr_grid": args.jiio_sup_lrs, "lr_factor": SQRT10,
                         "tune_on": args.tune_on, "jac_reg": "config (0.1)"}}


def _adam_rows(decoder: Callable[[Tensor], Tensor], args: argparse.Namespace, data: Data) -> dict[str, Any]:
    """Adam-``--adam-steps`` on eq. 21 per task, the rate chosen on the validation faces."""
    m = jiio_zoo.get_config(CONFIG).model
    assert isinstance(m, MDEQConfig)

    def recon(lr: float, obs: Tensor, op: Measurement) -> Tensor:
        return decode(decoder, adam_inverse(decoder, obs, op, m.latent_dim, steps=args.adam_steps, lr=lr))

    def val_score(task: str, lr: float) -> float:
        clean, op, obs = data.observe("val", task)
        return median(face_psnr(recon(lr, obs, op), clean))

    cells = {}
    for task in args.tasks:
        lr, scores = sweep(partial(val_score, task), args.adam_lrs, 2.0, args)
        clean, op, obs = data.observe("test", task)
        cells[task] = cell(face_psnr(recon(lr, obs, op), clean), args, chosen_lr=lr,
                           validation_median=scores[f"{lr:g}"], validation_sweep=scores)
        print(f"  {task}: Adam lr {lr:g} (validation {scores}) -> held-out median {cells[task]['median']:.2f} dB",
              flush=True)
    return cells


def row_vae(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    vae: ConvVAE = _vae_for(argparse.Namespace(config=CONFIG, match="decoder"))[0]
    run = RunDir(runs / "vae")
    ledger = train_to_budget(
        run, 60 * args.cpu_minutes_vae,
        lambda steps: train_vae(vae, data.train, run, steps=steps, batch_size=args.batch_size, progress=False,
                                save_every=200, describe={"match": "decoder", "seed": args.seed}),
        vae, loop_clock_is_cpu=False)
    print(f"  vae: {ledger['steps']} steps, {ledger['cpu_seconds']:.0f} CPU s", flush=True)
    vae.eval()
    return {"cells": _adam_rows(vae.decode, args, data), "trained": {"vae": ledger},
            "settings": {"width": vae.width, "cpu_minutes": args.cpu_minutes_vae, "batch_size": args.batch_size,
                         "train_lr": 1e-3, "beta": 1.0, "adam_steps": args.adam_steps, "adam_grid": args.adam_lrs,
                         "adam_start": "x = 0 (the prior mean)"}}


def row_mdeq_vae(args: argparse.Namespace, data: Data, runs: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    vae = MDEQVAE(jiio_zoo.load(CONFIG, pretrained=False))
    run = RunDir(runs / "mdeq-vae")
    ledger = train_to_budget(
        run, 60 * args.cpu_minutes_mdeq_vae,
        lambda steps: train_mdeq_vae(vae, data.train, run, steps=steps, batch_size=args.batch_size, progress=False,
                                     save_every=20, describe={"seed": args.seed}),
        vae, loop_clock_is_cpu=False)
    print(f"  mdeq-vae: {ledger['steps']} steps, {ledger['cpu_seconds']:.0f} CPU s", flush=True)
    vae.eval()
    return {"cells": _adam_rows(vae.decoder, args, data), "trained": {"mdeq_vae": ledger},
            "settings": {"encoder_width": vae.encoder_width, "cpu_minutes": args.cpu_minutes_mdeq_vae,
                         "batch_size": args.batch_size, "train_lr": 1e-3, "beta": 1.0, "jac_reg": "config (0.1)",
                         "adam_steps": args.adam_steps, "adam_grid": args.adam_lrs,
                         "adam_start": "x = 0 (the prior mean)",
                         "adam_decoder": "the config's DEQ solve (18 iterations) with implicit backward"}}


ROW_FUNCTIONS: dict[str, Callable[[argparse.Namespace, Data, Path], dict[str, Any]]] = {
    "observed": row_observed, "ae": row_ae, "mdeq-ae": row_mdeq_ae, "jiio-sup-100": row_jiio_sup_100,
    "vae": row_vae, "mdeq-vae": row_mdeq_vae, "jiio-40": row_jiio_40, "jiio-100": row_jiio_100,
}


# --------------------------------------------------------------------------- merging and output


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """What every row of one table must share."""
    return {"config": CONFIG, "val_faces": args.val, "held_out_faces": args.faces, "seed": args.seed,
            "iterations": args.iterations, "adam_steps": args.adam_steps, "resamples": args.resamples,
            "data_range": "[0, 1]", "median": "torch.median (lower middle value for an even count)"}


def reused_rows(path: Path, proto: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if path.is_dir():
        rows = {p.stem: json.loads(p.read_text(encoding="utf8")) for p in sorted((path / "rows").glob("*.json"))}
    else:
        rows = json.loads(path.read_text(encoding="utf8"))["rows"]
    for key, row in rows.items():
        if row.get("protocol") != proto:
            raise SystemExit(f"--reuse {path}: row {key} was measured under another protocol "
                             f"({row.get('protocol')} vs {proto})")
    return rows


def markdown(rows: dict[str, dict[str, Any]], tasks: list[str]) -> str:
    lines = ["| | model | " + " | ".join(tasks) + " |", "|---|---|" + "---:|" * len(tasks)]
    for key, (group, label) in ROWS.items():
        if key not in rows:
            continue
        cells = []
        for t in tasks:
            c = rows[key]["cells"].get(t)
            cells.append("–" if c is None else f"{c['median']:.2f} ({c['ci95_low']:.2f}–{c['ci95_high']:.2f})")
        lines.append(f"| {group} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--rows", default=",".join(ROWS), help="rows to measure now (default: all)")
    parser.add_argument("--tasks", default=",".join(CORRUPTIONS), help="tasks (default: all four)")
    parser.add_argument("--runs", type=Path, default=Path("runs/table4"),
                        help="training runs (resumed) and per-row results (default: runs/table4)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="merge the rows not measured now from this runs folder or results file")
    parser.add_argument("--faces", type=int, default=20, help="held-out faces scored (default 20: all)")
    parser.add_argument("--val", type=int, default=16, help="last training faces used for validation (default 16)")
    parser.add_argument("--iterations", type=int, default=100, help="JIIO iterations at test time (default 100)")
    parser.add_argument("--adam-steps", type=int, default=40, help="Adam steps on eq. 21 (default 40)")
    parser.add_argument("--adam-lrs", type=floats, default=[0.05, 0.1, 0.2, 0.4],
                        help="starting Adam learning-rate grid of the unsupervised rows (x2 extensions)")
    parser.add_argument("--sup-lrs", type=floats, default=[3e-4, 1e-3, 3e-3],
                        help="starting training learning-rate grid of ae and mdeq-ae (x sqrt(10) extensions)")
    parser.add_argument("--jiio-sup-lrs", type=floats, default=[1e-4, 3e-4, 1e-3],
                        help="starting training learning-rate grid of jiio-sup-100 (x sqrt(10) extensions)")
    parser.add_argument("--lr-extensions", type=int, default=6, help="most grid extensions per sweep (default 6)")
    parser.add_argument("--tune-on", choices=CORRUPTIONS, default=None,
                        help="choose the supervised learning rates on this task only (default: on each task)")
    parser.add_argument("--jiio-sup-init", choices=("decoder", "scratch"), default="decoder",
                        help="jiio-sup-100 starts from the jiio-100 decoder (default) or fresh weights")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch of every trainer (default 16)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per cell (default 2000)")
    parser.add_argument("--cpu-minutes-ae", type=float, default=5.0, help="per AE model (default 5)")
    parser.add_argument("--cpu-minutes-mdeq-ae", type=float, default=10.0, help="per MDEQ-AE model (default 10)")
    parser.add_argument("--cpu-minutes-jiio-sup", type=float, default=10.0,
                        help="per supervised JIIO model, on top of its init (default 10)")
    parser.add_argument("--cpu-minutes-vae", type=float, default=15.0, help="the ConvVAE (default 15)")
    parser.add_argument("--cpu-minutes-mdeq-vae", type=float, default=20.0, help="the MDEQ-VAE (default 20)")
    parser.add_argument("--cpu-minutes-jiio100", type=float, default=25.0,
                        help="the JIIO-MDEQ-100 decoder (default 25)")
    args = parser.parse_args(argv)
    args.rows = [r for r in args.rows.split(",") if r]
    args.tasks = [t for t in args.tasks.split(",") if t]
    bad = [r for r in args.rows if r not in ROWS] + [t for t in args.tasks if t not in CORRUPTIONS]
    if bad:
        raise SystemExit(f"--rows must name rows of {list(ROWS)} and --tasks tasks of {list(CORRUPTIONS)}; "
                         f"unknown: {bad}")
    if args.tune_on is not None and args.tune_on not in args.tasks:
        raise SystemExit(f"--tune-on {args.tune_on} must be one of --tasks {args.tasks}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    device = C.setup(args)
    if device.type != "cpu":
        raise SystemExit("table4 measures CPU budgets: run it with --device cpu")
    data = Data(args)
    proto = protocol(args)
    rows_dir = args.runs / "rows"
    command = "python benchmarks/table4.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows: dict[str, dict[str, Any]] = {}
    if args.reuse is not None:
        rows.update({k: v for k, v in reused_rows(args.reuse, proto).items() if k not in args.rows})
    # jiio-100 before jiio-sup-100, whose default start it is
    for key in sorted(args.rows, key=lambda k: list(ROWS).index(k) if k != "jiio-100" else -1):
        print(f"{key}:", flush=True)
        t0 = time.process_time()
        row = ROW_FUNCTIONS[key](args, data, args.runs)
        group, label = ROWS[key]
        rows[key] = {"group": group, "label": label, "protocol": proto, "command": command,
                     "date": time.strftime("%Y-%m-%d"), "row_cpu_seconds": time.process_time() - t0, **row}
        rows_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(rows_dir / f"{key}.json", json.dumps(rows[key], indent=2).encode("utf8"))
    tasks = [t for t in CORRUPTIONS if any(t in r["cells"] for r in rows.values())]
    table = markdown(rows, tasks)
    print(table)
    C.write("table4", args, device, {
        "protocol": proto, "rows_measured_now": args.rows, "reused": None if args.reuse is None else str(args.reuse),
        "rows": {k: rows[k] for k in ROWS if k in rows}, "table_markdown": table,
    }, command)


if __name__ == "__main__":
    main()

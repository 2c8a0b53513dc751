"""Run directories: resumable training state written atomically, and metrics as JSON.

A run directory holds:

```
state.pt        # latest training state (model, optimiser, step, RNG states, extra)
metrics.json    # {"config": ..., "history": [{"step": ..., ...}, ...], "final": {...}}
*.png           # plots and image grids written by the task
```

``state.pt`` is written to a temporary file in the same directory, fsynced, then renamed over
the old one, so an interrupted run always leaves a loadable state; ``RunDir.resume`` restores
model, optimiser and RNG states and returns the step to continue from.

One process writes a run directory at a time: the first write takes an OS file lock on
``.lock`` (`filelock`; released when the process ends, so a killed run leaves no stale
lock), and a second writer gets a [`RunError`][jiio_tasks.runs.RunError] naming the holder. Taking the lock also
removes temporary files that a killed save left behind. [`RunDir.begin`][jiio_tasks.runs.RunDir.begin] records a run's
settings and refuses to resume with different ones (except those allowed to change, such as
the step budget), or with a step budget below the steps already done.

A run directory may come from someone else, so ``state.pt`` is read as data only
(``torch.load(..., weights_only=True)``): a file that would need to execute code to load is
refused with a [`RunError`][jiio_tasks.runs.RunError]. A state whose module or optimiser tensors are not finite is
never written (the last good checkpoint stays), nor accepted on resume.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

STATE_FORMAT = "jiio-run-state"
STATE_VERSION = 2  # 2: one layout for every family (jiio_tasks.loop)


class RunError(RuntimeError):
    """A run directory that cannot be written or resumed; the message names the file."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; a failure (disk full,
    no permission) is a [`RunError`][jiio_tasks.runs.RunError] naming ``path``, and the old file stays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise RunError(f"cannot write {path}: {err.strerror or err}; the previous file is kept") from err
        raise


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class NonFiniteError(RunError):
    """A training step produced a NaN/Inf loss or gradient; no update was applied."""


def backward_and_step(opt: torch.optim.Optimizer, loss: torch.Tensor, step: int) -> None:
    """``loss.backward()`` then ``opt.step()``, unless a gradient is NaN/Inf: then no update is
    made and [`NonFiniteError`][jiio_tasks.runs.NonFiniteError] stops the run (its last saved state stays the last good
    one). The test is on the gradients, which data-parallel training has already combined, so
    every rank decides alike (one host sync per step)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
    if not finite:
        opt.zero_grad(set_to_none=True)
        raise NonFiniteError(
            f"step {step + 1}: the loss ({float(loss.detach()):.4g}) or its gradient is not finite; "
            "stopped before the update (lower the learning rate or the penalty weight; the last saved "
            "state is intact)"
        )
    opt.step()


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list ``obj`` holding NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            return [prefix or "<tensor>"]
        return []
    if isinstance(obj, Mapping):
        return [n for k, v in obj.items() for n in non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in non_finite_tensors(v, f"{prefix}[{i}]")]
    return []


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


# one lock per directory and process, shared by every RunDir of that directory in the process
_LOCKS: dict[Path, FileLock] = {}

#: settings that may differ when a run is resumed (budgets, not the training problem)
RESUMABLE_CHANGES = frozenset({"steps", "max_minutes", "max_seconds", "progress", "eval_size", "eval_tasks", "threads",
                               "world_size", "init"})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class RunDir:
    """One training run's directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)  # created by the first write, never by reading

    @classmethod
    def existing(cls, root: str | os.PathLike[str], *, flag: str | None = None) -> RunDir:
        """A run directory that must already hold a run (for evaluation): a clear
        [`RunError`][jiio_tasks.runs.RunError] if it is missing or holds no state and no metrics; ``flag`` (e.g.
        ``"--vae-run"``) names the option it came from in the message."""
        run = cls(root)
        where = f"{flag} {run.root}" if flag else f"run directory {run.root}"
        if not run.root.is_dir():
            raise RunError(f"{where} does not exist")
        if not run.state_path.exists() and not run.metrics_path.exists():
            raise RunError(f"{where} holds no run (no state.pt or metrics.json)")
        return run

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def acquire(self) -> None:
        """Take this directory's writer lock (idempotent within a process); raise
        [`RunError`][jiio_tasks.runs.RunError] if another process holds it. Removes leftover temporary files."""
        key = self.root.resolve()
        if key in _LOCKS:  # every write calls this: the held case costs no directory syscalls
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create run directory {self.root}: {err.strerror or err}") from err
        lock = FileLock(self.lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = self.root / ".lock.owner"
            holder = owner.read_text(encoding="utf8").strip() if owner.exists() else "another process"
            raise RunError(
                f"run directory {self.root} is being written by {holder}; wait for it to finish "
                "or use another run directory"
            ) from None
        _LOCKS[key] = lock
        (self.root / ".lock.owner").write_text(f"process {os.getpid()}\n", encoding="utf8")
        for tmp in self.root.glob(".*.tmp"):  # a killed save's leftovers: ours now, and useless
            with contextlib.suppress(OSError):
                tmp.unlink()

    def release(self) -> None:
        """Give the writer lock back (the process's exit does it too)."""
        lock = _LOCKS.pop(self.root.resolve(), None)
        if lock is not None:
            with contextlib.suppress(OSError):
                (self.root / ".lock.owner").unlink()
            lock.release()

    def begin(self, config: Mapping[str, Any], start: int, steps: int | None = None,
              *, may_change: frozenset[str] = RESUMABLE_CHANGES) -> None:
        """Record ``config`` when the run starts (``start == 0``); on resume compare it with the
        recorded one: a changed setting outside ``may_change`` (matched on the last part of its
        dotted name) is a [`RunError`][jiio_tasks.runs.RunError] naming old and new values, the allowed changes are
        recorded under ``"resumed"`` with the step. ``steps`` below ``start`` is an error."""
        self.acquire()
        if steps is not None and steps < start:
            raise RunError(f"{self.root} has already done {start} steps; --steps {steps} would undo them "
                           f"(ask for more than {start}, or use another run directory)")
        data = self.read_metrics()
        old = data.get("config")
        if start == 0 or old is None:
            self.update(config=dict(config))
            return
        new_flat = _flatten(json.loads(json.dumps(dict(config), default=_json_default)))
        old_flat = _flatten(old)
        changed = {k: (old_flat.get(k), new_flat.get(k)) for k in sorted(set(old_flat) | set(new_flat))
                   if old_flat.get(k) != new_flat.get(k)}
        if not changed:
            return
        fixed = {k: v for k, v in changed.items() if k.rsplit(".", 1)[-1] not in may_change}
        if fixed:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in fixed.items()))
            raise RunError(f"{self.root} was started with other settings ({shown}); resume it with the "
                           "same settings or use another run directory")
        resumed = list(data.get("resumed", []))
        resumed.append({"step": int(start), "changed": {k: list(v) for k, v in changed.items()}})
        self.update(config=dict(config), resumed=resumed)

    @property
    def state_path(self) -> Path:
        return self.root / "state.pt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    def save_state(
        self,
        step: int,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Atomically write everything needed to resume after ``step`` completed steps (takes
        the writer lock).

        Raises [`RunError`][jiio_tasks.runs.RunError] (and writes nothing) when a module's or optimiser's state holds
        NaN/Inf, so a diverged run never replaces its last good checkpoint.
        """
        payload = {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "step": int(step),
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "rng": _rng_state(),
            "extra": dict(extra or {}),
        }
        self.acquire()
        bad = non_finite_tensors({"modules": payload["modules"], "optimizers": payload["optimizers"]})
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise RunError(
                f"refusing to save step {step} to {self.state_path}: non-finite values in {shown}; "
                "the last good checkpoint is kept"
            )
        atomic_torch_save(self.state_path, payload)

    def resume(
        self,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Restore a saved state into ``modules``/``optimizers``; returns ``(step, extra)``, or
        ``(0, {})`` when the directory has no state yet."""
        path = self.state_path
        if not path.exists():
            return 0, {}
        payload = self._read_state()
        self._load_modules(payload, modules)
        for key, opt in (optimizers or {}).items():
            if key not in payload["optimizers"]:
                raise RunError(f"{path} holds no optimiser {key!r}")
            opt.load_state_dict(payload["optimizers"][key])
        _set_rng_state(payload["rng"])
        return int(payload["step"]), dict(payload["extra"])

    def _read_state(self) -> dict[str, Any]:
        path = self.state_path
        try:
            # data only: a state.pt from someone else must not be able to run code here
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunError(
                f"cannot read run state {path}: it is corrupt or holds objects other than tensors and "
                f"plain values (refused to execute them: {first})"
            ) from err
        except Exception as err:  # any other failure to read means a corrupt file
            raise RunError(f"cannot read run state {path}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise RunError(f"{path} is not a jiio run state (format {payload.get('format')!r})")
        if payload.get("format_version") != STATE_VERSION:
            raise RunError(
                f"{path} has run-state version {payload.get('format_version')!r}; "
                f"this jiio reads version {STATE_VERSION}"
            )
        bad = non_finite_tensors({"modules": payload.get("modules"), "optimizers": payload.get("optimizers")})
        if bad:
            raise RunError(f"{path} holds non-finite values in {', '.join(bad[:5])}; refusing to resume from it")
        return payload

    def load_model(self, model: nn.Module) -> int:
        """Load the trained module of a run (``"model"`` in ``state.pt``) into ``model``, read as
        data only, without touching the RNG states; returns the steps it was trained for. A
        missing state is a [`RunError`][jiio_tasks.runs.RunError]."""
        if not self.state_path.exists():
            raise RunError(f"{self.state_path} does not exist (train into {self.root} first)")
        payload = self._read_state()
        self._load_modules(payload, {"model": model})
        return int(payload["step"])

    def _load_modules(self, payload: Mapping[str, Any], modules: Mapping[str, nn.Module]) -> None:
        path = self.state_path
        for key, module in modules.items():
            if key not in payload["modules"]:
                raise RunError(f"{path} holds no module {key!r} (has {sorted(payload['modules'])})")
            try:
                module.load_state_dict(payload["modules"][key])
            except RuntimeError as err:
                raise RunError(f"{path}: module {key!r} does not match this model: {err}") from err

    def plot_history(self, panels: Mapping[str, str], *, title: str = "") -> Path | None:
        """Write ``training_curve.png``: one panel per history key of ``panels`` (key → axis
        label) that the history holds, against the step (markers, so a one-point run shows).
        Returns the path, or ``None`` when the history is empty."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        hist = self.read_metrics().get("history", [])
        keys = [k for k in panels if any(k in h for h in hist)]
        if not hist or not keys:
            return None
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            pts = [(h["step"], h[key]) for h in hist if key in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3)
            ax.set_xlabel("step")
            ax.set_ylabel(panels[key], fontsize=8)
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = self.root / "training_curve.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.exists():
            return {"history": []}
        try:
            data: dict[str, Any] = json.loads(self.metrics_path.read_text(encoding="utf8"))
        except json.JSONDecodeError as err:
            raise RunError(f"cannot parse {self.metrics_path}: {err}") from err
        return data

    def write_metrics(self, data: Mapping[str, Any]) -> None:
        self.acquire()
        text = json.dumps(data, indent=2, sort_keys=True, default=_json_default)
        atomic_write_bytes(self.metrics_path, text.encode("utf8"))

    def log(self, step: int, **values: float) -> None:
        """Append one history record (rewrites metrics.json atomically)."""
        data = self.read_metrics()
        history = [h for h in data.get("history", []) if h.get("step", -1) < step]
        history.append({"step": int(step), **{k: float(v) for k, v in values.items()}})
        data["history"] = history
        self.write_metrics(data)

    def update(self, **entries: Any) -> None:
        """Set top-level entries of metrics.json (e.g. ``config=...``, ``final=...``)."""
        data = self.read_metrics()
        data.update(entries)
        self.write_metrics(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to metrics JSON")

"""Shared pieces of the benchmark scripts: timing, peak memory, machine facts, JSON output.

Timing: ``warmup`` untimed calls, then the median of ``repeats`` timed calls; on CUDA the
interval is measured with CUDA events after a synchronize, on CPU with ``perf_counter``.

Peak memory of one call, above what was live before it:
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (allocator bytes);
- CPU (Linux): growth of the process's peak resident set (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``, minus ``VmRSS`` before the call, after ``malloc_trim``). It counts
  pages the call touched, so it is an upper bound on tensor bytes plus allocator slack; the
  same measure is used for every method in a comparison.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from jiio_tasks.allocator import keep_freed_memory

_allocator: str | None = None  # what setup() did to malloc, recorded with every result

RESULTS = Path(__file__).resolve().parent / "results"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, the median is reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None,
                        help="write the results here (default benchmarks/results/<name>-<device>.json)")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="keep glibc's malloc settings (by default the scripts keep freed memory in the "
                        "process, as the jiio command does: jiio_tasks.allocator)")


def setup(args: argparse.Namespace) -> torch.device:
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    global _allocator
    _allocator = "malloc defaults" if args.malloc_defaults else (
        "freed memory kept (jiio_tasks.allocator)" if keep_freed_memory() else "platform default")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available on this machine")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls, and the last result."""
    out: Any = None
    for _ in range(warmup):
        out = fn()
    times: list[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            _sync(device)
            start.record()
            out = fn()
            end.record()
            _sync(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _proc_status(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_memory(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Bytes of peak memory of one call of ``fn`` above the memory live before it (see the
    module docstring); ``None`` where it cannot be measured (CPU outside Linux)."""
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return None
    base = _proc_status("VmRSS:")
    fn()
    return float(_proc_status("VmHWM:") - base)


def profile_table(fn: Callable[[], Any], device: torch.device, rows: int = 12) -> str:
    """Top ops of one call of ``fn`` by self time (torch.profiler), as a text table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: str = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)
    return table


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if _allocator is not None:
        info["allocator"] = _allocator
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write(name: str, args: argparse.Namespace, device: torch.device, result: dict[str, Any],
          command: str) -> Path:
    """Write ``result`` with the machine facts and the reproducing command as JSON."""
    path = args.json or RESULTS / f"{name}-{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": command, "machine": machine(device),
               "date": time.strftime("%Y-%m-%d"), **result}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf8")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def mb(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"


def decoder_and_faces(name: str, count: int, device: torch.device, split: str = "test") -> tuple[Any, torch.Tensor]:
    """The pretrained zoo decoder ``name`` (eval mode) and ``count`` embedded faces in [0, 1] on
    ``device``: the first held-out faces (``split="test"``), or the *last* training faces
    (``split="train"``, for tuning without touching the held-out ones)."""
    from jiio_tasks.data import EmbeddedFaces
    from jiio_tasks.imaging.problem import image_shape
    from jiio_zoo import load

    model = load(name, device=device).eval()
    _, h, _ = image_shape(model)
    faces = EmbeddedFaces(split, size=h, augment=False).images  # type: ignore[arg-type]
    if not 1 <= count <= len(faces):
        raise SystemExit(f"--faces must be in [1, {len(faces)}] for the {split} split, got {count}")
    chosen = faces[:count] if split == "test" else faces[len(faces) - count :]
    return model, chosen.to(device)

"""Keep the C allocator's memory in the process: a CPU speed setting for whole programs.

PyTorch's CPU tensors come straight from ``malloc``. With glibc's defaults, a freed block of a
few MB at the top of the heap is handed back to the kernel (``M_TRIM_THRESHOLD``, adjusted
on the fly) and blocks above a moving threshold are ``mmap``-ed, so a loop that allocates and
frees tensors of that size (a solver iteration, a training step) takes fresh pages, and a
page fault for each of them, on every pass. On ``faces_gen_small`` (16 faces, one thread,
20-iteration JIIO solves) ``benchmarks/bench_overhead.py --malloc-defaults`` counted thousands
of minor page faults per iteration, against none for the same map evaluations run back to back,
and a solver overhead that varied between runs with the heap's state; with the two settings
below, a few faults per iteration (``benchmarks/results/overhead*-cpu.json``).

[`keep_freed_memory`][jiio_tasks.allocator.keep_freed_memory] sets ``M_TRIM_THRESHOLD`` (never
trim the heap) and ``M_MMAP_THRESHOLD`` (32 MB: blocks below it come from the heap) with
``mallopt``. It changes the whole process, so the library never calls it; the ``jiio`` command
and the benchmark scripts do, and a program of one's own can (or set the environment variables
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_``, or preload jemalloc / tcmalloc). The
cost: the process keeps its peak heap until it exits. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["MMAP_THRESHOLD", "keep_freed_memory"]

#: glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory and serve blocks under 32 MB from the
    heap (see the module docstring). Returns whether both settings took (``False`` off Linux
    or without glibc); calling it again returns the first answer."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is the largest int (never trim)
    _done = bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done

"""``keep_freed_memory``: on glibc Linux both ``mallopt`` settings take, and a freed 64 MB of
tensors stays in the process (resident) instead of going back to the kernel, as it does with
glibc's defaults. Run in subprocesses: the settings are process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    from jiio_tasks.allocator import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "tune" else False
    if sys.argv[1] == "tune":
        assert keep_freed_memory() is tuned  # idempotent
    page = os.sysconf("SC_PAGE_SIZE")
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    blocks = [torch.ones(4 * 1024 * 1024) for _ in range(4)]  # 4 x 16 MB, every page written
    held = resident()
    del blocks
    print(int(tuned), (held - resident()) / 2**20)  # MB handed back by the frees
""")


def _run(mode: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         timeout=120)
    tuned, released = out.stdout.split()
    return int(tuned), float(released)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt settings are glibc's")
def test_freed_memory_stays_in_the_process() -> None:
    tuned, released = _run("tune")
    assert tuned == 1
    assert released < 4, released  # kept: the next allocations need no fresh pages
    _, released_by_default = _run("default")
    assert released_by_default > 60, released_by_default  # glibc's defaults unmap the 64 MB

"""docs/training-loop.md: its example family runs as written and prints what the page shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "training-loop.md"


def test_example_family_trains_resumably_and_prints_its_stated_output() -> None:
    code, output = re.findall(r"```(?:python)?\n(.*?)```", PAGE.read_text(encoding="utf8"), flags=re.S)[:2]
    torch.set_num_threads(1)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, str(PAGE), "exec"), {"__name__": "training_loop_page"})
    assert buffer.getvalue().strip() == output.strip()

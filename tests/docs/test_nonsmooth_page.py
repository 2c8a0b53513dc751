"""docs/nonsmooth.md: its code blocks run in order, as written, and print what the page shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "nonsmooth.md"


def test_nonsmooth_tutorial_runs_and_prints_its_stated_output() -> None:
    text = PAGE.read_text(encoding="utf8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (output,) = re.findall(r"```text\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 5
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "nonsmooth_page"}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), namespace)
    assert buffer.getvalue().strip() == output.strip()
    # the page's claims, beyond its printout
    solution, reference = namespace["solution"], namespace["reference"]
    assert isinstance(reference, torch.Tensor)
    assert float((solution.x - reference).abs().max()) < 1e-6  # type: ignore[attr-defined]
    assert int((solution.x == 0).sum()) > 0  # type: ignore[attr-defined]  # exact zeros

"""The docs/zoo.md usage snippet runs as written, prints what the page shows, and its written-out
settings are the config's (so the page cannot drift from the recipe)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

from jiio_zoo import load
from jiio_zoo.recipe import joint_problem

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(page: str) -> list[str]:
    return re.findall(r"```(?:python)?\n(.*?)```", (DOCS / page).read_text(encoding="utf8"), flags=re.S)


def test_zoo_snippet_runs_and_prints_its_stated_output() -> None:
    blocks = _blocks("zoo.md")
    code, output = blocks[0], blocks[1]
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "zoo_snippet"}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "docs/zoo.md", "exec"), namespace)
    assert buffer.getvalue().strip() == output.strip()
    psnr = namespace["psnr"]
    assert isinstance(psnr, torch.Tensor) and float(psnr.mean()) >= 19.0  # issue 10's bar
    # the written-out problem is the config's recipe
    model = load("faces_gen_small")
    recipe = joint_problem(model, model.objective())
    snippet = namespace["problem"]
    for attr in ("damping", "max_iter", "x_shape", "balance_blocks"):
        assert getattr(snippet, attr) == getattr(recipe, attr), attr
    assert snippet.accelerator == recipe.accelerator  # type: ignore[attr-defined]

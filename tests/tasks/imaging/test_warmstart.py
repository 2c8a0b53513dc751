"""Amortised warm starts: the latent cache's rules, a revisited example starting from its last
latent, and a run with the cache resuming bit-identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from jiio_core.problem import JointProblem
from jiio_tasks.generative.train import TrainSettings, train
from jiio_tasks.imaging.data import ImageSource
from jiio_tasks.imaging.warmstart import LatentCache
from jiio_tasks.runs import RunDir
from tests.tasks.generative.tiny import image_source, params, tiny_decoder


def test_cache_returns_stored_rows_zeros_elsewhere_and_respects_the_age() -> None:
    cache = LatentCache(5, (3,), max_age=2)
    x = torch.arange(6.0).reshape(2, 3)
    cache.store(torch.tensor([1, 3]), x, step=4)
    x0, hit = cache.lookup(torch.tensor([3, 0, 1]), step=6)
    assert hit.tolist() == [True, False, True]
    assert torch.equal(x0, torch.stack([x[1], torch.zeros(3), x[0]]))
    x0, hit = cache.lookup(torch.tensor([3, 1]), step=7)  # 3 steps old: beyond max_age
    assert hit.tolist() == [False, False] and not x0.any()
    fresh = LatentCache(5, (3,), max_age=2)
    fresh.restore(cache.state())
    assert torch.equal(fresh.x, cache.x) and torch.equal(fresh.stamp, cache.stamp)
    with pytest.raises(ValueError, match=r"index must lie in \[0, 5\), got values in \[2, 5\]"):
        cache.lookup(torch.tensor([2, 5]), step=0)
    with pytest.raises(ValueError, match=r"x must have shape \(1, 3\), got \(1, 4\)"):
        cache.store(torch.tensor([0]), torch.zeros(1, 4), step=0)
    with pytest.raises(ValueError, match="saved latent cache has shape"):
        LatentCache(4, (3,)).restore(cache.state())


SETTINGS = TrainSettings(steps=3, batch_size=4, jac_reg=0.0, iterations=6, save_every=1, warm_start=True)


def test_a_revisited_example_starts_from_its_last_latent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[list[int]] = []
    solves: list[dict[str, Any]] = []
    solve, draw = JointProblem.solve, ImageSource.indexed_batch

    def spy_draw(self: ImageSource, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, index = draw(self, batch_size)
        draws.append(index.tolist())
        return images, index

    def spy_solve(self: JointProblem, y: Any, x0: Any = None, **kw: Any) -> Any:
        sol = solve(self, y, x0, **kw)
        solves.append({"x0": None if x0 is None else x0.detach().clone(), "x": sol.x.detach().clone()})
        return sol

    monkeypatch.setattr(ImageSource, "indexed_batch", spy_draw)
    monkeypatch.setattr(JointProblem, "solve", spy_solve)
    train(tiny_decoder(seed=0), image_source(), RunDir(tmp_path / "run"), SETTINGS, progress=False)
    assert len(draws) == 3  # then the end-of-run reconstruction grid solves from x = 0
    calls = [{"index": index, **sol} for index, sol in zip(draws, solves[:3], strict=True)]
    last: dict[int, torch.Tensor] = {}
    revisits = 0
    for call in calls:
        for row, i in enumerate(call["index"]):
            want = last.get(i, torch.zeros_like(call["x"][row]))
            revisits += i in last
            torch.testing.assert_close(call["x0"][row], want, rtol=0, atol=0)
        for row, i in enumerate(call["index"]):
            last[i] = call["x"][row]  # a repeated index keeps its last row
    assert revisits > 0  # the test saw the cache at work


def test_a_run_with_the_cache_resumes_bit_identically(tmp_path: Path) -> None:
    straight = tiny_decoder(seed=0)
    train(straight, image_source(), RunDir(tmp_path / "straight"), SETTINGS, progress=False)
    run = RunDir(tmp_path / "split")
    train(tiny_decoder(seed=0), image_source(), run, attrs.evolve(SETTINGS, steps=1), progress=False)
    resumed = tiny_decoder(seed=5)  # everything must come from state.pt, the cache included
    train(resumed, image_source(), run, SETTINGS, progress=False)
    torch.testing.assert_close(params(resumed), params(straight), rtol=0, atol=0)
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)["extra"]["family"]["latent_cache"]
    b = torch.load(tmp_path / "split" / "state.pt", weights_only=True)["extra"]["family"]["latent_cache"]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["stamp"], b["stamp"]) and int(a["stamp"].max()) == 2

"""Amortised warm starts: the latent cache's rules, a revisited example starting from its last
latent, and a run with the cache resuming bit-identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from jiio_core.problem import JointProblem
from jiio_core.state import StateSpec
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


def test_cache_with_states_keeps_and_restores_them() -> None:
    cache = LatentCache(4, (2,), state_size=3)
    cache.store(torch.tensor([2]), torch.ones(1, 2), step=1, z=torch.full((1, 3), 7.0))
    assert torch.equal(cache.lookup_state(torch.tensor([2, 0]), step=2), torch.tensor([[7.0] * 3, [0.0] * 3]))
    fresh = LatentCache(4, (2,), state_size=3)
    fresh.restore(cache.state())
    assert fresh.z is not None and cache.z is not None and torch.equal(fresh.z, cache.z)
    with pytest.raises(ValueError, match=r"store needs z .* exactly when the cache keeps states"):
        cache.store(torch.tensor([0]), torch.zeros(1, 2), step=0)
    with pytest.raises(ValueError, match=r"z must have shape \(1, 3\), got \(1, 4\)"):
        cache.store(torch.tensor([0]), torch.zeros(1, 2), step=0, z=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"keeps states of shape .* this run's keeps none"):
        LatentCache(4, (2,)).restore(cache.state())
    with pytest.raises(ValueError, match="keeps no states"):
        LatentCache(4, (2,)).lookup_state(torch.tensor([0]), step=0)


SETTINGS = TrainSettings(steps=3, batch_size=4, jac_reg=0.0, iterations=6, save_every=1, warm_start=True)


@pytest.mark.parametrize("with_state", [False, True], ids=["x", "x-and-z"])
def test_a_revisited_example_starts_from_its_last_latent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         with_state: bool) -> None:
    draws: list[list[int]] = []
    solves: list[dict[str, Any]] = []
    solve, draw = JointProblem.solve, ImageSource.indexed_batch

    def spy_draw(self: ImageSource, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, index = draw(self, batch_size)
        draws.append(index.tolist())
        return images, index

    def spy_solve(self: JointProblem, y: Any, x0: Any = None, **kw: Any) -> Any:
        sol = solve(self, y, x0, **kw)
        z0 = kw.get("z0")
        solves.append({"x0": None if x0 is None else x0.detach().clone(), "x": sol.x.detach().clone(),
                       "z0": None if z0 is None else StateSpec.of(z0).pack(z0).detach().clone(),
                       "z": StateSpec.of(sol.z).pack(sol.z).detach().clone()})
        return sol

    monkeypatch.setattr(ImageSource, "indexed_batch", spy_draw)
    monkeypatch.setattr(JointProblem, "solve", spy_solve)
    model = tiny_decoder(seed=0)
    settings = attrs.evolve(SETTINGS, warm_start_state=with_state)
    train(model, image_source(), RunDir(tmp_path / "run"), settings, progress=False)
    assert len(draws) == 3  # then the end-of-run reconstruction grid solves from x = 0
    calls = [{"index": index, **sol} for index, sol in zip(draws, solves[:3], strict=True)]
    last: dict[int, torch.Tensor] = {}
    last_z: dict[int, torch.Tensor] = {}
    revisits = 0
    with torch.no_grad():  # the layer's initial state, where a cold solve starts z
        cold = StateSpec.of(model.layer.initial_state(torch.zeros(1, *model.x_shape))).pack(
            model.layer.initial_state(torch.zeros(1, *model.x_shape)))[0]
    for call in calls:
        for row, i in enumerate(call["index"]):
            want = last.get(i, torch.zeros_like(call["x"][row]))
            revisits += i in last
            torch.testing.assert_close(call["x0"][row], want, rtol=0, atol=0)
            if with_state:
                torch.testing.assert_close(call["z0"][row], last_z.get(i, cold), rtol=0, atol=0)
            else:
                assert call["z0"] is None
        for row, i in enumerate(call["index"]):
            last[i] = call["x"][row]  # a repeated index keeps its last row
            last_z[i] = call["z"][row]
    assert revisits > 0  # the test saw the cache at work


@pytest.mark.parametrize("with_state", [False, True], ids=["x", "x-and-z"])
def test_a_run_with_the_cache_resumes_bit_identically(tmp_path: Path, with_state: bool) -> None:
    settings = attrs.evolve(SETTINGS, warm_start_state=with_state)
    straight = tiny_decoder(seed=0)
    train(straight, image_source(), RunDir(tmp_path / "straight"), settings, progress=False)
    run = RunDir(tmp_path / "split")
    train(tiny_decoder(seed=0), image_source(), run, attrs.evolve(settings, steps=1), progress=False)
    resumed = tiny_decoder(seed=5)  # everything must come from state.pt, the cache included
    train(resumed, image_source(), run, settings, progress=False)
    torch.testing.assert_close(params(resumed), params(straight), rtol=0, atol=0)
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)["extra"]["family"]["latent_cache"]
    b = torch.load(tmp_path / "split" / "state.pt", weights_only=True)["extra"]["family"]["latent_cache"]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["stamp"], b["stamp"]) and int(a["stamp"].max()) == 2
    assert ("z" in a) == with_state and (not with_state or torch.equal(a["z"], b["z"]))

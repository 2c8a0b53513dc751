"""``jiio_zoo.load`` / ``jiio_zoo.list``: every entry builds, weights lookup and messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import jiio_zoo
from jiio_zoo.checkpoint import CheckpointError, save
from jiio_zoo.configs import CONFIGS
from jiio_zoo.mdeq import MDEQLayer
from jiio_zoo.opteq import OptEqLayer
from jiio_zoo.registry import MissingWeightsError, packaged_weights_path

PAPER = ["mnist_adv", "cifar10_adv", "celeba_gen", "celeba_inverse", "omniglot_meta"]
SMALL = ["digits_adv_small", "mnist_adv_small", "faces_gen_small", "glyphs_meta_small", "opteq_small"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("JIIO_CACHE", str(cache))
    return cache


def test_list_names_every_entry() -> None:
    assert jiio_zoo.list() == PAPER + SMALL
    assert isinstance(jiio_zoo.list(), list)


@pytest.mark.parametrize("name", PAPER + SMALL)
def test_load_without_pretrained_builds_every_entry(name: str) -> None:
    model = jiio_zoo.load(name, pretrained=False)
    assert isinstance(model, jiio_zoo.ZooModel)
    assert model.config is CONFIGS[name]
    kind = OptEqLayer if name.startswith("opteq") else MDEQLayer
    assert isinstance(model.layer, kind)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model name 'mdeq'; valid names: mnist_adv, cifar10_adv, .*opteq_small"):
        jiio_zoo.load("mdeq", pretrained=False)


def test_missing_paper_weights_say_where_and_how(cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        jiio_zoo.load("cifar10_adv")
    msg = str(info.value)
    assert str(cache / "cifar10_adv.pt") in msg
    assert "`jiio train adversarial --config cifar10_adv`" in msg
    assert "pretrained=False" in msg


def test_missing_small_weights_mention_package_andcache(cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        jiio_zoo.load("opteq_small")
    msg = str(info.value)
    assert str(packaged_weights_path("opteq_small")) in msg
    assert str(cache / "opteq_small.pt") in msg
    assert "jiio train toy --config opteq_small" in msg


def test_defaultcache_dir_is_homecache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JIIO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=re.escape(str(tmp_path / ".cache" / "jiio" / "mnist_adv.pt"))):
        jiio_zoo.load("mnist_adv")


def test_pretrained_loads_fromcache_and_from_weights_path(cache: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    trained = jiio_zoo.load("opteq_small", pretrained=False)
    save(trained, cache / "opteq_small.pt")
    for model in (jiio_zoo.load("opteq_small"), jiio_zoo.load("opteq_small", weights=cache / "opteq_small.pt")):
        for k, v in trained.state_dict().items():
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(MissingWeightsError, match=r"weights file .*nope.pt for model 'opteq_small' does not exist"):
        jiio_zoo.load("opteq_small", weights=tmp_path / "nope.pt")


def test_weights_for_another_config_are_refused(tmp_path: Path) -> None:
    other = jiio_zoo.load("digits_adv_small", pretrained=False)
    path = save(other, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"saved for config 'digits_adv_small'.*differs"):
        jiio_zoo.load("glyphs_meta_small", weights=path)


def test_list_marks_the_entries_with_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jiio_zoo

    monkeypatch.setenv("JIIO_CACHE", str(tmp_path))
    shipped = {n for n in jiio_zoo.list() if (jiio_zoo.registry.PACKAGE_WEIGHTS / f"{n}.pt").is_file()}
    assert shipped == {"faces_gen_small", "digits_adv_small", "mnist_adv_small", "glyphs_meta_small"}
    assert set(jiio_zoo.list(with_weights=True)) == shipped
    assert {n: jiio_zoo.weights_status(n) for n in shipped} == dict.fromkeys(shipped, "packaged")
    assert jiio_zoo.weights_status("celeba_gen") == "none"
    jiio_zoo.save(jiio_zoo.load("celeba_gen", pretrained=False), tmp_path / "celeba_gen.pt")
    assert jiio_zoo.weights_status("celeba_gen") == "cache"
    assert "celeba_gen" in jiio_zoo.list(with_weights=True)


def test_zoo_model_is_callable_and_differentiable() -> None:
    import jiio_zoo
    from jiio_zoo.recipe import deq_solver

    torch.manual_seed(0)
    model = jiio_zoo.load("digits_adv_small").eval().double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    # reference: plain iteration to the equilibrium, then the head
    with torch.no_grad():
        z = model.layer.init_state(x)
        for _ in range(300):
            z = model.layer(z, x)
        ref = model.decode(z)
    torch.testing.assert_close(logits.detach(), ref, rtol=1e-3, atol=1e-4)
    (g,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert g.shape == x.shape and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    assert deq_solver(model).max_iter == model.config.solver.forward_threshold

"""Every paper configuration of Table 9 trains from its real data set's on-disk layout: two
training steps per config, on a tiny fake MNIST / CIFAR-10 / CelebA / Omniglot written under a
local root in the exact formats torchvision reads (tests/tasks/data/fakes.py), through the
`jiio train` command a user with the data would run. Slow (the CelebA MDEQ has 40 M
parameters): run by `tox -e slow`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from jiio_tasks.cli import main
from jiio_zoo.configs import CONFIGS
from tests.tasks.data.fakes import (
    patch_celeba_md5,
    patch_cifar_md5,
    patch_omniglot_md5,
    write_celeba,
    write_cifar,
    write_mnist,
    write_omniglot,
)

pytestmark = pytest.mark.slow

Setup = Callable[[Path, pytest.MonkeyPatch], None]


def _mnist(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(root, n_train=8, n_test=4)


def _cifar(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(root / "cifar-10-batches-py", per_batch=2)
    patch_cifar_md5(monkeypatch, root / "cifar-10-batches-py")


def _celeba(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba(root)
    patch_celeba_md5(monkeypatch, root)


def _omniglot(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_omniglot(root, characters=6, drawings=3)
    write_omniglot(root, characters=6, drawings=3, part="images_evaluation", seed=3)
    patch_omniglot_md5(monkeypatch, root)


ADV = ["--method", "jiio", "--batch-size", "2", "--jiio-iterations", "2", "--pgd-steps", "1", "--eval-size", "2",
       "--threads", "1"]
GEN = ["--batch-size", "2", "--iterations", "2"]
CASES: dict[str, tuple[str, Setup, list[str]]] = {
    "mnist_adv": ("adversarial", _mnist, [*ADV, "--data", "mnist"]),
    "cifar10_adv": ("adversarial", _cifar, [*ADV, "--data", "cifar10"]),
    "celeba_gen": ("generative", _celeba, GEN),
    "celeba_inverse": ("inverse", _celeba, [*GEN, "--task", "inpaint"]),
    "omniglot_meta": ("meta", _omniglot, ["--data", "omniglot", "--meta-batch", "1", "--query-shots", "1",
                                          "--eval-tasks", "1", "--iterations", "2", "--deq-iterations", "2",
                                          "--threads", "1"]),
}


def test_every_paper_config_is_covered() -> None:
    assert sorted(CASES) == sorted(n for n, c in CONFIGS.items() if c.scale == "paper")


@pytest.mark.parametrize("name", sorted(CASES))
def test_paper_config_trains_two_steps_from_its_data_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], name: str) -> None:
    family, setup, extra = CASES[name]
    root = tmp_path / "data"
    root.mkdir()
    setup(root, monkeypatch)
    run = tmp_path / "run"
    code = main(["train", family, "--config", name, "--data-root", str(root), "--run-dir", str(run),
                 "--steps", "2", "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf8"))
    history = metrics["history"]
    assert [h["step"] for h in history][-1] == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert metrics["final"]["steps_done"] == 2 and (run / "state.pt").is_file()

"""The public digit splits (jiio_tasks.adversarial.splits) are the exact subset the evaluators
and the trainer's final accuracies use, deterministic, class-balanced enough to be a fair
sample, and disjoint from the training digits; the batched robust accuracies behind
``jiio eval adversarial``'s progress bar equal the trainer's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from jiio_tasks.adversarial import evaluate as adv_evaluate
from jiio_tasks.adversarial import splits
from jiio_tasks.adversarial import train as adv_train
from jiio_tasks.adversarial.splits import (
    eval_subset,
    held_out_digits,
    held_out_indices,
    load_split,
    training_digits,
)
from jiio_tasks.cli import main
from jiio_zoo.checkpoint import save
from jiio_zoo.model import ZooModel
from tests.zoo.tiny import tiny_model


@pytest.fixture(scope="module")
def model() -> ZooModel:
    return tiny_model("adversarial", dtype=torch.float32, num_classes=10).eval()


def test_held_out_digits_are_the_subset_the_trainer_evaluates_on(model: ZooModel) -> None:
    x, y = held_out_digits(model, 200)
    te_x, te_y = splits.load_split("embedded", "test", None)
    assert x.shape == (200, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    x2, y2 = held_out_digits(model, 200)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # deterministic
    x50, y50 = held_out_digits(model, 50)
    assert torch.equal(x50, x[:50]) and torch.equal(y50, y[:50])  # a smaller size is a prefix
    assert len(set(y.tolist())) == 10  # not one class (the split is sorted by class)
    perm = held_out_indices(len(te_y), 200)
    assert torch.equal(y, te_y[perm]) and len(set(perm.tolist())) == 200
    assert torch.equal(eval_subset(te_x, te_y, 200)[1], y)


def test_held_out_digits_are_disjoint_from_the_training_digits(model: ZooModel) -> None:
    def digests(images: torch.Tensor) -> set[str]:
        return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in images}

    te_x, te_y = load_split("embedded", "test", None)
    tr_x, _ = load_split("embedded", "train", None)
    held = digests(te_x[held_out_indices(len(te_y), 500)])  # native 28×28, no resize
    assert len(held) == 500 and not held & digests(tr_x)
    tx, ty = training_digits(model)
    assert len(ty) == 4000
    assert tx.shape == (4000, 1, 8, 8) and torch.equal(tx, splits.fit_images(tr_x, model))


def test_embedded_plus_mnist_trains_on_mnist_less_the_held_out_digits(tmp_path: Path) -> None:
    """``embedded+mnist``: training = the MNIST training file less every image equal to an
    embedded *test* digit (embedded training digits and other images stay, in file order, with
    their labels); scoring = the embedded test digits, without a root."""
    import numpy as np

    from tests.tasks.data.fakes import idx

    te_x, te_y = load_split("embedded", "test", None)
    tr_x, tr_y = load_split("embedded", "train", None)
    as_u8 = lambda t: t.mul(255).round().to(torch.uint8).squeeze(1).numpy()  # noqa: E731
    rng = np.random.default_rng(3)
    other = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    # file order: other[0:3], test digits 5 and 9, train digit 7, other[3:6], test digit 0
    images = np.concatenate([other[:3], as_u8(te_x[[5, 9]]), as_u8(tr_x[[7]]), other[3:], as_u8(te_x[[0]])])
    labels = np.array([1, 2, 3, int(te_y[5]), int(te_y[9]), int(tr_y[7]), 4, 5, 6, int(te_y[0])])
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, x, y in (("train", images, labels), ("t10k", other[:2], labels[:2])):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx(x))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(y))
    x, y = load_split("embedded+mnist", "train", str(tmp_path))
    kept = [0, 1, 2, 5, 6, 7, 8]
    assert (as_u8(x) == images[kept]).all()
    assert y.tolist() == labels[kept].tolist()
    tx, ty = load_split("embedded+mnist", "test", None)  # the embedded test digits, no root needed
    assert torch.equal(tx, te_x) and torch.equal(ty, te_y)
    with pytest.raises(ValueError, match=r"--data embedded\+mnist needs --data-root"):
        load_split("embedded+mnist", "train", None)
    with pytest.raises(ValueError, match=r"data must be one of .* got 'mnist-full'"):
        load_split("mnist-full", "train", str(tmp_path))


def test_every_data_kind_is_offered_by_the_trainer_and_the_cli() -> None:
    from jiio_tasks.cli import build_parser

    for data in splits.DATA_KINDS:
        assert build_parser().parse_args(["train", "adversarial", "--run", "r", "--data", data]).data == data
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "adversarial", "--run", "r", "--data", "mnist-full"])
    for data in splits.DATA_KINDS:
        assert adv_train.AdvTrainConfig(config="mnist_adv_small", method="clean", data=data).data == data


@pytest.fixture(scope="module")
def run_dir(model: ZooModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("adv") / "run"
    save(model, run / "model.pt")
    config = {"data": "embedded", "data_root": None, "eps": 0.5, "method": "clean", "seed": 0}
    (run / "metrics.json").write_text(json.dumps({"config": config}), encoding="utf8")
    return run


def test_evaluators_attack_the_held_out_digits(model: ZooModel, run_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_accuracies(m: Any, x: torch.Tensor, y: torch.Tensor, eps: float, **kw: Any) -> dict[str, float]:
        seen["eval"] = (x, y)
        return {"clean": 1.0, "pgd": 1.0, "jiio": 1.0}

    def fake_bench(m: Any, x: torch.Tensor, y: torch.Tensor, eps: float, out: Any, **kw: Any) -> dict[str, Any]:
        seen["bench"] = (x, y)
        raise SystemExit(0)  # the images are all this test needs

    monkeypatch.setattr(adv_evaluate, "_robust_accuracies", fake_accuracies)
    monkeypatch.setattr(adv_evaluate, "bench", fake_bench)
    assert main(["eval", "adversarial", str(run_dir), "--out", str(tmp_path), "--size", "30", "--no-progress"]) == 0
    with pytest.raises(SystemExit):
        main(["bench", "adversarial", "--run-dir", str(run_dir), "--out", str(tmp_path), "--size", "20"])
    x, y = held_out_digits(model, 30)
    assert torch.equal(seen["eval"][0], x) and torch.equal(seen["eval"][1], y)
    assert torch.equal(seen["bench"][0], x[:20]) and torch.equal(seen["bench"][1], y[:20])


def test_batched_robust_accuracies_equal_the_trainers(model: ZooModel) -> None:
    x, y = held_out_digits(model, 130)  # two batches of EVAL_BATCH = 100
    want = adv_train.robust_accuracies(model, x, y, 0.5, pgd_steps=1, jiio_iterations=2)
    got = adv_evaluate._robust_accuracies(model, x, y, 0.5, pgd_steps=1, jiio_iterations=2)
    assert got == want

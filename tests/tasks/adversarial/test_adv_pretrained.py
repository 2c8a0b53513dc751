"""The shipped adversarial classifiers reach the accuracies stated in docs/zoo.md on the fixed
held-out digits: ``digits_adv_small`` (8×8, ε = 0.5, JIIO-40 attack) and ``mnist_adv_small``
(28×28, ε = 1, PGD-20 attack)."""

from __future__ import annotations

import torch

import jiio_zoo
from jiio_tasks.adversarial import JIIOAttack
from jiio_tasks.adversarial.splits import held_out_digits
from jiio_tasks.adversarial.train import accuracy

# docs/zoo.md; JIIO-40 re-measured (0.295 → 0.275) after the attack settings were tuned on
# training digits (benchmarks/results/attack-tuning-cpu.json): the tuned attack is stronger
STATED_CLEAN, STATED_JIIO = 0.785, 0.275


def test_shipped_adversarial_classifier_reaches_its_stated_accuracy() -> None:
    model = jiio_zoo.load("digits_adv_small")
    images, labels = held_out_digits(model, 200)
    clean = accuracy(model, images, labels, None)
    robust = accuracy(model, images, labels, JIIOAttack(0.5, iterations=40))
    assert clean >= STATED_CLEAN - 0.02, clean
    assert robust >= STATED_JIIO - 0.03, robust
    assert robust < clean  # the attack does bite: the comparison is not vacuous


# run jiio-s0 of benchmarks/adv_table5.py protocol 5 (the shipped weights, channels (16, 32),
# trained on 59,000 MNIST digits): clean accuracy on the 200 digits of its evaluation 0.97;
# under PGD-20 on the first 100 of them 0.89 (re-measured with the shipped file, this test's
# attack and generator)
STATED_28 = {"clean": 0.97, "pgd": 0.89}


def test_shipped_mnist_scale_classifier_reaches_its_stated_accuracy() -> None:
    """``mnist_adv_small`` (28×28, ε = 1): clean accuracy on the 200 held-out digits of the Table
    5 evaluation within 2 points of what was measured, PGD-20 accuracy on the first 100 within 3."""
    from jiio_tasks.adversarial import PGDAttack

    model = jiio_zoo.load("mnist_adv_small")
    images, labels = held_out_digits(model, 200)
    clean = accuracy(model, images, labels, None)
    robust = accuracy(model, images[:100], labels[:100], PGDAttack(1.0, steps=20),
                      generator=torch.Generator().manual_seed(0))
    assert clean >= STATED_28["clean"] - 0.02, clean
    assert robust >= STATED_28["pgd"] - 0.03, robust
    assert robust < clean  # the attack does bite

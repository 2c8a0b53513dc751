"""The shipped ``digits_adv_small`` weights reach the accuracies stated in docs/zoo.md on the
fixed 200-digit held-out subset (8×8, ε = 0.5, JIIO-40 attack)."""

from __future__ import annotations

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

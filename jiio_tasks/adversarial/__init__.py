"""Adversarial attacks on and adversarial training of DEQ classifiers (paper §4.3, eq. 26).

`jiio_attack` optimises the perturbation ``δ`` jointly with the equilibrium (JIIO);
`pgd_attack` is the projected-gradient baseline on the same DEQ; [`train`][jiio_tasks.adversarial.train] trains
clean / PGD / JIIO models and [`evaluate`][jiio_tasks.adversarial.evaluate] fills the robust-accuracy grid (Table 5) on the
held-out digits of [`splits`][jiio_tasks.adversarial.splits].
"""

from jiio_tasks.adversarial.attacks import (
    AttackResult,
    JIIOAttack,
    PGDAttack,
    deq_logits,
    finalize,
    pixel_ball,
    random_ball,
)

__all__ = [
    "AttackResult",
    "JIIOAttack",
    "PGDAttack",
    "deq_logits",
    "finalize",
    "pixel_ball",
    "random_ball",
]

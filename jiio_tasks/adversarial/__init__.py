"""Adversarial attacks on and adversarial training of DEQ classifiers (paper §4.3, eq. 26).

:func:`jiio_attack` optimises the perturbation ``δ`` jointly with the equilibrium (JIIO);
:func:`pgd_attack` is the projected-gradient baseline on the same DEQ; :mod:`.train` trains
clean / PGD / JIIO models and :mod:`.evaluate` fills the robust-accuracy grid (Table 5) on the
held-out digits of :mod:`.splits`.
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

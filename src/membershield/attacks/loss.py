"""LOSS attack: members have lower loss (Yeom et al., "Privacy Risk in Machine Learning", CSF 2018)."""

from __future__ import annotations

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.signals import cross_entropy_loss


class LossAttack(Attack):
    name = "loss"
    title = "LOSS threshold"
    citation = "Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning. CSF 2018."

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return -cross_entropy_loss(inputs.target_logits, inputs.labels)

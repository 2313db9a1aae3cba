"""Prediction-entropy threshold: members get more certain predictions (Song & Mittal 2021, §3.2)."""

from __future__ import annotations

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.signals import prediction_entropy


class EntropyAttack(Attack):
    name = "entropy"
    title = "Entropy threshold"
    citation = "Song, Mittal. Systematic Evaluation of Privacy Risks of Machine Learning Models. USENIX Security 2021."

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return -prediction_entropy(inputs.target_logits)

"""True-class confidence threshold (Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine
Learning Models", USENIX Security 2021, §3.2)."""

from __future__ import annotations

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.signals import true_class_confidence


class ConfidenceAttack(Attack):
    name = "confidence"
    title = "Confidence threshold"
    citation = "Song, Mittal. Systematic Evaluation of Privacy Risks of Machine Learning Models. USENIX Security 2021."

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return true_class_confidence(inputs.target_logits, inputs.labels)

"""Modified-entropy threshold, which also uses the label (Song & Mittal 2021, eq. 5)."""

from __future__ import annotations

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.signals import modified_entropy


class ModifiedEntropyAttack(Attack):
    name = "modified-entropy"
    title = "Modified-entropy threshold"
    citation = "Song, Mittal. Systematic Evaluation of Privacy Risks of Machine Learning Models. USENIX Security 2021."

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return -modified_entropy(inputs.target_logits, inputs.labels)

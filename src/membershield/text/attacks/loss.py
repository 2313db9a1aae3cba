"""LOSS / perplexity: members have lower average token loss.

Yeom et al. 2018 ("Privacy Risk in Machine Learning", CSF) for the loss threshold; applied to language
models as the perplexity baseline by Carlini et al. 2021 ("Extracting Training Data from Large Language
Models", USENIX Security).
"""

from __future__ import annotations

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs


class TextLossAttack(TextAttack):
    name = "loss"
    title = "LOSS (log-perplexity)"
    citation = "Yeom et al. Privacy Risk in Machine Learning. CSF 2018; Carlini et al. USENIX Security 2021."

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        return -inputs.target.mean_nll()

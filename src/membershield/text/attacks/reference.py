"""Reference-model likelihood ratio: how much likelier the target finds a text than a reference model does.

Carlini et al. 2021, "Extracting Training Data from Large Language Models" (USENIX Security), Section
6.1, compares the target's log-perplexity with a smaller model's; for a fine-tuned model the natural
reference is its base model (Mireshghallah et al. 2022, "Quantifying Privacy Risks of Masked Language
Models Using Membership Inference Attacks", EMNLP, use a reference model the same way). A text that is
merely easy (common phrasing) is easy for both models; a memorised one only for the target.

Score = mean log-likelihood per token under the target − under the reference (the log of the
per-token likelihood ratio), higher = more likely member.
"""

from __future__ import annotations

import numpy as np

from membershield.errors import InputDataError
from membershield.text.attacks.base import TextAttack, TextAttackInputs


class ReferenceRatioAttack(TextAttack):
    name = "reference"
    title = "reference-model likelihood ratio"
    citation = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021."
    access = "token log-probabilities of the target and a reference model"
    needs_reference = True

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        assert inputs.reference is not None, "the audit scores the texts with the reference model for this attack"
        # Texts are tokenised by each model's own tokenizer, so compare per-token averages.
        if len(inputs.reference) != len(inputs.target):
            raise InputDataError("the reference model scored a different number of texts than the target")
        return inputs.reference.mean_nll() - inputs.target.mean_nll()

"""Lowercase ratio: how much likelier the model finds the exact casing than the lowercased text.

Carlini et al. 2021, "Extracting Training Data from Large Language Models" (USENIX Security), Section
6.1: the ratio of the log-perplexities of the lowercased and the original text. A memorised text keeps
its low perplexity only in the casing it was trained on. Score = log-ppl(lowercased) / log-ppl(original),
higher = more likely member. Texts without upper-case letters score 1 (no information).
"""

from __future__ import annotations

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs

_FLOOR = 1e-6  # log-perplexities this close to 0 are treated as 1e-6 to keep the ratio finite


class LowercaseRatioAttack(TextAttack):
    name = "lowercase"
    title = "lowercase ratio"
    citation = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021."
    needs_lowercase = True

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        assert inputs.lowercase is not None, "the audit scores the lowercased texts for this attack"
        original = np.maximum(inputs.target.mean_nll(), _FLOOR)
        lowered = np.maximum(inputs.lowercase.mean_nll(), _FLOOR)
        return lowered / original

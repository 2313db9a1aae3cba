"""Label-only attacks: the adversary sees only the predicted label (Choquette-Choo, Tramèr, Carlini,
Papernot, "Label-Only Membership Inference Attacks", ICML 2021).

* ``label-only-gap``: member if the label is predicted correctly (the "gap attack" baseline, §4; it is
  Yeom et al.'s attack restricted to labels).
* ``label-only-noise``: members sit further from the decision boundary, so their label survives random
  perturbations more often (§5, noise robustness). The audit engine queries the target once per row
  on ``NOISE_QUERIES`` Gaussian-perturbed copies (noise scaled per feature by its standard deviation)
  and passes the share answered correctly; a wrong clean prediction scores lowest.

These are what remains when a deployment hides probabilities, so an output defense that only rounds or
clips confidences is judged against them too.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import is_correct

CITATION = (
    "Choquette-Choo, Tramèr, Carlini, Papernot. Label-Only Membership Inference Attacks. ICML 2021."
)
NOISE_QUERIES = 32
NOISE_SCALE = 0.2


class LabelOnlyGap(Attack):
    name = "label-only-gap"
    title = "Label-only (gap)"
    citation = CITATION
    access = "label-only"

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return is_correct(inputs.target_logits, inputs.labels).astype(np.float64)


class LabelOnlyNoise(Attack):
    name = "label-only-noise"
    title = "Label-only (noise robustness)"
    citation = CITATION
    access = "label-only"
    needs_noise_queries: ClassVar[bool] = True

    def params(self) -> dict[str, object]:
        return {"queries_per_record": NOISE_QUERIES, "noise_scale": NOISE_SCALE}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.noisy_correct is None:
            raise ConfigError("label-only-noise needs the target's answers on perturbed records")
        correct = is_correct(inputs.target_logits, inputs.labels)
        return np.where(correct, 1.0 + inputs.noisy_correct, 0.0)

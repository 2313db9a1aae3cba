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

CITATION = "Choquette-Choo, Tramèr, Carlini, Papernot. Label-Only Membership Inference Attacks. ICML 2021."
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
    needs_queries: ClassVar[bool] = True

    def __init__(self, *, queries_per_record: int = NOISE_QUERIES, noise_scale: float = NOISE_SCALE) -> None:
        if queries_per_record < 1 or not noise_scale > 0:
            raise ConfigError(
                f"label-only-noise needs queries_per_record >= 1 and noise_scale > 0, got {queries_per_record},"
                f" {noise_scale}"
            )
        self.queries_per_record = queries_per_record
        self.noise_scale = noise_scale

    def params(self) -> dict[str, object]:
        return {"queries_per_record": self.queries_per_record, "noise_scale": self.noise_scale}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.queries is None:
            raise ConfigError("label-only-noise needs the target's answers on perturbed records")
        agreement = inputs.queries.label_agreement(
            n_queries=self.queries_per_record, scale=self.noise_scale, seed=inputs.seed
        )
        correct = is_correct(inputs.target_logits, inputs.labels)
        return np.where(correct, 1.0 + agreement, 0.0)

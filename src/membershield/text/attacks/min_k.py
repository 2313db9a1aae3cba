"""Min-K% Prob: the average log-probability of the k% least likely tokens of a text.

Shi et al. 2024, "Detecting Pretraining Data from Large Language Models" (ICLR). An unseen text tends to
contain a few outlier tokens with very low probability; a member less so. Score = mean of the lowest
``ceil(k * n)`` token log-probabilities (at least one token), higher = more likely member. The paper's
default is k = 20%.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from membershield.errors import ConfigError
from membershield.text.attacks.base import TextAttack, TextAttackInputs


def mean_of_lowest(values: np.ndarray, fraction: float) -> float:
    count = max(1, math.ceil(fraction * values.size))
    return float(np.partition(values, count - 1)[:count].mean())


def check_fraction(k: float) -> float:
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"--min-k must lie in (0, 1] (a fraction of the tokens, e.g. 0.2), got {k}")
    return float(k)


class MinKProbAttack(TextAttack):
    name = "min-k"
    title = "Min-K% Prob"
    citation = "Shi et al. Detecting Pretraining Data from Large Language Models. ICLR 2024."

    def __init__(self, *, k: float = 0.2) -> None:
        self.k = check_fraction(k)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        return cls(k=options.get("min_k", 0.2))

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        return np.array([mean_of_lowest(lp, self.k) for lp in inputs.target.logprob], dtype=np.float64)

    def params(self) -> dict[str, object]:
        return {"k": self.k}

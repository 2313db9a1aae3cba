"""Min-K%++: Min-K% on token log-probabilities standardised by the next-token distribution.

Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language
Models". Training by maximum likelihood makes members local maxima of the modelled distribution along
each input dimension, so a member's token stands out from the other candidate tokens at its position.
Per token: ``(log p(x_t) − μ_t) / σ_t`` with ``μ_t`` and ``σ_t²`` the mean and variance of ``log p(z)``
for ``z`` drawn from the model's next-token distribution at position t; the score is the mean of the
lowest k% of these (k = 20% by default), higher = more likely member. A position whose distribution is a
point mass (σ = 0) contributes 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.attacks.min_k import check_fraction, mean_of_lowest

_SIGMA_FLOOR = 1e-12


def standardised_logprobs(logprob: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    sigma = np.sqrt(var)
    out = np.zeros_like(logprob)
    ok = sigma > _SIGMA_FLOOR
    out[ok] = (logprob[ok] - mean[ok]) / sigma[ok]
    return out


class MinKPlusPlusAttack(TextAttack):
    name = "min-k-plus-plus"
    title = "Min-K%++"
    citation = "Zhang et al. Min-K%++: Improved Baseline for Detecting Pre-Training Data from LLMs. 2024."
    access = "next-token distributions"
    needs_distribution = True

    def __init__(self, *, k: float = 0.2) -> None:
        self.k = check_fraction(k)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        return cls(k=options.get("min_k", 0.2))

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        t = inputs.target
        assert t.mean is not None and t.var is not None, "the audit scores the next-token distribution for this attack"
        return np.array(
            [
                mean_of_lowest(standardised_logprobs(lp, mu, var), self.k)
                for lp, mu, var in zip(t.logprob, t.mean, t.var, strict=True)
            ],
            dtype=np.float64,
        )

    def params(self) -> dict[str, object]:
        return {"k": self.k}

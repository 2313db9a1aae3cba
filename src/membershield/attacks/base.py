"""What every attack reads and the one method it implements.

Rows of every per-record array are the *audit records* (members, then non-members) followed by the
*population records* (extra data the target never saw, possibly none). Attacks score every row;
metrics use only the audit rows. Reference models were trained by the audit engine on random subsets of
all rows, so ``reference_in[k, i]`` says whether row ``i`` was in reference ``k``'s training set.

Attacks never train a model of the target's kind: they only read these matrices (the design of the
LiRA reference code, Carlini et al. 2022). Scores are oriented once, here: **higher = more likely a
member**. A contract test runs every registered attack and checks this on leaky and non-leaky models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from membershield.errors import ConfigError


@dataclass(frozen=True)
class AttackInputs:
    labels: np.ndarray  # (n,) int class index per row
    target_logits: np.ndarray  # (n, C)
    reference_logits: np.ndarray  # (K, n, C); K may be 0
    reference_in: np.ndarray  # (K, n) bool
    n_audit: int  # rows [0, n_audit) are audit records; the rest are population records
    seed: int = 0
    noisy_correct: np.ndarray | None = None  # (n,) share of perturbed queries labelled correctly

    @property
    def n_references(self) -> int:
        return int(self.reference_logits.shape[0])

    @property
    def population_rows(self) -> np.ndarray:
        return np.arange(self.n_audit, self.labels.shape[0])


class Attack(ABC):
    """A membership inference attack: per-row scores, higher = more likely member."""

    name: ClassVar[str]
    title: ClassVar[str]
    citation: ClassVar[str]
    access: ClassVar[str] = "black-box"
    min_references: ClassVar[int] = 0
    needs_noise_queries: ClassVar[bool] = False

    def check(self, n_references: int) -> None:
        if n_references < self.min_references:
            raise ConfigError(
                f"attack '{self.name}' needs at least {self.min_references} reference models;"
                f" got {n_references} (raise --references)"
            )

    @abstractmethod
    def score(self, inputs: AttackInputs) -> np.ndarray:
        """Return float64 ``(n,)`` scores for every row of ``inputs``."""

    def params(self) -> dict[str, object]:
        """Settings that shaped the scores, recorded in the audit result."""
        return {}

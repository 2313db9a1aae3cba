"""What every text attack reads and the one method it implements.

Per-token scores of each model are computed once by the audit (:mod:`membershield.text.scoring`) and
shared by all attacks; attacks only combine them. Scores are oriented once, here: **higher = more likely
a member**, for every attack.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from membershield.attacks.base import keyword_settings
from membershield.errors import ConfigError
from membershield.text.scoring import TokenScores


@dataclass(frozen=True)
class TextAttackInputs:
    texts: list[str]
    target: TokenScores  # with mean and var when an attack needs the next-token distribution
    lowercase: TokenScores | None = None  # the target's scores of the lowercased texts
    reference: TokenScores | None = None  # a reference model's scores of the same texts


class TextAttack(ABC):
    """A membership inference attack on a language model: one score per text, higher = member."""

    name: ClassVar[str]
    title: ClassVar[str]
    citation: ClassVar[str]
    access: ClassVar[str] = "token log-probabilities"
    needs_lowercase: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_distribution: ClassVar[bool] = False  # mean and variance of the next-token log-probabilities

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        """Build from the audit's options; attacks with parameters override this."""
        return cls()

    def check(self, has_reference: bool) -> None:
        if self.needs_reference and not has_reference:
            raise ConfigError(f"attack '{self.name}' needs a reference model: pass --reference-model DIR")

    @abstractmethod
    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        """Return float64 ``(n,)`` scores, one per text."""

    def params(self) -> dict[str, object]:
        """Settings that shaped the scores, recorded in the audit result."""
        return {}

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """The attack's settings (its keyword-only constructor parameters) and their defaults."""
        return keyword_settings(cls)

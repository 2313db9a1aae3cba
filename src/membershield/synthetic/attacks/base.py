"""What every synthetic-data attack reads, and the one method it implements.

The audit records are the members (the generator's training records) then the non-members (real records
it never saw); every attack returns one score per audit record, **higher = more likely a member**, from
the synthetic records and, where it says so, real reference records or the generator itself. Records are
points in the space of :mod:`membershield.synthetic.encode`, computed once and shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from membershield.attacks.base import keyword_settings
from membershield.synthetic.encode import TableEncoder, nearest_distances
from membershield.synthetic.generators import Generator
from membershield.synthetic.tables import SyntheticTables

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class SyntheticAttackInputs:
    """The checked tables, their encoder (fitted on the real records) and what the audit was given."""

    tables: SyntheticTables
    encoder: TableEncoder
    label_column: str | None = None
    generator: Generator | None = None
    seed: int = 0
    progress: ProgressCallback | None = None
    _neighbours: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_members(self) -> int:
        return len(self.tables.train)

    @property
    def n_audit(self) -> int:
        return len(self.tables.train) + len(self.tables.holdout)

    @cached_property
    def audit_points(self) -> np.ndarray:
        """Members then non-members."""
        return self.encoder.transform(self.tables.records)

    @cached_property
    def synthetic_points(self) -> np.ndarray:
        return self.encoder.transform(self.tables.synthetic)

    @cached_property
    def population_points(self) -> np.ndarray:
        return self.encoder.transform(self.tables.population)

    def synthetic_neighbours(self, k: int) -> np.ndarray:
        """``(n_audit, k)`` distances of each audit record to its ``k`` nearest synthetic records."""
        have = next((d for kk, d in sorted(self._neighbours.items()) if kk >= k), None)
        if have is None:
            have = self._neighbours[k] = nearest_distances(self.audit_points, self.synthetic_points, k)
        return have[:, :k]

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


class SyntheticAttack(ABC):
    """A membership inference attack on synthetic data: one score per audit record, higher = member."""

    name: ClassVar[str]
    title: ClassVar[str]
    citation: ClassVar[str]
    access: ClassVar[str] = "synthetic records"
    threat_model: ClassVar[str]  # one sentence: what the attacker holds and does
    needs_label: ClassVar[bool] = False
    needs_generator: ClassVar[bool] = False

    @abstractmethod
    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        """Return float64 ``(n_audit,)`` scores."""

    def params(self) -> dict[str, object]:
        """The settings that shaped the scores, for audit.json."""
        return dict(vars(self))

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """The attack's settings (its keyword-only constructor parameters) and their defaults."""
        return keyword_settings(cls)

    @classmethod
    def requirement_problem(cls, *, has_label: bool, has_generator: bool) -> str | None:
        """Why this attack cannot run with what the audit was given, with the fix; None when it can."""
        if cls.needs_label and not has_label:
            return f"{cls.name} trains a model on the synthetic records to predict a column: pass --label-column"
        if cls.needs_generator and not has_generator:
            return f"{cls.name} fits the generator again: pass --generator (sdv:gaussian-copula, sdv:ctgan, FILE.py:fn)"
        return None

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

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from membershield.errors import ConfigError

# What an attacker can read from a target, most to least (targets.kind.ACCESS_LEVELS).
ACCESS_ORDER = ("white-box", "black-box", "top-k", "label-only")


class TargetQueries(Protocol):
    """New queries to the target beyond its answers on the audit rows (label-only attacks ask these)."""

    def label_agreement(self, *, n_queries: int, scale: float, seed: int) -> np.ndarray:
        """Per row, the share of ``n_queries`` Gaussian-perturbed copies the target labels correctly."""
        ...

    def boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        """Per row, the L2 distance (in per-feature standardised units) to the nearest point found that the
        target labels otherwise than the row's label, asking at most ``queries_per_record`` records per row:
        0 where the row itself is labelled otherwise, ``inf`` where no such point was found."""
        ...

    def reference_boundary_distance(self, *, queries_per_record: int, seed: int) -> np.ndarray:
        """``(K, n)``: :meth:`boundary_distance` under each reference model, in the order of
        ``reference_logits`` (the models are queried, not the target); ``K`` is 0 where the references
        cannot be trained again."""
        ...

    def gradient_norms(self) -> np.ndarray:
        """Per row, the L2 norm of the loss gradient with respect to the live model's parameters (white-box)."""
        ...

    def checkpoint_losses(self) -> np.ndarray:
        """``(T, n)``: each row's cross-entropy loss under each of the ``T`` training checkpoints the recipe
        kept, oldest first; ``T`` is 0 where it kept none (white-box)."""
        ...

    def reference_gradient_norms(self) -> np.ndarray:
        """``(K, n)``: :meth:`gradient_norms` of each reference model, in the order of ``reference_logits``;
        ``K`` is 0 where the references cannot be trained again (white-box)."""
        ...

    def reference_checkpoint_losses(self) -> np.ndarray:
        """``(K, T, n)``: :meth:`checkpoint_losses` of each reference model, as ``reference_gradient_norms``."""
        ...


@dataclass(frozen=True)
class AttackInputs:
    labels: np.ndarray  # (n,) int class index per row
    target_logits: np.ndarray  # (n, C)
    reference_logits: np.ndarray  # (K, n, C); K may be 0
    reference_in: np.ndarray  # (K, n) bool
    n_audit: int  # rows [0, n_audit) are audit records; the rest are population records
    seed: int = 0
    queries: TargetQueries | None = None  # None where the target cannot be queried again
    # (n, d) float records as numbers (data.encode.numeric_matrix), for attacks that learn record
    # difficulty from the records themselves; None where the audit has no table of records
    features: np.ndarray | None = None

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
    access: ClassVar[str] = "black-box"  # the least access it needs (ACCESS_ORDER)
    min_references: ClassVar[int] = 0
    needs_queries: ClassVar[bool] = False  # asks the target about records beyond the audit rows
    by_name_only: ClassVar[bool] = False  # never added to a default audit (e.g. of a label-only target)
    needs_features: ClassVar[bool] = False  # reads AttackInputs.features (built only when an attack does)
    # needs none, but calibrates with the audit's --references when asked for (min_references 0 trains none)
    uses_references: ClassVar[bool] = False

    def check(self, n_references: int) -> None:
        if n_references < self.min_references:
            raise ConfigError(
                f"attack '{self.name}' needs at least {self.min_references} reference models;"
                f" got {n_references} (raise --references)"
            )

    def requirement_problems(self, *, target_access: str, gives_recipe: bool, queryable: bool) -> list[str]:
        """Why this attack cannot run against a target with this access (empty: it can).

        A black-box attack also runs on a label-only or top-k target: it reads the answer as the
        distribution it is (one-hot for labels), which is what an attacker of that deployment sees.
        """
        problems = []
        if self.access == "white-box" and target_access != "white-box":
            problems.append(
                f"'{self.name}' needs white-box access (the model's weights); the target gives {target_access}"
            )
        if self.min_references and not gives_recipe:
            problems.append(f"'{self.name}' needs reference models, and the target gives no recipe to train them")
        if self.needs_queries and not queryable:
            problems.append(f"'{self.name}' queries the target on perturbed records, and this target cannot be queried")
        return problems

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """The attack's settings (its keyword-only constructor parameters) and their defaults."""
        return keyword_settings(cls)

    @abstractmethod
    def score(self, inputs: AttackInputs) -> np.ndarray:
        """Return float64 ``(n,)`` scores for every row of ``inputs``."""

    def params(self) -> dict[str, object]:
        """Settings that shaped the scores, recorded in the audit result."""
        return {}


def keyword_settings(cls: type) -> dict[str, Any]:
    """A class's keyword-only constructor parameters and their defaults (an attack's settings)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }

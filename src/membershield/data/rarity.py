"""Rare records: records whose combination of quasi-identifiers few other records share.

Memorisation concentrates on records unlike the rest (outliers, the only person of their age and
postcode in the data): they are the ones a membership attack singles out, and an audit's average hides
them. A record is *rare* when its quasi-identifier combination occurs fewer than ``k`` times among all
audit and population records (itself included; a k-anonymity count), *common* otherwise.

Quasi-identifiers are feature columns (by default every one). Records are matched on each column's
value, except that a numeric column with more than ``bins`` distinct values (default 10) is matched on
its quantile bin: ``pandas.qcut`` into ``bins`` bins of about equal counts over all audit and population
records, bins with equal edges merged (so a column where most records share one value gets fewer bins).
Text, boolean and numeric columns with at most ``bins`` distinct values are matched exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from membershield.data.overlap import row_hashes
from membershield.errors import InputDataError

RARITY_BINS = 10
RARE, COMMON = "rare", "common"


def binned_quasi_identifiers(
    frame: pd.DataFrame, columns: Sequence[str], bins: int = RARITY_BINS
) -> tuple[pd.DataFrame, list[str]]:
    """The values records are matched on, one column per quasi-identifier, and which columns were binned.

    >>> frame = pd.DataFrame({"age": range(100), "sex": ["f", "m"] * 50, "stage": [1, 2, 3, 4] * 25})
    >>> matched, binned = binned_quasi_identifiers(frame, ["age", "sex", "stage"], bins=4)
    >>> binned, matched["age"].nunique(), matched["stage"].nunique()
    (['age'], 4, 4)
    """
    out: dict[str, Any] = {}
    binned = []
    for name in columns:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric and column.nunique() > bins:
            out[name] = pd.qcut(column.astype(np.float64), q=bins, labels=False, duplicates="drop").astype(np.int64)
            binned.append(str(name))
        else:
            out[name] = column.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(out, index=frame.index), binned


def combination_counts(matched: pd.DataFrame) -> np.ndarray:
    """For each row, how many rows (itself included) have the same values in every column.

    >>> combination_counts(pd.DataFrame({"a": [1, 1, 2, 1], "b": ["x", "x", "x", "y"]})).tolist()
    [2, 2, 1, 1]
    """
    _, inverse, counts = np.unique(row_hashes(matched), return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.int64)


@dataclass(frozen=True)
class Rarity:
    """Each record's combination count (audit records first, then population records) and the rule."""

    quasi_identifiers: list[str]
    k: int
    bins: int
    binned: list[str]
    counts: np.ndarray

    @property
    def is_rare(self) -> np.ndarray:
        return self.counts < self.k

    def labels(self, n: int) -> np.ndarray:
        """``"rare"`` or ``"common"`` for the first ``n`` records (the audit records)."""
        return np.where(self.is_rare[:n], RARE, COMMON)

    def to_dict(self, is_member: np.ndarray) -> dict[str, Any]:
        """What audit.json says of the rule and how many audit records it made rare."""
        rare = self.is_rare[: len(is_member)]
        return {
            "quasi_identifiers": self.quasi_identifiers,
            "k": self.k,
            "numeric_bins": self.bins,
            "binned": self.binned,
            "counted_over": int(self.counts.size),
            "n_rare_members": int((rare & is_member).sum()),
            "n_rare_nonmembers": int((rare & ~is_member).sum()),
            "n_common_members": int((~rare & is_member).sum()),
            "n_common_nonmembers": int((~rare & ~is_member).sum()),
        }

    def warnings(self, n_audit: int) -> list[str]:
        """A rarity slicing with one side empty compares nothing: say so, and how to make it useful."""
        n_rare = int(self.is_rare[:n_audit].sum())
        if 0 < n_rare < n_audit:
            return []
        which = "all" if n_rare else "none"
        fix = (
            "fewer (--quasi-identifiers) or lower --rarity-k"
            if n_rare
            else "more (--quasi-identifiers) or raise --rarity-k"
        )
        return [
            f"rarity: {which} of the {n_audit} audit records are rare (quasi-identifier combination seen fewer"
            f" than {self.k} times, on {len(self.quasi_identifiers)} quasi-identifiers), so rare and common"
            f" records cannot be compared; name {fix}"
        ]


def check_quasi_identifiers(features: Sequence[str], asked: Sequence[str]) -> None:
    """Raise one :class:`InputDataError` naming every quasi-identifier that is not a feature column.

    >>> check_quasi_identifiers(["age", "zip"], ["zip", "postcode"])
    Traceback (most recent call last):
    ...
    membershield.errors.InputDataError: quasi-identifier 'postcode' is not a feature column ...
    """
    known = [str(c) for c in features]
    missing = [q for q in asked if q not in known]
    if missing:
        names = ", ".join(f"'{q}'" for q in missing)
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise InputDataError(
            f"quasi-identifier {names} {'is' if len(missing) == 1 else 'are'} not a feature column (features: {shown});"
            " --quasi-identifiers names feature columns (not the label, id, user or ignored columns)"
        )


def find_rare_records(
    features: pd.DataFrame, quasi_identifiers: Sequence[str] | None, k: int, bins: int = RARITY_BINS
) -> Rarity:
    """The rarity of every record of ``features`` (audit and population records), counted over all of them.

    >>> frame = pd.DataFrame({"zip": ["a", "a", "a", "b", "c"], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    >>> find_rare_records(frame, ["zip"], k=2).is_rare.tolist()
    [False, False, False, True, True]
    """
    columns = list(features.columns) if quasi_identifiers is None else list(quasi_identifiers)
    check_quasi_identifiers(list(features.columns), columns)
    matched, binned = binned_quasi_identifiers(features, columns, bins)
    return Rarity([str(c) for c in columns], int(k), int(bins), binned, combination_counts(matched))

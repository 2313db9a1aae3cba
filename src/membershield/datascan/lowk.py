"""Records that few others share: combinations of quasi-identifiers seen fewer than k times.

A record whose age, sex and postcode no other record has is a record an attacker who knows those three
facts about a person finds in the table, and a model trained on it may remember it. Counting is exact on
the values given; numbers are grouped into bins only where asked (the policy's ``bins``) or where
membershield chose the columns itself, since a listed column is meant as it is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

AUTO_BINS = 10  # about this many bins when membershield bins a number itself
EXACT_UP_TO = 10  # a number with this few distinct values (a code, a flag) is taken as it is


def nice_width(low: float, high: float, bins: int = AUTO_BINS) -> float:
    """A round bin width (1, 2 or 5 times a power of ten) giving about ``bins`` bins over [low, high].

    >>> nice_width(19, 79), nice_width(0.0, 1.0), nice_width(3, 3)
    (10.0, 0.1, 1.0)
    """
    span = high - low
    if span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    step = next(m for m in (1, 2, 5, 10) if m * power >= raw)
    return float(step * power)


def _fmt(x: float) -> str:
    return f"{x:g}"


def bin_numbers(values: pd.Series, bins: float | Sequence[float] | None = None) -> pd.Series:
    """Numbers as bin labels ``[low, high)``: ``bins`` a width, a list of edges, or None for a round width
    (:func:`nice_width`). Missing values stay missing; values outside the edges get ``< a`` or ``≥ b``.

    >>> bin_numbers(pd.Series([19, 24, 25, None, 79]), 5).tolist()
    ['[15, 20)', '[20, 25)', '[25, 30)', nan, '[75, 80)']
    >>> bin_numbers(pd.Series([10, 40, 90]), [18, 65]).tolist()
    ['< 18', '[18, 65)', '≥ 65']
    """
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    out = pd.Series(np.nan, index=values.index, dtype=object)
    present = numbers.notna()
    if not present.any():
        return out
    if bins is None or isinstance(bins, int | float):
        width = float(bins) if bins is not None else nice_width(numbers.min(), numbers.max())
        lower = np.floor(numbers[present] / width) * width
        out[present] = [f"[{_fmt(a)}, {_fmt(a + width)})" for a in lower]
        return out
    edges = sorted(float(e) for e in bins)
    position = np.searchsorted(edges, numbers[present].to_numpy(), side="right")
    labels = [f"< {_fmt(edges[0])}"]
    labels += [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)]
    labels.append(f"≥ {_fmt(edges[-1])}")
    out[present] = [labels[p] for p in position]
    return out


def auto_grouping(values: pd.Series) -> tuple[pd.Series, str]:
    """How membershield groups a column it chose: numbers with many values in round bins, dates by year,
    anything else as it is; with a description of what was done.

    >>> auto_grouping(pd.Series([23, 37, 41, 58, 62, 19, 30, 44, 71, 25, 66]))[1]
    'bins of width 10'
    >>> auto_grouping(pd.Series(["1984-03-02", "1990-12-31"]))
    (0    1984
    1    1990
    dtype: object, 'year')
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if values.nunique() <= EXACT_UP_TO:
            return values, "exact"
        width = nice_width(values.min(), values.max())
        return bin_numbers(values, width), f"bins of width {_fmt(width)}"
    text = values.astype("string")
    looks = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}.*").fillna(False)
    if len(values.dropna()) and looks[values.notna()].all():
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
        years = parsed.dt.year.astype("Int64").astype(str).where(parsed.notna())
        return years.astype(object).where(parsed.notna(), np.nan), "year"
    return values, "exact"


@dataclass(frozen=True)
class LowK:
    """Records in combinations seen fewer than ``k`` times (rows counted from 0)."""

    k: int
    quasi_identifiers: list[str]
    counts: np.ndarray  # per record: how many records share its combination
    values: pd.DataFrame  # the (binned) values the combinations were made of
    grouping: dict[str, str] = field(default_factory=dict)
    chosen_by: str = "listed"

    @property
    def low(self) -> np.ndarray:
        return np.flatnonzero(self.counts < self.k)

    @property
    def records(self) -> int:
        return int(self.low.size)

    @property
    def combinations(self) -> int:
        rare = self.values.iloc[self.low]
        return len(rare.drop_duplicates()) if len(rare) else 0

    def records_by_count(self) -> dict[str, int]:
        """Records whose combination is seen exactly n times, for every n below k."""
        seen = self.counts[self.low]
        return {str(n): int((seen == n).sum()) for n in range(1, self.k)}

    def to_dict(self) -> dict[str, Any]:
        low = self.low
        order = low[np.lexsort((low, self.counts[low]))]  # rarest first, then by row
        rare = self.values.iloc[order]
        columns = list(rare.columns)
        rows = []
        for r, vals in zip(order, rare.itertuples(index=False, name=None), strict=True):
            values = {c: _plain(v) for c, v in zip(columns, vals, strict=True)}
            rows.append({"row": int(r), "count": int(self.counts[r]), "values": values})
        return {
            "k": self.k,
            "quasi_identifiers": list(self.quasi_identifiers),
            "records": self.records,
            "share": self.records / len(self.counts) if len(self.counts) else 0.0,
            "combinations": self.combinations,
            "records_by_count": self.records_by_count(),
            "chosen_by": self.chosen_by,
            "grouping": dict(self.grouping),
            "rows": rows,
        }


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    return value.item() if isinstance(value, np.generic) else value


def combination_counts(frame: pd.DataFrame) -> np.ndarray:
    """For every row, how many rows have the same values in all of ``frame``'s columns (a missing value is
    a value of its own).

    >>> combination_counts(pd.DataFrame({"age": [30, 30, 41, None, None], "sex": ["f", "f", "m", "m", "m"]}))
    array([2, 2, 1, 2, 2])
    """
    if frame.shape[1] == 0:
        return np.full(len(frame), len(frame), dtype=np.int64)
    codes = np.column_stack([pd.factorize(frame[c], use_na_sentinel=False)[0] for c in frame.columns])
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def low_k(
    frame: pd.DataFrame,
    columns: Sequence[str],
    k: int,
    *,
    auto: bool = False,
    bins: Mapping[str, float | Sequence[float]] | None = None,
    text: pd.DataFrame | None = None,
) -> LowK:
    """Count the combinations of ``columns``: exact values, except the columns with policy ``bins`` and,
    when ``auto`` (membershield chose the columns), the grouping of :func:`auto_grouping`. A column taken
    exactly takes ``text``'s values where given (the file's own text: ZIP code ``02134`` stays ``02134``,
    not the number 2134.0 a reader makes of it when the column has a gap).

    >>> table = pd.DataFrame({"age": [34, 34, 34, 51, 51, 77], "sex": ["f", "f", "f", "m", "m", "f"]})
    >>> result = low_k(table, ["age", "sex"], k=3)
    >>> result.records, result.combinations, result.records_by_count()
    (3, 2, {'1': 1, '2': 2})
    >>> zips = pd.DataFrame({"zip": [2134.0, None, 2134.0]})
    >>> low_k(zips, ["zip"], k=2, text=pd.DataFrame({"zip": ["02134", None, "02134"]})).to_dict()["rows"]
    [{'row': 1, 'count': 1, 'values': {'zip': None}}]
    """
    bins = bins or {}
    grouped, grouping = {}, {}
    for name in columns:
        if name in bins:
            grouped[name] = bin_numbers(frame[name], bins[name])
            grouping[name] = (
                f"bins {bins[name]}" if not isinstance(bins[name], int | float) else f"bins of width {_fmt(bins[name])}"
            )
        elif auto:
            grouped[name], grouping[name] = auto_grouping(frame[name])
        else:
            grouped[name], grouping[name] = frame[name], "exact"
        if grouping[name] == "exact" and text is not None:
            grouped[name] = text[name]
    values = pd.DataFrame(grouped, index=frame.index).reset_index(drop=True)
    counts = combination_counts(values)
    return LowK(k, list(columns), counts, values, grouping, "membershield" if auto else "listed")

"""Retention: records older than the policy keeps them, by the table's own date column.

A record past its retention period should have been deleted; a model trained on a table that still holds
it keeps what the deletion was meant to remove. The dates must parse: a value that does not is an error
naming its rows, since a guess at it could hide an expired record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from membershield.datascan.policy import Retention
from membershield.errors import InputDataError

ROWS_NAMED = 5


@dataclass(frozen=True)
class RetentionResult:
    column: str
    max_age_days: float
    as_of: date
    expired: np.ndarray  # rows (from 0) older than the limit
    undated: np.ndarray  # rows without a date
    oldest: str | None
    allow_undated: bool

    @property
    def passed(self) -> bool:
        return not self.expired.size and (self.allow_undated or not self.undated.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "max_age_days": self.max_age_days,
            "as_of": self.as_of.isoformat(),
            "expired": int(self.expired.size),
            "expired_rows": self.expired.tolist(),
            "undated": int(self.undated.size),
            "undated_rows": self.undated.tolist(),
            "allow_undated": self.allow_undated,
            "oldest": self.oldest,
        }


def parse_dates(values: pd.Series, column: str, date_format: str | None = None) -> pd.Series:
    """The column as UTC timestamps without a time zone; a non-empty value that does not parse is an error
    that names the first rows (from 0) and what they hold.

    >>> parse_dates(pd.Series(["2024-01-05", None, "2024-02-01T10:00:00+02:00"]), "seen").dt.strftime("%F %H").tolist()
    ['2024-01-05 00', nan, '2024-02-01 08']
    >>> parse_dates(pd.Series(["2024-01-05", "last week"]), "seen")
    Traceback (most recent call last):
    ...
    membershield.errors.InputDataError: date column 'seen' has 1 value(s) that do not parse as ISO 8601 dates:
    row 1 'last week' (rows counted from 0); fix them or set [retention] date_format
    """
    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        parsed = pd.to_datetime(text.where(present), errors="coerce", format=date_format or "ISO8601", utc=True)
    bad = np.flatnonzero(present.to_numpy() & parsed.isna().to_numpy())
    if bad.size:
        shown = ", ".join(f"row {r} {str(values.iloc[r])!r}" for r in bad[:ROWS_NAMED])
        more = ", ..." if bad.size > ROWS_NAMED else ""
        expected = f"dates of the format {date_format!r}" if date_format else "ISO 8601 dates"
        hint = "fix them" if date_format else "fix them or set [retention] date_format"
        raise InputDataError(
            f"date column '{column}' has {bad.size} value(s) that do not parse as {expected}: {shown}{more}"
            f" (rows counted from 0); {hint}"
        )
    return pd.Series(parsed, index=values.index).dt.tz_localize(None)


def check_retention(values: pd.Series, rule: Retention, today: date | None = None) -> RetentionResult:
    """Rows dated more than ``rule.max_age_days`` before ``rule.as_of`` (or today, UTC).

    >>> rule = Retention("seen", 365, as_of=date(2025, 1, 1))
    >>> r = check_retention(pd.Series(["2023-06-01", "2024-06-01", None, "2023-12-31"]), rule)
    >>> r.expired.tolist(), r.undated.tolist(), r.oldest, r.passed
    ([0, 3], [2], '2023-06-01', False)
    """
    as_of = rule.as_of or today or datetime.now(UTC).date()
    dates = parse_dates(values, rule.column, rule.date_format)
    limit = pd.Timestamp(as_of) - pd.Timedelta(days=rule.max_age_days)
    expired = np.flatnonzero((dates < limit).fillna(False).to_numpy(dtype=bool))
    undated = np.flatnonzero(dates.isna().to_numpy())
    oldest = dates.min()
    shown = None if pd.isna(oldest) else oldest.date().isoformat()
    return RetentionResult(rule.column, rule.max_age_days, as_of, expired, undated, shown, rule.allow_undated)

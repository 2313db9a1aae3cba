"""Repeated records in one table: exact copies and near copies.

A record that appears twice is trained on twice, and a model remembers it better; a near copy (the same
person typed again with other capitals, spacing or rounding) does the same less visibly. Near copies
are found by comparing records after normalising them, so a table of any size takes one hashing pass:
text ignoring case, whitespace and punctuation, numbers to four significant digits. Id columns (named
as an id, a distinct value for nearly every record) are left out of that comparison: a record entered
twice gets two ids, and is still one record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from membershield.data.overlap import row_hashes
from membershield.datascan.detect import name_tokens

SIGNIFICANT_DIGITS = 4
GROUPS_LISTED = 1000
NEAR_METHOD = (
    f"equal after normalising: text ignoring case, whitespace and punctuation, numbers to {SIGNIFICANT_DIGITS}"
    " significant digits, id columns left out"
)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as near copies agree on it.

    >>> normalise(pd.DataFrame({"name": ["  Ada  LOVELACE.", None], "x": [3.14159, 1234567.0]})).values.tolist()
    [['ada lovelace', 3.142], [nan, 1235000.0]]
    """
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            x = column.to_numpy(dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                magnitude = np.where(x == 0, 0, np.floor(np.log10(np.abs(x))))
                scale = 10.0 ** (SIGNIFICANT_DIGITS - 1 - magnitude)
                out[name] = np.where(np.isfinite(x), np.round(x * scale) / scale, x)
        else:
            missing = column.isna().to_numpy()
            text = pa.array(column.astype(str).to_numpy(dtype=object), mask=missing, type=pa.string())
            text = pc.replace_substring_regex(pc.utf8_lower(text), r"[^\w\s]", "")
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
            out[name] = pd.Series(text.to_pylist(), index=frame.index, dtype=object).where(column.notna(), np.nan)
    return pd.DataFrame(out, index=frame.index)


def duplicate_groups(keys: np.ndarray) -> list[list[int]]:
    """Rows (from 0) sharing a key, groups of two or more, in order of their first row.

    >>> duplicate_groups(np.array([7, 3, 7, 9, 3, 7]))
    [[0, 2, 5], [1, 4]]
    """
    series = pd.Series(np.arange(len(keys)))
    sizes = pd.Series(keys).map(pd.Series(keys).value_counts())
    repeated = series[sizes.to_numpy() > 1]
    groups = repeated.groupby(keys[repeated.to_numpy()], sort=False).agg(list)
    return sorted((list(map(int, g)) for g in groups), key=lambda g: g[0])


@dataclass(frozen=True)
class Duplicates:
    exact: list[list[int]]
    near: list[list[int]]  # groups of near copies that are not all exact copies of one another
    near_records: int  # records of those groups that are neither their group's first nor an exact copy
    ignored_columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        exact = {"records": sum(len(g) - 1 for g in self.exact), "groups": len(self.exact)}
        near = {"records": self.near_records, "groups": len(self.near)}
        return {
            "exact": exact | {"rows": self.exact[:GROUPS_LISTED]},
            "near": near
            | {"rows": self.near[:GROUPS_LISTED], "method": NEAR_METHOD, "ignored_columns": self.ignored_columns},
            "groups_listed_at_most": GROUPS_LISTED,
        }


ID_WORDS = {"id", "ids", "uuid", "guid", "key", "index", "idx", "ref", "reference", "row", "record", "no"}
KEY_SHARE = 0.99  # an id column keeps this share of distinct values even when some records were copied


def key_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that number the records rather than describe them: named as an id, whole numbers or text,
    (nearly) every value distinct. A copy entered again gets a new id, and is still a copy.

    >>> key_columns(pd.DataFrame({"patient_id": [1, 2, 3], "bmi": [20.1, 22.5, 30.0], "name": ["a", "b", "c"]}))
    ['patient_id']
    """
    keys = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_float_dtype(column) or not name_tokens(name) & ID_WORDS:
            continue
        if len(frame) > 1 and column.nunique() >= KEY_SHARE * len(frame):
            keys.append(name)
    return keys


def find_duplicates(frame: pd.DataFrame) -> Duplicates:
    """Exact and near copies among a table's records.

    >>> t = pd.DataFrame({"id": [1, 2, 3, 4], "name": ["Ada", "ada ", "Bob", "Ada"], "x": [1.0, 1.00001, 2.0, 1.0]})
    >>> d = find_duplicates(t)
    >>> d.exact, d.near, d.near_records, d.ignored_columns
    ([], [[0, 1, 3]], 2, ['id'])
    """
    exact_keys = row_hashes(frame)
    exact = duplicate_groups(exact_keys)
    ignored = key_columns(frame)
    if len(ignored) == frame.shape[1]:
        ignored = []
    near_keys = row_hashes(normalise(frame.drop(columns=ignored)))
    near, variants = [], 0
    for group in duplicate_groups(near_keys):
        distinct = len(set(exact_keys[group].tolist()))
        if distinct > 1:
            near.append(group)
            variants += distinct - 1
    return Duplicates(exact, near, variants, ignored)

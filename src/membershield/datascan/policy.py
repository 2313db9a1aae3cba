"""The data policy (``data.toml``): tiers and owners of columns, the quasi-identifiers, retention, and the
limits a table must respect for ``membershield data scan`` to exit 0.

Every key is optional; an unknown key, a value of the wrong type and a column the table does not have
are errors that name the key and the fix.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from membershield.datascan.tiers import TIERS
from membershield.errors import ConfigError

TOP_KEYS = (
    "k",
    "quasi_identifiers",
    "max_low_k_share",
    "max_duplicate_share",
    "max_near_duplicate_share",
    "require_owner",
    "columns",
    "retention",
)
COLUMN_KEYS = ("tier", "owner", "quasi_identifier", "bins")
RETENTION_KEYS = ("column", "max_age_days", "as_of", "date_format", "allow_undated")
DEFAULT_K = 5


@dataclass(frozen=True)
class ColumnRule:
    tier: str | None = None
    owner: str | None = None
    quasi_identifier: bool | None = None
    bins: float | tuple[float, ...] | None = None


@dataclass(frozen=True)
class Retention:
    column: str
    max_age_days: float
    as_of: date | None = None  # None: the day of the scan
    date_format: str | None = None  # None: ISO 8601
    allow_undated: bool = False


@dataclass(frozen=True)
class DataPolicy:
    k: int | None = None
    quasi_identifiers: tuple[str, ...] | None = None
    max_low_k_share: float | None = None
    max_duplicate_share: float | None = None
    max_near_duplicate_share: float | None = None
    require_owner: tuple[str, ...] = ()
    columns: dict[str, ColumnRule] = field(default_factory=dict)
    retention: Retention | None = None
    source: str = ""  # "policy file PATH", put before its errors

    def named_columns(self) -> Iterable[tuple[str, str]]:
        """(column, where the policy names it) for every column the policy refers to."""
        for name in self.quasi_identifiers or ():
            yield name, "quasi_identifiers"
        for name in self.columns:
            yield name, f"[columns.{name}]"
        if self.retention is not None:
            yield self.retention.column, "[retention] column"


def suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unknown(table: Mapping[str, Any], valid: tuple[str, ...], where: str) -> list[str]:
    return [
        f"unknown key '{key}' in {where}{suggest(key, valid)}; valid keys are {', '.join(valid)}"
        for key in table
        if key not in valid
    ]


def _share(table: Mapping[str, Any], key: str, problems: list[str]) -> float | None:
    value = table.get(key)
    if value is not None and (not _number(value) or not 0 <= value <= 1):
        problems.append(f"'{key}' must be a share between 0 and 1, got {value!r}")
        return None
    return value


def _column_rule(name: str, rule: Any, problems: list[str]) -> ColumnRule:
    where = f"[columns.{name}]"
    if not isinstance(rule, Mapping):
        problems.append(f'{where} must be a table such as {{tier = "personal", owner = "crm"}}, got {rule!r}')
        return ColumnRule()
    problems += _unknown(rule, COLUMN_KEYS, where)
    tier, owner, qi, bins = (rule.get(k) for k in COLUMN_KEYS)
    if tier is not None and tier not in TIERS:
        problems.append(f"{where} tier must be one of {', '.join(TIERS)}, got {tier!r}{suggest(str(tier), TIERS)}")
    if owner is not None and (not isinstance(owner, str) or not owner.strip()):
        problems.append(f"{where} owner must be a non-empty text naming who answers for the column, got {owner!r}")
    if qi is not None and not isinstance(qi, bool):
        problems.append(f"{where} quasi_identifier must be true or false, got {qi!r}")
    if bins is not None:
        edges = isinstance(bins, list) and len(bins) >= 1 and all(_number(b) for b in bins)
        if not (_number(bins) and bins > 0) and not edges:
            problems.append(
                f"{where} bins must be a bin width > 0 or a list of edges such as [18, 30, 65], got {bins!r}"
            )
        bins = tuple(sorted(float(b) for b in bins)) if edges else bins
    return ColumnRule(tier, owner, qi, bins)


def _retention(table: Any, problems: list[str]) -> Retention | None:
    if not isinstance(table, Mapping):
        problems.append(f"[retention] must be a table with column and max_age_days, got {table!r}")
        return None
    problems += _unknown(table, RETENTION_KEYS, "[retention]")
    column, days = table.get("column"), table.get("max_age_days")
    if not isinstance(column, str) or not column:
        problems.append(f"[retention] column must name the table's date column, got {column!r}")
    if not _number(days) or days <= 0:
        problems.append(f"[retention] max_age_days must be a number of days > 0, got {days!r}")
    as_of = table.get("as_of")
    if isinstance(as_of, str):
        try:
            as_of = date.fromisoformat(as_of)
        except ValueError:
            problems.append(f"[retention] as_of must be a date such as 2025-06-30, got {as_of!r}")
    elif as_of is not None and not isinstance(as_of, date):
        problems.append(f"[retention] as_of must be a date such as 2025-06-30, got {as_of!r}")
    fmt, undated = table.get("date_format"), table.get("allow_undated", False)
    if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
        problems.append(f'[retention] date_format must be a strftime format such as "%d/%m/%Y", got {fmt!r}')
    if not isinstance(undated, bool):
        problems.append(f"[retention] allow_undated must be true or false, got {undated!r}")
    if problems:
        return None
    return Retention(column, float(days), as_of, fmt, undated)


def parse_policy(table: Mapping[str, Any], source: str = "policy") -> DataPolicy:
    """A validated :class:`DataPolicy`; raises :class:`ConfigError` listing every problem on one line."""
    problems = _unknown(table, TOP_KEYS, "the policy")
    k = table.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
        problems.append(f"'k' must be a whole number of at least 2, got {k!r}")
    names = table.get("quasi_identifiers")
    if names is not None and (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)):
        problems.append(f"'quasi_identifiers' must be a non-empty list of column names, got {names!r}")
        names = None
    shares = {key: _share(table, key, problems) for key in TOP_KEYS[2:5]}
    owners = table.get("require_owner", [])
    if not isinstance(owners, list) or any(t not in TIERS for t in owners):
        problems.append(f"'require_owner' must be a list of tiers from {', '.join(TIERS)}, got {owners!r}")
        owners = []
    columns = table.get("columns", {})
    if not isinstance(columns, Mapping):
        problems.append(f"'columns' must hold one table per column, [columns.NAME], got {columns!r}")
        columns = {}
    rules = {str(name): _column_rule(str(name), rule, problems) for name, rule in columns.items()}
    retention = _retention(table["retention"], problems) if "retention" in table else None
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return DataPolicy(
        k=k,
        quasi_identifiers=tuple(names) if names is not None else None,
        require_owner=tuple(owners),
        columns=rules,
        retention=retention,
        source=source,
        **shares,
    )


def load_policy(path: str | Path) -> DataPolicy:
    """Read a data policy: the ``[scan]`` table of a TOML file, or its top level."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"policy file not found: {p} (pass --policy data.toml)")
    try:
        document = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {p} is not valid TOML: {exc}") from exc
    table = document.get("scan", document)
    if not isinstance(table, dict):
        raise ConfigError(f"policy file {p}: [scan] must be a table")
    if table is not document and len(document) > 1:
        stray = ", ".join(key for key in document if key != "scan")
        raise ConfigError(f"policy file {p}: {stray} outside the [scan] table would be ignored; move it into [scan]")
    return parse_policy(table, source=f"policy file {p}")


def check_columns(policy: DataPolicy, columns: Iterable[str], quasi_identifiers: Iterable[str] = ()) -> None:
    """Every column the policy or ``--quasi-identifiers`` names must be in the table."""
    present = list(columns)
    problems = []
    named = [*policy.named_columns(), *((name, "--quasi-identifiers") for name in quasi_identifiers)]
    for name, where in named:
        if name not in present:
            problems.append(f"unknown column '{name}' in {where}{suggest(name, present)}")
    if problems:
        shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
        prefix = f"{policy.source}: " if policy.source else ""
        raise ConfigError(prefix + "; ".join(problems) + f"; the table's columns are {shown}")

"""The audit result document (``audit.json``): versioned, JSON-serialisable, stamped with provenance."""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = "1.0"


@dataclass
class AttackResult:
    name: str
    title: str
    citation: str
    access: str
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    advantage: float
    epsilon_lower_bound: float
    epsilon_detail: dict[str, Any]
    tpr_at_fpr: list[dict[str, Any]]
    ppv: dict[str, Any]
    slices: list[dict[str, Any]]
    top_exposed: list[dict[str, Any]]
    params: dict[str, Any]
    seconds: float
    advantage_ci_low: float | None = None  # absent from audits written before the advantage had an interval
    advantage_ci_high: float | None = None


@dataclass
class AuditResult:
    target: dict[str, Any]
    data: dict[str, Any]
    utility: dict[str, Any]
    split_check: dict[str, Any] | None
    references: dict[str, Any]
    attacks: list[AttackResult]
    config: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, str] = field(default_factory=lambda: environment_stamp())

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def attack(self, name: str) -> AttackResult:
        for result in self.attacks:
            if result.name == name:
                return result
        raise KeyError(name)


def environment_stamp() -> dict[str, str]:
    stamp = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("membershield", "numpy", "scipy", "scikit-learn", "pandas", "torch"):
        try:
            stamp[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            stamp[package] = "not installed"
    return stamp


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become None (JSON has no NaN, and a reader must not guess)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value

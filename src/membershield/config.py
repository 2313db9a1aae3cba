"""Audit configuration: one dataclass, filled from a TOML file and/or command-line flags.

Flags override the file. Unknown keys are errors (with the closest valid key), because a misspelt
option silently ignored would change what an auditor believes was measured.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from membershield.attacks import DEFAULT_ATTACKS, parse_attack_list
from membershield.errors import ConfigError
from membershield.training.backends import BACKENDS, TRAINERS

DEFAULT_FPRS = (0.001, 0.01, 0.1)


@dataclass
class AuditConfig:
    model: str
    train: str
    holdout: str
    label_column: str
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    references: int = 8
    population: str | None = None
    slice_column: str | None = None
    ignore_columns: list[str] = field(default_factory=list)
    id_column: str | None = None
    drop_overlap: bool = False
    seed: int = 0
    out: str = "membershield-audit"
    cache: str = ".membershield/cache"
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))
    delta: float = 1e-5
    prior: float = 0.5
    top_k: int = 10
    split_check: bool = True
    backend: str = "local"
    ray_address: str | None = None
    n_jobs: int | None = None
    trainer: str = "auto"

    def validate(self) -> AuditConfig:
        _check_types(self)
        self.attacks = parse_attack_list(self.attacks)
        if self.references < 0:
            raise ConfigError(f"references must be 0 or more, got {self.references}")
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ConfigError(f"fprs must be numbers strictly between 0 and 1, got {self.fprs}")
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if not 0 < self.prior < 1:
            raise ConfigError(f"prior must be strictly between 0 and 1, got {self.prior}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be 0 or more, got {self.top_k}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}': choose one of {', '.join(BACKENDS)}")
        if self.trainer not in TRAINERS:
            raise ConfigError(f"unknown trainer '{self.trainer}': choose one of {', '.join(TRAINERS)}")
        if self.n_jobs is not None and self.n_jobs < 1:
            raise ConfigError(f"n_jobs must be 1 or more, got {self.n_jobs}")
        # Options for another backend are mistakes, not preferences: training here instead would surprise.
        if self.ray_address and self.backend != "ray":
            raise ConfigError(f"ray_address applies to the ray backend only; add --backend ray (now {self.backend})")
        if self.n_jobs is not None and self.backend == "local":
            raise ConfigError("n_jobs applies to the processes and ray backends; add --backend processes or ray")
        self.fprs = sorted(float(f) for f in self.fprs)
        return self


_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "train": (str,),
    "holdout": (str,),
    "label_column": (str,),
    "attacks": (str, list),
    "references": (int,),
    "population": (str, type(None)),
    "slice_column": (str, type(None)),
    "ignore_columns": (list,),
    "id_column": (str, type(None)),
    "drop_overlap": (bool,),
    "seed": (int,),
    "out": (str,),
    "cache": (str,),
    "fprs": (list,),
    "delta": (float, int),
    "prior": (float, int),
    "top_k": (int,),
    "split_check": (bool,),
    "backend": (str,),
    "ray_address": (str, type(None)),
    "n_jobs": (int, type(None)),
    "trainer": (str,),
}


def _check_types(config: AuditConfig) -> None:
    for name, allowed in _TYPES.items():
        value = getattr(config, name)
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            expected = " or ".join(t.__name__ for t in allowed if t is not type(None))
            raise ConfigError(f"option '{name}' must be {expected}, got {value!r}")


REQUIRED = ("model", "train", "holdout", "label_column")
KEYS = {f.name for f in fields(AuditConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read the ``[audit]`` table (or the top level) of a TOML file, rejecting unknown keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        document = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    table = document.get("audit", document)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {p}: [audit] must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in KEYS:
            close = difflib.get_close_matches(name, KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{key}' in config file {p}{hint}")
        values[name] = value
    # Relative paths in a config file are relative to the file, so a config can live beside its data.
    for name in ("model", "train", "holdout", "population"):
        if isinstance(values.get(name), str):
            values[name] = _relative_to(p.parent, values[name])
    return values


def _relative_to(base: Path, value: str) -> str:
    path_part, sep, func = value.rpartition(":") if ".py:" in value else (value, "", "")
    candidate = Path(path_part)
    if not candidate.is_absolute():
        candidate = base / candidate
    return f"{candidate}{sep}{func}"


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> AuditConfig:
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    missing = [k for k in REQUIRED if not merged.get(k)]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ConfigError(f"missing required option(s) {flags} (give them as flags or in --config)")
    try:
        config = AuditConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return config.validate()

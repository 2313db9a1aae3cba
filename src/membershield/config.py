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
from membershield.attacks.label_only_boundary import BOUNDARY_QUERIES
from membershield.endpoint.formats import API_FORMATS
from membershield.errors import ConfigError
from membershield.training.backends import BACKENDS, TRAINERS

DEFAULT_FPRS = (0.001, 0.01, 0.1)


@dataclass
class AuditConfig:
    label_column: str
    model: str = ""  # empty in a recipe audit, whose models are trained from ``recipe`` on ``data``
    train: str = ""
    holdout: str = ""
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    references: int = 8
    population: str | None = None
    slice_column: str | None = None
    ignore_columns: list[str] = field(default_factory=list)
    id_column: str | None = None
    drop_overlap: bool = False
    # Who each record is about (--user-column): one membership decision per user; never a feature.
    user_column: str | None = None
    # Rare records: quasi-identifier combination seen fewer than rarity_k times (None: every feature).
    quasi_identifiers: list[str] | None = None
    rarity_k: int = 5
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
    # A model behind an API (--model http://...): how to talk to it, and the recipe of the attacker's
    # reference models (a recipe file or a model file whose clone is trained).
    recipe: str | None = None
    api_format: str = "membershield"
    headers: list[str] = field(default_factory=list)  # "Name: value"; ${VAR} is read from the environment
    max_queries: int | None = None
    queries_per_second: float | None = None
    batch_size: int = 64
    label_only_queries: int = BOUNDARY_QUERIES  # records label-only-boundary sends per record it searches from
    text_column: str | None = None  # the column of texts a text classifier (--model hf:DIR) reads
    # A recipe audit (the privacy game): --recipe trains ``models`` models on random halves of ``data``.
    data: str | None = None
    models: int = 32
    # An unlearning check (--forgotten): records removed before the model was retrained, audited against
    # the holdout, where they must be at chance.
    forgotten: str | None = None

    def validate(self) -> AuditConfig:
        """Check every option and raise one :class:`ConfigError` naming every problem, each with its fix."""
        problems = _type_problems(self)
        if not problems and (missing := _missing_options(self)):
            raise ConfigError(missing)
        if not problems:
            problems = _value_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))
        self.attacks = parse_attack_list(self.attacks)
        self.fprs = sorted(float(f) for f in self.fprs)
        return self


def _missing_options(config: AuditConfig) -> str | None:
    """The options this kind of audit needs and lacks (or has that belong to the other kind), as one line."""
    if config.data:
        needed, foreign = ("recipe", "label_column"), [n for n in ("model", "train", "holdout") if getattr(config, n)]
        if foreign:
            flags = ", ".join("--" + n for n in foreign)
            return f"a recipe audit (--data) draws its members from the pool and trains its own models: drop {flags}"
    else:
        needed = REQUIRED
    missing = [k for k in needed if not getattr(config, k)]
    if not missing:
        return None
    flags = ", ".join("--" + k.replace("_", "-") for k in missing)
    return f"missing required option(s) {flags} (give them as flags or in --config)"


def _value_problems(config: AuditConfig) -> list[str]:
    """Range and combination problems of well-typed options (all of them, so one run shows every fix)."""
    problems: list[str] = []
    try:
        parse_attack_list(config.attacks)
    except ConfigError as exc:
        problems.append(str(exc))
    checks = [
        (config.references < 0, f"references must be 0 or more, got {config.references}"),
        (
            not config.fprs
            or any(isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f < 1 for f in config.fprs),
            f"fprs must be numbers strictly between 0 and 1, got {config.fprs}",
        ),
        (not 0 <= config.delta < 1, f"delta must be in [0, 1), got {config.delta}"),
        (not 0 < config.prior < 1, f"prior must be strictly between 0 and 1, got {config.prior}"),
        (config.top_k < 0, f"top_k must be 0 or more, got {config.top_k}"),
        (
            config.backend not in BACKENDS,
            f"unknown backend '{config.backend}': choose one of {', '.join(BACKENDS)}",
        ),
        (
            config.trainer not in TRAINERS,
            f"unknown trainer '{config.trainer}': choose one of {', '.join(TRAINERS)}",
        ),
        (config.n_jobs is not None and config.n_jobs < 1, f"n_jobs must be 1 or more, got {config.n_jobs}"),
        # Options for another backend are mistakes, not preferences: training here instead would surprise.
        (
            bool(config.ray_address) and config.backend != "ray",
            f"ray_address applies to the ray backend only; add --backend ray (now {config.backend})",
        ),
        (
            config.n_jobs is not None and config.backend == "local",
            "n_jobs applies to the processes and ray backends; add --backend processes or ray",
        ),
    ]
    checks += [
        (
            config.api_format not in API_FORMATS,
            f"unknown api_format '{config.api_format}': choose one of {', '.join(API_FORMATS)}",
        ),
        (config.batch_size < 1, f"batch_size must be 1 or more, got {config.batch_size}"),
        (
            config.label_only_queries < 1,
            f"label_only_queries (--label-only-queries) must be 1 or more, got {config.label_only_queries}",
        ),
        (
            config.max_queries is not None and config.max_queries < 1,
            f"max_queries must be 1 or more, got {config.max_queries}",
        ),
        (
            config.queries_per_second is not None and not config.queries_per_second > 0,
            f"queries_per_second must be above 0, got {config.queries_per_second}",
        ),
        (
            config.text_column is not None and not config.model.startswith("hf:"),
            "text_column applies to a text classifier (--model hf:DIR) only; drop --text-column",
        ),
        (config.models < 2, f"models must be 2 or more (each model's references are the others), got {config.models}"),
    ]
    checks += _subject_problems(config)
    checks += _forgotten_problems(config)
    problems += [f"header {h!r} must read 'Name: value'" for h in config.headers if not _is_header(h)]
    return problems + [message for failed, message in checks if failed]


def _subject_problems(config: AuditConfig) -> list[tuple[bool, str]]:
    """The user column and the rarity rule: identifiers are not labels, and k must be able to flag a record."""
    qis = config.quasi_identifiers
    return [
        (
            config.rarity_k < 2,
            f"rarity_k must be 2 or more (rare: a quasi-identifier combination seen fewer than k times; k = 1"
            f" flags nothing), got {config.rarity_k}; set --rarity-k 2 or more",
        ),
        (
            qis is not None and (not qis or not all(isinstance(q, str) and q.strip() for q in qis)),
            f"quasi_identifiers must name feature columns, got {qis!r}; leave it out to use every feature",
        ),
        (
            bool(config.label_column) and qis is not None and config.label_column in qis,
            f"quasi_identifiers include the label column '{config.label_column}'; name feature columns only",
        ),
        (
            config.user_column is not None and config.user_column == config.label_column,
            f"user_column '{config.user_column}' is the label column; give the column naming each record's user",
        ),
        (
            bool(config.data) and (config.user_column is not None or qis is not None),
            "user_column and quasi_identifiers apply to an audit of one model (--train/--holdout): a recipe audit"
            " (--data) draws membership record by record; drop --user-column and --quasi-identifiers",
        ),
    ]


def _forgotten_problems(config: AuditConfig) -> list[tuple[bool, str]]:
    """An unlearning check audits one trained model: a recipe retrains on --train and cannot have kept them."""
    if not config.forgotten:
        return []
    return [
        (
            bool(config.data),
            "forgotten applies to an audit of one trained model (--model, --train, --holdout), not to a recipe"
            " audit (--data); drop --forgotten",
        ),
        (
            ".py:" in config.model,
            f"forgotten needs the trained model itself, not a recipe that trains it ({config.model}): give the"
            " retrained model file as --model",
        ),
    ]


def _is_header(text: str) -> bool:
    name, sep, _ = text.partition(":")
    return bool(sep) and bool(name.strip()) and " " not in name.strip()


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
    "user_column": (str, type(None)),
    "quasi_identifiers": (list, type(None)),
    "rarity_k": (int,),
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
    "recipe": (str, type(None)),
    "api_format": (str,),
    "headers": (list,),
    "max_queries": (int, type(None)),
    "queries_per_second": (float, int, type(None)),
    "batch_size": (int,),
    "label_only_queries": (int,),
    "text_column": (str, type(None)),
    "data": (str, type(None)),
    "models": (int,),
    "forgotten": (str, type(None)),
}


def _type_problems(config: AuditConfig) -> list[str]:
    problems = []
    for name, allowed in _TYPES.items():
        value = getattr(config, name)
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            expected = " or ".join(t.__name__ for t in allowed if t is not type(None))
            problems.append(f"option '{name}' must be {expected}, got {value!r}")
    return problems


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
    unknown = []
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in KEYS:
            close = difflib.get_close_matches(name, KEYS, n=1)
            unknown.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        values[name] = value
    if unknown:
        raise ConfigError(f"unknown key {', '.join(unknown)} in config file {p}; remove or rename it")
    # Relative paths in a config file are relative to the file, so a config can live beside its data.
    for name in ("model", "train", "holdout", "population", "recipe", "data", "forgotten"):
        if isinstance(values.get(name), str):
            values[name] = _relative_to(p.parent, values[name])
    return values


def _relative_to(base: Path, value: str) -> str:
    if "://" in value:  # an endpoint, not a path
        return value
    if value.startswith("hf:"):  # a classifier directory: the path after the prefix is relative
        return "hf:" + _relative_to(base, value.removeprefix("hf:"))
    path_part, sep, func = value.rpartition(":") if ".py:" in value else (value, "", "")
    candidate = Path(path_part)
    if not candidate.is_absolute():
        candidate = base / candidate
    return f"{candidate}{sep}{func}"


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> AuditConfig:
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    merged.setdefault("label_column", "")  # validate names it with every other missing option
    try:
        config = AuditConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return config.validate()

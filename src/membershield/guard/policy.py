"""The guard's policy file (TOML): output hardening, limits, detector thresholds and server limits.

Every section and key is checked; an unknown one is a :class:`ConfigError` naming it and the keys that
exist, so a typo never silently leaves a model unprotected.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from membershield.defenses.output import OutputPolicy
from membershield.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Per API key: requests per rolling minute and records per UTC day (None: unlimited)."""

    requests_per_minute: int | None = 600
    daily_query_budget: int | None = 100_000


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of :class:`membershield.guard.detector.ProbingDetector` (see its docstring)."""

    enabled: bool = True
    window: int = 200  # the key's most recent records compared with each new one
    window_seconds: float = 600.0
    near_distance: float = 0.1  # relative L2 distance under which two records are "the same record, perturbed"
    near_count: int = 20  # near-duplicates within the window that raise a perturbation-probing alert
    sweep_window_seconds: float = 60.0
    sweep_count: int = 1200  # distinct records within sweep_window_seconds that raise a sweep alert
    cooldown_seconds: float = 300.0  # one alert per key and pattern in this time
    throttle: bool = False  # answer 429 to a key for throttle_seconds after it raised an alert
    throttle_seconds: float = 600.0
    # keep each key's records and the answers it got in the store, so an incident can say what it learnt
    record_queries: bool = True


@dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = 1 << 20
    upstream_timeout_seconds: float = 10.0
    max_new_tokens: int = 256  # the most tokens one POST /v1/generate may ask for


@dataclass(frozen=True)
class GuardPolicy:
    output: OutputPolicy = field(default_factory=OutputPolicy)
    limits: Limits = field(default_factory=Limits)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {f.name: getattr(getattr(self, name), f.name) for f in fields(getattr(self, name))}
            for name in SECTIONS
        }


SECTIONS: dict[str, type] = {
    "output": OutputPolicy,
    "limits": Limits,
    "detector": DetectorConfig,
    "server": ServerConfig,
}
_OPTIONAL_INT = {"requests_per_minute", "daily_query_budget", "top_k", "round_decimals"}
_OPTIONAL_FLOAT = {"temperature", "clip_top1", "noise_std"}


def _check_value(where: str, name: str, value: Any, default: Any) -> Any:
    if name in _OPTIONAL_INT or (isinstance(default, int) and not isinstance(default, bool)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        if (
            name
            in (
                "requests_per_minute",
                "daily_query_budget",
                "window",
                "near_count",
                "sweep_count",
                "max_body_bytes",
                "max_new_tokens",
            )
            and value < 1
        ):
            raise ConfigError(f"{where}: {name} must be 1 or more, got {value}")
        return value
    if name in _OPTIONAL_FLOAT or isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        if name not in _OPTIONAL_FLOAT and value < 0:
            raise ConfigError(f"{where}: {name} must be 0 or more, got {value}")
        return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    return value


def policy_from_dict(data: dict[str, Any], where: str = "guard policy") -> GuardPolicy:
    """Build a policy from parsed TOML; unknown sections or keys are errors."""
    built: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{section}] (known: {', '.join('[' + s + ']' for s in SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table of keys")
        cls = SECTIONS[section]
        known = {f.name: f.default for f in fields(cls)}
        kwargs = {}
        for name, value in values.items():
            if name not in known:
                raise ConfigError(f"{where}: unknown key '{name}' in [{section}] (known: {', '.join(known)})")
            kwargs[name] = _check_value(f"{where} [{section}]", name, value, known[name])
        built[section] = cls(**kwargs)
    return GuardPolicy(**built)


def load_policy(path: str | Path | None) -> GuardPolicy:
    """Read a guard policy file; no file gives the defaults (no output hardening)."""
    if path is None:
        return GuardPolicy()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"guard policy file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read guard policy {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"guard policy {path} is not valid TOML: {exc}".splitlines()[0]) from exc
    return policy_from_dict(data, where=str(path))

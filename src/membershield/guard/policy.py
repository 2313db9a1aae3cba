"""The guard's policy file (TOML): output hardening, limits, detector thresholds, server limits and, for a
text model, how it generates and what it may repeat of its training text.

Every section and key is checked; an unknown one is a :class:`ConfigError` naming it and the keys that
exist, so a typo never silently leaves a model unprotected.
"""

from __future__ import annotations

import math
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


VERBATIM_ACTIONS = ("refuse", "truncate")
CORPUS_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class GenerationConfig:
    """How ``POST /v1/generate`` decodes, and the verbatim filter over its answers (text models only).

    ``temperature`` divides a language model's next-token logits before sampling (0: greedy decoding, the
    default); it is not ``[output] temperature``, the softmax temperature of a classifier's probabilities.
    ``top_p`` keeps the smallest set of tokens whose probability reaches it (nucleus sampling, Holtzman et al.
    2020). ``seed`` makes sampling a function of the prompt: the same prompt gets the same answer. ``corpus``
    (a JSONL or CSV file of training texts, ``text_field`` naming the text) turns on the verbatim filter: an
    answer that completes ``verbatim_ngram`` consecutive tokens of a corpus text is refused or truncated.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    corpus: str | None = None  # resolved against the policy file's folder
    text_field: str = "text"
    verbatim_ngram: int = 8
    verbatim_action: str = "refuse"

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    @property
    def filters(self) -> bool:
        return self.corpus is not None


@dataclass(frozen=True)
class GuardPolicy:
    output: OutputPolicy = field(default_factory=OutputPolicy)
    limits: Limits = field(default_factory=Limits)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

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
    "generation": GenerationConfig,
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


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _text(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def _corpus(where: str, value: Any, base: Path | None) -> str:
    path = Path(_text(where, "corpus", value)).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.suffix.lower() not in CORPUS_SUFFIXES:
        raise ConfigError(f"{where}: corpus {path} must be a .jsonl or .csv file of training texts")
    if not path.is_file():
        relative = f" (relative paths start at the policy file's folder, {base})" if base is not None else ""
        raise ConfigError(f"{where}: corpus file not found: {path}{relative}")
    return str(path)


def _generation(where: str, values: dict[str, Any], base: Path | None) -> GenerationConfig:
    """The ``[generation]`` section, each key checked and the keys that only mean something together."""
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name == "temperature":
            kwargs[name] = _number(where, name, value)
            if kwargs[name] < 0:
                raise ConfigError(f"{where}: temperature must be 0 (greedy decoding) or more, got {value}")
        elif name == "top_p":
            kwargs[name] = _number(where, name, value)
            if not 0 < kwargs[name] <= 1:
                raise ConfigError(f"{where}: top_p must be over 0 and at most 1 (1: no nucleus cut), got {value}")
        elif name in ("seed", "verbatim_ngram"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
            low, high = (0, 2**63 - 1) if name == "seed" else (2, 1024)
            if not low <= value <= high:
                raise ConfigError(f"{where}: {name} must be from {low} to {high}, got {value}")
            kwargs[name] = value
        elif name == "verbatim_action":
            if value not in VERBATIM_ACTIONS:
                raise ConfigError(f"{where}: verbatim_action must be 'refuse' or 'truncate', got {value!r}")
            kwargs[name] = value
        elif name == "text_field":
            kwargs[name] = _text(where, name, value)
        else:
            kwargs[name] = _corpus(where, value, base)
    config = GenerationConfig(**kwargs)
    if not config.sampling and ("top_p" in kwargs or "seed" in kwargs):
        name = "top_p" if "top_p" in kwargs else "seed"
        raise ConfigError(
            f"{where}: {name} only applies when sampling: set temperature over 0 (1.0 samples the model's own"
            f" distribution) or remove {name}"
        )
    needs_corpus = sorted(set(kwargs) & {"text_field", "verbatim_ngram", "verbatim_action"})
    if needs_corpus and not config.filters:
        raise ConfigError(
            f'{where}: {needs_corpus[0]} configures the verbatim filter, which needs corpus = "FILE.jsonl"'
            " (the training texts)"
        )
    return config


def policy_from_dict(data: dict[str, Any], where: str = "guard policy", base: Path | None = None) -> GuardPolicy:
    """Build a policy from parsed TOML; unknown sections or keys are errors. A relative ``[generation]
    corpus`` is found from ``base`` (the policy file's folder), else from the working directory."""
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
        for name in values:
            if name not in known:
                raise ConfigError(f"{where}: unknown key '{name}' in [{section}] (known: {', '.join(known)})")
        if section == "generation":
            built[section] = _generation(f"{where} [{section}]", values, base)
            continue
        for name, value in values.items():
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
    return policy_from_dict(data, where=str(path), base=path.parent)

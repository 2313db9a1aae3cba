"""Scheduled re-audits (``membershield monitor --config monitor.toml``): each listed audit is run again,
recorded in the history store and gated, so that a model whose leakage regressed fails loudly instead of
waiting for someone to look. With ``--once`` (for cron) every audit runs once; otherwise the list is run
every ``interval`` until interrupted.

monitor.toml::

    store = "history.db"          # optional; the default store otherwise
    interval = "24h"              # optional: s, m, h or d; without it, or with --once, one cycle
    [[audits]]
    name = "credit-model"         # the model name the audits are recorded and gated under
    config = "audit.toml"         # an audit configuration (what `membershield audit --config` reads)
    policy = "policy.toml"        # the gate's policy; max_regression compares with the last passing audit
    out = "monitor-out/credit"    # optional (default: monitor-out/NAME beside monitor.toml)

Relative paths are relative to monitor.toml. One audit's bad input does not stop the others: it is
reported as that audit's error, and the audits before it keep their results.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from membershield.errors import ConfigError, MembershieldError

INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TOP_KEYS = ("store", "interval", "audits")
AUDIT_KEYS = ("name", "config", "policy", "out")


def parse_interval(text: str) -> float:
    """``"30m"`` as seconds.

    >>> parse_interval("30m"), parse_interval("1.5h"), parse_interval("2d")
    (1800.0, 5400.0, 172800.0)
    """
    match = INTERVAL.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"monitor interval '{text}' must be a positive number and a unit: 30s, 15m, 6h or 1d")
    return float(match.group(1)) * SECONDS[match.group(2)]


@dataclass(frozen=True)
class MonitoredAudit:
    name: str
    config: Path
    policy: Path
    out: Path


@dataclass(frozen=True)
class MonitorPlan:
    audits: list[MonitoredAudit]
    store: str | None
    interval: float | None


def _unknown(keys: Any, known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(known)})")


def load_plan(path: str | Path) -> MonitorPlan:
    """Read monitor.toml; every problem is a ConfigError naming the file, the entry and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"monitor config not found: {path} (pass --config monitor.toml)")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"monitor config {path} is not valid TOML: {exc}") from exc
    _unknown(document, TOP_KEYS, f"monitor config {path}")
    entries = document.get("audits")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"monitor config {path} lists no audits: add [[audits]] with name, config and policy")
    base = path.parent
    audits, names = [], set()
    for i, entry in enumerate(entries, 1):
        where = f"monitor config {path}, audit #{i}"
        _unknown(entry, AUDIT_KEYS, where)
        missing = [k for k in ("name", "config", "policy") if not isinstance(entry.get(k), str)]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)} (each audit needs name, config and policy)")
        if entry["name"] in names:
            raise ConfigError(f"{where}: the name '{entry['name']}' is used twice; names must be unique")
        names.add(entry["name"])
        out = base / entry.get("out", f"monitor-out/{entry['name']}")
        audits.append(MonitoredAudit(entry["name"], base / entry["config"], base / entry["policy"], out))
    interval = document.get("interval")
    store = document.get("store")
    if store is not None and "://" not in store:
        store = str(base / store)
    return MonitorPlan(audits, store, parse_interval(str(interval)) if interval is not None else None)


@dataclass(frozen=True)
class MonitorResult:
    name: str
    passed: bool | None  # None: the audit could not run (see error)
    failures: list[str]
    audit_id: int | None = None
    error: str | None = None
    compared_with: str | None = None


def run_one(audit: MonitoredAudit, store: str | None) -> MonitorResult:
    """Audit, record and gate one listed audit; bad input becomes the result's error."""
    from membershield.audit import REPORTS, run_audit
    from membershield.config import build_config, read_config_file
    from membershield.history import gate_audit, record_audit

    try:
        values = read_config_file(audit.config)
        values.setdefault("out", str(audit.out))
        values.setdefault("cache", str(audit.out / "cache"))
        config = build_config(values, {})
        (_recipe_runner() if config.data else run_audit)(config, reports=REPORTS)
        record_audit(config.out, store, model_name=audit.name)
        outcome = gate_audit(Path(config.out) / "audit.json", audit.policy, store=store, model_name=audit.name)
    except MembershieldError as exc:
        return MonitorResult(audit.name, None, [], error=str(exc))
    verdict = outcome.verdict
    return MonitorResult(
        audit.name, verdict.passed, outcome.failures, outcome.record.id, compared_with=verdict.compared_with
    )


def _recipe_runner() -> Callable[..., Any]:
    from membershield.audit.recipe_run import run_recipe_audit

    return run_recipe_audit


def run_cycle(plan: MonitorPlan, on_result: Callable[[MonitorResult], None] | None = None) -> list[MonitorResult]:
    """Every listed audit once, in order."""
    results = []
    for audit in plan.audits:
        result = run_one(audit, plan.store)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def exit_code(results: list[MonitorResult]) -> int:
    """2 when an audit could not run, 1 when a gate failed, else 0."""
    if any(r.error for r in results):
        return 2
    return 1 if any(r.passed is False for r in results) else 0


def run_monitor(
    plan: MonitorPlan,
    *,
    once: bool = False,
    on_result: Callable[[MonitorResult], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    cycles: int | None = None,
) -> int:
    """Run cycles (one with ``once`` or without an interval; else every ``plan.interval`` seconds, up to
    ``cycles`` when given) and return the exit code of the last cycle."""
    if once or plan.interval is None:
        return exit_code(run_cycle(plan, on_result))
    done, code = 0, 0
    while cycles is None or done < cycles:
        started = time.monotonic()
        code = exit_code(run_cycle(plan, on_result))
        done += 1
        if cycles is None or done < cycles:
            sleep(max(0.0, plan.interval - (time.monotonic() - started)))
    return code


__all__ = ["MonitorPlan", "MonitorResult", "exit_code", "load_plan", "parse_interval", "run_cycle", "run_monitor"]

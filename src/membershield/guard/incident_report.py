"""An incident: one alert, its key (by name, with its owner and lifecycle), what the key learnt
(:mod:`.incident`) and the steps taken, as a JSON document (``GET /v1/alerts/{id}``) and as a Markdown
report (``membershield incident ALERT_ID``).

:class:`IncidentAnalyst` reads each audit back once and keeps it while its ``audit.json`` is unchanged, so
the dashboard and the alerts endpoint can ask for many alerts without loading the model and data again.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from membershield.defenses.output import OutputPolicy
from membershield.errors import InputDataError, MembershieldError
from membershield.guard.incident import (
    AuditContext,
    audit_file_of,
    load_context,
    near_distance_of,
    output_policy_of,
    what_it_learnt,
)
from membershield.guard.query_log import load_history
from membershield.store import GuardKey, Store, StoreError


class IncidentAnalyst:
    """What alerts' keys learnt, against the newest usable audit of their model (or the audit at ``audit``)."""

    def __init__(self, store: Store, audit: str | Path | None = None, fallback: OutputPolicy | None = None) -> None:
        self.store = store
        self.audit = Path(audit) if audit is not None else None
        self.fallback = fallback
        self._lock = threading.Lock()
        self._contexts: dict[tuple[str, float], AuditContext | MembershieldError] = {}

    def context(self, model_name: str) -> AuditContext:
        if self.audit is not None:
            record, path = None, self.audit / "audit.json" if self.audit.is_dir() else self.audit
            if not path.is_file():
                raise InputDataError(f"audit file not found: {path} (pass --audit DIR/audit.json)")
        else:
            record, path = audit_file_of(self.store, model_name)
        key = (str(path.resolve()), path.stat().st_mtime)
        with self._lock:  # one reading of an audit at a time: the dashboard and the API may ask at once
            cached = self._contexts.get(key)
            if cached is None:
                try:
                    cached = load_context(path, record)
                except MembershieldError as exc:
                    cached = exc
                self._contexts = {key: cached}  # only the newest audit is kept
        if isinstance(cached, MembershieldError):
            raise cached
        return cached

    def learnt(self, alert: dict[str, Any], until: datetime | None = None) -> dict[str, Any]:
        """What the alert's key learnt up to ``until`` (default: now); raises a MembershieldError saying why
        it cannot be told (no usable audit, the data changed, references not cached)."""
        context = self.context(alert["model"])
        history = load_history(self.store, alert["key"], alert["model"], until)
        policy = output_policy_of(alert, self.fallback)
        found = what_it_learnt(context, history, policy, near_distance_of(alert), datetime.fromisoformat(alert["time"]))
        return {"audit": context.describe(), **found}


def _key_entry(key: GuardKey | None, grace_until: datetime | None, last_used: datetime | None) -> dict[str, Any]:
    if key is None:
        return {"known": False}

    def when(moment: datetime | None) -> str | None:
        return moment.isoformat(timespec="seconds") if moment else None

    return {
        "known": True,
        "name": key.name,
        "owner": key.owner,
        "role": "admin" if key.admin else "user",
        "created_at": when(key.created_at),
        "revoked_at": when(key.revoked_at),
        "rotated_at": when(key.rotated_at),
        "old_key_valid_until": when(grace_until) if key.rotated_at else None,
        "last_used": when(last_used),
    }


def steps_taken(alert: dict[str, Any], key: dict[str, Any], other_alerts: list[dict[str, Any]]) -> list[str]:
    """What was done about the key, in order of time: the alert, the guard's throttling, rotation, revocation."""
    detector = (alert.get("policy") or {}).get("detector") or {}
    steps = [
        (alert["time"], f"the guard raised a '{alert['pattern']}' alert on key '{alert['key']}' (alert #{alert['id']})")
    ]
    if detector.get("throttle"):
        steps.append(
            (
                alert["time"],
                f"the guard refused the key for {detector.get('throttle_seconds', 0):g} s (detector.throttle)",
            )
        )
    elif detector:
        steps.append((alert["time"], "the guard kept answering the key (detector.throttle = false)"))
    for other in other_alerts:
        if other["id"] != alert["id"]:
            steps.append((other["time"], f"another '{other['pattern']}' alert on the key (alert #{other['id']})"))
    if key.get("rotated_at"):
        steps.append(
            (
                key["rotated_at"],
                f"the key was rotated; the replaced key was accepted until {key['old_key_valid_until']}",
            )
        )
    if key.get("revoked_at"):
        steps.append((key["revoked_at"], "the key was revoked: every guard on this store refuses it within a second"))
    ordered = sorted(steps, key=lambda step: step[0])  # stable: the alert before what the guard did about it
    return [f"{when[:19].replace('T', ' ')} UTC: {what}" for when, what in ordered]


def next_steps(key: dict[str, Any]) -> list[str]:
    if not key.get("known"):
        return ["the key is no longer in the store"]
    if key.get("revoked_at"):
        return []
    name = key["name"]
    return [
        f"revoke the key: `membershield keys revoke '{name}'` (or rotate it, if its owner is trusted: "
        f"`membershield keys rotate '{name}' --grace 1h`)",
        "ask its owner what the queries were for",
    ]


def incident_document(store: Store, analyst: IncidentAnalyst, alert_id: int) -> dict[str, Any]:
    """The alert, its key, what the key learnt (or why that cannot be told), and the steps taken."""
    alert = store.alert(alert_id)
    if alert is None:
        recent = ", ".join(f"#{a['id']}" for a in store.alerts(limit=5)) or "none yet"
        raise InputDataError(f"no alert #{alert_id} in history store {store.display} (the latest: {recent})")
    key = store.key_named(alert["key"])
    last_used = store.key_last_use().get(alert["key"])
    entry = _key_entry(key, store.grace_periods().get(alert["key"]), last_used)
    document: dict[str, Any] = {"alert": alert, "key": entry, "learnt": None, "learnt_error": None}
    try:
        document["learnt"] = analyst.learnt(alert)
    except (MembershieldError, StoreError) as exc:
        document["learnt_error"] = str(exc)
    others = [a for a in store.alerts(limit=1000, model_name=alert["model"]) if a["key"] == alert["key"]]
    document["steps_taken"] = steps_taken(alert, entry, others)
    document["next_steps"] = next_steps(entry)
    document["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return document


def summary_line(learnt: dict[str, Any]) -> str:
    """One line for the dashboard: audit records asked, members among them, confirmable at 1% FPR."""
    matched, confirmable = learnt["matched"], learnt["confirmable"]
    line = f"{matched['records']} audit records asked ({matched['members']} members)"
    if learnt["near"]["records"]:
        line += f", {learnt['near']['records']} probed by near copies"
    members = confirmable["members"]
    if members is None:
        return (
            line + f"; confirmable: not measurable (the audit needs ≥ {confirmable['nonmembers_needed']} non-members)"
        )
    return line + f"; {members['count']} confirmable at 1% FPR ({confirmable['attack']})"

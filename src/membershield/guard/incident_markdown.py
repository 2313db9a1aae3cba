"""The Markdown incident report of one alert (``membershield incident ALERT_ID``), rendered from the
document of :func:`membershield.guard.incident_report.incident_document`."""

from __future__ import annotations

from typing import Any


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") + " UTC" if value else "-"


def _header(document: dict[str, Any]) -> list[str]:
    alert, key = document["alert"], document["key"]
    learnt = document.get("learnt") or {}
    queried = learnt.get("queried", {})
    rows = [
        ("alert", f"#{alert['id']}: {alert['pattern']}, raised {_when(alert['time'])}"),
        ("model", alert["model"]),
        ("key", f"`{alert['key']}`" + (f" ({key['role']} key)" if key.get("known") else " (no longer in the store)")),
        ("owner", key.get("owner") or "not recorded (`membershield keys create NAME --owner WHO`)"),
        ("key created", _when(key.get("created_at"))),
        ("key's first and last query", f"{_when(queried.get('first'))} to {_when(queried.get('last'))}"),
        ("key's last use (any guard)", _when(key.get("last_used"))),
        ("key state", _state(key)),
        ("report written", _when(document["generated_at"])),
    ]
    lines = [f"# Incident: alert #{alert['id']}, {alert['pattern']} by key '{alert['key']}'", ""]
    lines += ["| | |", "|---|---|"] + [f"| {name} | {_cell(value)} |" for name, value in rows]
    return lines


def _state(key: dict[str, Any]) -> str:
    if not key.get("known"):
        return "unknown"
    if key.get("revoked_at"):
        return f"revoked {_when(key['revoked_at'])}"
    if key.get("rotated_at"):
        return f"rotated {_when(key['rotated_at'])}, old key accepted until {_when(key['old_key_valid_until'])}"
    return "active"


def _learnt(document: dict[str, Any]) -> list[str]:
    lines = ["", "## What the key learnt", ""]
    learnt = document.get("learnt")
    if learnt is None:
        return [*lines, f"Cannot be told: {document.get('learnt_error')}"]
    audit, queried, matched, near = learnt["audit"], learnt["queried"], learnt["matched"], learnt["near"]
    which = f"audit #{audit['id']} of {audit['model']}" if audit["id"] is not None else "the audit"
    version = f", version {audit['version']}" if audit.get("version") else ""
    lines.append(
        f"Matched against {which}{version} (audited {_when(audit['created_at'])}: {audit['n_members']} members,"
        f" {audit['n_nonmembers']} non-members, {audit['n_references']} reference models, read from its cache;"
        f" `{audit['path']}`)."
    )
    lines.append("")
    lines.append(
        f"- The key sent **{queried['records']} records** in {queried['requests']} requests"
        f" ({queried['after_alert']} after the alert)."
    )
    lines.append(
        f"- **{matched['records']} of them are audit records: {matched['members']} members** and"
        f" {matched['nonmembers']} non-members ({matched['queries']} queries)."
    )
    if near["records"]:
        lines.append(
            f"- {near['queries']} more queries were perturbed copies of {near['records']} audit record(s) it did"
            f" not ask exactly ({near['members']} of them members)."
        )
    lines.append(f"- {learnt['unknown_records']} records are not in the audit: their membership is not known.")
    lines += _confirmable(learnt)
    return lines


def _confirmable(learnt: dict[str, Any]) -> list[str]:
    confirmable, policy = learnt["confirmable"], learnt["output_policy"]
    hardening = ", ".join(f"{k}={v}" for k, v in policy.items() if v not in (None, False)) or "none"
    if confirmable["attack"] is None:
        return ["- No attack of the audit can run on the guard's answers alone."]
    members = confirmable["members"]
    if members is None:
        return [
            f"- Confirmable at 1% FPR: not measurable (the audit has fewer than {confirmable['nonmembers_needed']}"
            " non-members to certify a 1% false-positive rate)."
        ]
    lines = [
        f"- With the answers the guard gave (output hardening: {hardening}), an attacker using"
        f" **{confirmable['attack']}** confirms **{members['count']} of the {members['of']} members** it asked at"
        f" 1% FPR ({_pct(members['rate'])}, 95% CI {_pct(members['ci_low'])} to {_pct(members['ci_high'])}),"
        f" and would wrongly confirm {confirmable['flagged_nonmembers']} of the {learnt['matched']['nonmembers']}"
        " non-members it asked.",
        "",
        "| attack | members confirmed | non-members flagged | TPR at 1% FPR over the audit (95% CI) |",
        "|---|---|---|---|",
    ]
    for name, entry in learnt["by_attack"].items():
        rate = entry["audit_tpr_at_fpr"]
        shown = (
            f"{_pct(rate['tpr'])} ({_pct(rate['ci_low'])} to {_pct(rate['ci_high'])}; {rate['n_members']} members,"
            f" {rate['n_nonmembers']} non-members)"
            if rate["measurable"]
            else "not measurable"
        )
        lines.append(f"| {name} | {entry['confirmed_members']} | {entry['flagged_nonmembers']} | {shown} |")
    return lines


def render_incident(document: dict[str, Any]) -> str:
    """The whole report: the header table, what the key learnt, the alert's evidence, the steps taken."""
    lines = _header(document) + _learnt(document)
    lines += ["", "## Evidence", "", "| evidence | value |", "|---|---|"]
    lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in document["alert"]["evidence"].items()]
    lines += ["", "## Steps taken", ""] + [f"{i}. {step}" for i, step in enumerate(document["steps_taken"], 1)]
    if document["next_steps"]:
        lines += ["", "## Next steps", ""] + [f"- {step}" for step in document["next_steps"]]
    return "\n".join(lines) + "\n"

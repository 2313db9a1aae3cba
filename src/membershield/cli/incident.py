"""``membershield incident ALERT_ID``: the Markdown incident report of one guard alert."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from membershield.cli.common import console


def incident(
    alert_id: Annotated[int, typer.Argument(help="The alert's number (GET /v1/alerts, the dashboard).")],
    store: Annotated[str | None, typer.Option(help="History database the guard logs to, a file or URL.")] = None,
    audit: Annotated[
        Path | None,
        typer.Option(help="The audit to match against (audit.json or its folder; default: the model's newest)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the report here instead of printing it.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the incident as JSON (as GET /v1/alerts/ID answers).")
    ] = None,
) -> None:
    """What a probing key learnt: its records matched against an audit of the same model (members among them,
    how many an attacker confirms at 1% FPR with the guard's answers), its owner, the times and the steps taken."""
    from membershield.cli.common import write_json
    from membershield.guard.incident_markdown import render_incident
    from membershield.guard.incident_report import IncidentAnalyst, incident_document
    from membershield.report import write_text
    from membershield.store import open_store

    with open_store(store) as opened:
        document = incident_document(opened, IncidentAnalyst(opened, audit), alert_id)
    text = render_incident(document)
    if json_out is not None:
        write_json(json_out, document)
    if out is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        write_text(out, text)
        console.print(f"incident report of alert #{alert_id} written to {out}", markup=False)

"""``membershield gate``, ``history`` and ``report``: judge, list and render finished audits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from membershield.cli.common import console, pct
from membershield.result import summary_rate


def gate(
    audit_file: Annotated[
        Path, typer.Argument(metavar="AUDIT_JSON", help="The audit.json written by `membershield audit`.")
    ],
    policy: Annotated[Path, typer.Option(help="Policy TOML with the limits the audit must respect.")],
    junit: Annotated[Path | None, typer.Option(help="Also write the checks as JUnit XML to this file.")] = None,
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model name to judge and record under (default: as recorded, or file stem).")
    ] = None,
) -> None:
    """Judge an audit against a policy: exit 0 if every check passes, 1 if any fails, 2 on bad input."""
    from membershield.history import gate_audit

    outcome = gate_audit(audit_file, policy, store=store, model_name=model_name, junit=junit)
    verdict, record = outcome.verdict, outcome.record
    for line in outcome.failures:
        console.print(f"FAIL {line}", markup=False, highlight=False, soft_wrap=True)
    n = len(verdict.checks)
    if verdict.passed:
        console.print(f"gate passed: {n} checks on '{record.model_name}' (audit #{record.id})", markup=False)
    else:
        failed = len(outcome.failures)
        console.print(f"gate FAILED: {failed} of {n} checks on '{record.model_name}' (audit #{record.id})")
        sys.exit(verdict.exit_code)


def history(
    model: Annotated[str | None, typer.Option(help="Only the audits of this model name.")] = None,
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    limit: Annotated[int | None, typer.Option(help="Only the most recent N audits.", min=1)] = None,
) -> None:
    """Show recorded audits and their verdicts, oldest first, as a trend table or JSON."""
    import json

    from membershield.errors import ConfigError
    from membershield.store import open_store

    if output_format not in ("table", "json"):
        raise ConfigError(f"--format must be 'table' or 'json', got '{output_format}'")
    with open_store(store) as opened:
        records = opened.history(model_name=model, limit=limit)
        where = opened.display
    if output_format == "json":
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        console.print(f"no audits recorded in {where}" + (f" for model '{model}'" if model else ""), markup=False)
        return
    table = Table(title=f"Audit history ({where})", title_justify="left")
    for column in ("#", "audited (UTC)", "model", "version", "worst attack", "AUC (95% CI)", "Δ AUC"):
        table.add_column(column, no_wrap=column != "model", justify="right" if column in ("#", "Δ AUC") else "left")
    table.add_column("TPR % @ 1% FPR", justify="right")
    table.add_column("verdict")
    table.add_column("report")
    last_auc: dict[str, float] = {}
    for record in records:
        worst = record.worst_attack()
        name, m = worst if worst else ("-", {})
        auc = m.get("auc")
        shown_auc = f"{auc:.3f} ({m['auc_ci_low']:.3f}–{m['auc_ci_high']:.3f})" if auc is not None else "n/a"
        delta = f"{auc - last_auc[record.model_name]:+.3f}" if auc is not None and record.model_name in last_auc else ""
        if auc is not None:
            last_auc[record.model_name] = auc
        rate = summary_rate(m) if m else None
        if rate is None:
            shown_tpr = "-"
        elif not rate.get("measurable"):
            shown_tpr = "not measurable"
        else:
            shown_tpr = f"{pct(rate['tpr'])} ({pct(rate['ci_low'])}–{pct(rate['ci_high'])})"
        verdict = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]"}.get(record.verdict or "", "-")
        table.add_row(
            str(record.id),
            record.created_at.strftime("%Y-%m-%d %H:%M"),
            record.model_name,
            record.model_version or "",
            name,
            shown_auc,
            delta,
            shown_tpr,
            verdict,
            record.out_dir or "",
        )
    console.print(table)


def report(
    audit_file: Annotated[
        Path, typer.Argument(metavar="AUDIT_JSON", help="The audit.json written by `membershield audit`.")
    ],
    output_format: Annotated[
        str, typer.Option("--format", help="html: the full report; md: a short summary for a pull-request comment.")
    ] = "html",
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: report.html next to audit.json; md prints instead).")
    ] = None,
) -> None:
    """Render the report of a finished audit from its audit.json and the scores.csv next to it."""
    from membershield.report import write_report

    path, text = write_report(audit_file, output_format, out)
    if path is None:
        typer.echo(text, nl=False)
    else:
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)

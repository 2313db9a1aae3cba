"""``membershield monitor``: re-run listed audits on a schedule, record and gate them, fail loudly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from membershield.cli.common import console, errors


def monitor(
    config: Annotated[Path, typer.Option(help=r"monitor.toml: store, interval and the \[\[audits]] to re-run.")],
    once: Annotated[bool, typer.Option("--once", help="Run every audit once and exit (for cron).")] = False,
) -> None:
    """Re-run audits on a schedule; exit 1 when a gate fails (a regression), 2 when an audit cannot run."""
    from membershield.monitor import MonitorResult, load_plan, run_monitor

    plan = load_plan(config)

    def report(result: MonitorResult) -> None:
        if result.error is not None:
            errors.print(f"ERROR {result.name}: {result.error}", style="bold red", markup=False, highlight=False)
        elif result.passed:
            console.print(f"ok {result.name}: gate passed (audit #{result.audit_id})", markup=False)
        else:
            line = f"GATE FAILED {result.name} (audit #{result.audit_id})"
            errors.print(line, style="bold red", markup=False, highlight=False)
            for line in result.failures:
                errors.print(f"  FAIL {line}", markup=False, highlight=False, soft_wrap=True)

    if not once and plan.interval is not None:
        console.print(f"monitoring {len(plan.audits)} audit(s) every {plan.interval:g} s; Ctrl-C stops", markup=False)
    code = run_monitor(plan, once=once, on_result=report)
    if code:
        sys.exit(code)

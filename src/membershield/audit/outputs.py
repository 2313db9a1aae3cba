"""Every artifact of a finished audit, written by one call: ``audit.json``, ``scores.csv`` and the
reports (``report.html``, ``summary.md``) that render them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from membershield.errors import MembershieldError
from membershield.result import AuditResult, save

REPORTS = ("html", "md")


@dataclass
class AuditRun:
    """A finished audit: its result and its per-record scores (one row per audit record)."""

    result: AuditResult
    scores: pd.DataFrame


def write_audit_outputs(run: AuditRun, out: str | Path, *, reports: tuple[str, ...] = REPORTS) -> list[Path]:
    """Write the result, the scores and the ``reports`` asked for into ``out``; returns the paths."""
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        save(run.result, directory / "audit.json")
        run.scores.to_csv(directory / "scores.csv", index=False)
    except OSError as exc:
        raise MembershieldError(f"cannot write results to {directory}: {exc.strerror} (pass --out DIR)") from exc
    written = [directory / "audit.json", directory / "scores.csv"]
    if "html" in reports:
        from membershield.report.html import write_html_report  # matplotlib loads slowly: only when asked

        written.append(write_html_report(run.result, run.scores, directory / "report.html"))
    if "md" in reports:
        from membershield.report import write_text
        from membershield.report.markdown import render_markdown

        written.append(write_text(directory / "summary.md", render_markdown(run.result)))
    return written

"""Reports for people: a self-contained HTML page and a short Markdown summary of one audit.

This module holds what every format shares: reading ``audit.json`` (and the ``scores.csv`` next to it)
back, choosing the headline attack, the verdict, and the wording of numbers. The wording follows one
rule (DESIGN.md): a rate is never shown without its 95% interval and the counts behind it, and a TPR at
an FPR the data cannot resolve is "not measurable (n non-members)", never a number.

``html.py`` and ``markdown.py`` render; ``plots.py`` draws. Rendering never changes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from membershield.errors import ConfigError, MembershieldError
from membershield.result import AuditResult, audit_json_path, from_document, load

__all__ = [
    "FORMATS",
    "Verdict",
    "default_report_path",
    "fmt_count_rate",
    "fmt_interval",
    "fmt_pct",
    "fmt_rate",
    "headline",
    "load_result",
    "read_scores",
    "render_report",
    "verdict",
    "write_report",
    "write_text",
]

FORMATS = ("html", "md")


# --------------------------------------------------------------------------------------------------
# reading a finished audit back


def load_result(path: str | Path) -> AuditResult:
    """Read an ``audit.json`` (or a directory holding one) into an :class:`AuditResult` (see
    :func:`membershield.result.load`, which raises one :class:`InputDataError` naming every problem)."""
    return load(path)


def read_scores(directory: str | Path, result: AuditResult | dict[str, Any]) -> tuple[pd.DataFrame | None, str | None]:
    """The per-record scores from ``directory/scores.csv``, or ``(None, reason)`` when they are unusable.

    Plots that need per-record scores are left out (with the reason shown) rather than failing the report.
    """
    path = Path(directory) / "scores.csv"
    if not path.is_file():
        return None, f"{path.name} was not found next to audit.json, so per-record plots are left out"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, f"{path.name} could not be read ({type(exc).__name__}), so per-record plots are left out"
    document = _as_dict(result)
    needed = ["is_member"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        return None, f"{path.name} lacks the column(s) {', '.join(missing)}, so per-record plots are left out"
    n_expected = document["data"]["n_members"] + document["data"]["n_nonmembers"]
    if len(frame) != n_expected:
        return None, (
            f"{path.name} has {len(frame)} rows but the audit scored {n_expected} records;"
            " it belongs to another audit, so per-record plots are left out"
        )
    return frame, None


def _as_dict(result: AuditResult | dict[str, Any]) -> dict[str, Any]:
    return result.to_dict() if isinstance(result, AuditResult) else result


# --------------------------------------------------------------------------------------------------
# wording of numbers


def fmt_pct(value: float | None) -> str:
    """A proportion as a percentage: one decimal, two significant digits below 1%."""
    if value is None:
        return "n/a"
    percent = 100.0 * value
    if percent == 0 or abs(percent) >= 1:
        return f"{percent:.1f}%"
    return f"{percent:.2g}%"


def fmt_interval(low: float | None, high: float | None, percent: bool = True) -> str:
    if low is None or high is None:
        return "n/a"
    if percent:
        return f"{fmt_pct(low)[:-1]}–{fmt_pct(high)}"
    return f"{low:.3f}–{high:.3f}"


def fmt_count_rate(successes: int, trials: int) -> str:
    """A rate from counts, with its exact 95% interval: ``97.0% (95% CI 95.3–98.2%; 582 of 600)``."""
    from membershield.metrics import clopper_pearson

    if trials == 0:
        return "n/a (no records)"
    interval = clopper_pearson(successes, trials)
    shown = fmt_interval(interval.low, interval.high)
    return f"{fmt_pct(successes / trials)} (95% CI {shown}; {successes} of {trials})"


def not_measurable(rate: dict[str, Any]) -> str:
    return f"not measurable ({rate['n_nonmembers']} non-members)"


def fmt_rate(rate: dict[str, Any]) -> str:
    """One TPR-at-FPR entry on one line: value, interval, and the counts of both classes."""
    if not rate.get("measurable") or rate.get("tpr") is None:
        return not_measurable(rate)
    return (
        f"{fmt_pct(rate['tpr'])} (95% CI {fmt_interval(rate['ci_low'], rate['ci_high'])};"
        f" {rate['tp']} of {rate['n_members']} members, {rate['fp']} of {rate['n_nonmembers']} non-members flagged)"
    )


def fmt_fpr(fpr: float) -> str:
    return f"{100 * fpr:g}%"


# --------------------------------------------------------------------------------------------------
# headline and verdict


@dataclass(frozen=True)
class Headline:
    """The strongest attack at the headline FPR (:meth:`AuditResult.headline`), as document entries."""

    attack: dict[str, Any]
    rate: dict[str, Any] | None  # None when no attack has a measurable TPR at any FPR


def headline(result: AuditResult | dict[str, Any]) -> Headline:
    audit = result if isinstance(result, AuditResult) else from_document(result)
    top = audit.headline()
    entry = next(a for a in _as_dict(audit)["attacks"] if a["name"] == top.attack.name)
    return Headline(entry, dict(top.rate) if top.rate is not None else None)


@dataclass(frozen=True)
class Verdict:
    level: str  # "leak", "no-leak" or "inconclusive"
    title: str
    detail: str


def _detected(attack: dict[str, Any]) -> bool:
    """Leakage shown at 95% confidence: the AUC interval, or a TPR interval, lies above chance."""
    if attack["auc_ci_low"] is not None and attack["auc_ci_low"] > 0.5:
        return True
    return any(r["measurable"] and r["ci_low"] is not None and r["ci_low"] > r["fpr"] for r in attack["tpr_at_fpr"])


def units(document: dict[str, Any]) -> tuple[str, str]:
    """What the counts of members and non-members count: records of one model, or a recipe audit's trials."""
    if document.get("mode") == "recipe":
        return "member trials", "non-member trials"
    return "members", "non-members"


def verdict(result: AuditResult | dict[str, Any]) -> Verdict:
    """One sentence an auditor can act on; the evidence follows in the report."""
    document = _as_dict(result)
    top = headline(document)
    name = top.attack["name"]
    rate = top.rate
    # A recipe audit counts (model, record) trials, pooled over its models, not records of one model.
    members, nonmembers = units(document)
    found = "training records" if members == "members" else members
    if rate is not None and rate["tpr"] is not None:
        ratio = f": {rate['tpr'] / rate['fpr']:.1f}× what a blind guess achieves" if rate["tpr"] else ""
        evidence = (
            f"The strongest attack, {name}, finds {rate['tp']} of {rate['n_members']} {found}"
            f" ({fmt_pct(rate['tpr'])}, 95% CI {fmt_interval(rate['ci_low'], rate['ci_high'])}) while flagging"
            f" {rate['fp']} of {rate['n_nonmembers']} {nonmembers} (FPR at most {fmt_fpr(rate['fpr'])}){ratio}."
        )
    else:
        auc = top.attack["auc"]
        shown = (
            f" (AUC {auc:.3f}, 95% CI {fmt_interval(top.attack['auc_ci_low'], top.attack['auc_ci_high'], False)})"
            if auc is not None
            else ""
        )
        evidence = (
            f"No TPR is measurable at the configured FPRs with {document['data']['n_nonmembers']} {nonmembers};"
            f" the strongest attack by AUC is {name}{shown}."
        )
    split = document.get("split_check")
    if split is not None and not split["ok"]:
        return Verdict(
            "inconclusive",
            "Inconclusive: members and non-members differ in distribution",
            "The split check failed (a classifier that never queries the model tells them apart), so attack"
            " numbers mix that shift with memorisation and overstate leakage. " + evidence,
        )
    detected = [a["name"] for a in document["attacks"] if _detected(a)]
    if detected:
        return Verdict(
            "leak",
            "Membership leaks: training records can be told apart from unseen ones",
            evidence + f" Leakage above chance at 95% confidence: {', '.join(detected)}.",
        )
    n_in, n_out = document["data"]["n_members"], document["data"]["n_nonmembers"]
    return Verdict(
        "no-leak",
        "No membership leakage detected",
        f"No attack does better than chance at 95% confidence on {n_in} {members} and {n_out} {nonmembers};"
        " a smaller leak than these records can resolve is not ruled out. " + evidence,
    )


# --------------------------------------------------------------------------------------------------
# producing report files


def default_report_path(audit_json: str | Path, fmt: str) -> Path | None:
    """``report.html`` next to ``audit.json`` for HTML; None (standard output) for Markdown."""
    return audit_json_path(audit_json).parent / "report.html" if fmt == "html" else None


def render_report(audit_json: str | Path, fmt: str = "html") -> str:
    """Render the report of a finished audit from its ``audit.json`` and the ``scores.csv`` next to it."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format '{fmt}': choose one of {', '.join(FORMATS)}")
    path = audit_json_path(audit_json)
    result = load(path)
    if fmt == "md":
        from membershield.report.markdown import render_markdown

        return render_markdown(result)
    from membershield.report.html import render_html

    scores, note = read_scores(path.parent, result)
    return render_html(result, scores, scores_note=note)


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MembershieldError(f"cannot write the report to {path}: {exc.strerror} (pass --out PATH)") from exc
    return path


def write_report(audit_json: str | Path, fmt: str = "html", out: str | Path | None = None) -> tuple[Path | None, str]:
    """Render and, when there is a destination (``out`` or the HTML default), write; returns (path, text)."""
    text = render_report(audit_json, fmt)
    destination = Path(out) if out is not None else default_report_path(audit_json, fmt)
    if destination is None:
        return None, text
    return write_text(destination, text), text

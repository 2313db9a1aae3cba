"""The terminal lines of an audit's worst slice and user-level results, printed under the attack table."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from membershield.cli.common import console, pct
from membershield.metrics import nonmembers_needed, unresolved_fprs
from membershield.metrics.user_level import AGGREGATIONS
from membershield.result import AuditResult, rate_in
from membershield.worst_slice import describe_worst


def _rate_cell(rate: dict[str, Any] | None) -> str:
    if rate is None:
        return "n/a"
    if not rate["measurable"] or rate["tpr"] is None:
        return "not measurable"
    return f"{pct(rate['tpr'])} ({pct(rate['ci_low'])}–{pct(rate['ci_high'])})"


def user_level_table(result: AuditResult) -> Table | None:
    """One row per attack and aggregation: AUC and TPR at each FPR over users, or None without users."""
    user_level = result.user_level
    if not user_level:
        return None
    title = (
        f"User-level ({user_level['column']}): {user_level['n_member_users']} member users,"
        f" {user_level['n_nonmember_users']} non-member users, {user_level['records_per_user']['min']}–"
        f"{user_level['records_per_user']['max']} records each"
    )
    table = Table(title=escape(title), title_justify="left")
    for column in ("attack", "aggregation", "AUC (95% CI)"):
        table.add_column(column, no_wrap=True, justify="right" if column.startswith("AUC") else "left")
    fprs = result.config["fprs"]
    for fpr in fprs:
        table.add_column(f"TPR % @ {100 * fpr:g}% FPR", justify="right")
    for name, by_aggregation in user_level["attacks"].items():
        for how in AGGREGATIONS:
            entry = by_aggregation.get(how)
            if entry is None:
                continue
            auc = "n/a" if entry["auc"] is None else f"{entry['auc']:.3f}"
            if entry["auc"] is not None and entry["auc_ci_low"] is not None:
                auc += f" ({entry['auc_ci_low']:.3f}–{entry['auc_ci_high']:.3f})"
            table.add_row(name, how, auc, *[_rate_cell(rate_in(entry["tpr_at_fpr"], f)) for f in fprs])
    return table


def print_subject_results(result: AuditResult) -> None:
    """The worst slice (a headline number) and, with a user column, the user-level table."""
    if result.worst_slice:
        line = describe_worst(result.worst_slice)
        fpr = result.worst_slice["fpr"]
        console.print(f"[bold]worst slice[/bold] (highest TPR at {100 * fpr:g}% FPR, every slicing): {escape(line)}")
    table = user_level_table(result)
    if table is not None:
        console.print(table)
        non = result.user_level["n_nonmember_users"]
        unresolved = unresolved_fprs(result.config["fprs"], non)
        if unresolved:
            console.print(
                f"not measurable: {non} non-member users cannot resolve an FPR of"
                f" {', '.join(f'{100 * f:g}%' for f in unresolved)} (that needs at least"
                f" {nonmembers_needed(min(unresolved))} users)."
            )

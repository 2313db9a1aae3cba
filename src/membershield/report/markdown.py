"""A short Markdown summary of an audit, sized for a pull-request comment.

The verdict, one table row per attack (AUC and TPR at every configured FPR, each with its 95% interval
and counts), the accuracy gap, the split check and the model and data hashes. The full evidence is in
the HTML report.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from membershield.metrics import unresolved_fprs
from membershield.report import fmt_count_rate, fmt_fpr, fmt_interval, fmt_pct, not_measurable, verdict
from membershield.report.subjects import user_level_view, worst_slice_view
from membershield.report.synthetic import synthetic_view
from membershield.result import AuditResult, rate_in


def _cell(text: str) -> str:
    """Table-cell safe: a pipe or a line break would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_rate(rate: dict[str, Any] | None, unit: str = "s") -> str:
    """A TPR entry in a cell; ``unit`` ends the words member(s)/non-member(s): " users" for user-level rates."""
    if rate is None:
        return "n/a"
    if not rate["measurable"] or rate["tpr"] is None:
        return not_measurable(rate) if unit == "s" else f"not measurable ({rate['n_nonmembers']} non-member{unit})"
    return (
        f"{fmt_pct(rate['tpr'])} ({fmt_interval(rate['ci_low'], rate['ci_high'])});"
        f" {rate['tp']}/{rate['n_members']} member{unit}, {rate['fp']}/{rate['n_nonmembers']} non-member{unit}"
    )


def _md_auc(attack: dict[str, Any]) -> str:
    if attack["auc"] is None:
        return "n/a"
    return f"{attack['auc']:.3f} ({fmt_interval(attack['auc_ci_low'], attack['auc_ci_high'], percent=False)})"


def _pooled_accuracy(correct: int, trials: int) -> str:
    """A recipe audit's accuracy over its models' trials: no binomial interval, the trials are not independent."""
    return f"{fmt_pct(correct / trials)} ({correct} of {trials} trials, pooled over the models)"


def _short(digest: str | None) -> str:
    return (digest or "unknown")[:12]


def render_markdown(result: AuditResult | dict[str, Any]) -> str:
    document = result.to_dict() if isinstance(result, AuditResult) else result
    fprs = document["config"].get("fprs") or [r["fpr"] for r in document["attacks"][0]["tpr_at_fpr"]]
    rows = []
    for attack in document["attacks"]:
        rows.append(
            {
                "name": attack["name"],
                "auc": _md_auc(attack),
                "rates": [_md_rate(rate_in(attack["tpr_at_fpr"], f)) for f in fprs],
                "epsilon": "n/a" if attack["epsilon_lower_bound"] is None else f"{attack['epsilon_lower_bound']:.2f}",
            }
        )
    data, utility = document["data"], document["utility"]
    n_in, n_out = data["n_members"], data["n_nonmembers"]
    accuracy = None
    if utility.get("train_accuracy") is not None and utility.get("holdout_accuracy") is not None:
        rate = _pooled_accuracy if document.get("mode") == "recipe" else fmt_count_rate
        accuracy = {
            "train": rate(round(utility["train_accuracy"] * n_in), n_in),
            "holdout": rate(round(utility["holdout_accuracy"] * n_out), n_out),
            "gap": f"{100 * utility['accuracy_gap']:+.1f}",
        }
    try:
        version = metadata.version("membershield")
    except metadata.PackageNotFoundError:
        version = "unknown"
    env = Environment(
        loader=PackageLoader("membershield.report", "templates"),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(cell=_cell, fpr=fmt_fpr, short=_short)
    return env.get_template("summary.md.j2").render(
        r=document,
        verdict=verdict(document),
        fprs=fprs,
        rows=rows,
        accuracy=accuracy,
        unresolved=unresolved_fprs(fprs, n_out),
        version=version,
        worst_slice=worst_slice_view(document),
        user_rows=_user_rows(document, fprs),
        synthetic=synthetic_view(document),
    )


def _user_rows(document: dict[str, Any], fprs: list[float]) -> list[dict[str, Any]]:
    """One table row per attack and aggregation of a user-level audit (rates count users)."""
    view = user_level_view(document)
    if view is None:
        return []
    return [
        {
            "name": row["attack"],
            "aggregation": row["aggregation"],
            "auc": _md_auc(row["entry"]),
            "rates": [_md_rate(rate_in(row["entry"]["tpr_at_fpr"], f), " users") for f in fprs],
        }
        for row in view["rows"]
    ]

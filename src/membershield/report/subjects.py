"""What the reports show of the worst slice, the rare-record slicing and the user-level results.

Audits written before these existed have no ``worst_slice`` (it is worked out from their slices, as the
gate does) and no ``user_level`` or ``data.rarity`` (those parts are left out).
"""

from __future__ import annotations

from typing import Any

from membershield.metrics.user_level import AGGREGATIONS
from membershield.worst_slice import describe_worst, worst_slice


def worst_slice_entry(document: dict[str, Any]) -> dict[str, Any] | None:
    """The audit's worst slice as recorded, or worked out from its slices when it has none recorded."""
    recorded = document.get("worst_slice")
    if recorded:
        return recorded
    if not document.get("attacks"):
        return None
    unit = "trials" if document.get("mode") == "recipe" else "records"
    return worst_slice(document["attacks"], document.get("user_level"), unit=unit)


def worst_slice_view(document: dict[str, Any]) -> dict[str, Any] | None:
    """The worst slice for a report: the entry, its one-line description and one row per slicing."""
    entry = worst_slice_entry(document)
    if entry is None or not entry.get("n_slices"):
        return None
    rows = []
    for slicing in entry["slicings"]:
        rows.append(
            {
                "by": slicing["by"],
                "unit": slicing["unit"],
                "n_slices": slicing["n_slices"],
                "n_measurable": slicing["n_measurable"],
                "worst": slicing["worst"],
                "not_measurable": [f"{s['slice']} ({s['reason']})" for s in slicing["not_measurable"]],
            }
        )
    return {"entry": entry, "worst": entry.get("worst"), "line": describe_worst(entry), "rows": rows}


def user_level_view(document: dict[str, Any]) -> dict[str, Any] | None:
    """User-level results for a report: the counts, what each aggregation is, one row per (attack, aggregation)."""
    user_level = document.get("user_level")
    if not user_level:
        return None
    rows = []
    for name, by_aggregation in user_level["attacks"].items():
        for how in AGGREGATIONS:
            if how in by_aggregation:
                rows.append({"attack": name, "aggregation": how, "entry": by_aggregation[how]})
    best = max(rows, key=lambda r: r["entry"]["auc"] if r["entry"]["auc"] is not None else -1.0) if rows else None
    return {"u": user_level, "rows": rows, "best": best}


def rarity_view(document: dict[str, Any]) -> dict[str, Any] | None:
    """How the rare-record slicing was made (quasi-identifiers, k, binning), for the slices section."""
    rarity = (document.get("data") or {}).get("rarity")
    if not rarity:
        return None
    shown = rarity["quasi_identifiers"][:12]
    more = len(rarity["quasi_identifiers"]) - len(shown)
    return {**rarity, "shown": ", ".join(shown) + (f" and {more} more" if more > 0 else "")}

"""The worst slice of an audit: over every slicing (per class, ``--slice-column``, rarity, user-level), the
slice value and attack with the highest TPR at 1% FPR.

An average over all records hides the group an attack hurts most. Each attack's ``slices`` (and the
``user_level`` entries, a slicing whose values are the aggregations and whose unit is users) hold a TPR
at the slice FPR with its interval and counts; this module picks the worst. A slice too small for that
FPR (fewer non-members than :func:`~membershield.metrics.nonmembers_needed`, or no members at all) has no
TPR: it is listed as not measurable with the reason, never skipped in silence, and the worst is named
among the measurable ones.

Pure functions of audit.json entries (plain mappings), so the result, the report and the gate ask the
same question of a new audit or of one loaded from disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from membershield.metrics import nonmembers_needed
from membershield.result import measured, rate_in

WORST_SLICE_FPR = 0.01
USER_SLICING = "user"
JUDGEMENTS = ("point", "upper")


def _cell(by: str, value: Any, attack: str, unit: str, entry: Mapping[str, Any], fpr: float) -> dict[str, Any]:
    rate = rate_in(entry.get("tpr_at_fpr") or [], fpr)
    counts = rate if rate is not None else entry
    cell = {
        "by": str(by),
        "slice": str(value),
        "attack": attack,
        "unit": unit,
        "n_members": counts.get("n_members"),
        "n_nonmembers": counts.get("n_nonmembers"),
        "auc": entry.get("auc"),
        "auc_ci_low": entry.get("auc_ci_low"),
        "auc_ci_high": entry.get("auc_ci_high"),
        "measurable": measured(rate),
        "fpr_measured": rate is not None,
    }
    for key in ("tpr", "ci_low", "ci_high", "tp", "fp", "achieved_fpr"):
        cell[key] = rate.get(key) if rate is not None and cell["measurable"] else None
    return cell


def slice_cells(
    attacks: Sequence[Mapping[str, Any]],
    user_level: Mapping[str, Any] | None = None,
    fpr: float = WORST_SLICE_FPR,
    unit: str = "records",
) -> list[dict[str, Any]]:
    """One cell per (slicing, slice value, attack): its TPR at ``fpr`` (None when not measurable), counts
    and AUC. User-level entries are the slicing ``"user"``, one value per aggregation, counted in users.

    >>> rate = {"fpr": 0.01, "tpr": 0.2, "ci_low": 0.1, "ci_high": 0.3, "tp": 2, "fp": 0,
    ...         "achieved_fpr": 0.0, "n_members": 10, "n_nonmembers": 500, "measurable": True}
    >>> attack = {"name": "loss", "slices": [{"by": "class", "slice": "1", "auc": 0.7, "tpr_at_fpr": [rate]}]}
    >>> [(c["by"], c["slice"], c["attack"], c["tpr"]) for c in slice_cells([attack])]
    [('class', '1', 'loss', 0.2)]
    """
    cells = [
        _cell(entry["by"], entry["slice"], attack["name"], unit, entry, fpr)
        for attack in attacks
        for entry in attack.get("slices") or []
    ]
    for name, by_aggregation in ((user_level or {}).get("attacks") or {}).items():
        for how, entry in by_aggregation.items():
            cells.append(_cell(USER_SLICING, how, name, "users", entry, fpr))
    return cells


def _strength(judge: str):
    """Order of cells: highest TPR (ties: upper end, AUC), or with ``upper`` the highest upper end first."""

    def low(value: float | None) -> float:
        return value if value is not None else -1.0

    if judge == "upper":
        return lambda c: (low(c["ci_high"]), low(c["tpr"]), low(c["auc"]))
    return lambda c: (low(c["tpr"]), low(c["ci_high"]), low(c["auc"]))


def why_not_measurable(cell: Mapping[str, Any], fpr: float) -> str:
    """Why a slice has no TPR at ``fpr``, in words.

    >>> why_not_measurable({"n_members": 4, "n_nonmembers": 60, "unit": "records", "fpr_measured": True}, 0.01)
    'only 60 non-member records; a TPR at 1% FPR needs at least 437'
    """
    n_members, n_nonmembers, unit = cell.get("n_members"), cell.get("n_nonmembers"), cell.get("unit", "records")
    if not cell.get("fpr_measured", True):
        return f"the audit did not measure its TPR at {100 * fpr:g}% FPR"
    if not n_members:
        return f"no member {unit}"
    if not n_nonmembers:
        return f"no non-member {unit}"
    return f"only {n_nonmembers} non-member {unit}; a TPR at {100 * fpr:g}% FPR needs at least {nonmembers_needed(fpr)}"


def _slicing(by: str, cells: list[dict[str, Any]], fpr: float, judge: str) -> dict[str, Any]:
    values = list(dict.fromkeys(c["slice"] for c in cells))
    measurable = [c for c in cells if c["measurable"]]
    unmeasurable = []
    for value in values:
        of_value = [c for c in cells if c["slice"] == value]
        if not any(c["measurable"] for c in of_value):
            first = of_value[0]
            unmeasurable.append(
                {
                    "slice": value,
                    "n_members": first["n_members"],
                    "n_nonmembers": first["n_nonmembers"],
                    "reason": why_not_measurable(first, fpr),
                    "fpr_measured": any(c["fpr_measured"] for c in of_value),
                }
            )
    return {
        "by": by,
        "unit": cells[0]["unit"],
        "n_slices": len(values),
        "n_measurable": len(values) - len(unmeasurable),
        "worst": max(measurable, key=_strength(judge)) if measurable else None,
        "not_measurable": unmeasurable,
    }


def worst_slice(
    attacks: Sequence[Mapping[str, Any]],
    user_level: Mapping[str, Any] | None = None,
    fpr: float = WORST_SLICE_FPR,
    judge: str = "point",
    unit: str = "records",
) -> dict[str, Any]:
    """The worst slice per slicing and over all of them, with every slice that cannot resolve ``fpr``.

    ``judge``: ``"point"`` ranks by the TPR estimate (what audit.json reports), ``"upper"`` by the upper
    end of its 95% interval (what a gate judging intervals needs: the slice most likely to break a limit).

    >>> def rate(tpr, n_non):
    ...     ok = n_non >= 437
    ...     return {"fpr": 0.01, "tpr": tpr if ok else None, "ci_low": tpr / 2 if ok else None,
    ...             "ci_high": min(1.0, 2 * tpr) if ok else None, "n_members": 50, "n_nonmembers": n_non,
    ...             "measurable": ok}
    >>> slices = [{"by": "rarity", "slice": "rare", "tpr_at_fpr": [rate(0.3, 500)]},
    ...           {"by": "rarity", "slice": "common", "tpr_at_fpr": [rate(0.02, 900)]},
    ...           {"by": "class", "slice": "7", "tpr_at_fpr": [rate(0.0, 40)]}]
    >>> result = worst_slice([{"name": "lira", "slices": slices}])
    >>> result["worst"]["by"], result["worst"]["slice"], result["worst"]["tpr"], result["n_not_measurable"]
    ('rarity', 'rare', 0.3, 1)
    >>> result["slicings"][1]["not_measurable"][0]["reason"]
    'only 40 non-member records; a TPR at 1% FPR needs at least 437'
    """
    if judge not in JUDGEMENTS:
        raise ValueError(f"judge must be one of {JUDGEMENTS}, got {judge!r}")
    cells = slice_cells(attacks, user_level, fpr, unit)
    slicings = [
        _slicing(by, [c for c in cells if c["by"] == by], fpr, judge) for by in dict.fromkeys(c["by"] for c in cells)
    ]
    candidates = [s["worst"] for s in slicings if s["worst"] is not None]
    return {
        "fpr": fpr,
        "judged_by": judge,
        "worst": max(candidates, key=_strength(judge)) if candidates else None,
        "n_slices": sum(s["n_slices"] for s in slicings),
        "n_not_measurable": sum(len(s["not_measurable"]) for s in slicings),
        "slicings": slicings,
    }


def describe_worst(entry: Mapping[str, Any] | None) -> str:
    """One line for people: the worst measurable slice and how many slices could not be measured.

    >>> line = describe_worst({"fpr": 0.01, "n_slices": 3, "n_not_measurable": 1, "worst": {"by": "rarity",
    ...     "slice": "rare", "attack": "lira", "tpr": 0.3, "ci_low": 0.2, "ci_high": 0.41, "tp": 15,
    ...     "n_members": 50, "fp": 2, "n_nonmembers": 500, "unit": "records"}})
    >>> for part in line.split("; "):
    ...     print(part)
    rarity = rare under lira: TPR 30.0% (95% CI 20.0–41.0%
    15 of 50 members, 2 of 500 non-members flagged) at 1% FPR
    1 of 3 slices not measurable
    """
    if not entry:
        return "no slices recorded"
    fpr = entry["fpr"]
    tail = ""
    if entry["n_not_measurable"]:
        names = [f"{s['by']} = {x['slice']}" for s in entry.get("slicings", []) for x in s["not_measurable"]]
        shown = f" ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else ""
        tail = f"; {entry['n_not_measurable']} of {entry['n_slices']} slices not measurable{shown}"
    worst = entry.get("worst")
    if worst is None:
        return f"no slice can resolve {100 * fpr:g}% FPR" + tail
    members = "member users" if worst["unit"] == "users" else "members"
    nonmembers = "non-member users" if worst["unit"] == "users" else "non-members"
    return (
        f"{worst['by']} = {worst['slice']} under {worst['attack']}: TPR {100 * worst['tpr']:.1f}%"
        f" (95% CI {100 * worst['ci_low']:.1f}–{100 * worst['ci_high']:.1f}%; {worst['tp']} of {worst['n_members']}"
        f" {members}, {worst['fp']} of {worst['n_nonmembers']} {nonmembers} flagged) at {100 * fpr:g}% FPR" + tail
    )

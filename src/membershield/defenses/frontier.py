"""The privacy/utility frontier of a comparison, and the variant to recommend within an accuracy budget.

Each variant is a point: its holdout accuracy (95% Clopper–Pearson interval over the holdout records) and
its leakage, the TPR at 1% FPR of its strongest attack (the highest over every attack run on it, LiRA and
RMIA included, with that rate's 95% interval). A variant is *dominated* only when the intervals say so:
another variant is not clearly worse on either axis (its interval is not entirely on the wrong side) and
clearly better on at least one (the intervals do not overlap). The Pareto-optimal variants are those no
other variant dominates. A leakage the holdout cannot resolve at 1% FPR is never clearly better or worse.

The recommendation within ``max_accuracy_drop`` is the variant with the lowest leakage (point estimate,
ties broken by the interval's upper end) among those whose holdout accuracy is at most that much below
the undefended one's (point estimates), with measurable leakage; an output-only defense, which leaves the
labels and so label-only attacks untouched, is a candidate only through its strongest attack like any
other. Without a candidate it says that none qualifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from membershield.errors import ConfigError

RECOMMEND_KEYS = ("max_accuracy_drop",)


@dataclass(frozen=True)
class Point:
    name: str
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    leakage: float | None  # None: not measurable
    leakage_low: float | None
    leakage_high: float | None


def _clearly_better(a: tuple[float | None, float | None], b: tuple[float | None, float | None], higher: bool) -> bool:
    """Whether the interval ``a`` lies entirely on the good side of ``b`` (``higher``: bigger is better)."""
    a_low, a_high = a
    b_low, b_high = b
    if None in (a_low, a_high, b_low, b_high):
        return False
    return a_low > b_high if higher else a_high < b_low  # type: ignore[operator]


def dominates(a: Point, b: Point) -> bool:
    """``a`` dominates ``b``: not clearly worse on accuracy or leakage, clearly better on one.

    >>> p = lambda name, acc, leak: Point(name, acc, acc - 0.01, acc + 0.01, leak, leak - 0.01, leak + 0.01)
    >>> dominates(p("a", 0.95, 0.02), p("b", 0.95, 0.10))  # same accuracy, clearly less leakage
    True
    >>> dominates(p("a", 0.95, 0.02), p("b", 0.955, 0.025))  # overlapping on both axes
    False
    >>> dominates(p("a", 0.90, 0.02), p("b", 0.97, 0.10))  # a trade-off: neither dominates
    False
    """
    acc_a, acc_b = (a.accuracy_low, a.accuracy_high), (b.accuracy_low, b.accuracy_high)
    leak_a, leak_b = (a.leakage_low, a.leakage_high), (b.leakage_low, b.leakage_high)
    worse = _clearly_better(acc_b, acc_a, higher=True) or _clearly_better(leak_b, leak_a, higher=False)
    better = _clearly_better(acc_a, acc_b, higher=True) or _clearly_better(leak_a, leak_b, higher=False)
    return better and not worse


def pareto(points: Sequence[Point]) -> dict[str, list[str]]:
    """For each point, the names of the points that dominate it (empty: it is on the frontier)."""
    return {p.name: [q.name for q in points if q is not p and dominates(q, p)] for p in points}


def point_of(entry: Mapping[str, Any], accuracy_interval: tuple[float, float]) -> Point:
    """A compare.json variant as a frontier point (its ``worst_attack`` is the leakage)."""
    worst = entry.get("worst_attack") or {}
    measurable = bool(worst.get("measurable"))
    low, high = accuracy_interval
    return Point(
        entry["name"],
        float(entry["holdout_accuracy"]),
        low,
        high,
        worst.get("tpr") if measurable else None,
        worst.get("tpr_ci_low") if measurable else None,
        worst.get("tpr_ci_high") if measurable else None,
    )


def parse_budget(text: str) -> dict[str, float]:
    """``"max_accuracy_drop=0.02"`` as ``{"max_accuracy_drop": 0.02}``; anything else is a ConfigError.

    >>> parse_budget("max_accuracy_drop=0.02")
    {'max_accuracy_drop': 0.02}
    """
    budget: dict[str, float] = {}
    for piece in (p.strip() for p in text.split(",") if p.strip()):
        key, equals, raw = piece.partition("=")
        key = key.strip()
        if key not in RECOMMEND_KEYS or not equals:
            raise ConfigError(f"--recommend takes {' and '.join(k + '=VALUE' for k in RECOMMEND_KEYS)}, got '{piece}'")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 <= value <= 1:
            raise ConfigError(f"--recommend {key} must be a share between 0 and 1 (0.02: two points), got '{raw}'")
        budget[key] = value
    if not budget:
        raise ConfigError("--recommend needs a budget such as max_accuracy_drop=0.02")
    return budget


def recommend(points: Sequence[Point], baseline: str, budget: Mapping[str, float]) -> dict[str, Any]:
    """The least leaky variant within ``budget`` of the baseline's accuracy, or why there is none."""
    base = next(p for p in points if p.name == baseline)
    drop = budget["max_accuracy_drop"]
    within = [p for p in points if base.accuracy - p.accuracy <= drop + 1e-12]
    candidates = [p for p in within if p.leakage is not None]
    result: dict[str, Any] = {"budget": dict(budget), "variant": None, "candidates": [p.name for p in candidates]}
    if not candidates:
        reason = "none qualifies: " + (
            "no variant's leakage at 1% FPR is measurable with this holdout"
            if within
            else f"every variant loses more than {100 * drop:g} points of accuracy"
        )
        return {**result, "reason": reason}
    best = min(candidates, key=lambda p: (p.leakage, p.leakage_high))
    reason = (
        f"{best.name}: the lowest TPR at 1% FPR ({100 * best.leakage:.1f}%, 95% interval"  # type: ignore[operator]
        f" {100 * best.leakage_low:.1f}–{100 * best.leakage_high:.1f}%) among the {len(candidates)} variants"  # type: ignore[operator]
        f" within {100 * drop:g} points of {baseline}'s accuracy ({100 * base.accuracy:.1f}% vs"
        f" {100 * best.accuracy:.1f}%)"
    )
    if best.name == baseline:
        reason += "; no defense within the budget leaks less"
    return {**result, "variant": best.name, "reason": reason}

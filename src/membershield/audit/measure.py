"""Scoring and measuring, shared by every audit kind: each attack's scores become an
:class:`~membershield.result.AttackResult` through the metrics of :mod:`membershield.metrics`.

An audit kind (model, text, ...) supplies the attacks, their inputs, which rows are members, the slices
to report and where each record came from; everything from scores on is common.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from membershield import metrics
from membershield.result import AttackResult

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``; ``total`` is 0 for a stage without countable steps."""

SLICE_FPRS = (0.01,)


class ScoringAttack(Protocol):
    name: str
    title: str
    citation: str
    access: str

    def score(self, inputs: Any) -> np.ndarray: ...

    def params(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class MeasureSettings:
    """What the metrics are asked: the FPRs, δ of the ε bound, the prior of the PPV, how many of the most
    exposed records to list, and the seed of the cross-fitted halves."""

    fprs: tuple[float, ...]
    delta: float
    prior: float
    top_k: int
    seed: int

    @classmethod
    def of(cls, config: Any) -> MeasureSettings:
        """From an audit configuration (any object with these fields)."""
        return cls(tuple(config.fprs), config.delta, config.prior, config.top_k, config.seed)


def measure_scores(
    scores: np.ndarray,
    is_member: np.ndarray,
    settings: MeasureSettings,
    slices: dict[str, np.ndarray],
    origin: Callable[[int], dict[str, Any]],
) -> dict[str, Any]:
    """The fields of an :class:`AttackResult` that come from the metrics; ``origin(i)`` says where record
    ``i`` came from (its file and row, or line), for the most exposed records."""
    auc, interval = metrics.auc_with_ci(scores, is_member)
    rates = [metrics.tpr_at_fpr(scores, is_member, f) for f in settings.fprs]
    bound = metrics.empirical_epsilon_lower_bound(scores, is_member, delta=settings.delta, seed=settings.seed)
    advantage = metrics.membership_advantage(scores, is_member, seed=settings.seed)
    slice_rows = []
    for by, values in slices.items():
        for row in metrics.slice_metrics(scores, is_member, values, fprs=SLICE_FPRS):
            slice_rows.append({"by": by, **row})
    exposed = metrics.top_exposed(scores, is_member, k=settings.top_k)
    for item in exposed:
        item.update(origin(item["index"]))
    return {
        "auc": auc,
        "auc_ci_low": interval.low,
        "auc_ci_high": interval.high,
        "advantage": advantage.value,
        "advantage_ci_low": advantage.ci_low,
        "advantage_ci_high": advantage.ci_high,
        "epsilon_lower_bound": bound.epsilon,
        "epsilon_detail": asdict(bound),
        "tpr_at_fpr": [r.to_dict() for r in rates],
        "ppv": metrics.headline_ppv(rates, settings.prior),
        "slices": slice_rows,
        "top_exposed": exposed,
    }


def run_attacks(
    attacks: Sequence[ScoringAttack],
    inputs: Any,
    is_member: np.ndarray,
    settings: MeasureSettings,
    *,
    slices: dict[str, np.ndarray],
    origin: Callable[[int], dict[str, Any]],
    progress: ProgressCallback | None = None,
) -> tuple[list[AttackResult], dict[str, np.ndarray]]:
    """Every attack's scores on ``inputs`` (the audit's rows first: scores past ``len(is_member)`` belong
    to population records and are not measured), measured; and the scores by attack name."""
    report = progress or (lambda stage, done, total: None)
    results, columns = [], {}
    n = len(is_member)
    for i, attack in enumerate(attacks):
        report(f"attack: {attack.name}", i, len(attacks))
        start = time.perf_counter()
        scores = np.asarray(attack.score(inputs), dtype=np.float64)[:n]
        seconds = time.perf_counter() - start
        columns[attack.name] = scores
        results.append(
            AttackResult(
                name=attack.name,
                title=attack.title,
                citation=attack.citation,
                access=attack.access,
                params=attack.params(),
                seconds=seconds,
                **measure_scores(scores, is_member, settings, slices, origin),
            )
        )
    report("attacks", len(attacks), len(attacks))
    return results, columns

"""Per-record exposure and per-slice metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError, InputDataError
from membershield.metrics._checks import _check, _check_confidence, _check_rate
from membershield.metrics.rates import _tpr_at_fpr_from_roc, _unmeasurable
from membershield.metrics.roc import auc_with_ci, roc


def top_exposed(scores: ArrayLike, is_member: ArrayLike, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` highest-scoring records, highest first (ties by position).

    ``nonmember_percentile`` is the fraction of non-member scores strictly below the record's score: how
    far the record stands out from records the model never saw.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> is_member = [True] * 4 + [False] * 4
    >>> [(r["index"], r["nonmember_percentile"]) for r in top_exposed(scores, is_member, k=3)]
    [(0, 1.0), (1, 1.0), (4, 0.75)]
    """
    if int(k) != k or k < 0:
        raise ConfigError(f"k must be a non-negative whole number, got {k}")
    s, m = _check(scores, is_member, need_members=False)
    order = np.argsort(-s, kind="stable")[: int(k)]
    non = np.sort(s[~m])
    below = np.searchsorted(non, s[order], side="left")
    return [
        {
            "index": int(i),
            "score": float(s[i]),
            "is_member": bool(m[i]),
            "nonmember_percentile": float(b) / non.size,
        }
        for i, b in zip(order, below, strict=True)
    ]


def slice_metrics(
    scores: ArrayLike,
    is_member: ArrayLike,
    slice_values: ArrayLike,
    fprs: Sequence[float] = (0.01,),
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """AUC (with DeLong interval) and TPR at each FPR in ``fprs``, per distinct value of ``slice_values``.

    Slices are keyed and sorted by ``str(value)``. A slice without members or without non-members gets
    ``auc`` None and unmeasurable TPR entries rather than an error, so one thin group does not sink the
    whole report.

    >>> scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.2, 0.1]
    >>> is_member = [True] * 4 + [False] * 4
    >>> groups = ["a", "a", "b", "b", "a", "b", "a", "b"]
    >>> [(s["slice"], s["n_members"], s["auc"]) for s in slice_metrics(scores, is_member, groups)]
    [('a', 2, 1.0), ('b', 2, 0.625)]
    """
    confidence = _check_confidence(confidence)
    fprs = [_check_rate("fpr", f) for f in fprs]
    s, m = _check(scores, is_member, need_members=False, need_nonmembers=False)
    raw = np.asarray(slice_values, dtype=object)
    if raw.ndim != 1 or raw.shape[0] != s.shape[0]:
        raise InputDataError(
            f"slice_values must be a 1-D array with one value per record ({s.shape[0]}), got shape {raw.shape}"
        )
    labels = np.array([str(v) for v in raw], dtype=str) if raw.size else np.array([], dtype=str)
    out: list[dict[str, Any]] = []
    for label in np.unique(labels):
        mask = labels == label
        s_slice, m_slice = s[mask], m[mask]
        n_pos, n_neg = int(m_slice.sum()), int((~m_slice).sum())
        entry: dict[str, Any] = {"slice": str(label), "n_members": n_pos, "n_nonmembers": n_neg}
        if n_pos and n_neg:
            value, interval = auc_with_ci(s_slice, m_slice, confidence)
            curve = roc(s_slice, m_slice)
            entry.update(auc=value, auc_ci_low=interval.low, auc_ci_high=interval.high)
            entry["tpr_at_fpr"] = [_tpr_at_fpr_from_roc(curve, f, confidence).to_dict() for f in fprs]
        else:
            entry.update(auc=None, auc_ci_low=None, auc_ci_high=None)
            entry["tpr_at_fpr"] = [_unmeasurable(f, n_pos, n_neg).to_dict() for f in fprs]
        out.append(entry)
    return out

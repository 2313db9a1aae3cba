"""Validation shared by every metric: the per-record arrays and the options."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError, InputDataError


def _check(
    scores: ArrayLike, is_member: ArrayLike, *, need_members: bool = True, need_nonmembers: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the two per-record arrays; returns (float64 scores, bool membership)."""
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"scores must be real numbers: {exc}") from exc
    m = np.asarray(is_member, dtype=bool)
    if s.ndim != 1:
        raise InputDataError(f"scores must be a 1-D array (one score per record), got shape {s.shape}")
    if m.ndim != 1:
        raise InputDataError(f"is_member must be a 1-D array (one flag per record), got shape {m.shape}")
    if s.shape[0] != m.shape[0]:
        raise InputDataError(
            f"scores and is_member differ in length ({s.shape[0]} vs {m.shape[0]}); pass one of each per record"
        )
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        n_nan = int(np.isnan(s).sum())
        n_inf = int(bad.sum()) - n_nan
        raise InputDataError(
            f"scores contain {n_nan} NaN and {n_inf} infinite value(s) (first at index {first}); "
            "every score must be a finite number"
        )
    if need_members and not m.any():
        raise InputDataError(f"no members among the {m.size} records; this metric needs at least one member")
    if need_nonmembers and m.all():
        raise InputDataError(f"no non-members among the {m.size} records; this metric needs at least one non-member")
    return s, m


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return float(confidence)


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")
    return float(value)

"""Probing detection per API key: pure distance logic plus a small bookkeeping class.

Membership attacks against a deployed model leave two footprints in its query log:

- **perturbation probing**: label-only attacks (Choquette-Choo et al. 2021) and noise-averaging attacks
  query many slightly perturbed copies of one candidate record. Each new record is compared with the
  key's recent records (the last ``window`` within ``window_seconds``); when its nearest one lies within
  ``near_distance`` (but is not an exact repeat, which retries and popular records produce), it is a
  near-duplicate. The default 0.1 lies below the smallest distance between two distinct records of
  scikit-learn's digits (0.12). ``near_count`` near-duplicates in the window raise an alert.
- **population sweep**: shadow-model and reference attacks (Shokri et al. 2017; Zarifzadeh et al. 2024)
  sample many distinct records from the population. ``sweep_count`` distinct records (not
  near-duplicates) within ``sweep_window_seconds`` raise an alert.

Distances are relative L2: ``||a - b|| / mean(||a||, ||b||)``, so they need no knowledge of the features'
scales (a perturbation of 1% of a record's size is 0.01 whatever its units); the relative L∞ distance is
reported in the evidence as well. Each key raises at most one alert per pattern per ``cooldown_seconds``;
with ``throttle`` the key is refused for ``throttle_seconds`` after an alert.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from membershield.guard.policy import DetectorConfig

PERTURBATION = "perturbation probing"
SWEEP = "population sweep"
_TINY = 1e-12


def relative_l2(history: np.ndarray, norms: np.ndarray, record: np.ndarray) -> np.ndarray:
    """Relative L2 distance of ``record`` to each row of ``history`` (whose L2 norms are ``norms``)."""
    with np.errstate(over="ignore", invalid="ignore"):  # features near the float limit: inf/NaN, not alerts
        diff = np.linalg.norm(history - record, axis=1)
        scale = 0.5 * (norms + np.linalg.norm(record))
        return np.where(scale > _TINY, diff / np.maximum(scale, _TINY), np.where(diff > _TINY, np.inf, 0.0))


def relative_linf(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    diff = float(np.abs(a - b).max(initial=0.0))
    return diff / scale if scale > _TINY else (0.0 if diff <= _TINY else float("inf"))


@dataclass(frozen=True)
class Alert:
    key: str
    pattern: str
    evidence: dict[str, Any]
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "pattern": self.pattern, "evidence": self.evidence, "time": self.time.isoformat()}


@dataclass
class _KeyState:
    dim: int
    window: int
    history: np.ndarray = field(init=False)
    norms: np.ndarray = field(init=False)
    times: np.ndarray = field(init=False)
    size: int = 0
    pos: int = 0
    near: deque = field(default_factory=deque)  # (time, distance, linf) of near-duplicates
    distinct: deque = field(default_factory=deque)  # times of distinct records

    def __post_init__(self) -> None:
        self.history = np.zeros((self.window, self.dim))
        self.norms = np.zeros(self.window)
        self.times = np.full(self.window, -np.inf)

    def add(self, record: np.ndarray, now: float) -> None:
        self.history[self.pos] = record
        with np.errstate(over="ignore"):
            self.norms[self.pos] = np.linalg.norm(record)
        self.times[self.pos] = now
        self.pos = (self.pos + 1) % self.window
        self.size = min(self.size + 1, self.window)


class ProbingDetector:
    """Watches each key's records; :meth:`observe` returns the alerts a batch raised."""

    def __init__(self, config: DetectorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._last_alert: dict[tuple[str, str], float] = {}
        self._throttled: dict[str, float] = {}

    def throttled_for(self, key: str) -> int | None:
        """Seconds the key stays throttled, or None."""
        until = self._throttled.get(key)  # one dict read is atomic; the lock would wait for observe()
        remaining = None if until is None else until - self.clock()
        return max(1, int(np.ceil(remaining))) if remaining is not None and remaining > 0 else None

    def observe(self, key: str, records: np.ndarray) -> list[Alert]:
        cfg = self.config
        records = np.asarray(records, dtype=np.float64)
        if not cfg.enabled or records.size == 0:
            return []
        records = records.reshape(len(records), -1)
        now = self.clock()
        alerts = []
        with self._lock:
            state = self._keys.get(key)
            if state is None or state.dim != records.shape[1]:
                state = self._keys[key] = _KeyState(dim=records.shape[1], window=cfg.window)
            for record in records:
                fresh = state.times > now - cfg.window_seconds
                if fresh.any():
                    index = np.flatnonzero(fresh)
                    distances = relative_l2(state.history[index], state.norms[index], record)
                    best = int(np.argmin(distances))
                    nearest = float(distances[best])
                    if nearest <= _TINY:
                        pass  # an exact repeat (a popular record, a retry) is neither a perturbation nor new
                    elif nearest <= cfg.near_distance:
                        state.near.append((now, nearest, relative_linf(state.history[index[best]], record)))
                    else:
                        state.distinct.append(now)
                else:
                    state.distinct.append(now)
                state.add(record, now)
            while state.near and state.near[0][0] <= now - cfg.window_seconds:
                state.near.popleft()
            while len(state.near) > cfg.window:
                state.near.popleft()
            while state.distinct and state.distinct[0] <= now - cfg.sweep_window_seconds:
                state.distinct.popleft()
            if len(state.near) >= cfg.near_count:
                distances = np.array([d for _, d, _ in state.near])
                alerts.append(
                    self._alert(
                        key,
                        PERTURBATION,
                        now,
                        {
                            "near_duplicates": len(state.near),
                            "window_records": cfg.window,
                            "window_seconds": cfg.window_seconds,
                            "near_distance_threshold": cfg.near_distance,
                            "relative_l2_median": round(float(np.median(distances)), 6),
                            "relative_l2_max": round(float(distances.max()), 6),
                            "relative_linf_max": round(float(max(x for _, _, x in state.near)), 6),
                        },
                    )
                )
            if len(state.distinct) >= cfg.sweep_count:
                span = max(now - state.distinct[0], 1e-9)
                alerts.append(
                    self._alert(
                        key,
                        SWEEP,
                        now,
                        {
                            "distinct_records": len(state.distinct),
                            "window_seconds": cfg.sweep_window_seconds,
                            "records_per_second": round(len(state.distinct) / max(span, 1.0), 2),
                            "threshold": cfg.sweep_count,
                        },
                    )
                )
            alerts = [a for a in alerts if a is not None]
            if alerts and cfg.throttle:
                self._throttled[key] = now + cfg.throttle_seconds
        return alerts

    def _alert(self, key: str, pattern: str, now: float, evidence: dict[str, Any]) -> Alert | None:
        last = self._last_alert.get((key, pattern))
        if last is not None and now - last < self.config.cooldown_seconds:
            return None
        self._last_alert[(key, pattern)] = now
        return Alert(key=key, pattern=pattern, evidence=evidence, time=datetime.fromtimestamp(now, UTC))

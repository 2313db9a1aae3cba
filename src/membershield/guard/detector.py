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


_SQUARE_SAFE = (1e-150, 1e150)  # peaks whose squares, summed over any realistic width, stay normal floats


def peak(rows: np.ndarray) -> np.ndarray:
    """The largest absolute value of each row."""
    return np.abs(rows).max(axis=-1, initial=0.0)


def unit_norm(rows: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """The L2 norm of each row divided by its peak (0 for a zero row): finite for every finite row."""
    peaks = np.asarray(peaks, dtype=np.float64)
    safe = np.where(peaks > 0.0, peaks, 1.0)
    return np.linalg.norm(rows / (safe[..., None] if rows.ndim > 1 else safe), axis=-1)


def relative_l2(
    history: np.ndarray,
    record: np.ndarray,
    norms: np.ndarray | None = None,
    peaks: np.ndarray | None = None,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """Relative L2 distance of ``record`` to each row of ``history``; ``norms``, ``peaks`` and ``units`` are the
    rows' L2 norms, :func:`peak` and :func:`unit_norm`, computed when not given.

    Features of 1e160 square to inf, and inf/inf is NaN, which is neither near nor equal: one such row in a
    key's window would make every later record look distinct and so switch perturbation detection off. Where any
    peak lies outside the range whose squares are safe, each pair is divided by its larger peak before it
    is subtracted or squared, which leaves the ratio unchanged and cannot overflow; the plain formula serves
    the usual case at its usual cost.
    """
    peaks = peak(history) if peaks is None else peaks
    top = float(peak(record))
    nonzero = peaks[peaks > 0.0]
    low = min(float(nonzero.min(initial=np.inf)), top if top > 0.0 else np.inf)
    high = max(float(peaks.max(initial=0.0)), top)
    if _SQUARE_SAFE[0] <= low and high <= _SQUARE_SAFE[1]:
        norms = np.linalg.norm(history, axis=1) if norms is None else norms
        diff = np.linalg.norm(history - record, axis=1)
        size = 0.5 * (norms + np.linalg.norm(record))
    else:
        units = unit_norm(history, peaks) if units is None else units
        scale = np.maximum(peaks, top)
        scale = np.where(scale > 0.0, scale, 1.0)
        scaled = history / scale[:, None]
        scaled -= record / scale[:, None]
        diff = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
        size = 0.5 * (units * (peaks / scale) + float(unit_norm(record, top)) * (top / scale))
    # size is 0 only for two zero rows, whose distance is 0
    return np.where(size > 0.0, diff / np.where(size > 0.0, size, 1.0), 0.0)


def relative_linf(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if scale == 0.0:
        return 0.0
    return float(np.abs(a / scale - b / scale).max(initial=0.0))


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
    peaks: np.ndarray = field(init=False)
    units: np.ndarray = field(init=False)
    times: np.ndarray = field(init=False)
    size: int = 0
    pos: int = 0
    near: deque = field(default_factory=deque)  # (time, distance, linf) of near-duplicates
    distinct: deque = field(default_factory=deque)  # times of distinct records

    def __post_init__(self) -> None:
        self.history = np.zeros((self.window, self.dim))
        self.norms = np.zeros(self.window)
        self.peaks = np.zeros(self.window)
        self.units = np.zeros(self.window)
        self.times = np.full(self.window, -np.inf)

    def add(self, record: np.ndarray, now: float) -> None:
        self.history[self.pos] = record
        self.peaks[self.pos] = peak(record)
        self.units[self.pos] = unit_norm(record, self.peaks[self.pos])
        with np.errstate(over="ignore", under="ignore"):  # such a norm is inf or 0, and relative_l2 skips it
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
        # the service refuses non-finite features; a caller that does not must not get them into the window
        records = records[np.isfinite(records).all(axis=1)]
        if len(records) == 0:
            return []
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
                    distances = relative_l2(
                        state.history[index], record, state.norms[index], state.peaks[index], state.units[index]
                    )
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

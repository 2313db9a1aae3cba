"""Per-key request rate (rolling minute) and daily record budget (UTC day), in memory.

Each answer is ``None`` (allowed) or the number of seconds after which the same call would be allowed,
which the service sends as ``Retry-After``. The daily budget can be seeded from the store's log at
start-up so a restart does not refill it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from membershield.guard.policy import Limits


def _utc_day(now: float) -> datetime:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


class RateLimiter:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._day = _utc_day(clock())
        self._used: dict[str, int] = defaultdict(int)

    def seed_usage(self, used: dict[str, int]) -> None:
        """Records each key already used today (from the store's log)."""
        with self._lock:
            for key, records in used.items():
                self._used[key] = max(self._used[key], int(records))

    def day_start(self) -> datetime:
        return _utc_day(self.clock())

    def check_rate(self, key: str) -> int | None:
        """Count one request of ``key``; None when allowed, else seconds until one is allowed."""
        limit = self.limits.requests_per_minute
        now = self.clock()
        with self._lock:
            recent = self._recent[key]
            while recent and recent[0] <= now - 60.0:
                recent.popleft()
            if limit is not None and len(recent) >= limit:
                return max(1, math.ceil(recent[0] + 60.0 - now))
            recent.append(now)
            return None

    def check_budget(self, key: str, records: int) -> int | None:
        """Spend ``records`` of today's budget of ``key``; None when allowed, else seconds to midnight UTC."""
        budget = self.limits.daily_query_budget
        now = self.clock()
        with self._lock:
            day = _utc_day(now)
            if day != self._day:
                self._day, self._used = day, defaultdict(int)
            if budget is not None and self._used[key] + records > budget:
                return max(1, math.ceil((day + timedelta(days=1)).timestamp() - now))
            self._used[key] += records
            return None

    def used(self, key: str) -> int:
        with self._lock:
            return self._used.get(key, 0)

"""Whether a piece of work runs on the event loop or in a worker thread, from what it has cost so far."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

INLINE_SECONDS = 0.001  # work expected to take less than this runs on the event loop, not in a thread


class WorkCost:
    """Running estimate of the seconds a piece of work takes per record, to decide whether it runs inline.

    Handing work to a thread costs two event-loop hops and a context switch; for a model that scores one
    record in 100 µs that is most of the request, while a slow model must not stall the event loop.
    """

    def __init__(self) -> None:
        self.per_record = 0.0
        self.seen = 0

    def inline(self, n_records: int) -> bool:
        return self.seen >= 3 and self.per_record * n_records < INLINE_SECONDS

    def add(self, seconds: float, n_records: int) -> None:
        per_record = seconds / max(n_records, 1)
        self.per_record = per_record if self.seen == 0 else 0.8 * self.per_record + 0.2 * per_record
        self.seen += 1

    def timed(self, work: Callable[..., Any], n_records: int, *args: Any) -> Any:
        """``work(*args)``, timed where it runs (a thread's queueing delay is not the work's cost)."""
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.add(time.perf_counter() - started, n_records)

    async def run(self, work: Callable[..., Any], n_records: int, *args: Any) -> Any:
        """``work(*args)`` on the event loop when it is expected to be quick, else in a worker thread."""
        if self.inline(n_records):
            return self.timed(work, n_records, *args)
        return await run_in_threadpool(self.timed, work, n_records, *args)

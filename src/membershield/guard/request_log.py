"""The guard's request log: rows written to the store from one background thread, in batches, with the
records each answered request held and the answers it was given (:mod:`.query_log`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from membershield.guard.query_log import AnsweredQuery, encode
from membershield.store import Store, StoreError


class RequestLog:
    """Writes request rows to the store from one background thread, in batches.

    The request path only appends to a deque (no lock, no wake-up of another thread); the writer wakes
    every ``interval`` seconds, or at once for :meth:`flush` and :meth:`close`, and writes what has
    gathered in one transaction. A write per request would take turns with the event loop for the
    interpreter lock and add milliseconds to the requests being served.
    """

    def __init__(self, store: Store, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self.rows: deque[dict[str, Any]] = deque()
        self.queries: deque[AnsweredQuery] = deque()
        self.failed = 0
        self._added = 0
        self._done = 0
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="guard-request-log", daemon=True)
        self.thread.start()

    def add(self, row: dict[str, Any]) -> None:
        self._added += 1  # only the event loop's thread adds
        self.rows.append(row)

    def add_query(self, query: AnsweredQuery) -> None:
        """An answered request's records and answers; written with the request rows (added just before it)."""
        self.queries.append(query)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stop = self._stop
            batch = []
            while self.rows:
                batch.append(self.rows.popleft())
            # after the rows: a request's query is added before its row, so it is written no later than the row
            queries = []
            while self.queries:
                queries.append(self.queries.popleft())
            if queries:
                self._write(self.store.record_queries, [encode(q) for q in queries])
            if batch:
                self._write(self.store.record_requests, batch)
            with self._progress:
                self._done += len(batch)
                self._progress.notify_all()
            if stop:
                return

    def _write(self, write: Any, rows: list[dict[str, Any]]) -> None:
        for attempt in range(3):
            try:
                write(rows)
                return
            except StoreError:
                time.sleep(0.2 * (attempt + 1))
        self.failed += len(rows)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every row added so far is in the store (or given up on)."""
        target = self._added
        self._wake.set()
        with self._progress:
            self._progress.wait_for(lambda: self._done >= target or not self.thread.is_alive(), timeout)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self.thread.join(timeout=30)

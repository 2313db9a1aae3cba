"""Who is calling: a bearer key looked up in the store, remembered for a while so the store is not
asked on every request.

A key revoked or rotated while the guard runs is refused within a second: a background thread polls the
store's key stamp every ``KEY_POLL_SECONDS`` and, when it changed, forgets every key it remembered, so the
next request of each key is checked against the store again."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from fastapi import Request

from membershield.guard.errors import GuardError
from membershield.guard.keys import hash_key
from membershield.store import GuardKey, Store, StoreError

KEY_CACHE_SECONDS = 60.0  # a known key is looked up in the store again after this long
UNKNOWN_KEY_CACHE_SECONDS = 2.0  # how long a wrong key is answered 401 without asking the store again
KEY_POLL_SECONDS = 0.2  # how often the store is asked whether any key was created, revoked or rotated

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


class KeyAuthenticator:
    """``authenticate(request)`` returns the caller's key or raises a 401 (503 when the store is down)."""

    def __init__(self, store: Store, poll_seconds: float = KEY_POLL_SECONDS) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.keys: dict[str, tuple[GuardKey | None, float]] = {}  # sha256 -> (key or None, when looked up)
        self._generation = 0  # bumped each time the remembered keys are forgotten
        self._forget = threading.Lock()  # a key looked up before a change is never remembered after it
        try:
            self._stamp: tuple | None = store.key_stamp()
        except StoreError:
            self._stamp = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="guard-key-watch", daemon=True)
        self._watcher.start()

    def authenticate(self, request: Request, allow_query: bool = False) -> GuardKey:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token and allow_query:
            token = request.query_params.get("key", "")
        if not token:
            raise GuardError(401, "missing API key: send 'Authorization: Bearer KEY'", "unauthorized", _UNAUTHORIZED)
        key = self._lookup(hash_key(token))
        if key is None:
            raise GuardError(401, "unknown API key", "unauthorized", _UNAUTHORIZED)
        refusal = key.refusal(datetime.now(UTC))
        if refusal is not None:
            raise GuardError(401, refusal, "revoked", _UNAUTHORIZED)
        request.state.key_name = key.name
        return key

    def _lookup(self, digest: str) -> GuardKey | None:
        now = time.monotonic()
        cached = self.keys.get(digest)
        if cached is None or now - cached[1] > (KEY_CACHE_SECONDS if cached[0] else UNKNOWN_KEY_CACHE_SECONDS):
            # a new key works at once; a revoked or rotated key is forgotten by the watcher; wrong keys are
            # remembered briefly so a flood of them does not become a flood of store reads
            generation = self._generation
            try:
                cached = (self.store.find_key(digest), now)
            except StoreError as exc:
                if cached is None or cached[0] is None:
                    raise GuardError(503, f"cannot check the API key: {exc}", "store_error") from exc
                cached = (cached[0], now)  # the store is briefly unavailable: keep trusting a known key
            with self._forget:
                if generation == self._generation:  # else the keys changed while we read: forget the answer
                    if len(self.keys) > 100_000:
                        self.keys = {}
                    self.keys[digest] = cached
        return cached[0]

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                stamp = self.store.key_stamp()
            except StoreError:
                continue  # the store is briefly unavailable: ask again at the next poll
            if stamp != self._stamp:
                with self._forget:
                    self._stamp = stamp
                    self._generation += 1
                    self.keys = {}  # one assignment: a request in flight reads either dictionary whole

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)

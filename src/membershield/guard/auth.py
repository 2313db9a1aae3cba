"""Who is calling: a bearer key looked up in the store, remembered for a while so the store is not
asked on every request."""

from __future__ import annotations

import time

from fastapi import Request

from membershield.guard.errors import GuardError
from membershield.guard.keys import hash_key
from membershield.store import GuardKey, Store, StoreError

KEY_CACHE_SECONDS = 60.0  # a known key is looked up in the store again after this long
UNKNOWN_KEY_CACHE_SECONDS = 2.0  # how long a wrong key is answered 401 without asking the store again


class KeyAuthenticator:
    """``authenticate(request)`` returns the caller's key or raises a 401 (503 when the store is down)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys: dict[str, tuple[GuardKey | None, float]] = {}  # sha256 -> (key or None, when looked up)

    def authenticate(self, request: Request, allow_query: bool = False) -> GuardKey:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token and allow_query:
            token = request.query_params.get("key", "")
        if not token:
            raise GuardError(
                401, "missing API key: send 'Authorization: Bearer KEY'", "unauthorized", {"WWW-Authenticate": "Bearer"}
            )
        key = self._lookup(hash_key(token))
        if key is None:
            raise GuardError(401, "unknown API key", "unauthorized", {"WWW-Authenticate": "Bearer"})
        request.state.key_name = key.name
        return key

    def _lookup(self, digest: str) -> GuardKey | None:
        now = time.monotonic()
        cached = self.keys.get(digest)
        if cached is None or now - cached[1] > (KEY_CACHE_SECONDS if cached[0] else UNKNOWN_KEY_CACHE_SECONDS):
            # a new key works at once; a key removed from the store stops working within KEY_CACHE_SECONDS;
            # wrong keys are remembered briefly so a flood of them does not become a flood of store reads
            try:
                cached = (self.store.find_key(digest), now)
            except StoreError as exc:
                if cached is None or cached[0] is None:
                    raise GuardError(503, f"cannot check the API key: {exc}", "store_error") from exc
                cached = (cached[0], now)  # the store is briefly unavailable: keep trusting a known key
            if len(self.keys) > 100_000:
                self.keys.clear()
            self.keys[digest] = cached
        return cached[0]

"""Answers of an endpoint kept on disk, keyed by endpoint and record, so that an interrupted audit resumes
without asking again (and the query budget is spent once). One SQLite file: a key-value table that many
batches append to, each committed as it arrives; the standard library's sqlite3 is all this needs."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = "CREATE TABLE IF NOT EXISTS answers (endpoint TEXT, record TEXT, answer TEXT, PRIMARY KEY (endpoint, record))"


def record_keys(records: list[dict[str, Any]]) -> list[str]:
    """One key per record: the SHA-256 of its JSON form (the exact values sent).

    >>> record_keys([{"a": 1, "b": "x"}]) == record_keys([{"b": "x", "a": 1}])
    True
    """
    return [hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest() for r in records]


class AnswerCache:
    def __init__(self, directory: str | Path, endpoint: str) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "endpoint-answers.sqlite"
        self.endpoint = endpoint
        self._db = sqlite3.connect(self.path, timeout=30)
        # WAL with NORMAL sync: a commit per batch survives a killed audit without an fsync per batch
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT record, answer FROM answers WHERE endpoint = ? AND record IN ({marks})",
                [self.endpoint, *chunk],
            )
            found.update((key, json.loads(answer)) for key, answer in rows)
        return found

    def put(self, answers: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
            [(self.endpoint, key, json.dumps(answer)) for key, answer in answers],
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()

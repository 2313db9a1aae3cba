"""What each key asked and was told: the records of every answered prediction request (as the probing
detector reads them) with the answers the caller was given, written to the store by the request log's
background thread and read back for incident reports.

The request path only hands over references (the record matrix, the answer's predictions); the encoding
to bytes happens in the writer thread. Records are float64; answers are the probabilities the caller saw
(a label-only answer as its one-hot row; NaN where an upstream's answer names a label we cannot place).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from membershield.store import Store


@dataclass(frozen=True)
class AnsweredQuery:
    """One answered request, as handed over by the request path."""

    key_name: str
    model_name: str
    time: datetime
    records: np.ndarray  # (n, d) float64
    predictions: list  # the answer's predictions, as sent
    classes: list | None  # the answer's classes (a local model names them)


def answers_matrix(predictions: list, classes: list | None) -> np.ndarray:
    """The answers as an (n, C) float64 matrix: probabilities as given, labels one-hot, NaN rows where unknown.

    >>> answers_matrix([{"label": 1, "probabilities": [0.2, 0.8]}, {"label": 0}], [0, 1]).tolist()
    [[0.2, 0.8], [1.0, 0.0]]
    >>> answers_matrix([{"label": "b"}], None).shape
    (1, 0)
    """
    width = len(classes) if classes else 0
    for p in predictions:
        if isinstance(p, dict) and isinstance(p.get("probabilities"), list):
            width = max(width, len(p["probabilities"]))
    out = np.full((len(predictions), width), np.nan)
    position = {c: i for i, c in enumerate(classes or [])}
    for i, p in enumerate(predictions):
        probabilities = p.get("probabilities") if isinstance(p, dict) else None
        if isinstance(probabilities, list) and len(probabilities) == width:
            out[i] = probabilities
        elif isinstance(p, dict) and p.get("label") in position:
            out[i] = 0.0
            out[i, position[p["label"]]] = 1.0
    return out


def encode(query: AnsweredQuery) -> dict[str, Any]:
    """The store row of one answered request."""
    records = np.ascontiguousarray(query.records, dtype=np.float64)
    answers = answers_matrix(query.predictions, query.classes)
    return {
        "key_name": query.key_name,
        "model_name": query.model_name,
        "n_records": int(records.shape[0]),
        "n_features": int(records.shape[1]) if records.ndim == 2 else 0,
        "records": records.tobytes(),
        "n_classes": int(answers.shape[1]) if answers.shape[1] else None,
        "answers": np.ascontiguousarray(answers).tobytes() if answers.shape[1] else None,
        "created_at": query.time,
    }


@dataclass(frozen=True)
class QueryHistory:
    """Every record one key sent one model's guard, in order, with the answer it got (NaN rows: unknown)."""

    records: np.ndarray  # (m, d)
    answers: np.ndarray  # (m, C); C is 0 when no answer could be placed
    times: np.ndarray  # (m,) datetime64[us] UTC, when each record was answered
    n_requests: int
    n_skipped: int  # records of another width than the rest (an upstream guard without a model's columns)

    @property
    def n_records(self) -> int:
        return int(self.records.shape[0])

    def first_and_last(self) -> tuple[datetime | None, datetime | None]:
        if not self.n_records:
            return None, None
        return _moment(self.times[0]), _moment(self.times[-1])


def _moment(value: np.datetime64) -> datetime:
    return value.astype("datetime64[us]").item().replace(tzinfo=UTC)


def load_history(store: Store, key_name: str, model_name: str, until: datetime | None = None) -> QueryHistory:
    """Decode the logged requests of one key to one model's guard."""
    rows = store.queries_of(key_name, model_name, until)
    widths = Counter(r["n_features"] for r in rows)
    width = widths.most_common(1)[0][0] if widths else 0
    kept = [r for r in rows if r["n_features"] == width]
    classes = Counter(r["n_classes"] for r in kept if r["n_classes"])
    n_classes = classes.most_common(1)[0][0] if classes else 0
    records, answers, times = [], [], []
    for r in kept:
        block = np.frombuffer(r["records"], dtype=np.float64).reshape(r["n_records"], width)
        records.append(block)
        if r["answers"] is not None and r["n_classes"] == n_classes:
            answers.append(np.frombuffer(r["answers"], dtype=np.float64).reshape(r["n_records"], n_classes))
        else:
            answers.append(np.full((r["n_records"], n_classes), np.nan))
        stamp = np.datetime64(r["created_at"].replace(tzinfo=None), "us")
        times.append(np.full(r["n_records"], stamp))
    return QueryHistory(
        records=np.concatenate(records) if records else np.zeros((0, width)),
        answers=np.concatenate(answers) if answers else np.zeros((0, n_classes)),
        times=np.concatenate(times) if times else np.zeros(0, dtype="datetime64[us]"),
        n_requests=len(kept),
        n_skipped=sum(r["n_records"] for r in rows if r["n_features"] != width),
    )

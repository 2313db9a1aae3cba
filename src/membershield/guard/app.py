"""The guard service: ``create_app(config)`` builds the FastAPI application.

Endpoints: ``POST /v1/predict`` (hardened predictions; ``POST /v1/generate``, redacted text, for a text
model instead), ``GET /v1/alerts`` (admin keys), ``GET /metrics``
(Prometheus text format), ``GET /healthz`` and ``GET /`` (dashboard, admin keys). Every ``/v1`` call needs
``Authorization: Bearer KEY``; the dashboard also takes ``?key=KEY`` so it opens from a browser's address
bar. Every request is logged to the store by a background writer that is drained on shutdown; alerts are
written at once.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from membershield.defenses.output import harden
from membershield.errors import ConfigError, MembershieldError
from membershield.guard.detector import ProbingDetector
from membershield.guard.limits import RateLimiter
from membershield.guard.pii import presidio_analyzer, redact
from membershield.guard.policy import GuardPolicy
from membershield.guard.upstream import UpstreamClient, UpstreamError
from membershield.store import GuardKey, Store, StoreError, open_store
from membershield.targets.base import Target
from membershield.targets.sklearn import SklearnTarget

FLOAT_MAX = 1.7976931348623157e308
ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, in one line."}},
}
ERRORS = {
    "400": "The body is not valid JSON.",
    "401": "No API key, or an unknown one.",
    "403": "The key is not an admin key.",
    "413": "The body is over [server] max_body_bytes.",
    "422": "The body is valid JSON but not valid input (the message says which record and why).",
    "429": "Rate limit, daily budget or probing throttle reached; Retry-After says when to try again.",
    "502": "The upstream model endpoint is down or answered something unusable.",
    "503": "The store that holds the API keys cannot be read.",
}
BEARER = [{"bearer": []}]


def _errors(*codes: str) -> dict[str, Any]:
    # fresh copies: FastAPI edits the response objects it is given while it builds the schema
    return {
        code: {"description": ERRORS[code], "content": {"application/json": {"schema": copy.deepcopy(ERROR_BODY)}}}
        for code in codes
    }


def _predict_openapi(columns: list[str] | None, n_features: int | None, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI of ``POST /v1/predict``, with the model's feature count and column names when known, so a
    client (or a fuzzer) generated from it sends records the model can score."""
    number = {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}
    as_list: dict[str, Any] = {"type": "array", "items": number, "minItems": 1}
    if n_features is not None:
        as_list.update(minItems=n_features, maxItems=n_features)
    if columns:
        record: dict[str, Any] = {
            "oneOf": [
                as_list,
                {
                    "type": "object",
                    "required": list(columns),
                    "properties": {c: number for c in columns},
                    "additionalProperties": False,
                },
            ]
        }
    else:
        record = as_list
    prediction = {
        "type": "object",
        "properties": {
            "label": {"description": "The model's label (hardening never changes it)."},
            "probabilities": {"type": "array", "items": {"type": "number"}},
            "text": {"type": "string", "description": "Text output, personal data redacted (upstream mode)."},
        },
    }
    answer = {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": prediction}, "classes": {"type": "array"}},
    }
    return {
        "security": BEARER,
        "requestBody": {
            "required": True,
            "description": f"At most {max_body_bytes} bytes.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["records"],
                        "properties": {"records": {"type": "array", "minItems": 1, "items": record}},
                        "additionalProperties": False,
                    }
                }
            },
        },
        "responses": {
            "200": {"description": "Hardened predictions.", "content": {"application/json": {"schema": answer}}},
        },
    }


def _generate_openapi(max_new_tokens: int) -> dict[str, Any]:
    request = {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "max_new_tokens": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_new_tokens,
                "default": min(64, max_new_tokens),
            },
        },
        "additionalProperties": False,
    }
    answer = {
        "type": "object",
        "required": ["text", "redacted"],
        "properties": {
            "text": {"type": "string", "description": "The generated text, personal data replaced by [KIND]."},
            "redacted": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    return {
        "security": BEARER,
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "Generated text, redacted.", "content": {"application/json": {"schema": answer}}}
        },
    }


def _generate_request(payload: Any, max_new_tokens: int) -> tuple[str, int]:
    """The prompt and token count of a generate request."""
    if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str):
        raise GuardError(422, 'the body must be a JSON object {"prompt": "...", "max_new_tokens": N}', "invalid_input")
    unknown = sorted(set(payload) - {"prompt", "max_new_tokens"})
    if unknown:
        raise GuardError(
            422, f"unknown field '{unknown[0]}' in the body (accepted: 'prompt', 'max_new_tokens')", "invalid_input"
        )
    if not payload["prompt"]:
        raise GuardError(422, "'prompt' must not be empty", "invalid_input")
    count = payload.get("max_new_tokens", min(64, max_new_tokens))
    if type(count) is not int or not 1 <= count <= max_new_tokens:
        raise GuardError(
            422, f"'max_new_tokens' must be an integer from 1 to {max_new_tokens}, got {_short(count)}", "invalid_input"
        )
    return payload["prompt"], count


def _upstream_text(answer: Any) -> str | None:
    """The generated text of an upstream answer: ``{"text": ...}``, ``{"generated_text": ...}`` or a list of
    the latter (as Hugging Face inference servers answer)."""
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if isinstance(answer, dict):
        for field_name in ("text", "generated_text"):
            if isinstance(answer.get(field_name), str):
                return answer[field_name]
    return None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(store: Store, name: str, *, admin: bool = False) -> str:
    """Create an API key (a random 32-byte token); only its sha256 is stored, so this is the one time it is seen."""
    import secrets

    # the name is how alerts, limits and the dashboard tell keys apart, and it goes into one-line messages
    if not name.strip() or not name.isprintable() or len(name) > 255:
        raise ConfigError(
            "a key name must be 1 to 255 printable characters on one line (who or what the key is for),"
            f" got {_short(name)}"
        )
    token = "msk_" + secrets.token_urlsafe(32)
    store.create_key(name, hash_key(token), admin=admin)
    return token


@dataclass
class GuardConfig:
    """What the service guards and how. ``target`` scores locally; otherwise ``upstream`` is called."""

    policy: GuardPolicy
    model_name: str
    target: Target | None = None
    upstream: str | None = None
    store: str | None = None
    columns: list[str] | None = None  # the model's feature columns, in order
    n_features: int | None = None
    language_model: Any | None = None  # a membershield.text.model.LanguageModel generating locally
    text: bool = False  # the model produces text: POST /v1/generate instead of /v1/predict
    clock: Callable[[], float] = field(default=time.time)
    seed: int = 0


class GuardError(Exception):
    """An answer other than 200, with a one-line message."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class _RequestLog:
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

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stop = self._stop
            batch = []
            while self.rows:
                batch.append(self.rows.popleft())
            if batch:
                self._write(batch)
            with self._progress:
                self._done += len(batch)
                self._progress.notify_all()
            if stop:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for attempt in range(3):
            try:
                self.store.record_requests(rows)
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


def _records_matrix(payload: Any, columns: list[str] | None, n_features: int | None) -> tuple[np.ndarray, list]:
    """The records of a predict request as a float matrix in the model's column order, and as sent."""
    if not isinstance(payload, dict) or "records" not in payload:
        raise GuardError(422, 'the body must be a JSON object {"records": [[feature, ...], ...]}', "invalid_input")
    unknown = sorted(set(payload) - {"records"})
    if unknown:
        raise GuardError(422, f"unknown field '{unknown[0]}' in the body (only 'records' is accepted)", "invalid_input")
    records = payload["records"]
    if not isinstance(records, list) or not records:
        raise GuardError(422, "'records' must be a non-empty list of records", "invalid_input")
    order = columns
    rows = []
    for i, record in enumerate(records):
        if isinstance(record, dict):
            if order is None:
                if n_features is not None and rows == []:
                    raise GuardError(
                        422, "the model has no column names: send each record as a list of numbers", "invalid_input"
                    )
                order = list(record)
            missing = [c for c in order if c not in record]
            extra = [c for c in record if c not in set(order)]
            if missing or extra:
                what = f"lacks column '{missing[0]}'" if missing else f"has unknown column '{extra[0]}'"
                raise GuardError(422, f"record {i} {what} (expected columns: {', '.join(order)})", "invalid_input")
            values = [record[c] for c in order]
        elif isinstance(record, list):
            values = record
        else:
            raise GuardError(422, f"record {i} must be a list of numbers or an object keyed by column", "invalid_input")
        expected = n_features if n_features is not None else (len(rows[0]) if rows else len(values))
        if len(values) != expected:
            raise GuardError(
                422, f"record {i} has {len(values)} features; the model expects {expected}", "invalid_input"
            )
        if not _NUMBER_TYPES.issuperset(map(type, values)):  # bool is not a number here, str never is
            bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
            raise GuardError(422, f"record {i} has a value that is not a finite number: {_short(bad)}", "invalid_input")
        rows.append(values)
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond the float range
        i, bad = next((i, v) for i, row in enumerate(rows) for v in row if isinstance(v, int) and abs(v) > 2**1023)
        raise GuardError(
            422, f"record {i} has a value that is not a finite number: {_short(bad)}", "invalid_input"
        ) from None
    if not np.isfinite(matrix).all():
        i, j = np.argwhere(~np.isfinite(matrix))[0]
        raise GuardError(
            422, f"record {i} has a value that is not a finite number: {_short(rows[i][j])}", "invalid_input"
        )
    return matrix, records


_NUMBER_TYPES = frozenset({int, float})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


KEY_CACHE_SECONDS = 60.0  # a known key is looked up in the store again after this long
UNKNOWN_KEY_CACHE_SECONDS = 2.0  # how long a wrong key is answered 401 without asking the store again
INLINE_SECONDS = 0.001  # work expected to take less than this runs on the event loop, not in a thread


class _Cost:
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


class GuardService:
    """State shared by the endpoints: store, limiter, detector, metrics, output RNG."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.policy = config.policy
        self.store = open_store(config.store)
        self.log = _RequestLog(self.store)
        self.limiter = RateLimiter(config.policy.limits, clock=config.clock)
        self.detector = ProbingDetector(config.policy.detector, clock=config.clock)
        self.rng = np.random.default_rng(config.seed)
        self.rng_lock = threading.Lock()
        self.keys: dict[str, tuple[GuardKey | None, float]] = {}  # sha256 -> (key or None, when looked up)
        self.model_cost = _Cost()
        self.detector_cost = _Cost()
        self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "membershield_guard_requests", "Requests served", ["endpoint", "status"], registry=self.registry
        )
        self.m_latency = Histogram(
            "membershield_guard_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.m_records = Counter("membershield_guard_records", "Records scored", registry=self.registry)
        self.m_alerts = Counter("membershield_guard_alerts", "Probing alerts", ["pattern"], registry=self.registry)
        self.m_rejections = Counter(
            "membershield_guard_rejections", "Requests refused", ["reason"], registry=self.registry
        )
        self.m_redactions = Counter(
            "membershield_guard_redactions", "Personal data redacted from outputs", ["kind"], registry=self.registry
        )
        # labels() takes a lock and hashes its arguments; the children of the hot path are kept here
        self._request_children: dict[tuple[str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        try:
            used = self.store.guard_usage(since=self.limiter.day_start(), limit=1_000_000, model_name=config.model_name)
            self.limiter.seed_usage({row["key"]: row["records"] for row in used})
        except StoreError:
            pass
        target = config.target
        # a scikit-learn model fitted on a plain array, with its own class order: scored without the
        # DataFrame round trip and log/exp of Target.logits, which cost more than the model on one record
        self._plain_estimator = (
            isinstance(target, SklearnTarget)
            and target.columns is None
            and np.array_equal(np.asarray(getattr(target.estimator, "classes_", [])), target.classes)
        )
        self.generation_lock = threading.Lock()
        # Presidio (with an installed spaCy model) adds names and places to the validators' findings;
        # built once, and only where text can come out of the service
        self.analyzer = presidio_analyzer() if config.text or config.language_model or config.upstream else None
        self.upstream = (
            UpstreamClient(config.upstream, config.policy.server.upstream_timeout_seconds) if config.upstream else None
        )

    def close(self) -> None:
        self.log.close()
        if self.upstream is not None:
            self.upstream.close()
        self.store.close()

    def observe(self, route: str, status: int, elapsed: float) -> None:
        counter = self._request_children.get((route, status))
        if counter is None:
            counter = self._request_children[(route, status)] = self.m_requests.labels(
                endpoint=route, status=str(status)
            )
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.m_latency.labels(endpoint=route)
        histogram.observe(elapsed)

    # -- auth ----------------------------------------------------------------------------------------

    def authenticate(self, request: Request, allow_query: bool = False) -> GuardKey:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token and allow_query:
            token = request.query_params.get("key", "")
        if not token:
            raise GuardError(
                401, "missing API key: send 'Authorization: Bearer KEY'", "unauthorized", {"WWW-Authenticate": "Bearer"}
            )
        digest = hash_key(token)
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
        key = cached[0]
        if key is None:
            raise GuardError(401, "unknown API key", "unauthorized", {"WWW-Authenticate": "Bearer"})
        request.state.key_name = key.name
        return key

    def admit(self, key: GuardKey) -> None:
        """Throttle and rate limit of one request."""
        wait = self.detector.throttled_for(key.name)
        if wait is not None:
            raise GuardError(
                429, f"key '{key.name}' is throttled after a probing alert", "throttled", {"Retry-After": str(wait)}
            )
        wait = self.limiter.check_rate(key.name)
        if wait is not None:
            limit = self.policy.limits.requests_per_minute
            raise GuardError(
                429, f"rate limit of {limit} requests per minute reached", "rate_limit", {"Retry-After": str(wait)}
            )

    def spend(self, key: GuardKey, n_records: int) -> None:
        wait = self.limiter.check_budget(key.name, n_records)
        if wait is not None:
            budget = self.policy.limits.daily_query_budget
            raise GuardError(
                429,
                f"daily budget of {budget} records for key '{key.name}' would be exceeded",
                "budget",
                {"Retry-After": str(wait)},
            )

    # -- scoring -------------------------------------------------------------------------------------

    def _harden(self, proba: np.ndarray) -> np.ndarray:
        with self.rng_lock:
            return harden(proba, self.policy.output, self.rng)

    def _probabilities(self, matrix: np.ndarray) -> np.ndarray:
        target = self.config.target
        if self._plain_estimator:
            return np.asarray(target.estimator.predict_proba(matrix), dtype=np.float64)
        names = self.config.columns or [f"x{i}" for i in range(matrix.shape[1])]
        logits = np.asarray(target.logits(pd.DataFrame(matrix, columns=names)), dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def score_local(self, matrix: np.ndarray) -> dict[str, Any]:
        target = self.config.target
        try:
            proba = self._probabilities(matrix)
        except MembershieldError as exc:
            raise GuardError(422, str(exc), "invalid_input") from exc
        finite = np.isfinite(proba).all(axis=1)
        if not finite.all():
            # features far outside what the model was trained on overflow its arithmetic; a NaN row would
            # otherwise come back as class 0 with null probabilities
            raise GuardError(
                422,
                f"the model cannot score record {int(np.argmin(finite))}: its output is not finite"
                " (features far outside the model's range?)",
                "invalid_input",
            )
        classes = np.asarray(target.classes)
        labels = classes[proba.argmax(axis=1)].tolist()
        hardened = self._harden(proba)
        label_only = self.policy.output.label_only
        predictions = (
            [{"label": label} for label in labels]
            if label_only
            else [{"label": label, "probabilities": row} for label, row in zip(labels, hardened.tolist(), strict=True)]
        )
        return {"predictions": predictions, "classes": classes.tolist()}

    async def score_upstream(self, records: list) -> dict[str, Any]:
        url = self.config.upstream
        try:
            status, body = await self.upstream.post(orjson.dumps({"records": records}))
        except UpstreamError as exc:
            raise GuardError(502, f"upstream {url} is unreachable: {exc}".splitlines()[0], "upstream_error") from exc
        if status != 200:
            raise GuardError(502, f"upstream {url} answered HTTP {status}", "upstream_error")
        try:
            predictions = orjson.loads(body)["predictions"]
            if not isinstance(predictions, list) or len(predictions) != len(records):
                raise ValueError("wrong number of predictions")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise GuardError(
                502,
                f"upstream {url} answered something other than {{'predictions': [...]}} for {len(records)} records",
                "upstream_error",
            ) from exc
        out = []
        probas = [p.get("probabilities") if isinstance(p, dict) else None for p in predictions]
        hardened = None
        if all(isinstance(p, list) and p for p in probas) and len({len(p) for p in probas}) == 1:
            try:
                matrix = np.asarray(probas, dtype=np.float64)
            except (TypeError, ValueError):
                matrix = None
            if matrix is not None:
                with np.errstate(over="ignore", invalid="ignore"):  # judged below: inf and NaN totals are refused
                    totals = matrix.sum(axis=1)
                # Hardening a negative or non-finite "probability" would hand the caller numbers that look
                # like a distribution and are none: the upstream is broken, and the caller is told so.
                if not (np.isfinite(totals).all() and (matrix >= 0).all() and (totals > 0).all()):
                    raise GuardError(
                        502,
                        f"upstream {url} answered probabilities that are negative, not finite or all zero",
                        "upstream_error",
                    )
                hardened = self._harden(matrix / totals[:, None]).tolist()
        label_only = self.policy.output.label_only
        for i, prediction in enumerate(predictions):
            if not isinstance(prediction, dict):
                raise GuardError(502, f"upstream {url} answered a prediction that is not an object", "upstream_error")
            entry: dict[str, Any] = {}
            if "label" in prediction:
                entry["label"] = prediction["label"]
            if hardened is not None and not label_only:
                entry["probabilities"] = hardened[i]
            if isinstance(prediction.get("text"), str):
                entry["text"] = self.redact(prediction["text"])[0]
            out.append(entry)
        return {"predictions": out}

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        redacted, counts = redact(text, self.analyzer)
        for kind, n in counts.items():
            self.m_redactions.labels(kind=kind).inc(n)
        return redacted, dict(counts)

    def generate_local(self, prompt: str, max_new_tokens: int) -> str:
        """Greedy continuation of ``prompt`` by the local language model (deterministic, so an answer cannot
        be averaged over repeated queries)."""
        import torch

        lm = self.config.language_model
        ids = lm.encode([prompt])[0]
        if len(ids) + max_new_tokens > lm.max_positions:
            raise GuardError(
                422,
                f"the prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} that is over the model's"
                f" {lm.max_positions} positions",
                "invalid_input",
            )
        tokenizer = lm.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        inputs = torch.tensor([ids], device=lm.device)
        with self.generation_lock, torch.no_grad():
            output = lm.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return tokenizer.decode(output[0, len(ids) :].tolist(), skip_special_tokens=True)

    async def generate_upstream(self, prompt: str, max_new_tokens: int) -> str:
        url = self.config.upstream
        try:
            status, body = await self.upstream.post(orjson.dumps({"prompt": prompt, "max_new_tokens": max_new_tokens}))
        except UpstreamError as exc:
            raise GuardError(502, f"upstream {url} is unreachable: {exc}".splitlines()[0], "upstream_error") from exc
        if status != 200:
            raise GuardError(502, f"upstream {url} answered HTTP {status}", "upstream_error")
        try:
            text = _upstream_text(orjson.loads(body))
        except orjson.JSONDecodeError:
            text = None
        if text is None:
            raise GuardError(502, f"upstream {url} answered something other than {{'text': '...'}}", "upstream_error")
        return text

    def record_alerts(self, alerts: list) -> list[dict[str, Any]]:
        written = []
        for alert in alerts:
            self.m_alerts.labels(pattern=alert.pattern).inc()
            written.append(
                self.store.record_alert(alert.key, self.config.model_name, alert.pattern, alert.evidence, alert.time)
            )
        return written


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GuardError(413, f"request body of {declared} bytes is over the limit of {limit} bytes", "too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise GuardError(413, f"request body is over the limit of {limit} bytes", "too_large")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # orjson refuses a few valid documents (integers over 64 bits); the standard parser decides
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuardError(400, f"the body is not valid JSON: {exc}".splitlines()[0], "bad_request") from exc
    except RecursionError:
        raise GuardError(400, "the body is not valid JSON: it is nested too deeply", "bad_request") from None
    # The standard parser also takes what orjson rightly refuses: an escaped lone surrogate ("\ud800") is no
    # Unicode text, and once inside a string no error message, tokenizer or upstream call can encode it.
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        unit = ord(exc.object[exc.start])
        raise GuardError(
            400,
            f"the body is not valid JSON: a string has the lone surrogate \\u{unit:04x}, which is not Unicode text"
            " (a character outside the BMP is escaped as a pair of surrogates, or sent as UTF-8)",
            "bad_request",
        ) from None
    except RecursionError:
        raise GuardError(400, "the body is not valid JSON: it is nested too deeply", "bad_request") from None
    return value


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


class _Observe:
    """Counts, times and logs every request (pure ASGI: no extra task or stream per request, unlike an
    ``@app.middleware("http")`` function, which costs a few hundred microseconds each time)."""

    def __init__(self, app: ASGIApp, service: GuardService) -> None:
        self.app = app
        self.service = service
        self.model_name = service.config.model_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path in KNOWN_PATHS else "other"
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        state = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            state["detail"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            status = 500
            raise
        finally:
            elapsed = time.perf_counter() - start
            self.service.observe(route, status, elapsed)
            if route.startswith("/v1/") or route == "/":
                self.service.log.add(
                    {
                        "key_name": state.get("key_name"),
                        "model_name": self.model_name,
                        "endpoint": route,
                        "status": status,
                        "n_records": state.get("n_records", 0),
                        "latency_ms": elapsed * 1000,
                        "detail": state.get("detail"),
                        "created_at": datetime.now(UTC),
                    }
                )


def create_app(config: GuardConfig) -> FastAPI:
    """The guard application; the store is opened (and migrated) here and closed on shutdown."""
    from membershield.guard.dashboard import render_dashboard

    if config.target is None and config.language_model is None and not config.upstream:
        raise MembershieldError("the guard needs a fitted model (--model) or an --upstream URL to forward to")
    service = GuardService(config)
    text_model = config.text or config.language_model is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # The libraries and the model loaded by now are some 300,000 objects that live as long as the
        # process; a full collection walks them all (about 0.2 s here), which would land on whichever
        # request is in flight. Frozen, they are left out of every later collection.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="membershield guard",
        description="Hardened predictions with API keys, rate limits, probing detection and PII redaction.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Observe, service=service)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "membershield keys create NAME"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(GuardError)
    async def _guard_error(request: Request, exc: GuardError) -> Response:
        service.m_rejections.labels(reason=exc.reason).inc()
        request.state.detail = exc.message
        return _json({"error": exc.message}, exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        problem = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in problem.get("loc", ()))
        return await _guard_error(request, GuardError(422, f"{where}: {problem.get('msg')}", "invalid_input"))

    serves = "a text model at POST /v1/generate" if text_model else "a classifier at POST /v1/predict"

    # routing's own 404 and 405 come in the same {"error": ...} shape as every other refusal
    @app.exception_handler(StarletteHTTPException)
    async def _routing_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        shown = path if len(path) <= 80 and path.isprintable() else _short(path)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = headers.get("Allow", "")
            error = GuardError(
                405, f"{request.method} is not allowed on {shown}: use {allowed}", "method_not_allowed", headers
            )
        elif exc.status_code == 404:
            hint = f": this guard serves {serves}" if path in ("/v1/predict", "/v1/generate") else ""
            error = GuardError(404, f"no endpoint {shown}{hint}", "not_found", headers)
        else:
            error = GuardError(exc.status_code, " ".join(str(exc.detail).split()), "http", headers)
        return await _guard_error(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]}, 500)

    async def detect(key: GuardKey, matrix: np.ndarray) -> None:
        alerts = await service.detector_cost.run(service.detector.observe, len(matrix), key.name, matrix)
        if alerts:
            await run_in_threadpool(service.record_alerts, alerts)

    max_new_tokens = config.policy.server.max_new_tokens

    async def generate(request: Request) -> Response:
        """Text generated for ``{"prompt": ..., "max_new_tokens": N}``, personal data redacted before it leaves."""
        key = service.authenticate(request)
        service.admit(key)
        payload = _parse_json(await _read_body(request, config.policy.server.max_body_bytes))
        prompt, count = _generate_request(payload, max_new_tokens)
        service.spend(key, 1)
        if service.upstream is not None:
            text = await service.generate_upstream(prompt, count)
        else:
            text = await run_in_threadpool(service.generate_local, prompt, count)
        request.state.n_records = 1
        service.m_records.inc()
        redacted, counts = await run_in_threadpool(service.redact, text)
        return _json({"text": redacted, "redacted": counts})

    async def predict(request: Request) -> Response:
        """Hardened predictions for ``{"records": [...]}`` (lists in the model's column order, or objects)."""
        key = service.authenticate(request)
        service.admit(key)
        payload = _parse_json(await _read_body(request, config.policy.server.max_body_bytes))
        matrix, records = _records_matrix(payload, config.columns, config.n_features)
        service.spend(key, len(matrix))
        if service.upstream is not None:
            answer = await service.score_upstream(records)
        else:
            answer = await service.model_cost.run(service.score_local, len(matrix), matrix)
        request.state.n_records = len(matrix)
        service.m_records.inc(len(matrix))
        await detect(key, matrix)
        return _json(answer)

    # one model, one kind of output: a text model answers /v1/generate, a classifier /v1/predict
    if text_model:
        app.post(
            "/v1/generate",
            openapi_extra=_generate_openapi(max_new_tokens),
            responses=_errors("400", "401", "413", "422", "429", "502", "503"),
        )(generate)
    else:
        app.post(
            "/v1/predict",
            openapi_extra=_predict_openapi(config.columns, config.n_features, config.policy.server.max_body_bytes),
            responses=_errors("400", "401", "413", "422", "429", "502", "503"),
        )(predict)

    @app.get("/v1/alerts", openapi_extra={"security": BEARER}, responses=_errors("401", "403", "422", "503"))
    def list_alerts(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Recent probing alerts, newest first (admin keys only)."""
        key = service.authenticate(request)
        if not key.admin:
            raise GuardError(403, f"key '{key.name}' is not an admin key", "forbidden")
        return {"alerts": service.store.alerts(limit=limit, model_name=service.config.model_name)}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "mode": "upstream" if config.upstream else "local"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/", response_class=HTMLResponse, openapi_extra={"security": BEARER}, responses=_errors("401", "403", "503")
    )
    def dashboard(
        request: Request,
        key: Annotated[str | None, Query(description="An admin key, for a browser's address bar.")] = None,
    ) -> HTMLResponse:
        """Audit history, live alerts and top keys (admin key as Bearer or ``?key=``)."""
        caller = service.authenticate(request, allow_query=True)
        if not caller.admin:
            raise GuardError(403, f"key '{caller.name}' is not an admin key", "forbidden")
        service.log.flush()
        return HTMLResponse(render_dashboard(service))

    return app


KNOWN_PATHS = {"/v1/predict", "/v1/generate", "/v1/alerts", "/healthz", "/metrics", "/"}


def guard_config(
    model: str | None,
    upstream: str | None,
    policy: GuardPolicy,
    store: str | None = None,
    model_name: str | None = None,
    text: bool = False,
) -> GuardConfig:
    """Resolve ``--model`` / ``--upstream``: a fitted model file scores locally (and, with ``--upstream``,
    only checks the records' shape); a model directory (``save_pretrained``) is a causal language model that
    generates locally; ``text`` says an upstream generates text. A recipe cannot serve predictions."""
    from pathlib import Path

    from membershield.errors import ModelLoadError
    from membershield.targets.loading import load_model

    if not model and not upstream:
        raise ConfigError(
            "give --model (a fitted .joblib/.pkl classifier or a language model directory) or --upstream URL"
        )
    if upstream and not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http:// or https:// URL, got '{upstream}'")
    name = model_name or (Path(model.rstrip("/")).stem if model else "upstream")
    if model and Path(model).is_dir():
        if upstream:
            raise ConfigError("give either a language model directory (--model) or --upstream URL, not both")
        from membershield.text.model import load_language_model

        language_model = load_language_model(model)
        return GuardConfig(policy=policy, model_name=name, store=store, language_model=language_model, text=True)
    if text and not upstream:
        raise ConfigError("--text needs --upstream URL or a language model directory as --model")
    target = columns = n_features = None
    if model and (".py:" in model or Path(model).exists() or not upstream):
        if ".py:" in model:
            raise ModelLoadError(
                f"{model} is a training recipe, which cannot serve predictions: give a fitted model file"
                " (.joblib/.pkl) or --upstream URL"
            )
        loaded = load_model(model)
        target = loaded.target
        columns = getattr(target, "columns", None)
        n_features = len(columns) if columns else getattr(getattr(target, "estimator", None), "n_features_in_", None)
    return GuardConfig(
        policy=policy,
        model_name=name,
        target=None if upstream else target,
        upstream=upstream,
        store=store,
        columns=list(columns) if columns else None,
        n_features=n_features,
        text=text,
    )

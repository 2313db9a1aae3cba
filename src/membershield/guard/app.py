"""The guard service: ``create_app(config)`` builds the FastAPI application.

Endpoints: ``POST /v1/predict`` (hardened predictions), ``GET /v1/alerts`` (admin keys), ``GET /metrics``
(Prometheus text format), ``GET /healthz`` and ``GET /`` (dashboard, admin keys). Every ``/v1`` call needs
``Authorization: Bearer KEY``; the dashboard also takes ``?key=KEY`` so it opens from a browser's address
bar. Every request is logged to the store by a background writer that is drained on shutdown; alerts are
written at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from scipy.special import softmax
from starlette.concurrency import run_in_threadpool

from membershield.defenses.output import harden
from membershield.errors import MembershieldError
from membershield.guard.detector import ProbingDetector
from membershield.guard.limits import RateLimiter
from membershield.guard.pii import redact
from membershield.guard.policy import GuardPolicy
from membershield.store import GuardKey, Store, StoreError, open_store
from membershield.targets.base import Target

PREDICT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["records"],
                    "properties": {
                        "records": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "oneOf": [
                                    {"type": "array", "items": {"type": "number"}},
                                    {"type": "object", "additionalProperties": {"type": "number"}},
                                ]
                            },
                        }
                    },
                }
            }
        },
    }
}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(store: Store, name: str, *, admin: bool = False) -> str:
    """Create an API key (a random 32-byte token); only its sha256 is stored, so this is the one time it is seen."""
    import secrets

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
    clock: Callable[[], float] = field(default=time.time)
    seed: int = 0


class GuardError(Exception):
    """An answer other than 200, with a one-line message."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class _RequestLog:
    """Writes request rows to the store from one background thread, in batches."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="guard-request-log", daemon=True)
        self.thread.start()

    def add(self, row: dict[str, Any]) -> None:
        self.queue.put(row)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        stop = False
        while not stop:
            item = self.queue.get()
            taken = 1
            if item is None:
                stop = True
            else:
                pending.append(item)
            while not stop and len(pending) < 500:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stop = True
                else:
                    pending.append(item)
            for attempt in range(3):
                try:
                    self.store.record_requests(pending)
                    pending = []
                    break
                except StoreError:
                    time.sleep(0.2 * (attempt + 1))
            self.failed += len(pending)
            pending = []
            for _ in range(taken):
                self.queue.task_done()

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
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
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise GuardError(422, f"record {i} has a value that is not a finite number: {value!r}", "invalid_input")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64), records


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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
        self.keys: dict[str, GuardKey] = {}
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
        try:
            used = self.store.guard_usage(since=self.limiter.day_start(), limit=1_000_000)
            self.limiter.seed_usage({row["key"]: row["records"] for row in used})
        except StoreError:
            pass
        self.http = None
        if config.upstream:
            import httpx

            self.http = httpx.Client(timeout=config.policy.server.upstream_timeout_seconds)

    def close(self) -> None:
        self.log.close()
        if self.http is not None:
            self.http.close()
        self.store.close()

    # -- auth ----------------------------------------------------------------------------------------

    def authenticate(self, request: Request, allow_query: bool = False) -> GuardKey:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token and allow_query:
            token = request.query_params.get("key", "")
        if not token:
            raise GuardError(
                401, "missing API key: send 'Authorization: Bearer KEY'", "unauthorized", {"WWW-Authenticate": "Bearer"}
            )
        digest = hash_key(token)
        key = self.keys.get(digest)
        if key is None:
            key = self.store.find_key(digest)
            if key is None:
                raise GuardError(401, "unknown API key", "unauthorized", {"WWW-Authenticate": "Bearer"})
            self.keys[digest] = key
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

    # -- scoring -------------------------------------------------------------------------------------

    def _harden(self, proba: np.ndarray) -> np.ndarray:
        with self.rng_lock:
            return harden(proba, self.policy.output, self.rng)

    def _entry(self, label: Any, probabilities: np.ndarray | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"label": _plain(label)}
        if probabilities is not None and not self.policy.output.label_only:
            entry["probabilities"] = [float(p) for p in probabilities]
        return entry

    def score_local(self, matrix: np.ndarray) -> dict[str, Any]:
        target = self.config.target
        names = self.config.columns or [f"x{i}" for i in range(matrix.shape[1])]
        try:
            logits = target.logits(pd.DataFrame(matrix, columns=names))
        except MembershieldError as exc:
            raise GuardError(422, str(exc), "invalid_input") from exc
        proba = softmax(np.asarray(logits, dtype=np.float64), axis=1)
        labels = np.asarray(target.classes)[proba.argmax(axis=1)]
        hardened = self._harden(proba)
        return {
            "predictions": [self._entry(label, row) for label, row in zip(labels, hardened, strict=True)],
            "classes": [_plain(c) for c in np.asarray(target.classes)],
        }

    def score_upstream(self, records: list) -> dict[str, Any]:
        import httpx

        url = self.config.upstream
        try:
            answer = self.http.post(url, json={"records": records})
        except httpx.HTTPError as exc:
            raise GuardError(
                502, f"upstream {url} is unreachable: {type(exc).__name__}: {exc}".splitlines()[0], "upstream_error"
            ) from exc
        if answer.status_code != 200:
            raise GuardError(502, f"upstream {url} answered HTTP {answer.status_code}", "upstream_error")
        try:
            predictions = answer.json()["predictions"]
            if not isinstance(predictions, list) or len(predictions) != len(records):
                raise ValueError("wrong number of predictions")
        except (ValueError, KeyError, TypeError) as exc:
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
                hardened = self._harden(matrix / matrix.sum(axis=1, keepdims=True))
            except (TypeError, ValueError, ZeroDivisionError):
                hardened = None
        for i, prediction in enumerate(predictions):
            if not isinstance(prediction, dict):
                raise GuardError(502, f"upstream {url} answered a prediction that is not an object", "upstream_error")
            entry: dict[str, Any] = {}
            if "label" in prediction:
                entry["label"] = prediction["label"]
            if hardened is not None and not self.policy.output.label_only:
                entry["probabilities"] = [float(p) for p in hardened[i]]
            if isinstance(prediction.get("text"), str):
                entry["text"], counts = redact(prediction["text"])
                for kind, n in counts.items():
                    self.m_redactions.labels(kind=kind).inc(n)
            out.append(entry)
        return {"predictions": out}

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
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuardError(400, f"the body is not valid JSON: {exc}".splitlines()[0], "bad_request") from exc


def create_app(config: GuardConfig) -> FastAPI:
    """The guard application; the store is opened (and migrated) here and closed on shutdown."""
    from membershield.guard.dashboard import render_dashboard

    if config.target is None and not config.upstream:
        raise MembershieldError("the guard needs a fitted model (--model) or an --upstream URL to forward to")
    service = GuardService(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
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

    @app.exception_handler(GuardError)
    async def _guard_error(request: Request, exc: GuardError) -> JSONResponse:
        service.m_rejections.labels(reason=exc.reason).inc()
        request.state.detail = exc.message
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.state.detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return JSONResponse({"error": f"internal error: {request.state.detail}"}, status_code=500)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        route = request.url.path if request.url.path in KNOWN_PATHS else "other"
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - start
            service.m_requests.labels(endpoint=route, status=str(status)).inc()
            service.m_latency.labels(endpoint=route).observe(elapsed)
            if route.startswith("/v1/") or route == "/":
                service.log.add(
                    {
                        "key_name": getattr(request.state, "key_name", None),
                        "model_name": config.model_name,
                        "endpoint": route,
                        "status": status,
                        "n_records": getattr(request.state, "n_records", 0),
                        "latency_ms": elapsed * 1000,
                        "detail": getattr(request.state, "detail", None),
                        "created_at": datetime.now(UTC),
                    }
                )

    @app.post("/v1/predict", openapi_extra=PREDICT_SCHEMA)
    async def predict(request: Request) -> JSONResponse:
        """Hardened predictions for ``{"records": [...]}`` (lists in the model's column order, or objects)."""
        key = service.authenticate(request)
        service.admit(key)
        payload = _parse_json(await _read_body(request, config.policy.server.max_body_bytes))
        matrix, records = _records_matrix(payload, config.columns, config.n_features)
        wait = service.limiter.check_budget(key.name, len(matrix))
        if wait is not None:
            budget = config.policy.limits.daily_query_budget
            raise GuardError(
                429,
                f"daily budget of {budget} records for key '{key.name}' would be exceeded",
                "budget",
                {"Retry-After": str(wait)},
            )
        if config.upstream:
            answer = await run_in_threadpool(service.score_upstream, records)
        else:
            answer = await run_in_threadpool(service.score_local, matrix)
        request.state.n_records = len(matrix)
        service.m_records.inc(len(matrix))
        alerts = await run_in_threadpool(service.detector.observe, key.name, matrix)
        if alerts:
            await run_in_threadpool(service.record_alerts, alerts)
        return JSONResponse(answer)

    @app.get("/v1/alerts")
    def list_alerts(request: Request, limit: int = 100) -> dict[str, Any]:
        """Recent probing alerts, newest first (admin keys only)."""
        key = service.authenticate(request)
        if not key.admin:
            raise GuardError(403, f"key '{key.name}' is not an admin key", "forbidden")
        return {"alerts": service.store.alerts(limit=max(1, min(limit, 1000)))}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "mode": "upstream" if config.upstream else "local"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def dashboard(request: Request) -> HTMLResponse:
        """Audit history, live alerts and top keys (admin key as Bearer or ``?key=``)."""
        key = service.authenticate(request, allow_query=True)
        if not key.admin:
            raise GuardError(403, f"key '{key.name}' is not an admin key", "forbidden")
        service.log.flush()
        return HTMLResponse(render_dashboard(service))

    return app


KNOWN_PATHS = {"/v1/predict", "/v1/alerts", "/healthz", "/metrics", "/"}


def guard_config(
    model: str | None,
    upstream: str | None,
    policy: GuardPolicy,
    store: str | None = None,
    model_name: str | None = None,
) -> GuardConfig:
    """Resolve ``--model`` / ``--upstream``: a fitted model file scores locally (and, with ``--upstream``,
    only checks the records' shape); a recipe cannot serve predictions."""
    from pathlib import Path

    from membershield.errors import ConfigError, ModelLoadError
    from membershield.targets.loading import load_model

    if not model and not upstream:
        raise ConfigError("give --model (a fitted .joblib/.pkl classifier) or --upstream URL")
    if upstream and not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http:// or https:// URL, got '{upstream}'")
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
    name = model_name or (Path(model).stem if model else "upstream")
    return GuardConfig(
        policy=policy,
        model_name=name,
        target=None if upstream else target,
        upstream=upstream,
        store=store,
        columns=list(columns) if columns else None,
        n_features=n_features,
    )

"""HTTP plumbing of the guard: bounded body reading, strict JSON, JSON answers, and the middleware that
counts, times and logs every request."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from membershield.guard.errors import GuardError

if TYPE_CHECKING:
    from membershield.guard.service import GuardService

KNOWN_PATHS = {"/v1/predict", "/v1/generate", "/v1/alerts", "/healthz", "/metrics", "/"}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GuardError(413, f"request body of {declared} bytes is over the limit of {limit} bytes", "too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise GuardError(413, f"request body is over the limit of {limit} bytes", "too_large")
    return bytes(body)


def parse_json(body: bytes) -> Any:
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


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


class Observe:
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
            self.service.metrics.observe(route, status, elapsed)
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

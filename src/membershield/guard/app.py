"""The guard service: ``create_app(config)`` builds the FastAPI application.

Endpoints: ``POST /v1/predict`` (hardened predictions; ``POST /v1/generate``, redacted text, for a text
model instead), ``GET /v1/alerts`` (admin keys), ``GET /metrics`` (Prometheus text format), ``GET /healthz``
and ``GET /`` (dashboard, admin keys). Every ``/v1`` call needs ``Authorization: Bearer KEY``; the
dashboard also takes ``?key=KEY`` so it opens from a browser's address bar. Every request is logged to
the store by a background writer that is drained on shutdown; alerts are written at once.

The parts live in their own modules: keys and authentication (:mod:`.keys`, :mod:`.auth`), what a record
is (:mod:`.records`, :mod:`.columns`), scoring (:mod:`.predict`), generation (:mod:`.generate`) and its
verbatim filter (:mod:`.verbatim`), limits (:mod:`.limits`), probing detection (:mod:`.detector`), metrics
(:mod:`.metrics`), HTTP plumbing (:mod:`.http`), the OpenAPI additions (:mod:`.openapi`) and the shared
state (:mod:`.service`).
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from membershield.errors import MembershieldError
from membershield.guard.config import GuardConfig, guard_config
from membershield.guard.errors import GuardError, short
from membershield.guard.generate import (
    Generation,
    check_generation_policy,
    generate_request,
    generate_upstream,
)
from membershield.guard.http import Observe, json_response, parse_json, read_body
from membershield.guard.keys import hash_key, issue_key
from membershield.guard.openapi import BEARER, error_responses, generate_openapi, predict_openapi, verbatim_refusal
from membershield.guard.predict import local_answer, upstream_answer
from membershield.guard.service import GuardService
from membershield.guard.verbatim import VerbatimFilter, build_filter
from membershield.store import StoreError

__all__ = ["GuardConfig", "create_app", "guard_config", "hash_key", "issue_key"]


def create_app(config: GuardConfig) -> FastAPI:
    """The guard application; the store is opened (and migrated) here and closed on shutdown."""
    if config.target is None and config.language_model is None and not config.upstream:
        raise MembershieldError("the guard needs a fitted model (--model) or an --upstream URL to forward to")
    check_generation_policy(config.policy.generation, config.serves_text)
    verbatim = verbatim_filter(config)  # before the store opens: a bad corpus stops the start-up cleanly
    service = GuardService(config)

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
    app.add_middleware(Observe, service=service)
    _install_openapi(app)
    _install_error_handlers(app, service)
    if config.serves_text:
        _add_generate_route(app, service, verbatim)
    else:
        _add_predict_route(app, service)
        _add_incident_route(app, service)
    _add_admin_routes(app, service)
    return app


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "membershield keys create NAME"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI, service: GuardService) -> None:
    """Every refusal, routing's 404 and 405 included, is ``{"error": "one line"}`` with its status."""
    serves = "a text model at POST /v1/generate" if service.config.serves_text else "a classifier at POST /v1/predict"

    @app.exception_handler(GuardError)
    async def _guard_error(request: Request, exc: GuardError) -> Response:
        service.metrics.rejections.labels(reason=exc.reason).inc()
        request.state.detail = exc.message
        return json_response({"error": exc.message}, exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        problem = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in problem.get("loc", ()))
        return await _guard_error(request, GuardError(422, f"{where}: {problem.get('msg')}", "invalid_input"))

    @app.exception_handler(StarletteHTTPException)
    async def _routing_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        shown = path if len(path) <= 80 and path.isprintable() else short(path)
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
        return json_response({"error": f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]}, 500)


def _add_predict_route(app: FastAPI, service: GuardService) -> None:
    config = service.config
    label_only = config.policy.output.label_only

    async def predict(request: Request) -> Response:
        """Hardened predictions for ``{"records": [...]}`` (lists in the model's column order, or objects)."""
        key = service.authenticate(request)
        service.admit(key)
        payload = parse_json(await read_body(request, config.policy.server.max_body_bytes))
        records = config.schema.parse(payload)
        service.spend(key, len(records))
        if service.upstream is not None:
            answer = await upstream_answer(
                service.upstream, records.sent, service.hardener, label_only, lambda t: service.redact(t)[0]
            )
        else:
            assert service.scorer is not None
            answer = await service.model_cost.run(
                local_answer, len(records), service.scorer, records, service.hardener, label_only
            )
        request.state.n_records = len(records)
        service.metrics.records.inc(len(records))
        service.log_query(key, records.matrix, answer)
        alerts = await service.detector_cost.run(service.detector.observe, len(records), key.name, records.matrix)
        if alerts:
            await run_in_threadpool(service.record_alerts, alerts)
        return json_response(answer)

    app.post(
        "/v1/predict",
        openapi_extra=predict_openapi(config.schema, config.policy.server.max_body_bytes),
        responses=error_responses("400", "401", "413", "422", "429", "502", "503"),
    )(predict)


def verbatim_filter(config: GuardConfig) -> VerbatimFilter | None:
    """The verbatim filter of a text model's guard, its corpus indexed here (None: no ``[generation] corpus``)."""
    settings = config.policy.generation
    if settings.corpus is None or not config.serves_text:
        return None
    return build_filter(
        settings.corpus, settings.text_field, settings.verbatim_ngram, settings.verbatim_action, config.language_model
    )


def _add_generate_route(app: FastAPI, service: GuardService, verbatim: VerbatimFilter | None) -> None:
    config = service.config
    max_new_tokens = config.policy.server.max_new_tokens
    settings = config.policy.generation
    app.state.verbatim = verbatim

    async def generate(request: Request) -> Response:
        """Text generated for ``{"prompt": ..., "max_new_tokens": N}``: an answer that would repeat a registered
        training text verbatim refused (451) or truncated, personal data redacted before it leaves."""
        key = service.authenticate(request)
        service.admit(key)
        payload = parse_json(await read_body(request, config.policy.server.max_body_bytes))
        prompt, count = generate_request(payload, max_new_tokens)
        service.spend(key, 1)
        if service.upstream is not None:
            generation = Generation(await generate_upstream(service.upstream, prompt, count, settings))
        else:
            assert service.generator is not None
            generation = await run_in_threadpool(service.generator, prompt, count)
        request.state.n_records = 1
        service.metrics.records.inc()
        text, extra = generation.text, {}
        if verbatim is not None:
            verdict = (
                verbatim.check_tokens(generation.prompt_ids, generation.answer_ids, generation.text)
                if generation.answer_ids is not None and generation.prompt_ids is not None
                else verbatim.check_text(prompt, generation.text)
            )
            service.metrics.count_verbatim(verdict.action, verdict.tokens_removed)
            if verdict.action == "refused":
                return _verbatim_refusal(request, service, verbatim)
            text, extra = verdict.text, {"verbatim": verdict.summary(verbatim.index.n, verbatim.unit)}
        redacted, counts = await run_in_threadpool(service.redact, text)
        return json_response({"text": redacted, "redacted": counts, **extra})

    responses = error_responses("400", "401", "413", "422", "429", "502", "503")
    if verbatim is not None and verbatim.action == "refuse":
        responses.update(verbatim_refusal())
    app.post("/v1/generate", openapi_extra=generate_openapi(max_new_tokens, verbatim is not None), responses=responses)(
        generate
    )


def _verbatim_refusal(request: Request, service: GuardService, verbatim: VerbatimFilter) -> Response:
    """451: the answer would have repeated a registered training text (RFC 7725: the server withholds it
    for a legal reason, here the data protection owed to the people in the training data)."""
    n, unit = verbatim.index.n, verbatim.unit
    message = (
        f"the answer would complete {n} consecutive {unit} of a registered training text (with the prompt's last"
        f" {unit} before it), so it is withheld"
    )
    service.metrics.rejections.labels(reason="verbatim").inc()
    request.state.detail = message
    body = {
        "error": message,
        "reason": "verbatim_training_text",
        "verbatim": {"action": "refused", "ngram": n, "unit": unit},
    }
    return json_response(body, 451)


def _single_valued(request: Request) -> None:
    """A query parameter given twice is a mistake: the framework would silently take the last one."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GuardError(
            422,
            f"query parameter {short(repeated[0])} is given {names.count(repeated[0])} times; give it once",
            "invalid_input",
        )


def _add_incident_route(app: FastAPI, service: GuardService) -> None:
    """``GET /v1/alerts/{id}``: a classifier's guard only (the detector reads numeric records, so a text
    model's guard raises no alert)."""
    config = service.config

    @app.get(
        "/v1/alerts/{alert_id}",
        openapi_extra={"security": BEARER},
        responses=error_responses("401", "403", "404", "422", "503"),
    )
    def alert_incident(request: Request, alert_id: Annotated[int, PathParameter(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
        """One alert as an incident: its key (name, owner, state), what the key learnt against the model's
        latest audit (records asked, members among them, confirmable at 1% FPR with the guard's answers) and
        the steps taken (admin keys only)."""
        from membershield.guard.incident_report import incident_document

        service.require_admin(request)
        _single_valued(request)
        alert = service.store.alert(alert_id)
        if alert is None or alert["model"] != config.model_name:
            raise GuardError(404, f"no alert #{alert_id} of model '{config.model_name}'", "not_found")
        service.log.flush()  # the key's last requests are in the store before they are counted
        try:
            return incident_document(service.store, service.incidents, alert_id)
        except StoreError as exc:
            raise GuardError(503, str(exc), "store_error") from exc
        except MembershieldError as exc:
            raise GuardError(422, str(exc), "invalid_input") from exc


def _add_admin_routes(app: FastAPI, service: GuardService) -> None:
    from membershield.guard.dashboard import render_dashboard

    config = service.config

    @app.get("/v1/alerts", openapi_extra={"security": BEARER}, responses=error_responses("401", "403", "422", "503"))
    def list_alerts(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Recent probing alerts, newest first (admin keys only)."""
        service.require_admin(request)
        _single_valued(request)
        return {"alerts": service.store.alerts(limit=limit, model_name=config.model_name)}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "mode": "upstream" if config.upstream else "local"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    @app.get(
        "/",
        response_class=HTMLResponse,
        openapi_extra={"security": BEARER},
        responses=error_responses("401", "403", "503"),
    )
    def dashboard(
        request: Request,
        key: Annotated[str | None, Query(description="An admin key, for a browser's address bar.")] = None,
    ) -> HTMLResponse:
        """Audit history, live alerts and top keys (admin key as Bearer or ``?key=``)."""
        service.require_admin(request, allow_query=True)
        _single_valued(request)
        service.log.flush()
        return HTMLResponse(render_dashboard(service))

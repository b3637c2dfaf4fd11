"""create_app(): settings, database, keys, middleware, routers, error handlers, contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware

from app import codes, heap, worker
from app.admission import AdmissionMiddleware
from app.apidocs import install_docs
from app.config import Settings, get_settings
from app.db import SessionMiddleware, make_async_engine, make_read_engine, make_sessionmaker
from app.deps import requires_idempotency_key
from app.errors import PROBLEM, FieldError, Problem
from app.event_types import EVENTS
from app.handlers import install_handlers
from app.idempotency import KEY_MAX_LENGTH, IdempotencyMiddleware, Rebuild
from app.logging import configure_logging
from app.middleware import BodyLimitMiddleware, ObservabilityMiddleware, metrics_response
from app.models.account import OAuthProblem
from app.proxies import ClientAddressMiddleware
from app.ratelimit import CRISIS_METHODS, EXEMPT_PATHS, RateLimitMiddleware
from app.routemarks import (
    RouteSet,
    api_routes,
    audits_own_denials,
    crisis_workflow,
    declares,
    depends_on,
    form_body,
    import_file,
    marked,
    no_idempotency_key,
    route_set,
)
from app.routers import (
    accounts,
    audit,
    auth,
    escalations,
    facilities,
    imports,
    keep_aparts,
    operations,
    pairings,
    participants,
    referrals,
    reports,
    rosters,
    session,
    stream,
    support_sessions,
    training,
    webhooks,
)
from app.security import invalidation
from app.security.browser_session import CookieSessionMiddleware
from app.security.notes import NoteCipher
from app.security.principal import PRINCIPALS, get_principal
from app.security.tokens import KeyRing
from app.services.auth import Throttle
from app.services.idempotency import Liveness
from app.services.import_runner import ImportRunner
from app.services.stream import Streams
from app.webapp import install_webapp

API_VERSION = "1.10.0"
DESCRIPTION = """The API that runs peer support programs in prisons and jails.

Authenticate at `POST /v1/auth/token` (OAuth2: `password`, `client_credentials`,
`refresh_token`) and send `Authorization: Bearer <access_token>`. Each operation lists the
scopes it needs. Errors are `application/problem+json` with a stable `code`. Lists are
cursor-paginated (`limit`, `cursor` -> `next_cursor`). Single resources carry an `ETag`;
send it back in `If-Match` to avoid lost updates (412 on mismatch).

Authentication comes first: a request without a valid token to an operation that needs one is
a 401, whatever its body. Then the request's form: bodies are JSON (415 otherwise; imports take
CSV or JSON lines) of at most 1 MB (413); a NUL character anywhere (path, query, body) or JSON
nested deeper than 32 levels is a 422 `validation_error`.

External ids (`{source, value}`) are unique within one facility's records of one network, the
walls every caller is scoped by: an id held outside the caller's scope is unused for that
caller, and `PUT /v1/participants/by-external-id/...` creates a record of the caller's own with
it (201), exactly as for an id nobody holds. A caller of several facilities may so see two
records with one id: merge them.
"""

def _operation_id(route: APIRoute) -> str:
    return route.name

def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    engine = make_async_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        PRINCIPALS.ttl = settings.principal_cache_seconds
        heap.settle()
        streams: Streams = app.state.streams
        async with streams.running(), invalidation.running(settings, [streams.channel]), \
                liveness.running(), \
                worker.embedded(app.state.sessionmaker, settings), \
                ImportRunner.running(app.state.sessionmaker, settings) as import_runner:
            app.state.import_runner = import_runner  # given to routes by deps.ImportRunnerDep
            yield
        await engine.dispose()
        if read_engine is not engine:
            await read_engine.dispose()

    app = FastAPI(
        title="peerlink", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_url="/openapi.json", docs_url=None, redoc_url=None,  # app/apidocs.py
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    read_engine = app.state.read_engine = make_read_engine(settings, engine)
    app.state.read_sessionmaker = make_sessionmaker(read_engine)
    app.state.keyring = KeyRing.from_settings(settings)
    app.state.throttle = Throttle(settings)
    app.state.note_cipher = NoteCipher.from_settings(settings)
    app.state.streams = Streams(settings=settings, keyring=app.state.keyring, engine=engine,
                                sessionmaker=app.state.sessionmaker,
                                read_sessionmaker=app.state.read_sessionmaker)
    # This process's instance id for Idempotency-Key claims, alive while the lifespan runs.
    liveness = app.state.liveness = Liveness(settings)

    # Routes are matched in order: the resources integrators hit hardest come first.
    for router in (participants.router, pairings.router, keep_aparts.router, facilities.router,
                   auth.router, operations.router, accounts.users, accounts.clients, audit.router,
                   training.courses, training.enrollments, training.people, training.certs,
                   support_sessions.router, support_sessions.topics, support_sessions.ledger,
                   escalations.router, webhooks.endpoints, webhooks.deliveries, webhooks.feed,
                   imports.router, rosters.board, rosters.shifts, rosters.overrides,
                   rosters.pages, stream.router, referrals.router, reports.router,
                   session.router):
        app.include_router(router)
    app.add_api_route("/metrics", metrics_response, include_in_schema=False)
    install_docs(app)  # /docs and /redoc, with their assets served from here
    install_webapp(app)  # the reference web app at /app/ (app/webapp.py)
    # What middleware and handlers treat apart, from the routes' own marks (app/routemarks.py).
    routes = api_routes(app.routes)
    install_handlers(app, session_maker=app.state.sessionmaker,
                     audits_own_denials=frozenset(r.name for r in routes
                                                  if declares(r, audits_own_denials)))

    app.add_middleware(SessionMiddleware, sessionmaker=app.state.sessionmaker,
                       read_sessionmaker=app.state.read_sessionmaker)
    app.add_middleware(IdempotencyMiddleware, session_maker=app.state.sessionmaker,
                       settings=settings, cipher=app.state.note_cipher,
                       skip=marked(routes, no_idempotency_key),
                       rebuilds=Rebuild.of_routes(routes), liveness=liveness)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       import_max_bytes=settings.import_max_bytes,
                       form_routes=marked(routes, form_body),
                       import_routes=marked(routes, import_file),
                       authenticated=route_set(routes, lambda r: depends_on(r, AUTHENTICATORS)))
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, settings=settings,
                           crisis_actions=crisis_actions(routes))
    # The browser session's cookie becomes a bearer token here (CSRF checked), before the rate
    # limits and idempotency keys tell callers apart.
    app.add_middleware(CookieSessionMiddleware)
    # Crisis first: routine requests queue here, crisis routes go straight through.
    app.add_middleware(AdmissionMiddleware, limit=settings.admission_routine_limit,
                       crisis=marked(routes, crisis_workflow),
                       queue_seconds=settings.admission_queue_seconds)
    app.add_middleware(ObservabilityMiddleware)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    # Outermost: the client address everything else sees (X-Forwarded-For from trusted proxies).
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies)

    if settings.cors_origins:
        _cors_outermost(app, settings.cors_origins)

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app

# What verifies a caller: the bearer token, or for the live stream a ticket or the token.
AUTHENTICATORS = (get_principal, stream.stream_caller)

CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "If-Match", "Idempotency-Key",
                      "X-Request-ID", "Last-Event-ID"]
CORS_EXPOSE_HEADERS = ["ETag", "Location", "Retry-After", "X-Request-ID", "RateLimit",
                       "RateLimit-Policy", "Idempotent-Replayed", "Idempotency-Key-Expires"]


def _cors_outermost(app: FastAPI, origins: list[str]) -> None:
    """CORS on every answer: wrapped around the whole stack, Starlette's ServerErrorMiddleware
    (which answers 500) and every middleware that answers by itself (429, 413, 503) included;
    `add_middleware` would put it inside ServerErrorMiddleware, and a browser would see a
    server failure as an opaque network error. Credentials are never allowed cross-origin:
    cross-origin callers send `Authorization: Bearer`; the session cookie is same-origin only."""
    build = app.build_middleware_stack

    def build_with_cors() -> Any:
        return CORSMiddleware(build(), allow_origins=origins, allow_credentials=False,
                              allow_methods=["*"], allow_headers=CORS_ALLOW_HEADERS,
                              expose_headers=CORS_EXPOSE_HEADERS)

    app.build_middleware_stack = build_with_cors  # type: ignore[method-assign]

_IDEMPOTENCY_DOC = (
    "A unique key per logical operation (a UUID is a good choice). A retry with the "
    "same key and body returns the stored response (`Idempotent-Replayed: true`); the same key "
    "with another body is a 422 `idempotency_key_reused`; while the first request is in flight, "
    "409 `idempotency_key_in_flight` (with `Retry-After`). If the server running the first "
    "request stopped before answering, a retry runs it when nothing was applied; when it was, "
    "raising an escalation and creating a participant answer with the record created, as they "
    "would have (`Idempotent-Replayed: true`), and other operations answer 409 "
    "`idempotency_outcome_unknown`. Keys are kept 24 hours per caller "
    "(`Idempotency-Key-Expires` on the response).")


def _problem(description: str) -> dict[str, Any]:
    """A documented problem+json answer (what middleware answers, added to each operation)."""
    return {"description": description,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def crisis_actions(routes: list[APIRoute]) -> RouteSet:
    """The crisis workflow's writes: never rate limited for a signed-in caller."""
    return marked(routes, crisis_workflow, methods=CRISIS_METHODS)


def _document_idempotency(schema: dict[str, Any], required: set[str], skip: RouteSet) -> None:
    """Every POST honours Idempotency-Key (app/idempotency.py): say so on each of them, with
    the 409 and 422 it can answer."""
    for path, item in schema.get("paths", {}).items():
        op = item.get("post")
        if op is None or ("POST", path) in skip.templates:
            continue
        params = [p for p in op.get("parameters", [])
                  if not (p.get("in") == "header" and p.get("name") == "Idempotency-Key")]
        needed = op.get("operationId") in required
        params.append({"name": "Idempotency-Key", "in": "header", "required": needed,
                       "description": ("Required (400 `idempotency_key_missing` without it). "
                                       if needed else "Optional. ") + _IDEMPOTENCY_DOC,
                       "schema": {"type": "string", "minLength": 1,
                                  "maxLength": KEY_MAX_LENGTH}})
        op["parameters"] = params
        responses = op.setdefault("responses", {})
        extra = [("400", "The Idempotency-Key header is missing")] if needed else []
        for status_, text in (*extra,("409", "Conflicts with the current state, or the request with "
                                      "this Idempotency-Key is still in flight"),
                              ("422", "Invalid input or a broken rule (see code and errors)")):
            responses.setdefault(status_, _problem(text))


def _document_rate_limits(schema: dict[str, Any], crisis: RouteSet) -> None:
    """Every operation but health and the crisis workflow's writes may answer 429
    (app/ratelimit.py)."""
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if path in EXEMPT_PATHS or (method.upper(), path) in crisis.templates:
                continue
            op.setdefault("responses", {}).setdefault("429", _problem(
                "Too many requests: the caller's budget is spent (see Retry-After, RateLimit and "
                "RateLimit-Policy)"))


def _document_admission(schema: dict[str, Any], crisis: RouteSet) -> None:
    """Every operation but health and the crisis workflow's routes may answer 503 when its
    turn does not come within the admission queue's time (app/admission.py)."""
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if path in EXEMPT_PATHS or (method.upper(), path) in crisis.templates:
                continue
            op.setdefault("responses", {}).setdefault("503", _problem(
                "Overloaded: this routine request waited for its turn longer than the server "
                "allows (code `overloaded`; nothing was done; see Retry-After)"))


def _document_body_limits(schema: dict[str, Any]) -> None:
    """Every operation that takes a body may answer 413 (too large) and 415 (not JSON)
    (app/middleware.BodyLimitMiddleware)."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if "requestBody" not in op:
                continue
            for status_, text in (("413", "Request body too large"),
                                  ("415", "Unsupported media type")):
                op.setdefault("responses", {}).setdefault(status_, _problem(text))


def _document_public(schema: dict[str, Any]) -> None:
    """An operation that requires no token says so (`security: []`), so that every operation
    states its security explicitly."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            op.setdefault("security", [])


def _document_codes(schema: dict[str, Any], routes: list[APIRoute],
                    components: dict[str, Any]) -> None:
    """The registry of problem codes (app/codes.py) as the ProblemCode enum, and on each
    operation the codes it can answer (`x-problem-codes`)."""
    components["ProblemCode"] = codes.schema()
    components["Problem"]["properties"]["code"]["description"] = (
        "A stable machine code: one of ProblemCode (the operation's `x-problem-codes` lists "
        "those it can answer).")
    endpoints = {r.name: r.endpoint for r in routes}
    for item in schema.get("paths", {}).values():
        for op in item.values():
            endpoint = endpoints.get(op.get("operationId", ""))
            if endpoint is None:
                continue
            key = next((p for p in op.get("parameters", [])
                        if p.get("in") == "header" and p.get("name") == "Idempotency-Key"), None)
            op["x-problem-codes"] = codes.operation_codes(
                endpoint.__module__, endpoint.__name__, list(op.get("responses", {})),
                None if key is None else "required" if key.get("required") else "optional")


_WEBHOOK_HEADERS = (
    ("webhook-id", "The event's id: the same on every retry (deduplicate on it)."),
    ("webhook-timestamp", "Seconds since the epoch when this attempt was signed."),
    ("webhook-signature", "`v1,<base64 HMAC-SHA256>` of `id.timestamp.body` with the "
                          "endpoint's secret, space-separated while a rotated secret overlaps "
                          "(Standard Webhooks 1.0)."),
)


def _document_events(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """The event registry (app/event_types.py) as the EventType enum, and each event type's
    delivery as an OpenAPI 3.1 webhook: what an endpoint subscribed to it receives."""
    components["EventType"] = {
        "type": "string", "title": "EventType",
        "description": "Every event type. New types may be added in a minor version: ignore "
                       "one you do not know.",
        "enum": list(EVENTS), "x-enum-descriptions": list(EVENTS.values())}
    components["WebhookEventData"] = {
        "type": "object", "title": "WebhookEventData", "additionalProperties": True,
        "description": "Ids only: fetch the record at `url` with your own token.",
        "required": ["id", "entity_type", "facility_id", "network"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "The record's id"},
            "entity_type": {"type": "string", "description": "The record's kind"},
            "facility_id": {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "null"}]},
            "network": {"anyOf": [{"$ref": "#/components/schemas/Network"}, {"type": "null"}]}}}
    headers = [{"name": name, "in": "header", "required": True, "description": text,
                "schema": {"type": "string"}} for name, text in _WEBHOOK_HEADERS]
    schema["webhooks"] = {event: {"post": {
        "tags": ["webhooks"], "operationId": "webhook_" + event.replace(".", "_"),
        "summary": event, "description": text, "parameters": headers,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "allOf": [{"$ref": "#/components/schemas/EventRead"}, {
                "type": "object", "required": ["type", "data"],
                "properties": {"type": {"const": event},
                               "data": {"$ref": "#/components/schemas/WebhookEventData"}}}]}}}},
        "responses": {"2XX": {"description": "Received; any other answer is retried with "
                                             "backoff for about three days"},
                      "410": {"description": "Gone: the endpoint is disabled"}},
    }} for event, text in EVENTS.items()}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes, openapi_version="3.1.0")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["FieldError"] = FieldError.model_json_schema()
    components["OAuthProblem"] = OAuthProblem.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components["OAuthProblem"].pop("$defs", None)
    # Drop FastAPI's default 422 (HTTPValidationError): ours is problem+json, declared per route.
    for path in schema.get("paths", {}).values():
        for op in path.values():
            resp = op.get("responses", {}).get("422")
            if resp and "application/json" in resp.get("content", {}):
                resp["content"].pop("application/json")
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    routes = api_routes(app.routes)
    required = {r.name for r in routes if requires_idempotency_key(r.dependant)}
    _document_idempotency(schema, required, marked(routes, no_idempotency_key))
    _document_rate_limits(schema, crisis_actions(routes))
    _document_admission(schema, marked(routes, crisis_workflow))
    _document_body_limits(schema)
    _document_public(schema)
    _document_codes(schema, routes, components)
    _document_events(schema, components)
    app.openapi_schema = schema
    return schema

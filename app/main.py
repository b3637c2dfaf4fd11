"""create_app(): settings, database, keys, middleware, routers, error handlers, contract."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware

from app import worker
from app.config import Settings, get_settings
from app.db import SessionMiddleware, make_async_engine, make_read_engine, make_sessionmaker
from app.errors import FieldError, Problem, install_error_handlers
from app.logging import configure_logging
from app.middleware import BodyLimitMiddleware, ObservabilityMiddleware, metrics_response
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
    support_sessions,
    training,
)
from app.security import invalidation
from app.security.notes import NoteCipher
from app.security.principal import PRINCIPALS
from app.security.tokens import KeyRing
from app.services.auth import Throttle

API_VERSION = "1.5.0"
DESCRIPTION = """The API that runs peer support programs in prisons and jails.

Authenticate at `POST /v1/auth/token` (OAuth2: `password`, `client_credentials`,
`refresh_token`) and send `Authorization: Bearer <access_token>`. Each operation lists the
scopes it needs. Errors are `application/problem+json` with a stable `code`. Lists are
cursor-paginated (`limit`, `cursor` -> `next_cursor`). Single resources carry an `ETag`;
send it back in `If-Match` to avoid lost updates (412 on mismatch).
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
        # What start-up built lives as long as the process: keep it out of every collection.
        gc.collect()
        gc.freeze()
        async with invalidation.running(settings), \
                worker.embedded(app.state.sessionmaker, settings):
            yield
        await engine.dispose()
        if read_engine is not engine:
            await read_engine.dispose()

    app = FastAPI(
        title="peerlink", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    read_engine = app.state.read_engine = make_read_engine(settings, engine)
    app.state.read_sessionmaker = make_sessionmaker(read_engine)
    app.state.keyring = KeyRing.from_settings(settings)
    app.state.throttle = Throttle(settings)
    app.state.note_cipher = NoteCipher.from_settings(settings)

    # Routes are matched in order: the resources integrators hit hardest come first.
    for router in (participants.router, pairings.router, keep_aparts.router, facilities.router,
                   auth.router, operations.router, accounts.users, accounts.clients, audit.router,
                   training.courses, training.enrollments, training.people, training.certs,
                   support_sessions.router, support_sessions.topics, support_sessions.ledger,
                   escalations.router, imports.router):
        app.include_router(router)
    install_error_handlers(app)

    app.add_api_route("/metrics", metrics_response, include_in_schema=False)
    app.add_middleware(SessionMiddleware, sessionmaker=app.state.sessionmaker,
                       read_sessionmaker=app.state.read_sessionmaker)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       import_max_bytes=settings.import_max_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_credentials=False, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "If-Match",
                                          "Idempotency-Key", "X-Request-ID"],
                           expose_headers=["ETag", "Location", "Retry-After", "X-Request-ID"])
    app.add_middleware(ObservabilityMiddleware)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app

def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes, openapi_version="3.1.0")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["FieldError"] = FieldError.model_json_schema()
    # Drop FastAPI's default 422 (HTTPValidationError): ours is problem+json, declared per route.
    for path in schema.get("paths", {}).values():
        for op in path.values():
            resp = op.get("responses", {}).get("422")
            if resp and "application/json" in resp.get("content", {}):
                resp["content"].pop("application/json")
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    app.openapi_schema = schema
    return schema

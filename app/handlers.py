"""The exception handlers the app factory installs: every error answered as problem+json
(rendered by app/errors.py), and every denial (401, 403, a 404 on a scoped record, a refusal
that reaches outside the caller's scope) added to the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import end_request_transaction
from app.errors import (
    DomainError,
    domain_problem,
    http_problem,
    internal_problem,
    is_denial,
    validation_problem,
)
from app.services import audit

log = logging.getLogger("peerlink.errors")


def install_handlers(app: FastAPI, *, session_maker: async_sessionmaker[AsyncSession],
                     audits_own_denials: frozenset[str]) -> None:
    """`session_maker` writes a denial's audit row in a transaction of its own;
    `audits_own_denials`: the names of the routes that audit their own refusals (the token
    endpoint, with the account concerned)."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        await end_request_transaction(request)
        if is_denial(exc) and not exc.audited and _route_name(request) not in audits_own_denials:
            await _audit_denial(session_maker, request, exc)
        return domain_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:  # Starlette names only the first route that matched
            exc.headers = {**(exc.headers or {}), "Allow": allowed_methods(request)}
        return http_problem(exc)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        await end_request_transaction(request)
        log.exception("unhandled error", extra={"path_template": _template(request)})
        return internal_problem()


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers (RFC 9110: a 405 lists all of them), from
    every route whose template matches it."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in _flat(request.app.routes):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes, with those of included routers (FastAPI keeps them nested)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        yield from (_flat(nested.routes) if nested is not None else (route,))


def _template(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


def _route_name(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "name", None)


async def _audit_denial(maker: async_sessionmaker[AsyncSession], request: Request,
                        exc: DomainError) -> None:
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path if exc.status != 404 else "unmatched")
    entity_id = next((str(v) for k, v in (request.path_params or {}).items()
                      if k.endswith("id")), None)
    try:
        await audit.record_denial(
            maker, principal=getattr(request.state, "principal", None), status=exc.status,
            action=f"{request.method} {template}", entity_type=getattr(route, "name", None),
            entity_id=entity_id, path_params=dict(request.path_params or {}))
    except Exception:  # auditing a denial must never turn it into a 500
        log.exception("could not audit a denied request")

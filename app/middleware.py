"""Pure-ASGI middleware: body size cap (413), JSON-only bodies (415), access log + metrics."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response
from app.models.import_job import CONTENT_TYPES
from app.routemarks import RouteSet

access_log = logging.getLogger("peerlink.access")

_JSON_TYPES = ("application/json", "application/merge-patch+json")
_IMPORT_TYPES = tuple(CONTENT_TYPES)


class BodyLimitMiddleware:
    """Bodies are JSON, capped at `max_bytes`; but the routes marked FormBody take forms, and
    those marked ImportFile take files (CSV / JSON lines) with a cap of their own."""

    def __init__(self, app: ASGIApp, max_bytes: int, import_max_bytes: int | None = None, *,
                 form_routes: RouteSet, import_routes: RouteSet) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes or max_bytes
        self.form_routes = form_routes
        self.import_routes = import_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        method, path = scope["method"], scope["path"]
        is_import = self.import_routes.matches(method, path)
        cap = self.import_max_bytes if is_import else self.max_bytes
        if length is not None and (not length.isdigit() or int(length) > cap):
            await problem_response(413, "payload_too_large", "Request body too large",
                                   f"Bodies are limited to {cap} bytes.")(scope, receive, send)
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
        form_path = self.form_routes.matches(method, path)
        if is_import:
            if has_body and ctype not in _IMPORT_TYPES:
                await problem_response(415, "unsupported_media_type", "Unsupported media type",
                                       "Send imports as text/csv or application/x-ndjson."
                                       )(scope, receive, send)
                return
        elif has_body and not form_path and ctype not in _JSON_TYPES:
            await problem_response(415, "unsupported_media_type", "Unsupported media type",
                                   "Send request bodies as application/json.")(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await problem_response(413, "payload_too_large", "Request body too large",
                                   f"Bodies are limited to {cap} bytes.")(scope, receive, send)


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing lets it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("http_request_duration_seconds", "HTTP request duration", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
_UNMEASURED = {"/metrics", "/livez", "/readyz"}


class ObservabilityMiddleware:
    """One pass per request for the access log line and the Prometheus metrics, both labelled
    by the route template (never the raw path, which carries ids)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - start
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if template not in _UNMEASURED:
                REQUESTS.labels(scope["method"], template, str(status)).inc()
                LATENCY.labels(scope["method"], template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={
                    "method": scope["method"], "route": template, "status": status,
                    "duration_ms": round(elapsed * 1000, 2)})


def metrics_response() -> Response:
    """Prometheus exposition; several worker processes share PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

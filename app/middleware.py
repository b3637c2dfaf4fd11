"""Pure-ASGI middleware: body size cap (413), JSON-only bodies (415), no NUL and no JSON too
deep (422), access log + metrics."""

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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import inputguard
from app.errors import RuleViolation, problem_response
from app.models.import_job import CONTENT_TYPES
from app.routemarks import RouteSet
from app.security.principal import bearer_principal

access_log = logging.getLogger("peerlink.access")

_JSON_TYPES = ("application/json", "application/merge-patch+json")
_IMPORT_TYPES = tuple(CONTENT_TYPES)


class BodyLimitMiddleware:
    """Bodies are JSON, capped at `max_bytes`; but the routes marked FormBody take forms, and
    those marked ImportFile take files (CSV / JSON lines) with a cap of their own. No NUL
    character and no JSON nested too deep, in the path, the query or the body (app/inputguard).

    Authentication comes first: a request refused here for its form (413, 415, 422) on a route
    that needs a token, from a caller without a valid one, goes on to the route with an empty
    body, and the route answers 401 as it would any anonymous request (`authenticated`: the
    routes that verify a token)."""

    def __init__(self, app: ASGIApp, max_bytes: int, import_max_bytes: int | None = None, *,
                 form_routes: RouteSet, import_routes: RouteSet,
                 authenticated: RouteSet | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes or max_bytes
        self.form_routes = form_routes
        self.import_routes = import_routes
        self.authenticated = authenticated or RouteSet({}, frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        errors = inputguard.url_errors(path, scope.get("query_string", b""))
        if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
            if errors:
                await self._refuse(scope, receive, send, _invalid(errors))
                return
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        is_import = self.import_routes.matches(method, path)
        cap = self.import_max_bytes if is_import else self.max_bytes
        if length is not None and (not length.isdigit() or int(length) > cap):
            await self._refuse(scope, receive, send, _too_large(cap))
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
        form_path = self.form_routes.matches(method, path)
        if is_import:
            if has_body and ctype not in _IMPORT_TYPES:
                await self._refuse(scope, receive, send, problem_response(
                    415, "unsupported_media_type", "Unsupported media type",
                    "Send imports as text/csv or application/x-ndjson."))
                return
        elif has_body and not form_path and ctype not in _JSON_TYPES:
            await self._refuse(scope, receive, send, problem_response(
                415, "unsupported_media_type", "Unsupported media type",
                "Send request bodies as application/json."))
            return
        if errors:
            await self._refuse(scope, receive, send, _invalid(errors))
            return
        if is_import:
            await self._stream_file(scope, receive, send, cap)
            return
        body, over = await _read_body(receive, cap)
        if over:
            await self._refuse(scope, receive, send, _too_large(cap))
            return
        errors = inputguard.form_errors(body) if form_path else inputguard.json_errors(body)
        if errors:
            await self._refuse(scope, receive, send, _invalid(errors))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send,
                      problem: Response) -> None:
        if self.authenticated.matches(scope["method"], scope["path"]) \
                and await bearer_principal(scope) is None:
            await self.app(scope, _replay(b"", receive), send)  # the route answers 401
            return
        await problem(scope, receive, send)

    async def _stream_file(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        """An import file goes on as it arrives, counted against the cap and searched for a
        NUL (a CSV can carry one raw, JSON lines escaped)."""
        received, tail = 0, b""

        async def limited() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > cap:
                    raise _TooLarge()
                if inputguard.chunk_has_nul(tail, chunk):
                    raise _HasNul()
                tail = (tail + chunk)[-5:]
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(cap)(scope, receive, send)
        except _HasNul:  # found while the Idempotency-Key fingerprints the file
            await _invalid(inputguard.nul_in("body"))(scope, receive, send)


async def _read_body(receive: Receive, cap: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, True) once it passes `cap`."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > cap:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _too_large(cap: int) -> Response:
    return problem_response(413, "payload_too_large", "Request body too large",
                            f"Bodies are limited to {cap} bytes.")


def _invalid(errors: inputguard.FieldErrors) -> Response:
    return problem_response(422, "validation_error", "Invalid request",
                            "The request has invalid fields; see errors.", errors=errors)


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing lets it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


class _HasNul(RuleViolation):
    """Raised while the import route reads its file: answered by the domain error handler."""

    title = "Invalid request"

    def __init__(self) -> None:
        super().__init__("The request has invalid fields; see errors.", code="validation_error",
                         errors=inputguard.nul_in("body"))


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


async def metrics_response(request: Request) -> Response:
    """Prometheus exposition. The process's metrics (summed over every process sharing
    PROMETHEUS_MULTIPROC_DIR when it is set), then the database's figures, computed at scrape
    time by a few bounded queries (so they are counted once, whichever process is scraped)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    try:
        body += await _database_metrics(request.app.state.engine)
    except Exception:  # the database is down: /readyz says so; the process metrics still serve
        logging.getLogger("peerlink.metrics").warning("database metrics unavailable",
                                                      exc_info=True)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _database_metrics(engine: Any) -> bytes:
    from app.services.liveness import backlog, last_successes

    async with engine.connect() as conn:
        successes = await last_successes(conn)
        figures = await backlog(conn)
    # Metric families, not Gauge objects: in multiprocess mode a Gauge would write its value to
    # the shared directory and be summed with every other process's.
    last = GaugeMetricFamily("peerlink_job_last_success_timestamp_seconds",
                             "When any worker last finished a round of the job (unix time)",
                             labels=["job"])
    for job, at in sorted(successes.items()):
        if at is not None:
            last.add_metric([job], at.timestamp())
    families = [
        last,
        GaugeMetricFamily("peerlink_webhook_deliveries_pending",
                          "Webhook deliveries waiting to be sent", value=figures.webhook_pending),
        GaugeMetricFamily("peerlink_webhook_oldest_pending_age_seconds",
                          "Age of the oldest pending webhook delivery (0: none)",
                          value=figures.webhook_oldest_pending_age_seconds),
        GaugeMetricFamily("peerlink_import_jobs_open", "Import jobs queued or running",
                          value=figures.import_jobs_open)]

    class _Scraped(Collector):
        def collect(self) -> Any:
            return iter(families)

    registry = CollectorRegistry()
    registry.register(_Scraped())
    return generate_latest(registry)

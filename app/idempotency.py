"""IdempotencyMiddleware: `Idempotency-Key` on every POST (see app/services/idempotency.py).

Sits inside the body limit (so the body it fingerprints is already capped) and outside the
request's database session. Requests without the header, without a valid bearer token, or to
the token endpoints pass straight through: the route answers them as usual. A claim taken here
is put on the request (`request_claim`); deps.SessionDep binds it to the request's session,
where Writer.commit marks it committed.

A retry that takes over a key whose attempt committed and died before its answer was stored
(services/idempotency.py) does not run the route: the route's `rebuilt_by` answer reads the
record the attempt created, with the caller's current rights, and that answer is stored and
replayed (`Idempotent-Replayed: true`, the route's status code, Location and ETag).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import DomainError, problem_response
from app.routemarks import RouteSet, rebuilds_of
from app.security.notes import NoteCipher
from app.security.principal import Principal, bearer_principal
from app.services import idempotency as svc

log = logging.getLogger("peerlink.idempotency")

_KEEP_HEADERS = {b"content-type", b"location", b"etag", b"retry-after"}
KEY_MAX_LENGTH = 200  # the contract's maxLength of the Idempotency-Key header (main.py)


def key_problem(length: int) -> Response:
    """422 `validation_error` for an Idempotency-Key outside the contract's 1-200 characters,
    in the shape FastAPI gives a header that breaks its bounds."""
    too_long = length > KEY_MAX_LENGTH
    return problem_response(
        422, "validation_error", "Invalid request", "The request has invalid fields; see errors.",
        errors=[{"field": "header.Idempotency-Key",
                 "message": (f"String should have at most {KEY_MAX_LENGTH} characters"
                             if too_long else "String should have at least 1 character"),
                 "type": "string_too_long" if too_long else "string_too_short"}])


def fingerprint(scope: Scope, body: bytes, content_type: str) -> str:
    """The request's identity: method, path, query and body (JSON compared by content, so a
    retry that re-serialises the same document matches)."""
    canonical = body
    if content_type.startswith("application/") and "json" in content_type and body:
        try:
            canonical = json.dumps(json.loads(body), sort_keys=True,
                                   separators=(",", ":")).encode()
        except ValueError:
            pass
    h = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""),
                 canonical):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


_REQUEST_CLAIM = "idempotency_claim"  # the key in the request's scope["state"]


def request_claim(scope: Scope) -> svc.Claim | None:
    """The claim this middleware took for the request, if any."""
    return scope.get("state", {}).get(_REQUEST_CLAIM)  # type: ignore[no-any-return]


def _expiry(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Rebuild:
    """How a create route answers again from the record it created (routemarks.rebuilt_by):
    its answer function, serialised by the route's own response model and status code."""

    pattern: re.Pattern[str]
    entity_type: str
    answer: Callable[..., Awaitable[Any]]
    status_code: int
    adapter: TypeAdapter[Any] | None
    response_class: type[Response]

    @classmethod
    def of_routes(cls, routes: Iterable[APIRoute]) -> tuple[Rebuild, ...]:
        found = []
        for route in routes:
            mark = rebuilds_of(route)
            if mark is None or "POST" not in (route.methods or ()):
                continue
            response_class = route.response_class
            if isinstance(response_class, DefaultPlaceholder):
                response_class = response_class.value
            found.append(cls(route.path_regex, mark[0], mark[1], route.status_code or 200,
                             TypeAdapter(route.response_model) if route.response_model else None,
                             response_class))
        return tuple(found)

    def render(self, content: Any) -> Response:
        if self.adapter is not None:
            content = self.adapter.dump_python(self.adapter.validate_python(content),
                                               mode="json", by_alias=True)
        return self.response_class(content, status_code=self.status_code)


class IdempotencyMiddleware:
    """`skip`: the routes marked NoIdempotencyKey (the token endpoints). `rebuilds`: the create
    routes that can answer again from the record they created. `liveness`: this process's
    instance id and the judge of other holders' (services.idempotency.Liveness)."""

    def __init__(self, app: ASGIApp, *, session_maker: async_sessionmaker[AsyncSession],
                 settings: Settings, cipher: NoteCipher, skip: RouteSet,
                 rebuilds: tuple[Rebuild, ...] = (),
                 liveness: svc.Liveness | None = None) -> None:
        self.app = app
        self.maker = session_maker
        self.settings = settings
        self.cipher = cipher
        self.skip = skip
        self.rebuilds = rebuilds
        self.liveness = liveness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or self.skip.matches(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key_raw = headers.get(b"idempotency-key")
        # The caller as they stand now: a revoked token or a deactivated account gets no
        # stored answer (it may hold a secret shown once); the route answers it instead.
        principal = await bearer_principal(scope)
        caller = principal.actor if principal else None
        if key_raw is None or caller is None:
            await self.app(scope, receive, send)  # the route requires the key, or 401 first
            return
        if not (0 < len(key_raw) <= KEY_MAX_LENGTH):
            # The contract's bounds on the header, refused before any other check can answer
            # (and before anything runs: a key we cannot keep would make a retry run twice).
            await key_problem(len(key_raw))(scope, receive, send)
            return
        key = key_raw.decode("latin-1")

        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        rebuild = next((r for r in self.rebuilds if r.pattern.match(scope["path"])), None)
        outcome = await svc.claim(self.maker, self.settings, caller=caller, key=key,
                                  fingerprint=fingerprint(scope, body, ctype), cipher=self.cipher,
                                  liveness=self.liveness,
                                  rebuilds=rebuild.entity_type if rebuild else None)
        if isinstance(outcome, svc.Refused):
            extra = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
            title = "Conflict" if outcome.status == 409 else "Request breaks a rule"
            await problem_response(outcome.status, outcome.code, title, outcome.detail,
                                   headers=extra)(scope, receive, send)
            return
        if isinstance(outcome, svc.Stored):
            await self._replay(outcome, send)
            return
        if outcome.created is not None and rebuild is not None and principal is not None:
            await self._answer_again(outcome, rebuild, principal, scope, receive, send)
            return

        sent = False

        async def replay_body() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # The response is held back until it is stored: once the client has it, a retry with
        # the same key finds the stored answer (never a 409 for a request already done).
        status, kept, out, secret = 500, [], [], False
        start: Message | None = None
        finished = False

        async def capture(message: Message) -> None:
            nonlocal status, kept, start, finished, secret
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [[k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in message.get("headers", []) if k.lower() in _KEEP_HEADERS]
                secret = any(k.lower() == b"cache-control" and b"no-store" in v.lower()
                             for k, v in message.get("headers", []))
                start = dict(message)
                start["headers"] = [*message.get("headers", []),
                                    (b"idempotency-key-expires",
                                     _expiry(outcome.expires_at).encode())]
                return
            if message["type"] == "http.response.body":
                out.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                finished = True
                await svc.finish(self.maker, outcome, status=status, headers=kept,
                                 body=b"".join(out), cipher=self.cipher, keep_body=not secret)
                assert start is not None
                await send(start)
                await send({"type": "http.response.body", "body": b"".join(out)})
                return
            await send(message)

        scope.setdefault("state", {})[_REQUEST_CLAIM] = outcome
        try:
            await self.app(scope, replay_body, capture)
        finally:
            if not finished:  # the app failed before answering
                await svc.release(self.maker, outcome)

    async def _answer_again(self, claim: svc.Claim, rebuild: Rebuild, principal: Principal,
                            scope: Scope, receive: Receive, send: Send) -> None:
        """The first attempt committed and died unanswered: answer from what it created, as
        the route would have, store that answer and replay it."""
        assert claim.created is not None
        headers_out = Response()
        try:
            async with self.maker() as session:
                content = await rebuild.answer(session, principal, claim.created[1], headers_out)
            rendered = rebuild.render(content)
        except Exception as exc:  # the record is out of the caller's sight, or worse
            if not isinstance(exc, DomainError):
                log.exception("rebuilding an idempotent answer failed")
            await svc.give_back(self.maker, claim)
            await problem_response(
                409, "idempotency_outcome_unknown", "Conflict",
                "The first request with this Idempotency-Key was applied but its response was "
                "lost; look the resource up instead of retrying.")(scope, receive, send)
            return
        kept = [[k, v] for k, v in headers_out.headers.items()
                if k.encode("latin-1") in _KEEP_HEADERS and k != "content-type"]
        kept.insert(0, ["content-type", rendered.headers["content-type"]])
        await svc.finish(self.maker, claim, status=rendered.status_code, headers=kept,
                         body=rendered.body, cipher=self.cipher)
        await self._replay(svc.Stored(rendered.status_code, kept, rendered.body,
                                      claim.expires_at), send)

    @staticmethod
    async def _replay(stored: svc.Stored, send: Send) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        headers += [(b"content-length", str(len(stored.body)).encode()),
                    (b"idempotent-replayed", b"true"),
                    (b"idempotency-key-expires", _expiry(stored.expires_at).encode())]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body})

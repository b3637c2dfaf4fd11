"""IdempotencyMiddleware: `Idempotency-Key` on every POST (see app/services/idempotency.py).

Sits inside the body limit (so the body it fingerprints is already capped) and outside the
request's database session. Requests without the header, without a valid bearer token, or to
the token endpoints pass straight through: the route answers them as usual. A claim taken here
is put on the request (`request_claim`); deps.SessionDep binds it to the request's session,
where Writer.commit marks it committed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import problem_response
from app.routemarks import RouteSet
from app.security.notes import NoteCipher
from app.security.principal import bearer_principal
from app.services import idempotency as svc

_KEEP_HEADERS = {b"content-type", b"location", b"etag", b"retry-after"}


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


class IdempotencyMiddleware:
    """`skip`: the routes marked NoIdempotencyKey (the token endpoints)."""

    def __init__(self, app: ASGIApp, *, session_maker: async_sessionmaker[AsyncSession],
                 settings: Settings, cipher: NoteCipher, skip: RouteSet) -> None:
        self.app = app
        self.maker = session_maker
        self.settings = settings
        self.cipher = cipher
        self.skip = skip

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
        if key_raw is None or caller is None or not (0 < len(key_raw) <= 200):
            await self.app(scope, receive, send)  # the route validates (or requires) the key
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
        outcome = await svc.claim(self.maker, self.settings, caller=caller, key=key,
                                  fingerprint=fingerprint(scope, body, ctype), cipher=self.cipher)
        if isinstance(outcome, svc.Refused):
            extra = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
            title = "Conflict" if outcome.status == 409 else "Request breaks a rule"
            await problem_response(outcome.status, outcome.code, title, outcome.detail,
                                   headers=extra)(scope, receive, send)
            return
        if isinstance(outcome, svc.Stored):
            await self._replay(outcome, send)
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

    @staticmethod
    async def _replay(stored: svc.Stored, send: Send) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        headers += [(b"content-length", str(len(stored.body)).encode()),
                    (b"idempotent-replayed", b"true"),
                    (b"idempotency-key-expires", _expiry(stored.expires_at).encode())]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body})

"""The client's address, decided once per request at the edge.

A request's direct peer is its client, unless that peer is one of the trusted proxies
(`PEERLINK_TRUSTED_PROXIES`): then the client is the nearest untrusted address in
`X-Forwarded-For` (and the scheme comes from `X-Forwarded-Proto`), as uvicorn's
ProxyHeadersMiddleware reads them. From any other peer those headers are ignored: anyone can
write them. Everything after this middleware (rate limits, sign-in throttling, the audit
trail) reads the one answer from `scope["client"]`, and the audit trail from CLIENT_ADDRESS.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# The current request's client address (None outside a request: the worker, the CLI).
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("peerlink_client_address", default=None)


class ClientAddressMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: list[str]) -> None:
        self.app = app
        # uvicorn types ASGI apps its own way; at run time they are the same callables.
        self.proxies: Any = (
            ProxyHeadersMiddleware(self._recorded, trusted_hosts=list(trusted_proxies))  # type: ignore[arg-type]
            if trusted_proxies else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
        elif self.proxies is not None:
            await self.proxies(scope, receive, send)
        else:
            await self._recorded(scope, receive, send)

    async def _recorded(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        token = CLIENT_ADDRESS.set(client[0] if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT_ADDRESS.reset(token)

"""The browser session (a same-origin backend-for-frontend, RFC 9700 and the OAuth 2.0 for
Browser-Based Apps BCP): a browser never holds a token its scripts can read.

`POST /v1/session` checks the password on the server and answers with three cookies:
- `__Host-peerlink-access`: the access token. HttpOnly, Secure, SameSite=Strict, Path=/.
- `__Secure-peerlink-refresh`: the refresh token. HttpOnly, Secure, SameSite=Strict, sent only
  to `/v1/session` (refresh and sign-out), rotated on every use like the refresh grant's.
- `__Host-peerlink-csrf`: a random CSRF token, readable by the page's scripts (not HttpOnly).

`CookieSessionMiddleware` turns the access cookie into `Authorization: Bearer` for the rest of
the stack (rate limits, idempotency keys, scopes and walls all see one kind of caller), but
only when the request carries no Authorization header of its own, and, for every method but
GET/HEAD/OPTIONS, only when it proves it came from our own pages:
- `X-CSRF-Token` equals the CSRF cookie (a `__Host-` cookie: no sibling subdomain can plant
  one) and its SHA-256 equals the `csrf` claim signed into the access token (bound to it);
- and `Origin`, when sent, is this server's own origin.
Otherwise 403 `csrf_failed`, and nothing runs. SameSite=Strict already keeps the cookies off
cross-site requests; the token check is the second wall. CORS never allows credentials, so
another origin can neither send the cookies with a readable answer nor read the CSRF cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import PROBLEM, TYPE_BASE

ACCESS_COOKIE = "__Host-peerlink-access"
REFRESH_COOKIE = "__Secure-peerlink-refresh"
CSRF_COOKIE = "__Host-peerlink-csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_PATH = "/v1/session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_csrf() -> tuple[str, str]:
    """A CSRF token and the SHA-256 (hex) signed into the access token."""
    token = secrets.token_urlsafe(32)
    return token, csrf_digest(token)


def csrf_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookies_of(headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                jar.setdefault(name, value)
    return jar


def _unverified_claims(token: str) -> dict[str, Any]:
    """The access token's claims, read without checking the signature: only to compare the
    CSRF binding; the token itself is verified further in like any bearer token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def own_origin(scope: Scope, headers: Headers) -> str:
    scheme = scope.get("scheme", "http")
    host = headers.get("host", "")
    return f"{scheme}://{host}"


def csrf_ok(scope: Scope, headers: Headers, jar: dict[str, str],
            access_token: str | None) -> bool:
    """The request came from our own page: Origin (when sent) is ours, the CSRF header equals
    the CSRF cookie and, when an access token is given, its signed `csrf` claim."""
    origin = headers.get("origin")
    if origin is not None and origin != own_origin(scope, headers):
        return False
    sent = headers.get(CSRF_HEADER.lower(), "")
    cookie = jar.get(CSRF_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent, cookie):
        return False
    if access_token is not None:
        bound = _unverified_claims(access_token).get("csrf")
        if not isinstance(bound, str) or not hmac.compare_digest(bound, csrf_digest(sent)):
            return False
    return True


def csrf_refusal(request_id: str | None = None) -> Response:
    body = {"type": TYPE_BASE + "csrf_failed", "title": "Forbidden", "status": 403,
            "detail": f"A request signed in by the session cookie must come from this server's "
                      f"own pages: send the {CSRF_HEADER} header (the {CSRF_COOKIE} cookie's "
                      "value).",
            "code": "csrf_failed", "request_id": request_id}
    return Response(json.dumps(body), status_code=403, media_type=PROBLEM)


class CookieSessionMiddleware:
    """The access cookie becomes `Authorization: Bearer` (see the module's doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "authorization" in headers or "cookie" not in headers:
            await self.app(scope, receive, send)
            return
        jar = cookies_of(headers)
        token = jar.get(ACCESS_COOKIE)
        if not token or scope["path"].startswith(SESSION_PATH):
            await self.app(scope, receive, send)  # the session routes check for themselves
            return
        if scope["method"] not in SAFE_METHODS and not csrf_ok(scope, headers, jar, token):
            from asgi_correlation_id import correlation_id

            await csrf_refusal(correlation_id.get())(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {token}".encode())]
        await self.app(scope, receive, send)

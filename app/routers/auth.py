"""/v1/auth: the OAuth2 token endpoint, revocation, the caller's identity; the JWKS."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request, Response

from app.deps import KeyRingDep, Principal, SessionDep, SettingsDep, ThrottleDep, require
from app.errors import PROBLEM
from app.models.account import MeRead, TokenResponse
from app.routemarks import AuditsOwnDenials, FormBody, NoIdempotencyKey
from app.routers.common import problems
from app.services import auth as svc
from app.services.auth import OAuthError

router = APIRouter(tags=["auth"])


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
        cid, _, secret = raw.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(cid), unquote(secret)


def _client_credentials(request: Request, client_id: str | None,
                        client_secret: str | None) -> tuple[str, str]:
    """RFC 6749 2.3.1: HTTP Basic (client_secret_basic) or client_id and client_secret in the
    body (client_secret_post), never both (2.3: one method per request). A client_id alone in
    the body beside Basic is not a second method, but it must name the same client."""
    if request.headers.get("authorization", "").lower().startswith("basic "):
        if client_secret is not None:
            raise OAuthError("invalid_request", "Authenticate the client one way only: HTTP "
                             "Basic, or client_id and client_secret in the body.")
        creds = _basic(request)
        if creds is not None:
            if client_id is not None and client_id != creds[0]:
                raise OAuthError("invalid_request",
                                 "The client_id in the body is not the HTTP Basic client.")
            return creds
    elif client_id and client_secret:
        return client_id, client_secret
    raise OAuthError("invalid_client", "Client authentication failed: use HTTP Basic, or "
                     "client_id and client_secret in the body.", status=401,
                     headers={"WWW-Authenticate": 'Basic realm="peerlink"'})


def _oauth_problem(description: str) -> dict[str, Any]:
    """A token error: problem+json with RFC 6749 5.2 `error` and `error_description`
    (schema OAuthProblem, registered by main.build_openapi)."""
    return {"description": description,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/OAuthProblem"}}}}


@router.post("/v1/auth/token", response_model=TokenResponse,
             dependencies=[FormBody, NoIdempotencyKey, AuditsOwnDenials],
             responses={401: _oauth_problem("Client authentication failed (invalid_client)")}
             | problems(422, 429, 500) | {400: _oauth_problem(
                 "OAuth2 error (invalid_request, invalid_grant, invalid_scope)")})
async def issue_token(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyRingDep,
    throttle: ThrottleDep,
    grant_type: Annotated[Literal["password", "client_credentials", "refresh_token"], Form()],
    username: Annotated[str | None, Form(max_length=64)] = None,
    password: Annotated[str | None, Form(max_length=256)] = None,
    refresh_token: Annotated[str | None, Form(max_length=256)] = None,
    scope: Annotated[str | None, Form(max_length=2000)] = None,
    client_id: Annotated[str | None, Form(max_length=64)] = None,
    client_secret: Annotated[str | None, Form(max_length=256)] = None,
) -> TokenResponse:
    """OAuth2 token endpoint (RFC 6749): `password` for people's scripts and tests (off in
    production unless PEERLINK_PASSWORD_GRANT_ENABLED=true: browsers use `POST /v1/session`),
    `client_credentials` for machines (client authentication with HTTP Basic, or `client_id` and
    `client_secret` in the body; not both), `refresh_token` (rotated on every use). Errors
    carry RFC 6749 `error` and `error_description`."""
    response.headers["Cache-Control"] = "no-store"
    address = request.client.host if request.client else "unknown"
    common = {"session": session, "settings": settings, "keyring": keyring}
    if grant_type == "password":
        if not settings.password_grant_allowed:
            raise OAuthError("unsupported_grant_type", "The password grant is turned off here "
                             "(PEERLINK_PASSWORD_GRANT_ENABLED): people sign in through the "
                             "browser session (POST /v1/session); machines use "
                             "client_credentials.")
        if not username or not password:
            raise OAuthError("invalid_request", "username and password are required.")
        return await svc.password_grant(**common, throttle=throttle, username=username,
                                        password=password, scope=scope, address=address)
    if grant_type == "refresh_token":
        if not refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required.")
        return await svc.refresh_grant(**common, refresh_token=refresh_token, scope=scope)
    creds = _client_credentials(request, client_id, client_secret)
    return await svc.client_credentials_grant(
        **common, throttle=throttle, client_id=creds[0], client_secret=creds[1],
        scope=scope, address=address)


@router.post("/v1/auth/revoke", status_code=200, responses=problems(422, 500),
             dependencies=[FormBody, NoIdempotencyKey])
async def revoke_token(
    session: SessionDep,
    settings: SettingsDep,
    keyring: KeyRingDep,
    token: Annotated[str, Form(max_length=4096)],
    token_type_hint: Annotated[Literal["access_token", "refresh_token"] | None, Form()] = None,
) -> dict[str, str]:
    """Token revocation (RFC 7009): answers 200 whether or not the token was known."""
    await svc.revoke(session=session, settings=settings, keyring=keyring, token=token)
    return {"status": "ok"}


@router.get("/v1/auth/me", response_model=MeRead, responses=problems(401, 500))
async def get_me(principal: Principal = require()) -> MeRead:
    return MeRead(
        subject=str(principal.id), kind=principal.kind, role=principal.role,
        scopes=sorted(principal.scopes), all_facilities=principal.all_facilities,
        facility_ids=sorted(principal.facility_ids, key=str), networks=sorted(principal.networks),
        participant_id=principal.participant_id,
        username=principal.name if principal.kind == "user" else None,
        client_id=principal.name if principal.kind == "client" else None,
    )


@router.get("/.well-known/jwks.json", tags=["operations"])
async def get_jwks(keyring: KeyRingDep, response: Response) -> dict[str, list[dict[str, str]]]:
    """Public keys that verify access tokens (current and recent signing keys)."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return keyring.jwks()

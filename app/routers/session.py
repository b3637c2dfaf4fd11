"""/v1/session: the browser session (a same-origin backend-for-frontend): sign in, refresh,
sign out. Tokens travel in httpOnly cookies that the page's scripts never read
(app/security/browser_session.py says how requests are then authenticated and why)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import KeyRingDep, SessionDep, SettingsDep, ThrottleDep
from app.errors import Unauthorized
from app.models.account import BrowserSessionRead, BrowserSignIn, TokenResponse
from app.routemarks import AuditsOwnDenials, NoIdempotencyKey
from app.routers.common import problems
from app.security.browser_session import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    SESSION_PATH,
    cookies_of,
    csrf_ok,
    new_csrf,
)
from app.services import auth as svc
from app.services.auth import OAuthError

router = APIRouter(prefix=SESSION_PATH, tags=["auth"])

_CSRF_403 = {403: {"description": "Not from this server's own page (`csrf_failed`): the "
                                  "X-CSRF-Token header must equal the CSRF cookie",
                   "content": problems(403)[403]["content"]}}


def _set_cookies(response: Response, settings_days: int, tokens: TokenResponse,
                 csrf: str) -> BrowserSessionRead:
    response.headers["Cache-Control"] = "no-store"
    common = {"secure": True, "samesite": "strict"}
    response.set_cookie(ACCESS_COOKIE, tokens.access_token, max_age=tokens.expires_in, path="/",
                        httponly=True, **common)  # type: ignore[arg-type]
    if tokens.refresh_token:
        response.set_cookie(REFRESH_COOKIE, tokens.refresh_token,
                            max_age=settings_days * 86_400, path=SESSION_PATH, httponly=True,
                            **common)  # type: ignore[arg-type]
    response.set_cookie(CSRF_COOKIE, csrf, max_age=settings_days * 86_400, path="/",
                        httponly=False, **common)  # type: ignore[arg-type]
    return BrowserSessionRead(csrf_token=csrf, expires_in=tokens.expires_in, scope=tokens.scope)


def _clear_cookies(response: Response) -> None:
    for name, path in ((ACCESS_COOKIE, "/"), (REFRESH_COOKIE, SESSION_PATH), (CSRF_COOKIE, "/")):
        response.delete_cookie(name, path=path, secure=True, httponly=name != CSRF_COOKIE,
                               samesite="strict")


def _from_own_page(request: Request) -> dict[str, str]:
    jar = cookies_of(request.headers)
    if not csrf_ok(request.scope, request.headers, jar, None):
        from app.errors import Forbidden

        raise Forbidden("Refresh and sign-out must come from this server's own pages: send "
                        "the X-CSRF-Token header (the CSRF cookie's value).", code="csrf_failed")
    return jar


@router.post("", response_model=BrowserSessionRead,
             dependencies=[NoIdempotencyKey, AuditsOwnDenials],
             responses=problems(422, 429, 500) | {400: {
                 "description": "Wrong username or password (`invalid_grant`)",
                 "content": problems(422)[422]["content"]}})
async def sign_in(request: Request, response: Response, body: BrowserSignIn,
                  session: SessionDep, settings: SettingsDep, keyring: KeyRingDep,
                  throttle: ThrottleDep) -> BrowserSessionRead:
    """Sign a person in for a browser: the password is checked here and the tokens are set as
    httpOnly, Secure, SameSite=Strict cookies (never in the body, never readable by scripts).
    Then every request from this origin is signed in by the cookie; all but GET/HEAD/OPTIONS
    must send `X-CSRF-Token`. Open to people in every mode (the password grant of
    `/v1/auth/token` is off in production). Throttled like the token endpoint."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
        from app.errors import Forbidden

        raise Forbidden("Sign in from this server's own pages.", code="csrf_failed")
    csrf, digest = new_csrf()
    address = request.client.host if request.client else "unknown"
    tokens = await svc.password_grant(session=session, settings=settings, keyring=keyring,
                                      throttle=throttle, username=body.username,
                                      password=body.password, scope=body.scope,
                                      address=address, csrf=digest)
    return _set_cookies(response, settings.refresh_token_days, tokens, csrf)


@router.post("/refresh", response_model=BrowserSessionRead,
             dependencies=[NoIdempotencyKey, AuditsOwnDenials],
             responses=problems(401, 422, 429, 500) | _CSRF_403)
async def refresh_session(request: Request, response: Response, session: SessionDep,
                          settings: SettingsDep, keyring: KeyRingDep) -> BrowserSessionRead:
    """New cookies from the refresh cookie (rotated: an old one coming back revokes the whole
    session), and a new CSRF token. 401 when the session is over (sign in again)."""
    jar = _from_own_page(request)
    refresh = jar.get(REFRESH_COOKIE)
    if not refresh:
        raise Unauthorized("No session: sign in again.")
    csrf, digest = new_csrf()
    try:
        tokens = await svc.refresh_grant(session=session, settings=settings, keyring=keyring,
                                         refresh_token=refresh, scope=None, csrf=digest)
    except OAuthError as exc:
        raise Unauthorized("The session is over: sign in again.") from exc
    return _set_cookies(response, settings.refresh_token_days, tokens, csrf)


@router.post("/logout", status_code=204, dependencies=[NoIdempotencyKey],
             responses=problems(422, 500) | _CSRF_403)
async def sign_out(request: Request, session: SessionDep, settings: SettingsDep,
                   keyring: KeyRingDep) -> Response:
    """Revoke the session (its refresh family, and with it every access token it issued) and
    clear the cookies. Answers 204 whether or not a session was there."""
    jar = _from_own_page(request)
    for name in (REFRESH_COOKIE, ACCESS_COOKIE):
        if jar.get(name):
            await svc.revoke(session=session, settings=settings, keyring=keyring,
                             token=jar[name])
    response = Response(status_code=204)
    response.headers["Cache-Control"] = "no-store"
    _clear_cookies(response)
    return response

"""The browser session (same-origin backend-for-frontend): tokens in httpOnly, Secure,
SameSite=Strict cookies, CSRF protection on every write, refresh rotation, sign-out revokes;
and the password grant's switch (off in production unless turned on)."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.models.common import Role
from app.security.browser_session import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from tests.factories import PASSWORD

ORIGIN = "https://testserver"


@pytest.fixture()
def browser(app):  # type: ignore[no-untyped-def]
    """A same-origin browser: https, so the Secure cookies go back."""
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as c:
        yield c


def _set_cookies(response) -> dict[str, SimpleCookie]:  # type: ignore[no-untyped-def]
    found = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name in jar:
            found[name] = jar
    return found


def _sign_in(browser, username: str, **extra):  # type: ignore[no-untyped-def]
    return browser.post("/v1/session", json={"username": username, "password": PASSWORD},
                        headers={"Origin": ORIGIN, **extra})


def test_sign_in_sets_httponly_secure_strict_cookies_and_no_token_in_the_body(browser, factory):
    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    r = _sign_in(browser, user.username)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"csrf_token", "expires_in", "scope"}
    assert "access_token" not in r.text and "refresh_token" not in r.text
    assert r.headers["cache-control"] == "no-store"
    cookies = _set_cookies(r)
    access = cookies[ACCESS_COOKIE][ACCESS_COOKIE]
    refresh = cookies[REFRESH_COOKIE][REFRESH_COOKIE]
    csrf = cookies[CSRF_COOKIE][CSRF_COOKIE]
    for morsel in (access, refresh, csrf):
        assert morsel["secure"] is True
        assert morsel["samesite"].lower() == "strict"
        assert not morsel["domain"]
    assert access["httponly"] is True and refresh["httponly"] is True
    assert not csrf["httponly"], "the page's scripts read the CSRF token"
    assert access["path"] == "/" and csrf["path"] == "/"
    assert refresh["path"] == "/v1/session", "the refresh token goes nowhere else"
    assert csrf.value == body["csrf_token"]
    # The cookie signs the browser in; a read needs no CSRF header.
    me = browser.get("/v1/auth/me")
    assert me.status_code == 200 and me.json()["username"] == user.username


def test_a_write_without_the_csrf_token_is_refused_and_changes_nothing(browser, factory):
    f = factory.facility("CCJ")
    user = factory.user(Role.coordinator, [f])
    csrf = _sign_in(browser, user.username).json()["csrf_token"]
    body = {"network": "incarcerated", "legal_name": "Sam Roe", "facility_code": "CCJ"}
    before = browser.get("/v1/participants").json()["items"]
    for headers in ({}, {"X-CSRF-Token": "guess"},
                    {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}):
        r = browser.post("/v1/participants", json=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "csrf_failed"
    assert browser.get("/v1/participants").json()["items"] == before
    ok = browser.post("/v1/participants", json=body, headers={"X-CSRF-Token": csrf,
                                                               "Origin": ORIGIN})
    assert ok.status_code == 201, ok.text


def test_the_csrf_token_is_bound_to_the_access_token(browser, factory):
    """A CSRF cookie planted beside someone's access cookie (with a header to match) is not
    enough: the token's signed `csrf` claim must match too."""
    f = factory.facility("CCJ")
    user = factory.user(Role.coordinator, [f])
    _sign_in(browser, user.username)
    access = browser.cookies.get(ACCESS_COOKIE)
    r = browser.post("/v1/participants", headers={
        "X-CSRF-Token": "planted", "Cookie": f"{ACCESS_COOKIE}={access}; {CSRF_COOKIE}=planted"},
                     json={"network": "incarcerated", "legal_name": "X", "facility_code": "CCJ"})
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"


def test_wrong_password_sets_no_cookie(browser, factory):
    user = factory.user(Role.coordinator, [factory.facility()])
    r = browser.post("/v1/session", json={"username": user.username, "password": "wrong"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    assert "set-cookie" not in r.headers
    assert browser.get("/v1/auth/me").status_code == 401


def test_sign_in_from_another_origin_is_refused(browser, factory):
    user = factory.user(Role.coordinator, [factory.facility()])
    r = _sign_in(browser, user.username, Origin="https://evil.example")
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    assert "set-cookie" not in r.headers


def test_refresh_rotates_and_an_old_refresh_cookie_ends_the_session(browser, factory, app):
    user = factory.user(Role.coordinator, [factory.facility()])
    first = _sign_in(browser, user.username).json()["csrf_token"]
    old_refresh = browser.cookies.get(REFRESH_COOKIE)
    assert browser.post("/v1/session/refresh").status_code == 403  # no CSRF header
    r = browser.post("/v1/session/refresh", headers={"X-CSRF-Token": first})
    assert r.status_code == 200, r.text
    second = r.json()["csrf_token"]
    assert second != first and browser.cookies.get(CSRF_COOKIE) == second
    assert browser.cookies.get(REFRESH_COOKIE) != old_refresh
    assert browser.get("/v1/auth/me").status_code == 200
    # The rotated-away refresh token comes back (a stolen copy): the whole session dies.
    with TestClient(app, base_url=ORIGIN) as thief:
        again = thief.post("/v1/session/refresh", headers={
            "X-CSRF-Token": "x", "Cookie": f"{REFRESH_COOKIE}={old_refresh}; {CSRF_COOKIE}=x"})
    assert again.status_code == 401
    assert browser.get("/v1/auth/me").status_code == 401


def test_logout_revokes_the_session_and_clears_the_cookies(browser, factory, app):
    user = factory.user(Role.coordinator, [factory.facility()])
    csrf = _sign_in(browser, user.username).json()["csrf_token"]
    access = browser.cookies.get(ACCESS_COOKIE)
    refresh = browser.cookies.get(REFRESH_COOKIE)
    assert browser.post("/v1/session/logout").status_code == 403
    r = browser.post("/v1/session/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    cleared = _set_cookies(r)
    assert {ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE} <= set(cleared)
    assert browser.get("/v1/auth/me").status_code == 401
    # A copy of the cookies taken before sign-out is worth nothing.
    with TestClient(app, base_url=ORIGIN) as thief:
        assert thief.get("/v1/auth/me",
                         headers={"Authorization": f"Bearer {access}"}).status_code == 401
        assert thief.post("/v1/session/refresh", headers={
            "X-CSRF-Token": "x", "Cookie": f"{REFRESH_COOKIE}={refresh}; {CSRF_COOKIE}=x"}
        ).status_code == 401


def test_the_stream_ticket_is_taken_with_the_cookie(browser, factory):
    user = factory.user(Role.coordinator, [factory.facility()])
    csrf = _sign_in(browser, user.username).json()["csrf_token"]
    r = browser.post("/v1/stream/tickets", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    assert r.json()["ticket"]


def test_an_authorization_header_wins_over_the_cookie(browser, factory):
    f = factory.facility()
    coordinator = factory.user(Role.coordinator, [f])
    officer = factory.user(Role.officer, [f])
    _sign_in(browser, coordinator.username)
    me = browser.get("/v1/auth/me", headers=factory.headers(officer))
    assert me.json()["username"] == officer.username


def test_password_grant_on_in_development_off_in_production_unless_turned_on():
    assert Settings(mode="development").password_grant_allowed
    prod = {"mode": "production", "jwt_private_key": "x", "note_keys": {"k": "y"}}
    assert not Settings(**prod).password_grant_allowed
    assert Settings(**prod, password_grant_enabled=True).password_grant_allowed
    assert not Settings(mode="development", password_grant_enabled=False).password_grant_allowed


def test_password_grant_turned_off_answers_unsupported_grant_type(settings, factory):
    user = factory.user(Role.coordinator, [factory.facility()])
    app = create_app(settings.model_copy(update={"password_grant_enabled": False}))
    with TestClient(app, base_url=ORIGIN) as c:
        r = c.post("/v1/auth/token", data={"grant_type": "password", "username": user.username,
                                           "password": PASSWORD})
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported_grant_type"
        assert _sign_in(c, user.username).status_code == 200, "the browser session still works"

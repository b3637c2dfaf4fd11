"""Authentication: the token endpoint, refresh rotation, revocation, throttling, auditing,
and the JWT attacks of RFC 8725 (each must answer the same 401, whatever check failed).

Forged tokens are built here by hand (base64url + cryptography), so every header and claim is
under the test's control; a control test proves the forger's untouched output is accepted, so
each attack fails for the reason it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jose import jwk as jose_jwk
from jose import jwt as jose_jwt
from starlette.testclient import TestClient

from app.main import create_app
from app.models import ApiClient, User
from app.models.common import Role
from app.security.scopes import ROLE_SCOPES
from tests.factories import PASSWORD

PROBLEM = "application/problem+json"
TOKEN_URL = "/v1/auth/token"
ME = "/v1/auth/me"
DROP = object()  # a claim or header value meaning "leave this out"


# --- helpers ---------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unb64url(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def es256_sign(private_pem: str | bytes, signing_input: bytes) -> bytes:
    key = serialization.load_pem_private_key(
        private_pem.encode() if isinstance(private_pem, str) else private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def new_ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


def valid_claims(settings, user, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer, "aud": settings.audience, "sub": str(user.id),
        "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()),
        "scope": " ".join(sorted(ROLE_SCOPES[Role(user.role)])),
        "sub_kind": "user", "role": user.role, "facilities": "all",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not DROP}


def forge(app, claims: dict[str, Any], *, key_pem: str | None = None, alg: str = "ES256",
          hmac_secret: bytes | None = None, **header_over: Any) -> str:
    """A compact JWS with full control over header and claims. ES256 by default, signed with
    the app's own key unless `key_pem` is given; `alg="HS256"` signs with `hmac_secret`;
    `alg="none"` has an empty signature."""
    header: dict[str, Any] = {"alg": alg, "typ": "at+jwt", "kid": app.state.keyring.signing_kid}
    header.update(header_over)
    header = {k: v for k, v in header.items() if v is not DROP}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}".encode()
    if alg.lower() == "none":
        sig = b""
    elif alg == "HS256":
        assert hmac_secret is not None
        sig = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
    else:
        sig = es256_sign(key_pem or app.state.keyring.signing_pem, signing_input)
    return f"{signing_input.decode()}.{b64url(sig)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


def baseline_401(client) -> dict[str, Any]:
    """The 401 body for a request with no credentials at all: every failure must match it."""
    r = client.get(ME)
    assert r.status_code == 401, r.text
    return without_request_id(r.json())


def assert_unauthorized(client, r) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "unauthorized"
    assert body["status"] == 401
    # Identical for every failure: the body never says which check refused the token.
    assert without_request_id(body) == baseline_401(client)


def login(client, username: str, password: str = PASSWORD, scope: str | None = None,
          **kw: Any):
    data = {"grant_type": "password", "username": username, "password": password}
    if scope is not None:
        data["scope"] = scope
    return client.post(TOKEN_URL, data=data, **kw)


def refresh(client, token: str):
    return client.post(TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": token})


def tokens_for(client, user) -> dict[str, Any]:
    r = login(client, user.username)
    assert r.status_code == 200, r.text
    return r.json()


def assert_oauth_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == code


# --- 1. JWT attacks: each one is the same 401 ------------------------------------------------

def test_missing_authorization_header_is_401(client):
    r = client.get(ME)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "unauthorized"
    assert {"type", "title", "status", "detail"} <= body.keys()


def test_forger_control_token_is_accepted(client, factory, settings, app):
    """The forger's output with nothing tampered passes: the attacks below fail for their own
    reason, not because the forger is broken."""
    user = factory.user(Role.coordinator)
    r = client.get(ME, headers=bearer(forge(app, valid_claims(settings, user))))
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == str(user.id)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(client, factory, settings, app, alg):
    user = factory.user(Role.admin)
    token = forge(app, valid_claims(settings, user), alg=alg)
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))
    # Also without the trailing dot's empty signature segment trimmed off.
    assert_unauthorized(client, client.get(ME, headers=bearer(token.rstrip("."))))


@pytest.mark.parametrize("secret_kind", ["pem", "pem_no_newline", "jwk_json", "jwk_json_spaced"])
def test_hs256_signed_with_the_public_key_is_refused(client, factory, settings, app, secret_kind):
    user = factory.user(Role.admin)
    pem = public_pem(app.state.keyring.signing_pem)
    jwks = client.get("/.well-known/jwks.json").json()
    current = next(k for k in jwks["keys"] if k["kid"] == app.state.keyring.signing_kid)
    secret = {
        "pem": pem,
        "pem_no_newline": pem.rstrip(b"\n"),
        "jwk_json": json.dumps(current, separators=(",", ":")).encode(),
        "jwk_json_spaced": json.dumps(current).encode(),
    }[secret_kind]
    token = forge(app, valid_claims(settings, user), alg="HS256", hmac_secret=secret)
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


def test_expired_token_is_refused(client, factory, settings, app):
    user = factory.user(Role.coordinator)
    now = int(time.time())
    token = forge(app, valid_claims(settings, user, iat=now - 600, nbf=now - 600, exp=now - 5))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


def test_token_not_yet_valid_is_refused(client, factory, settings, app):
    user = factory.user(Role.coordinator)
    now = int(time.time())
    token = forge(app, valid_claims(settings, user, iat=now, nbf=now + 120, exp=now + 600))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("aud", ["other-api", ["other-api"], "", "peerlink-api-x"])
def test_wrong_audience_is_refused(client, factory, settings, app, aud):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user, aud=aud))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("iss", ["https://evil.example", "", "peerlink "])
def test_wrong_issuer_is_refused(client, factory, settings, app, iss):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user, iss=iss))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "scope"])
def test_missing_required_claim_is_refused(client, factory, settings, app, claim):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user, **{claim: DROP}))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("kid", ["unknown-kid", "", DROP, "../../etc/passwd"])
def test_unknown_kid_is_refused(client, factory, settings, app, kid):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user), kid=kid)
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


def test_tampered_signature_is_refused(client, factory, app):
    user = factory.user(Role.coordinator)
    token = tokens_for(client, user)["access_token"]
    head, payload, sig = token.split(".")
    raw = bytearray(unb64url(sig))
    raw[10] ^= 0x01
    tampered = f"{head}.{payload}.{b64url(bytes(raw))}"
    assert_unauthorized(client, client.get(ME, headers=bearer(tampered)))
    truncated = f"{head}.{payload}.{sig[:-4]}"
    assert_unauthorized(client, client.get(ME, headers=bearer(truncated)))
    empty = f"{head}.{payload}."
    assert_unauthorized(client, client.get(ME, headers=bearer(empty)))


def test_tampered_payload_with_original_signature_is_refused(client, factory, app):
    clinician = factory.user(Role.clinician)
    admin = factory.user(Role.admin)
    token = tokens_for(client, clinician)["access_token"]
    assert client.get(ME, headers=bearer(token)).status_code == 200
    head, payload, sig = token.split(".")
    claims = json.loads(unb64url(payload))
    # Escalate: another subject, admin role, every scope.
    claims.update(sub=str(admin.id), role="admin", scope=" ".join(sorted(ROLE_SCOPES[Role.admin])))
    forged = f"{head}.{b64url_json(claims)}.{sig}"
    assert_unauthorized(client, client.get(ME, headers=bearer(forged)))
    assert_unauthorized(client, client.get("/v1/users", headers=bearer(forged)))
    # Scope escalation alone, same subject.
    claims = json.loads(unb64url(payload))
    claims["scope"] += " participants:write users:write"
    forged = f"{head}.{b64url_json(claims)}.{sig}"
    assert_unauthorized(client, client.get(ME, headers=bearer(forged)))


@pytest.mark.parametrize("embed_jwk", [False, True])
def test_token_signed_by_another_ec_key_with_our_kid_is_refused(client, factory, settings, app,
                                                                  embed_jwk):
    user = factory.user(Role.admin)
    attacker = new_ec_pem()
    extra: dict[str, Any] = {}
    if embed_jwk:  # the attacker also ships their public key in the header (`jwk`, `jku`)
        pub = serialization.load_pem_private_key(attacker.encode(), None).public_key()
        extra["jwk"] = jose_jwk.construct(
            pub.public_bytes(serialization.Encoding.PEM,
                             serialization.PublicFormat.SubjectPublicKeyInfo), "ES256").to_dict()
        extra["jku"] = "https://evil.example/jwks.json"
    token = forge(app, valid_claims(settings, user), key_pem=attacker, **extra)
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


def test_revoked_access_token_is_refused(client, factory):
    user = factory.user(Role.coordinator)
    access = tokens_for(client, user)["access_token"]
    assert client.get(ME, headers=bearer(access)).status_code == 200  # verified (and cached)
    r = client.post("/v1/auth/revoke", data={"token": access, "token_type_hint": "access_token"})
    assert r.status_code == 200, r.text
    assert_unauthorized(client, client.get(ME, headers=bearer(access)))
    # Revoking an access token touches only that token: a fresh login works.
    fresh = tokens_for(client, user)["access_token"]
    assert client.get(ME, headers=bearer(fresh)).status_code == 200


def test_refresh_token_used_as_access_token_is_refused(client, factory):
    user = factory.user(Role.coordinator)
    refresh_token = tokens_for(client, user)["refresh_token"]
    assert_unauthorized(client, client.get(ME, headers=bearer(refresh_token)))
    assert_unauthorized(client, client.get("/v1/participants", headers=bearer(refresh_token)))


def _header_only(header: Any) -> str:
    return f"{b64url_json(header)}.{b64url_json({'sub': 'x'})}.{b64url(b'sig')}"


GARBAGE = {
    "word": "Bearer garbage",
    "empty": "Bearer ",
    "three_letters": "Bearer a.b.c",
    "dots_only": "Bearer ...",
    "two_segments": "Bearer a.b",
    "five_segments": "Bearer a.b.c.d.e",
    "very_long": "Bearer " + "A" * 4000,
    "not_base64": "Bearer %%%.%%%.%%%",
    "header_not_object": "Bearer " + _header_only(["not", "an", "object"]),
    "kid_is_list": "Bearer " + _header_only({"alg": "ES256", "typ": "at+jwt", "kid": ["a"]}),
    "kid_is_object": "Bearer " + _header_only({"alg": "ES256", "typ": "at+jwt", "kid": {"a": 1}}),
    "alg_is_list": "Bearer " + _header_only({"alg": ["ES256"], "typ": "at+jwt"}),
    "header_not_utf8": "Bearer " + b64url(b"\xff\xfe") + ".e30.e30",
    "basic_scheme": "Basic dXNlcjpwYXNz",
    "other_scheme": "Token abc",
    "no_scheme": "garbage",
}


@pytest.mark.parametrize("authorization", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_credentials_are_refused(client, authorization):
    assert_unauthorized(client, client.get(ME, headers={"Authorization": authorization}))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "dpop+jwt", "", DROP])
def test_token_type_other_than_at_jwt_is_refused(client, factory, settings, app, typ):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user), typ=typ)
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("shape", ["901s", "one_day", "iat_in_future"])
def test_token_lifetime_over_15_minutes_is_refused(client, factory, settings, app, shape):
    user = factory.user(Role.coordinator)
    now = int(time.time())
    times = {
        "901s": {"iat": now, "nbf": now, "exp": now + 901},
        "one_day": {"iat": now, "nbf": now, "exp": now + 86400},
        # exp - iat looks like 10 minutes, but the token is usable now for 70 minutes.
        "iat_in_future": {"iat": now + 3600, "nbf": now, "exp": now + 3600 + 600},
    }[shape]
    token = forge(app, valid_claims(settings, user, **times))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


@pytest.mark.parametrize("over", [
    {"sub": "not-a-uuid"}, {"sub_kind": DROP}, {"sub_kind": "robot"},
    {"sub": "00000000-0000-0000-0000-000000000000"}, {"scope": ["participants:read"]},
    {"sid": "not-a-uuid"}, {"sid": 7},
], ids=["sub_not_uuid", "no_sub_kind", "bad_sub_kind", "unknown_sub", "scope_not_string",
        "sid_not_uuid", "sid_not_string"])
def test_signed_token_for_no_valid_account_is_refused(client, factory, settings, app, over):
    user = factory.user(Role.coordinator)
    token = forge(app, valid_claims(settings, user, **over))
    assert_unauthorized(client, client.get(ME, headers=bearer(token)))


# --- 2. password grant -----------------------------------------------------------------------

def test_password_grant_issues_es256_access_and_refresh_tokens(client, factory, settings):
    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    before = int(time.time())
    r = login(client, user.username.upper())  # usernames are case-insensitive
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 900
    assert body["refresh_token"] and body["refresh_token"] != body["access_token"]
    assert set(body["scope"].split()) == ROLE_SCOPES[Role.coordinator]

    access = body["access_token"]
    header = jose_jwt.get_unverified_header(access)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    keys = {k["kid"]: k for k in jwks.json()["keys"]}
    assert header["kid"] in keys
    assert all("d" not in k for k in keys.values())  # public halves only
    # An integrator can verify the token with the published key alone.
    claims = jose_jwt.decode(access, keys[header["kid"]], algorithms=["ES256"],
                             audience=settings.audience, issuer=settings.issuer)
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "scope", "role"} <= claims.keys()
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.audience
    assert claims["sub"] == str(user.id)
    assert claims["role"] == "coordinator"
    assert claims["scope"] == body["scope"]
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["nbf"] <= time.time()
    uuid.UUID(claims["jti"])
    assert client.get(ME, headers=bearer(access)).status_code == 200


def test_wrong_password_and_unknown_user_look_the_same(client, factory):
    user = factory.user(Role.coordinator)
    wrong = login(client, user.username, "not-the-password-at-all")
    unknown = login(client, "nobody-by-this-name")
    for r in (wrong, unknown):
        assert_oauth_error(r, 400, "invalid_grant")
        assert user.username not in r.text and "not-the-password" not in r.text
    assert without_request_id(wrong.json()) == without_request_id(unknown.json())


def test_deactivated_user_cannot_log_in(client, factory):
    user = factory.user(Role.coordinator, active=False)
    r = login(client, user.username)
    assert_oauth_error(r, 400, "invalid_grant")
    unknown = login(client, "nobody-by-this-name")
    assert without_request_id(r.json()) == without_request_id(unknown.json())


@pytest.mark.parametrize("scope", ["users:write", "facilities:read users:read", "root",
                                   "participants:read audit:read"])
def test_scope_beyond_role_is_invalid_scope(client, factory, scope):
    user = factory.user(Role.coordinator)
    r = login(client, user.username, scope=scope)
    assert_oauth_error(r, 400, "invalid_scope")
    assert "access_token" not in r.json()


def test_narrowed_token_gets_403_insufficient_scope(client, factory):
    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    full = tokens_for(client, user)["access_token"]
    assert client.get("/v1/participants", headers=bearer(full)).status_code == 200

    r = login(client, user.username, scope="facilities:read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "facilities:read"
    narrow = body["access_token"]
    assert jose_jwt.get_unverified_claims(narrow)["scope"] == "facilities:read"
    assert client.get("/v1/facilities", headers=bearer(narrow)).status_code == 200
    r = client.get("/v1/participants", headers=bearer(narrow))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert "participants:read" in r.headers["www-authenticate"]
    me = client.get(ME, headers=bearer(narrow)).json()
    assert me["scopes"] == ["facilities:read"]
    # A refresh from the narrowed token cannot widen it again.
    r = client.post(TOKEN_URL, data={"grant_type": "refresh_token",
                                     "refresh_token": body["refresh_token"],
                                     "scope": "participants:read"})
    assert_oauth_error(r, 400, "invalid_scope")


def test_password_grant_needs_username_and_password(client):
    r = client.post(TOKEN_URL, data={"grant_type": "password", "username": "someone"})
    assert_oauth_error(r, 400, "invalid_request")


# --- 3. refresh rotation, reuse detection, revocation, deactivation ------------------------------

def test_refresh_rotation_and_reuse_revokes_the_family(client, factory):
    user = factory.user(Role.coordinator)
    first = tokens_for(client, user)
    other_family = tokens_for(client, user)  # a second login: a separate family

    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token_type"] == "Bearer" and second["expires_in"] <= 900
    assert client.get(ME, headers=bearer(second["access_token"])).status_code == 200

    r = refresh(client, second["refresh_token"])  # the new one works (once)
    assert r.status_code == 200, r.text
    newest = r.json()

    # The first refresh token comes back: someone kept a copy.
    r = refresh(client, first["refresh_token"])
    assert_oauth_error(r, 400, "invalid_grant")
    # ... and the whole family is dead, including the newest token, never used before.
    assert_oauth_error(refresh(client, newest["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(client, second["refresh_token"]), 400, "invalid_grant")
    # Another login's family is untouched.
    assert refresh(client, other_family["refresh_token"]).status_code == 200


def test_a_replayed_refresh_token_kills_the_live_access_tokens_of_its_family(client, factory):
    """Reuse detection ends the session, not only its refresh tokens: the access tokens already
    issued from the family answer 401 at once, although they are cached and unexpired."""
    user = factory.user(Role.coordinator)
    other = tokens_for(client, user)  # another sign-in: another family
    first = tokens_for(client, user)
    a1 = first["access_token"]
    assert client.get(ME, headers=bearer(a1)).status_code == 200  # verified and cached
    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    a2, r2 = r.json()["access_token"], r.json()["refresh_token"]
    assert client.get(ME, headers=bearer(a2)).status_code == 200

    assert_oauth_error(refresh(client, first["refresh_token"]), 400, "invalid_grant")  # replay

    assert_unauthorized(client, client.get(ME, headers=bearer(a1)))
    assert_unauthorized(client, client.get(ME, headers=bearer(a2)))
    assert_unauthorized(client, client.get("/v1/participants", headers=bearer(a2)))
    assert_oauth_error(refresh(client, r2), 400, "invalid_grant")
    # The account's other session lives on.
    assert client.get(ME, headers=bearer(other["access_token"])).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_a_family_revocation_reaches_other_processes(client, factory, settings, is_pg):
    """Other API processes drop their cached principals of the family's account on NOTIFY,
    sent in the transaction that revokes the family (replay, or RFC 7009 revocation)."""
    if not is_pg:
        pytest.skip("SQLite is embedded in one process; nothing to notify")
    import psycopg

    from app.security.invalidation import CHANNEL, _conninfo

    user = factory.user(Role.coordinator)
    with psycopg.connect(_conninfo(settings), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        first = tokens_for(client, user)
        assert refresh(client, first["refresh_token"]).status_code == 200
        assert_oauth_error(refresh(client, first["refresh_token"]), 400, "invalid_grant")
        got = [n.payload for n in listener.notifies(timeout=3, stop_after=1)]
        assert got == [f"sub:{user.id}"]
        second = tokens_for(client, user)
        r = client.post("/v1/auth/revoke", data={"token": second["refresh_token"]})
        assert r.status_code == 200, r.text
        got = [n.payload for n in listener.notifies(timeout=3, stop_after=1)]
        assert got == [f"sub:{user.id}"]
    assert_unauthorized(client, client.get(ME, headers=bearer(first["access_token"])))
    assert_unauthorized(client, client.get(ME, headers=bearer(second["access_token"])))


def test_unknown_refresh_token_is_invalid_grant(client):
    assert_oauth_error(refresh(client, "plr_not-a-real-token"), 400, "invalid_grant")


@pytest.mark.parametrize("which", ["current", "ancestor"])
def test_revoking_a_refresh_token_kills_its_family(client, factory, which):
    user = factory.user(Role.coordinator)
    first = tokens_for(client, user)
    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    current = r.json()["refresh_token"]
    target = current if which == "current" else first["refresh_token"]
    live = r.json()["access_token"]
    assert client.get(ME, headers=bearer(live)).status_code == 200
    r = client.post("/v1/auth/revoke", data={"token": target, "token_type_hint": "refresh_token"})
    assert r.status_code == 200, r.text
    assert_oauth_error(refresh(client, current), 400, "invalid_grant")
    # RFC 7009 2.1: the access tokens of the same grant are invalidated too.
    assert_unauthorized(client, client.get(ME, headers=bearer(first["access_token"])))
    assert_unauthorized(client, client.get(ME, headers=bearer(live)))


def test_revoke_answers_200_for_unknown_tokens(client):
    for token in ("plr_unknown", "a.b.c", "garbage"):
        r = client.post("/v1/auth/revoke", data={"token": token})
        assert r.status_code == 200, (token, r.text)


@pytest.mark.parametrize("name", ["kid_is_list", "kid_is_object"])
def test_revoke_answers_200_for_a_token_with_a_non_string_kid(client, name):
    r = client.post("/v1/auth/revoke", data={"token": GARBAGE[name].removeprefix("Bearer ")})
    assert r.status_code == 200, r.text


def test_deactivated_user_loses_access_and_refresh(client, factory):
    admin = factory.user(Role.admin)
    user = factory.user(Role.coordinator)
    tokens = tokens_for(client, user)
    assert client.get(ME, headers=bearer(tokens["access_token"])).status_code == 200

    r = client.post(f"/v1/users/{user.id}/deactivate", headers=factory.headers(admin))
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False

    assert_unauthorized(client, client.get(ME, headers=bearer(tokens["access_token"])))
    assert_unauthorized(client, client.get("/v1/participants",
                                           headers=bearer(tokens["access_token"])))
    assert_oauth_error(refresh(client, tokens["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(login(client, user.username), 400, "invalid_grant")


# --- 4. client_credentials ---------------------------------------------------------------------

def test_client_credentials_with_basic_auth(client, factory, settings):
    api = factory.api_client(["participants:read", "facilities:read"])
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                    auth=(api.client_id, PASSWORD))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 900
    assert body.get("refresh_token") is None
    assert set(body["scope"].split()) == {"participants:read", "facilities:read"}
    claims = jose_jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == str(api.id) and claims["role"] == "integration"
    assert client.get("/v1/participants", headers=bearer(body["access_token"])).status_code == 200

    # Narrowing works; widening beyond the client's grant does not.
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials",
                                     "scope": "facilities:read"}, auth=(api.client_id, PASSWORD))
    assert r.status_code == 200 and r.json()["scope"] == "facilities:read"
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials",
                                     "scope": "keep_apart:write"}, auth=(api.client_id, PASSWORD))
    assert_oauth_error(r, 400, "invalid_scope")


def test_client_credentials_wrong_secret_and_unknown_client(client, factory):
    api = factory.api_client(["participants:read"])
    wrong = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                        auth=(api.client_id, "wrong-secret"))
    unknown = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                          auth=("plc_nobody", PASSWORD))
    for r in (wrong, unknown):
        assert_oauth_error(r, 401, "invalid_client")
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "access_token" not in r.json()
    assert without_request_id(wrong.json()) == without_request_id(unknown.json())


@pytest.mark.parametrize("authorization", [None, "Bearer abc", "Basic !!!not-base64!!!"])
def test_client_credentials_without_basic_is_401(client, factory, authorization):
    factory.api_client(["participants:read"])
    headers = {"Authorization": authorization} if authorization else {}
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"}, headers=headers)
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers["www-authenticate"].startswith("Basic")


def _client_post(client, data: dict[str, str], **kw: Any):
    return client.post(TOKEN_URL, data={"grant_type": "client_credentials", **data}, **kw)


def test_client_credentials_in_the_body(client, factory):
    """RFC 6749 2.3.1 client_secret_post: client_id and client_secret as form fields."""
    api = factory.api_client(["participants:read", "facilities:read"])
    r = _client_post(client, {"client_id": api.client_id, "client_secret": PASSWORD,
                              "scope": "facilities:read"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["scope"] == "facilities:read" and body.get("refresh_token") is None
    assert jose_jwt.get_unverified_claims(body["access_token"])["sub"] == str(api.id)
    assert client.get("/v1/facilities", headers=bearer(body["access_token"])).status_code == 200

    wrong = _client_post(client, {"client_id": api.client_id, "client_secret": "wrong-secret"})
    unknown = _client_post(client, {"client_id": "plc_nobody", "client_secret": PASSWORD})
    no_secret = _client_post(client, {"client_id": api.client_id})
    for r in (wrong, unknown, no_secret):
        assert_oauth_error(r, 401, "invalid_client")
        assert "access_token" not in r.json()
    assert without_request_id(wrong.json()) == without_request_id(unknown.json())
    # The secret is never taken from the query string (RFC 6749 2.3.1).
    r = client.post(f"{TOKEN_URL}?client_id={api.client_id}&client_secret={PASSWORD}",
                    data={"grant_type": "client_credentials"})
    assert_oauth_error(r, 401, "invalid_client")


@pytest.mark.parametrize("body", [
    {"client_secret": PASSWORD},
    {"client_id": "SAME", "client_secret": PASSWORD},
    {"client_id": "plc_someone_else"},
], ids=["secret_in_body", "both_in_body", "other_client_id_in_body"])
def test_client_authentication_two_ways_at_once_is_invalid_request(client, factory, body):
    """RFC 6749 2.3: one authentication method per request (HTTP Basic or the body)."""
    api = factory.api_client(["participants:read"])
    data = {k: api.client_id if v == "SAME" else v for k, v in body.items()}
    r = _client_post(client, data, auth=(api.client_id, PASSWORD))
    assert_oauth_error(r, 400, "invalid_request")
    assert r.json()["error"] == "invalid_request"
    assert "access_token" not in r.json()


def test_basic_with_the_same_client_id_in_the_body_is_one_method(client, factory):
    """client_id alone in the body is not a second authentication method."""
    api = factory.api_client(["participants:read"])
    r = _client_post(client, {"client_id": api.client_id}, auth=(api.client_id, PASSWORD))
    assert r.status_code == 200, r.text


def test_token_errors_carry_error_and_error_description(client, factory):
    """RFC 6749 5.2, inside the problem+json body: `error` (the existing codes) and a
    human-readable `error_description`."""
    user = factory.user(Role.coordinator)
    api = factory.api_client(["participants:read"])
    cases = [
        (login(client, user.username, "wrong-password-123"), 400, "invalid_grant"),
        (login(client, user.username, scope="users:write"), 400, "invalid_scope"),
        (client.post(TOKEN_URL, data={"grant_type": "password", "username": "x"}), 400,
         "invalid_request"),
        (refresh(client, "plr_not-a-real-token"), 400, "invalid_grant"),
        (_client_post(client, {}, auth=(api.client_id, "wrong-secret")), 401, "invalid_client"),
        (_client_post(client, {"client_secret": "x"}, auth=(api.client_id, PASSWORD)), 400,
         "invalid_request"),
    ]
    for r, status, error in cases:
        assert_oauth_error(r, status, error)
        body = r.json()
        assert body["error"] == error
        assert isinstance(body["error_description"], str) and body["error_description"]
        assert body["error_description"] == body["detail"]
        assert user.username not in body["error_description"]


def test_the_contract_declares_both_flows_and_the_public_routes(app):
    spec = app.openapi()
    scheme = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["type"] == "oauth2"
    flows = scheme["flows"]
    assert flows["password"]["tokenUrl"] == TOKEN_URL
    assert set(flows["password"]["scopes"]) >= ROLE_SCOPES[Role.admin]
    assert flows["clientCredentials"]["tokenUrl"] == TOKEN_URL
    assert set(flows["clientCredentials"]["scopes"]) == ROLE_SCOPES[Role.integration]
    public = {(path, method) for path, item in spec["paths"].items()
              for method, op in item.items() if op.get("security") == []}
    assert public == {("/v1/auth/token", "post"), ("/v1/auth/revoke", "post"),
                      ("/.well-known/jwks.json", "get"), ("/livez", "get"), ("/readyz", "get")}
    for item in spec["paths"].values():
        for op in item.values():
            assert "security" in op, op["operationId"]  # public or not, each one says so
    token = spec["paths"]["/v1/auth/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    props = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"client_id", "client_secret"} <= props.keys()
    for status in ("400", "401"):
        schema = token["responses"][status]["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OAuthProblem"}
    oauth_problem = spec["components"]["schemas"]["OAuthProblem"]
    problem = spec["components"]["schemas"]["Problem"]
    assert set(oauth_problem["required"]) == set(problem["required"]) | {"error",
                                                                         "error_description"}
    assert oauth_problem["properties"].keys() >= problem["properties"].keys()


# --- 5. throttling ---------------------------------------------------------------------------

def _assert_throttled(r, window: int = 60) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == "login_throttled"
    retry = r.headers["retry-after"]
    assert retry.isdigit() and 0 < int(retry) <= window
    assert "access_token" not in r.json()


def test_login_throttled_per_username(client, factory, settings):
    assert settings.login_limit_per_username == "5/minute"
    user = factory.user(Role.coordinator)
    bystander = factory.user(Role.coordinator)
    for _ in range(5):
        assert_oauth_error(login(client, user.username, "wrong-password-123"), 400, "invalid_grant")
    # The sixth attempt is refused even with the right password.
    _assert_throttled(login(client, user.username))
    _assert_throttled(login(client, user.username.upper()))  # same account, other spelling
    # Another account from the same address is not locked by this one's failures.
    assert login(client, bystander.username).status_code == 200


def test_login_throttled_per_address(client, factory, settings):
    assert settings.login_limit_per_address == "20/minute"
    user = factory.user(Role.coordinator)
    for i in range(20):
        r = login(client, f"nobody{i}-{uuid.uuid4().hex[:6]}", "wrong-password-123")
        assert_oauth_error(r, 400, "invalid_grant")
    # A fresh username, and a real account with the right password: both refused now.
    _assert_throttled(login(client, "yet-another-name", "wrong-password-123"))
    _assert_throttled(login(client, user.username))


def test_correct_sign_ins_do_not_count_toward_the_throttle(client, factory):
    """Only failures count: an account that signs in correctly again and again is never
    throttled for it, and its failures still lock it after five."""
    user = factory.user(Role.coordinator)
    for _ in range(8):
        assert login(client, user.username).status_code == 200
    for _ in range(5):
        assert_oauth_error(login(client, user.username, "wrong-password-123"), 400, "invalid_grant")
    _assert_throttled(login(client, user.username))


def test_a_facility_behind_one_address_can_sign_in_at_shift_change(client, factory):
    """One NAT, a whole shift signing in (several times each): more than 20 correct sign-ins
    from one address in a minute all succeed."""
    officers = [factory.user(Role.officer) for _ in range(6)]
    statuses = [login(client, o.username).status_code for _ in range(4) for o in officers]
    assert statuses == [200] * 24, statuses


def test_a_success_does_not_reset_the_address_failures(settings, factory):
    """An attacker holding one valid account must not wipe the address's failures by signing
    in between guesses at other accounts."""
    # The address's budget per hour rather than per minute: 39 password checks can outlast a
    # minute on a loaded machine, and then the first failures would leave the window by time.
    hourly = settings.model_copy(update={"login_limit_per_address": "20/hour"})
    mine = factory.user(Role.officer)
    with TestClient(create_app(hourly), raise_server_exceptions=False) as client:
        for i in range(19):
            r = login(client, f"victim{i}-{uuid.uuid4().hex[:6]}", "guess-123456789")
            assert_oauth_error(r, 400, "invalid_grant")
            assert login(client, mine.username).status_code == 200
        assert_oauth_error(login(client, "victim-last", "guess-123456789"), 400, "invalid_grant")
        _assert_throttled(login(client, "victim-more", "guess-123456789"), window=3600)
        _assert_throttled(login(client, mine.username), window=3600)


def test_the_owners_success_does_not_reset_an_accounts_failures(client, factory):
    """Someone guessing at an account gets no fresh budget when its owner signs in."""
    user = factory.user(Role.coordinator)
    for _ in range(4):
        assert_oauth_error(login(client, user.username, "wrong-password-123"), 400, "invalid_grant")
    assert login(client, user.username).status_code == 200
    assert_oauth_error(login(client, user.username, "wrong-password-123"), 400, "invalid_grant")
    _assert_throttled(login(client, user.username, "wrong-password-123"))
    _assert_throttled(login(client, user.username))


def test_a_client_fetching_tokens_often_is_not_throttled(client, factory):
    api = factory.api_client(["participants:read"])
    for _ in range(8):
        r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                        auth=(api.client_id, PASSWORD))
        assert r.status_code == 200, r.text
    for _ in range(5):
        r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                        auth=(api.client_id, "wrong-secret"))
        assert_oauth_error(r, 401, "invalid_client")
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                    auth=(api.client_id, PASSWORD))
    _assert_throttled(r)


# --- 6. denied attempts are audited -------------------------------------------------------------

def test_401_on_protected_route_is_audited(client, factory):
    before = len(factory.audits())
    r = client.get("/v1/participants", headers=bearer("garbage"))
    assert r.status_code == 401
    new = factory.audits()[before:]
    assert len(new) == 1, [(a.action, a.outcome) for a in new]
    assert new[0].outcome == "denied"
    assert new[0].actor_type == "anonymous"
    assert new[0].action == "GET /v1/participants"


def test_failed_login_is_audited(client, factory):
    user = factory.user(Role.coordinator)
    before = len(factory.audits())
    assert_oauth_error(login(client, user.username, "wrong-password-123"), 400, "invalid_grant")
    new = factory.audits()[before:]
    assert [a.outcome for a in new] == ["denied"], [(a.action, a.outcome) for a in new]
    assert new[0].entity_id == str(user.id)
    before = len(factory.audits())
    assert_oauth_error(login(client, "nobody-here", "wrong-password-123"), 400, "invalid_grant")
    assert [a.outcome for a in factory.audits()[before:]] == ["denied"]


# --- 7. /v1/auth/me -----------------------------------------------------------------------------

def test_me_for_a_user(client, factory):
    f1, f2 = factory.facility(), factory.facility()
    user = factory.user(Role.coordinator, [f1, f2])
    r = client.get(ME, headers=bearer(tokens_for(client, user)["access_token"]))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["kind"] == "user"
    assert me["subject"] == str(user.id)
    assert me["username"] == user.username
    assert me["role"] == "coordinator"
    assert set(me["scopes"]) == ROLE_SCOPES[Role.coordinator]
    assert me["all_facilities"] is False
    assert sorted(me["facility_ids"]) == sorted([str(f1.id), str(f2.id)])
    assert me["networks"] == ["incarcerated"]


def test_me_for_a_client(client, factory):
    f = factory.facility()
    api = factory.api_client(["participants:read", "keep_apart:read"], [f],
                             networks=["incarcerated", "staff"])
    r = client.post(TOKEN_URL, data={"grant_type": "client_credentials"},
                    auth=(api.client_id, PASSWORD))
    assert r.status_code == 200, r.text
    r = client.get(ME, headers=bearer(r.json()["access_token"]))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["kind"] == "client"
    assert me["subject"] == str(api.id)
    assert me["client_id"] == api.client_id
    assert me["username"] is None
    assert me["role"] == "integration"
    assert me["scopes"] == ["keep_apart:read", "participants:read"]
    assert me["all_facilities"] is False
    assert me["facility_ids"] == [str(f.id)]
    assert sorted(me["networks"]) == ["incarcerated", "staff"]


def test_concurrent_guesses_cannot_outrun_the_throttle(app, factory):
    import asyncio

    import httpx

    factory.user(Role.coordinator, [factory.facility()], username="target")

    async def guess_all() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/auth/token", data={
                    "grant_type": "password", "username": "target",
                    "password": f"wrong-{i}"}) for i in range(12)])
        return [r.status_code for r in rs]

    statuses = asyncio.run(guess_all())
    assert statuses.count(400) <= 5 and statuses.count(429) >= 7, statuses


def test_account_transitions_honour_if_match(client, factory):
    admin = factory.headers(factory.user(Role.admin))
    user = factory.user(Role.coordinator)
    stale = client.post(f"/v1/users/{user.id}/deactivate", headers=admin | {"If-Match": '"99"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_mismatch"
    assert factory.get(User, user.id).active is True
    current = client.get(f"/v1/users/{user.id}", headers=admin).headers["ETag"]
    r = client.post(f"/v1/users/{user.id}/deactivate", headers=admin | {"If-Match": current})
    assert r.status_code == 200 and r.headers["ETag"] != current
    r = client.post(f"/v1/users/{user.id}/reactivate", headers=admin | {"If-Match": current})
    assert r.status_code == 412 and factory.get(User, user.id).active is False

    api = factory.api_client(["participants:read"])
    before = factory.get(ApiClient, api.id).secret_hash
    r = client.post(f"/v1/clients/{api.id}/rotate-secret", headers=admin | {"If-Match": '"99"'})
    assert r.status_code == 412 and factory.get(ApiClient, api.id).secret_hash == before
    etag = client.get(f"/v1/clients/{api.id}", headers=admin).headers["ETag"]
    r = client.post(f"/v1/clients/{api.id}/rotate-secret", headers=admin | {"If-Match": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag

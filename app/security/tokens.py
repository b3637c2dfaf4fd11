"""The only module that touches python-jose: signing keys, access tokens, JWKS.

Hardening (RFC 8725): the algorithm list is fixed, never read from the token; the key is
looked up by `kid` here, among our own EC public keys only (so no public key can ever be used
as an HMAC secret); every registered claim is required; the token type must be `at+jwt`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt
from jose.exceptions import JOSEError

from app.config import DEV_KEY_FILE, Settings

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"


class InvalidToken(Exception):
    """Any reason a bearer token is refused; the reason is logged, never sent."""


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y)}


def _thumbprint(jwk_dict: dict[str, str]) -> str:
    """RFC 7638 thumbprint: the key id is derived from the key itself."""
    canonical = json.dumps({k: jwk_dict[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class VerifiedCache:
    """Signature checks are the costliest step of a request; a token string this key ring
    verified need not be verified again before it expires. Revocation and the account's
    state are still checked on every request (app.security.principal)."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._size = size

    def get(self, token: str, now: float) -> dict[str, Any] | None:
        claims = self._items.get(token)
        if claims is not None and claims["exp"] <= now:
            self._items.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        self._items[token] = claims
        if len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass
class KeyRing:
    signing_kid: str
    signing_pem: str
    public_jwks: dict[str, dict[str, str]]
    _verifiers: dict[str, Any] = field(default_factory=dict)
    _verified: VerifiedCache = field(default_factory=VerifiedCache)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        pem = _load_signing_pem(settings)
        private = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise ValueError("the signing key must be an EC P-256 private key (ES256)")
        public_jwks: dict[str, dict[str, str]] = {}
        current = _public_jwk(private.public_key())
        kid = _thumbprint(current)
        public_jwks[kid] = current
        for path in settings.jwt_previous_public_key_files:
            public = serialization.load_pem_public_key(Path(path).read_bytes())
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise ValueError(f"{path}: previous keys must be EC P-256 public keys")
            old = _public_jwk(public)
            public_jwks[_thumbprint(old)] = old
        ring = cls(signing_kid=kid, signing_pem=pem, public_jwks=public_jwks)
        ring._verifiers = {k: jwk.construct({**v, "alg": ALGORITHM}, ALGORITHM)
                           for k, v in public_jwks.items()}
        return ring

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [{**v, "kid": k, "alg": ALGORITHM, "use": "sig"}
                         for k, v in self.public_jwks.items()]}

    def issue(self, *, settings: Settings, subject: str, scope: str,
              extra: dict[str, Any]) -> tuple[str, str, int]:
        now = int(time.time())
        lifetime = settings.access_token_minutes * 60
        jti = str(uuid.uuid4())
        claims = {
            "iss": settings.issuer, "aud": settings.audience, "sub": subject,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": jti, "scope": scope, **extra,
        }
        token = jwt.encode(claims, self.signing_pem, algorithm=ALGORITHM,
                           headers={"kid": self.signing_kid, "typ": TOKEN_TYPE})
        return token, jti, lifetime

    def verify_cached(self, token: str, *, settings: Settings) -> dict[str, Any]:
        now = time.time()
        claims = self._verified.get(token, now)
        if claims is None:
            claims = self.verify(token, settings=settings)
            self._verified.put(token, claims)
        elif claims["nbf"] > now:
            raise InvalidToken("not yet valid")
        return claims

    def verify(self, token: str, *, settings: Settings) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise InvalidToken("malformed header") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm not allowed")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        key = self._verifiers.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=settings.audience,
                issuer=settings.issuer,
                options={f"require_{c}": True for c in ("iss", "aud", "sub", "exp", "iat",
                                                        "nbf", "jti")} | {"leeway": 0},
            )
        except JOSEError as exc:
            raise InvalidToken(str(exc)) from exc
        if not isinstance(claims.get("scope"), str) or not isinstance(claims.get("jti"), str):
            raise InvalidToken("missing claim")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise InvalidToken("bad time claims")
        if iat > time.time() + 60:
            raise InvalidToken("issued in the future")
        if exp - iat > settings.access_token_minutes * 60:
            raise InvalidToken("lifetime too long")
        return claims


def _load_signing_pem(settings: Settings) -> str:
    if settings.jwt_private_key is not None:
        return settings.jwt_private_key.get_secret_value()
    if settings.jwt_private_key_file is not None:
        return Path(settings.jwt_private_key_file).read_text()
    if settings.mode == "production":  # also refused by Settings; kept here as a second lock
        raise ValueError("production mode needs a configured signing key")
    return _dev_key()


def _dev_key() -> str:
    if DEV_KEY_FILE.exists():
        return DEV_KEY_FILE.read_text()
    DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    pem = generate_private_key_pem()
    fd = os.open(DEV_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem.encode())
    finally:
        os.close(fd)
    return pem


def generate_private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()

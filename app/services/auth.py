"""The OAuth2 token endpoint's use cases: password, client_credentials and refresh_token
grants, revocation (RFC 7009), and login throttling per account and per address."""

from __future__ import annotations

import math
import time
import uuid
from datetime import timedelta
from typing import Any

from limits import RateLimitItem, parse
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.counters import counter_storage
from app.db import utcnow
from app.errors import DomainError, TooManyRequests
from app.models import ApiClient, Participant, RefreshToken, RevokedAccessToken, User
from app.models.account import TokenResponse
from app.models.common import Network, Role
from app.security.passwords import new_secret, token_digest, verify_password
from app.security.principal import Principal
from app.security.scopes import ROLE_NETWORKS, ROLE_SCOPES, scopes_for
from app.security.tokens import InvalidToken, KeyRing
from app.services.audit import AuditEntry, append
from app.services.writer import Writer


class OAuthError(DomainError):
    """RFC 6749 section 5.2 errors, as problem+json with the `error` and `error_description`
    members kept."""

    status, code, title = 400, "invalid_request", "Token request refused"

    def __init__(self, code: str, detail: str, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, code=code, headers=headers, error=code, error_description=detail)
        self.status = status


class Throttle:
    """Counts failed sign-ins in a moving window, per account (username, or client id) and
    per client address; a correct sign-in does not count.

    An attempt takes a place in both windows before its secret is checked, so concurrent
    guesses cannot all slip through between a test and a hit (places held by attempts still
    in flight count too). An attempt that turns out not to be a failure (a correct sign-in,
    or one refused by the other window before any check) gives its own place back: it adds
    an entry to that key's "ok" window, and each key's allowance is its limit plus its ok
    entries, so attempts - ok = failures (+ attempts in flight) stays under the limit.
    Giving back never removes anyone else's failures: a success resets nothing, so someone
    holding one valid account cannot wipe an address's failures by signing in between
    guesses, and an owner's sign-in gives no fresh budget to someone guessing at the account.
    Only the `limits` storage API is used (app.counters: memory, or Redis shared by every
    process of a deployment)."""

    OK_CEILING = 10_000  # ok entries looked at per key and window

    def __init__(self, settings: Settings) -> None:
        self._storage: Any = counter_storage(settings)
        self._per_user: RateLimitItem = parse(settings.login_limit_per_username)
        self._per_addr: RateLimitItem = parse(settings.login_limit_per_address)

    def _windows(self, account: str, address: str) -> list[tuple[RateLimitItem, str]]:
        return [(self._per_user, f"u:{account}"), (self._per_addr, f"a:{address}")]

    async def check(self, account: str, address: str) -> list[tuple[RateLimitItem, str]]:
        """Takes this attempt's place in each window (429 when one is full); returns the
        places, to give back with `not_a_failure` when the attempt turns out correct."""
        taken: list[tuple[RateLimitItem, str]] = []
        for item, key in self._windows(account, address):
            expiry = item.get_expiry()
            # The ok window is a second shorter: a success's entry leaves before its attempt's,
            # never after (which would briefly allow one failure too many).
            _, ok = await self._storage.get_moving_window(
                item.key_for("login-ok", key), self.OK_CEILING, expiry - min(1.0, expiry / 60))
            allowance = item.amount + ok
            if not await self._storage.acquire_entry(item.key_for("login", key), allowance,
                                                     expiry):
                await self.not_a_failure(taken)
                start, _ = await self._storage.get_moving_window(item.key_for("login", key),
                                                                 allowance, expiry)
                wait = min(expiry, max(1, math.ceil(start + expiry - time.time())))
                raise TooManyRequests("Too many failed sign-ins; wait before trying again.",
                                      code="login_throttled", headers={"Retry-After": str(wait)})
            taken.append((item, key))
        return taken

    async def not_a_failure(self, taken: list[tuple[RateLimitItem, str]]) -> None:
        for item, key in taken:
            await self._storage.acquire_entry(item.key_for("login-ok", key), self.OK_CEILING,
                                              item.get_expiry())


def _granted_scopes(requested: str | None, allowed: frozenset[str]) -> str:
    if not requested:
        return " ".join(sorted(allowed))
    asked = set(requested.split())
    if not asked <= allowed:
        raise OAuthError("invalid_scope", "A requested scope is not granted to this account.")
    return " ".join(sorted(asked))


def _user_principal(user: User, network: str | None, scopes: str) -> Principal:
    role = Role(user.role)
    networks = ROLE_NETWORKS[role]
    if role == Role.peer_supporter and network:
        networks = frozenset({Network(network)})
    return Principal(kind="user", id=user.id, name=user.username, role=role,
                     scopes=frozenset(scopes.split()), all_facilities=user.all_facilities,
                     facility_ids=frozenset(uuid.UUID(f) for f in user.facility_ids),
                     networks=networks, participant_id=user.participant_id)


def _access_claims(p: Principal, family: uuid.UUID | None = None) -> dict[str, Any]:
    """`sid` (a registered JWT claim: the session) names the refresh family a user's access
    token comes from, so revoking the family revokes its access tokens too
    (principal.load_principal); client tokens have no family."""
    claims = {"sub_kind": p.kind, "role": p.role.value,
              "facilities": "all" if p.all_facilities else sorted(str(f) for f in p.facility_ids)}
    if family is not None:
        claims["sid"] = str(family)
    return claims


async def _audit_anonymous(session: AsyncSession, action: str, outcome: str,
                           entity_id: str | None = None) -> None:
    await session.rollback()
    await append(session, [AuditEntry(action=action, outcome=outcome, entity_type="auth",
                                      entity_id=entity_id)],
                 actor_type="anonymous", actor_id=None, role=None, client_id=None)
    await session.commit()


async def _issue_refresh(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                         family: uuid.UUID, scope: str) -> str:
    token = new_secret("plr_")
    session.add(RefreshToken(token_hash=token_digest(token), family_id=family, user_id=user_id,
                             scope=scope,
                             expires_at=utcnow() + timedelta(days=settings.refresh_token_days)))
    return token


async def _revoke_family(session: AsyncSession, family: uuid.UUID, user_id: uuid.UUID,
                         w: Writer) -> None:
    """Every refresh token of the family, and with them the access tokens issued from it:
    those carry the family as `sid`, and the cached principals of the account are dropped
    in every process when this commits (a cache miss re-checks the family)."""
    await session.execute(update(RefreshToken)
                          .where(RefreshToken.family_id == family,
                                 RefreshToken.revoked_at.is_(None))  # type: ignore[union-attr]
                          .values(revoked_at=utcnow()))
    w.invalidate_auth(subject=user_id)


async def password_grant(*, session: AsyncSession, settings: Settings, keyring: KeyRing,
                         throttle: Throttle, username: str, password: str, scope: str | None,
                         address: str) -> TokenResponse:
    username = username.strip().lower()
    places = await throttle.check(username, address)
    row = (await session.execute(
        select(User, Participant.network).outerjoin(Participant,
                                                    Participant.id == User.participant_id)
        .where(User.username == username))).first()
    user, network = (row[0], row[1]) if row else (None, None)
    ok = verify_password(password, user.password_hash if user is not None else None)
    if not ok or user is None or not user.active:
        await _audit_anonymous(session, "auth.password", "denied",
                               str(user.id) if user is not None else None)
        raise OAuthError("invalid_grant", "Wrong username or password.")
    await throttle.not_a_failure(places)
    granted = _granted_scopes(scope, scopes_for(Role(user.role), user.all_facilities))
    principal = _user_principal(user, network, granted)
    family = uuid.uuid4()
    access, _jti, lifetime = keyring.issue(settings=settings, subject=str(user.id), scope=granted,
                                           extra=_access_claims(principal, family))
    refresh = await _issue_refresh(session, settings, user.id, family, granted)
    w = Writer(session, principal)
    w.audit("auth.password", "user", user.id)
    await w.commit()
    return TokenResponse(access_token=access, expires_in=lifetime, scope=granted,
                         refresh_token=refresh)


async def refresh_grant(*, session: AsyncSession, settings: Settings, keyring: KeyRing,
                        refresh_token: str, scope: str | None) -> TokenResponse:
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_digest(refresh_token))
    stored = (await session.execute(stmt.with_for_update())).scalar_one_or_none()
    now = utcnow()
    if stored is None:
        await _audit_anonymous(session, "auth.refresh", "denied")
        raise OAuthError("invalid_grant", "The refresh token is not valid.")
    if stored.used_at is not None or stored.revoked_at is not None:
        # A rotated token came back: someone holds a copy. The whole family dies.
        w = Writer(session, None)
        await _revoke_family(session, stored.family_id, stored.user_id, w)
        await w.commit()
        await _audit_anonymous(session, "auth.refresh_reuse", "denied", str(stored.user_id))
        raise OAuthError("invalid_grant", "The refresh token is not valid.")
    if stored.expires_at <= now:
        await _audit_anonymous(session, "auth.refresh", "denied", str(stored.user_id))
        raise OAuthError("invalid_grant", "The refresh token is not valid.")
    row = (await session.execute(
        select(User, Participant.network).outerjoin(Participant,
                                                    Participant.id == User.participant_id)
        .where(User.id == stored.user_id))).first()
    if row is None or not row[0].active:
        await _audit_anonymous(session, "auth.refresh", "denied", str(stored.user_id))
        raise OAuthError("invalid_grant", "The refresh token is not valid.")
    user, network = row[0], row[1]
    allowed = frozenset(stored.scope.split()) & scopes_for(Role(user.role), user.all_facilities)
    granted = _granted_scopes(scope, allowed)
    stored.used_at = now
    principal = _user_principal(user, network, granted)
    access, _jti, lifetime = keyring.issue(settings=settings, subject=str(user.id), scope=granted,
                                           extra=_access_claims(principal, stored.family_id))
    new_refresh = await _issue_refresh(session, settings, user.id, stored.family_id, granted)
    w = Writer(session, principal)
    w.audit("auth.refresh", "user", user.id)
    await w.commit()
    return TokenResponse(access_token=access, expires_in=lifetime, scope=granted,
                         refresh_token=new_refresh)


async def client_credentials_grant(*, session: AsyncSession, settings: Settings,
                                   keyring: KeyRing, throttle: Throttle, client_id: str,
                                   client_secret: str, scope: str | None,
                                   address: str) -> TokenResponse:
    places = await throttle.check(f"client:{client_id}", address)
    client = (await session.execute(select(ApiClient).where(ApiClient.client_id == client_id))
              ).scalar_one_or_none()
    ok = verify_password(client_secret, client.secret_hash if client is not None else None)
    if not ok or client is None or not client.active:
        await _audit_anonymous(session, "auth.client_credentials", "denied",
                               str(client.id) if client is not None else None)
        raise OAuthError("invalid_client", "Client authentication failed.", status=401,
                         headers={"WWW-Authenticate": 'Basic realm="peerlink"'})
    await throttle.not_a_failure(places)
    granted = _granted_scopes(scope, frozenset(client.scopes) & ROLE_SCOPES[Role.integration])
    principal = Principal(kind="client", id=client.id, name=client.client_id,
                          role=Role.integration, scopes=frozenset(granted.split()),
                          all_facilities=client.all_facilities,
                          facility_ids=frozenset(uuid.UUID(f) for f in client.facility_ids),
                          networks=frozenset(Network(n) for n in client.networks),
                          participant_id=None)
    access, _jti, lifetime = keyring.issue(settings=settings, subject=str(client.id),
                                           scope=granted, extra=_access_claims(principal))
    w = Writer(session, principal)
    w.audit("auth.client_credentials", "api_client", client.id)
    await w.commit()
    return TokenResponse(access_token=access, expires_in=lifetime, scope=granted)


async def revoke(*, session: AsyncSession, settings: Settings, keyring: KeyRing,
                 token: str) -> None:
    """RFC 7009: always succeeds from the caller's view; an unknown token is ignored."""
    if token.count(".") == 2:
        try:
            claims = keyring.verify(token, settings=settings)
        except InvalidToken:
            return
        exists_ = await session.get(RevokedAccessToken, claims["jti"])
        if exists_ is None:
            from datetime import UTC, datetime

            session.add(RevokedAccessToken(
                jti=claims["jti"], expires_at=datetime.fromtimestamp(claims["exp"], UTC)))
        w = Writer(session, None)
        w.audit("auth.revoke_access", "token", claims["jti"])
        w.invalidate_auth(jti=claims["jti"])
        await w.commit()
        return
    stored = (await session.execute(select(RefreshToken).where(
        RefreshToken.token_hash == token_digest(token)))).scalar_one_or_none()
    if stored is None:
        return
    w = Writer(session, None)
    await _revoke_family(session, stored.family_id, stored.user_id, w)
    w.audit("auth.revoke_refresh", "user", stored.user_id)
    await w.commit()

"""Who is calling: the Principal, built from a verified access token and the account's
current state, and the scope check every route declares.

The account's state (active, role, facilities, network, token not revoked) is read from the
database at most once per token every few seconds: PRINCIPALS caches it by token id.
Revocations and account changes drop the entries at once in the process that made them
(Writer.invalidate_auth) and in every other process through PostgreSQL NOTIFY
(app.security.invalidation); until a process listens, it does not cache."""

from __future__ import annotations

import math
import select as io_select
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.openapi.models import OAuth2 as OAuth2Model
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlowPassword
from fastapi.openapi.models import OAuthFlows as OAuthFlowsModel
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden, Unauthorized
from app.models import ApiClient, Participant, RefreshToken, RevokedAccessToken, User
from app.models.common import Network, Role
from app.security.scopes import COORDINATORS, ROLE_NETWORKS, ROLE_SCOPES, SCOPES, scopes_for
from app.security.tokens import InvalidToken

TOKEN_URL = "/v1/auth/token"


class OAuth2Bearer(OAuth2PasswordBearer):
    """The bearer access token, and how to get one at the token endpoint: the password flow
    (people) and the client_credentials flow (machines: HTTP Basic or client_secret_post),
    each with the scopes it can grant. Keeps the contract's scheme name, which every
    operation's security requirement refers to."""

    def __init__(self) -> None:
        super().__init__(tokenUrl=TOKEN_URL, scopes=SCOPES, auto_error=False,
                         scheme_name="OAuth2PasswordBearer")
        clients = ROLE_SCOPES[Role.integration]
        self.model = OAuth2Model(
            description="Access tokens from `POST /v1/auth/token`: the `password` grant for "
                        "people (with `refresh_token` rotation), `client_credentials` for "
                        "machines. Send `Authorization: Bearer <access_token>`.",
            flows=OAuthFlowsModel(
                password=OAuthFlowPassword(tokenUrl=TOKEN_URL, scopes=SCOPES),
                clientCredentials=OAuthFlowClientCredentials(
                    tokenUrl=TOKEN_URL,
                    scopes={k: v for k, v in SCOPES.items() if k in clients})))


oauth2_scheme = OAuth2Bearer()


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "user" | "client"
    id: uuid.UUID
    name: str  # username or client_id
    role: Role
    scopes: frozenset[str]
    all_facilities: bool
    facility_ids: frozenset[uuid.UUID]
    networks: frozenset[Network]
    participant_id: uuid.UUID | None
    jti: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    def sees_facility(self, facility_id: uuid.UUID | None) -> bool:
        return self.all_facilities or facility_id in self.facility_ids

    # The role tests that rules and walls ask, named once (groups: app.security.scopes).
    @property
    def is_peer(self) -> bool:
        return self.role == Role.peer_supporter

    @property
    def is_coordinator(self) -> bool:
        return self.role in COORDINATORS

    @property
    def is_clinician(self) -> bool:
        return self.role == Role.clinician

    @property
    def is_officer(self) -> bool:
        return self.role == Role.officer

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


class PrincipalCache:
    """Principals by token id, trusted only while this process provably hears every
    invalidation (app.security.invalidation): its LISTEN connection is up, it answered a
    heartbeat within the lease, and no byte sits unread on its socket (an unread byte may be a
    revocation, or the server closing the connection). Otherwise every request reads the
    account from the database: the cache never decides alone that a token is still good."""

    def __init__(self, ttl_seconds: float = 10.0, size: int = 20_000) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self.enabled = False  # switched on by app.security.invalidation (lifespan)
        self.generation = 0  # bumped by every invalidation: a load that saw one is not kept
        self._trusted_until = math.inf  # time.monotonic(); the listener's heartbeat lease
        self._socket: io_select.poll | None = None  # the LISTEN connection's socket
        self._by_jti: dict[str, tuple[float, Principal]] = {}
        self._jtis_by_subject: dict[uuid.UUID, set[str]] = {}

    def listening(self, fileno: int | None, trusted_until: float) -> None:
        """The LISTEN connection is up (its socket: `fileno`) and answered a heartbeat."""
        if fileno is not None:
            poller = io_select.poll()
            poller.register(fileno, io_select.POLLIN | io_select.POLLPRI)
            self._socket = poller
        self._trusted_until = trusted_until
        self.enabled = True

    def stop_trusting(self) -> None:
        """The LISTEN connection is gone (or not yet there): nothing cached is served."""
        self.enabled = False
        self._socket = None
        self._trusted_until = math.inf
        self.clear()

    def trusted(self) -> bool:
        if not self.enabled or time.monotonic() >= self._trusted_until:
            return False
        # POLLHUP/POLLERR are always reported: a closed connection reads as untrusted too.
        return self._socket is None or not self._socket.poll(0)

    def get(self, jti: str, now: float) -> Principal | None:
        if not self.trusted():
            return None
        hit = self._by_jti.get(jti)
        if hit is None:
            return None
        if hit[0] <= now:
            self._drop(jti)
            return None
        return hit[1]

    def put(self, principal: Principal, now: float, generation: int | None = None) -> None:
        """Keeps a principal read from the database; not when an invalidation arrived since
        the read began (`generation`, read before it): the read may predate the change."""
        if not self.enabled or self.ttl <= 0 or principal.jti is None:
            return
        if generation is not None and generation != self.generation:
            return
        if len(self._by_jti) >= self.size:
            self.clear()
        self._by_jti[principal.jti] = (now + self.ttl, principal)
        self._jtis_by_subject.setdefault(principal.id, set()).add(principal.jti)

    def forget_token(self, jti: str) -> None:
        self.generation += 1
        self._drop(jti)

    def _drop(self, jti: str) -> None:
        hit = self._by_jti.pop(jti, None)
        if hit is not None:
            self._jtis_by_subject.get(hit[1].id, set()).discard(jti)

    def forget_subject(self, subject: uuid.UUID) -> None:
        self.generation += 1
        for jti in self._jtis_by_subject.pop(subject, set()):
            self._by_jti.pop(jti, None)

    def clear(self) -> None:
        self.generation += 1
        self._by_jti.clear()
        self._jtis_by_subject.clear()

    def apply(self, message: str) -> None:
        """Applies an invalidation message: 'jti:<id>', 'sub:<uuid>' or 'all'."""
        kind, _, value = message.partition(":")
        if kind == "jti":
            self.forget_token(value)
        elif kind == "sub":
            try:
                self.forget_subject(uuid.UUID(value))
            except ValueError:
                self.clear()
        else:
            self.clear()


PRINCIPALS = PrincipalCache()


async def load_principal(session: AsyncSession, claims: dict[str, Any]) -> Principal:
    """The account's current role, facilities and state win over what the token says."""
    try:
        subject = uuid.UUID(claims["sub"])
    except (ValueError, TypeError) as exc:
        raise InvalidToken("bad subject") from exc
    revoked = exists().where(RevokedAccessToken.jti == claims["jti"])
    token_scopes = frozenset(claims["scope"].split())
    if claims.get("sub_kind") == "client":
        row = (await session.execute(
            select(ApiClient.client_id, ApiClient.active, ApiClient.scopes,
                   ApiClient.all_facilities, ApiClient.facility_ids, ApiClient.networks,
                   revoked.label("revoked"))
            .where(ApiClient.id == subject)
        )).first()
        if row is None or not row.active or row.revoked:
            raise InvalidToken("client inactive or token revoked")
        return Principal(
            kind="client", id=subject, name=row.client_id, role=Role.integration,
            scopes=token_scopes & frozenset(row.scopes) & ROLE_SCOPES[Role.integration],
            all_facilities=row.all_facilities,
            facility_ids=frozenset(uuid.UUID(f) for f in row.facility_ids),
            networks=frozenset(Network(n) for n in row.networks), participant_id=None,
            jti=claims["jti"],
        )
    if claims.get("sub_kind") != "user":
        raise InvalidToken("unknown subject kind")
    dead: ColumnElement[bool] = revoked
    if "sid" in claims:
        # Issued from a refresh family (a sign-in): dead once the family is revoked (a replayed
        # refresh token, RFC 7009 revocation, a password or role change, deactivation).
        try:
            family = uuid.UUID(claims["sid"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken("bad sid") from exc
        dead = or_(revoked, exists().where(
            RefreshToken.family_id == family,
            RefreshToken.revoked_at.is_not(None)))  # type: ignore[union-attr]
    row = (await session.execute(
        select(User.username, User.active, User.role, User.all_facilities, User.facility_ids,
               User.participant_id, Participant.network, dead.label("revoked"))
        .outerjoin(Participant, Participant.id == User.participant_id)
        .where(User.id == subject)
    )).first()
    if row is None or not row.active or row.revoked:
        raise InvalidToken("user inactive or token revoked")
    role = Role(row.role)
    networks = ROLE_NETWORKS[role]
    if role == Role.peer_supporter and row.network:
        networks = frozenset({Network(row.network)})
    return Principal(
        kind="user", id=subject, name=row.username, role=role,
        scopes=token_scopes & scopes_for(role, row.all_facilities), all_facilities=row.all_facilities,
        facility_ids=frozenset(uuid.UUID(f) for f in row.facility_ids), networks=networks,
        participant_id=row.participant_id, jti=claims["jti"],
    )


async def resolve(app_state: Any, token: str) -> Principal:
    """The token's account as it stands now (InvalidToken when it does not verify, is revoked,
    or its account is inactive): from PRINCIPALS, or on a miss from one short read."""
    claims = app_state.keyring.verify_cached(token, settings=app_state.settings)
    return await current(app_state.read_sessionmaker, claims)


async def current(read_sessionmaker: Any, claims: dict[str, Any]) -> Principal:
    """The account behind verified claims as it stands now (InvalidToken when the token is
    revoked or the account inactive): from PRINCIPALS, or on a miss from one short read. Also
    what a live stream asks at each heartbeat, with the claims of the token that opened it."""
    now = time.time()
    principal = PRINCIPALS.get(claims["jti"], now)
    if principal is None:
        generation = PRINCIPALS.generation
        async with read_sessionmaker() as session:
            principal = await load_principal(session, claims)
        PRINCIPALS.put(principal, now, generation)
    return principal


async def get_principal(
    security_scopes: SecurityScopes,
    request: Request,
    token: str | None = Depends(oauth2_scheme),
) -> Principal:
    if not token:
        raise Unauthorized()
    try:
        principal = await resolve(request.app.state, token)
    except InvalidToken as exc:
        request.state.auth_failure = str(exc)  # for the log line; never for the body
        raise Unauthorized() from None
    request.state.principal = principal
    check_scopes(principal, security_scopes)
    return principal


def check_scopes(principal: Principal, security_scopes: SecurityScopes) -> None:
    """403 insufficient_scope unless the principal holds every scope the route declares."""
    missing = set(security_scopes.scopes) - principal.scopes
    if missing:
        raise Forbidden(
            "Your token lacks a scope this operation needs.", code="insufficient_scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", '
                                         f'scope="{security_scopes.scope_str}"'},
        )


async def bearer_principal(scope: Any) -> Principal | None:
    """The request's caller as it stands now, or None (no token, or one that does not verify,
    is revoked or whose account is inactive). For middleware that must tell callers apart
    before routing (rate limits, idempotency keys); kept on the request, so it resolves once."""
    state = scope.setdefault("state", {})
    if "bearer_principal" in state:
        return state["bearer_principal"]  # type: ignore[no-any-return]
    principal = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                try:
                    principal = await resolve(scope["app"].state, token.strip())
                except InvalidToken:
                    principal = None
            break
    state["bearer_principal"] = principal
    return principal


__all__ = ["PRINCIPALS", "Principal", "bearer_principal", "check_scopes", "current", "get_principal",
           "resolve"]

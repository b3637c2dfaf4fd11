"""Who is calling: the Principal, built from a verified access token and the account's
current state (one database round trip), and the scope check every route declares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.db import get_session
from app.errors import Forbidden, Unauthorized
from app.models import ApiClient, Participant, RevokedAccessToken, User
from app.models.common import Network, Role
from app.security.scopes import ROLE_NETWORKS, ROLE_SCOPES, SCOPES
from app.security.tokens import InvalidToken, KeyRing

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", scopes=SCOPES, auto_error=False)


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


def verify_access_token(token: str, keyring: KeyRing, settings: Settings) -> dict[str, Any]:
    return keyring.verify_cached(token, settings=settings)


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
    row = (await session.execute(
        select(User.username, User.active, User.role, User.all_facilities, User.facility_ids,
               User.participant_id, Participant.network, revoked.label("revoked"))
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
        scopes=token_scopes & ROLE_SCOPES[role], all_facilities=row.all_facilities,
        facility_ids=frozenset(uuid.UUID(f) for f in row.facility_ids), networks=networks,
        participant_id=row.participant_id, jti=claims["jti"],
    )


async def get_principal(
    security_scopes: SecurityScopes,
    request: Request,
    token: str | None = Depends(oauth2_scheme),
    session: AsyncSession = Depends(get_session),
) -> Principal:
    if not token:
        raise Unauthorized()
    settings: Settings = request.app.state.settings
    try:
        claims = verify_access_token(token, request.app.state.keyring, settings)
        principal = await load_principal(session, claims)
    except InvalidToken as exc:
        request.state.auth_failure = str(exc)  # for the log line; never for the body
        raise Unauthorized() from None
    request.state.principal = principal
    missing = set(security_scopes.scopes) - principal.scopes
    if missing:
        raise Forbidden(
            "Your token lacks a scope this operation needs.", code="insufficient_scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", '
                                         f'scope="{security_scopes.scope_str}"'},
        )
    return principal


__all__ = ["Principal", "get_principal", "get_settings", "verify_access_token"]

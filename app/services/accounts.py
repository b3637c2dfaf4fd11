"""User accounts and API clients (admin-managed). Nothing is deleted: accounts deactivate."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import NotFound, RuleViolation
from app.models import ApiClient, Participant, RefreshToken, User
from app.models.account import ClientCreate, ClientUpdate, UserCreate, UserUpdate
from app.models.common import Role
from app.security.passwords import hash_password, new_secret
from app.security.principal import Principal
from app.security.scopes import ROLE_SCOPES
from app.services.common import check_version, flush_unique
from app.services.facilities import ids_by_codes
from app.services.pagination import keyset_page
from app.services.writer import Writer


async def _check_participant_link(session: AsyncSession, role: Role,
                                  participant_id: uuid.UUID | None) -> None:
    if role == Role.peer_supporter and participant_id is None:
        raise RuleViolation("A peer_supporter account must be linked to their participant record.",
                            code="participant_required",
                            errors=[{"field": "participant_id", "message": "required for "
                                     "peer_supporter", "type": "participant_required"}])
    if participant_id is None:
        return
    if role != Role.peer_supporter:
        raise RuleViolation("Only peer_supporter accounts link to a participant.",
                            code="participant_not_allowed")
    found = (await session.execute(select(Participant.is_supporter)
                                   .where(Participant.id == participant_id))).scalar_one_or_none()
    if not found:
        raise RuleViolation("The linked participant must exist and be a supporter.",
                            code="participant_not_supporter",
                            errors=[{"field": "participant_id", "message": "not a supporter",
                                     "type": "participant_not_supporter"}])


def _check_role(role: Role, all_facilities: bool) -> None:
    """Account administration is system-wide: an admin holds every facility. Integration is
    for API clients, never for a person's account."""
    if role == Role.integration:
        raise RuleViolation("The integration role is for API clients (/v1/clients).",
                            code="role_not_for_users")
    if role == Role.admin and not all_facilities:
        raise RuleViolation("An admin account covers all facilities.",
                            code="admin_needs_all_facilities")


async def create_user(*, session: AsyncSession, principal: Principal | None,
                      data: UserCreate) -> User:
    _check_role(data.role, data.facility_codes is None)
    await _check_participant_link(session, data.role, data.participant_id)
    facility_ids = await ids_by_codes(session, data.facility_codes or [])
    user = User(
        username=data.username.lower(), password_hash=hash_password(data.password.get_secret_value()),
        role=data.role.value, all_facilities=data.facility_codes is None,
        facility_ids=[str(f) for f in facility_ids], participant_id=data.participant_id,
    )
    session.add(user)
    await flush_unique(session, "This username is taken.", code="username_taken")
    w = Writer(session, principal)
    w.audit("user.create", "user", user.id)
    await w.commit()
    return user


async def get_user(*, session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def list_users(*, session: AsyncSession, limit: int, cursor: str | None,
                     role: Role | None, active: bool | None) -> tuple[list[User], str | None]:
    stmt = select(User)
    if role:
        stmt = stmt.where(User.role == role.value)
    if active is not None:
        stmt = stmt.where(User.active == active)
    return await keyset_page(session, stmt, User.__table__.c.id, kind="user", limit=limit,
                             cursor=cursor)


async def update_user(*, session: AsyncSession, principal: Principal, user_id: uuid.UUID,
                      data: UserUpdate, if_match: str | None) -> User:
    user = await get_user(session=session, user_id=user_id)
    check_version(user.version, if_match)
    fields = data.model_fields_set
    role = data.role or Role(user.role)
    participant_id = data.participant_id if "participant_id" in fields else user.participant_id
    if "role" in fields or "participant_id" in fields:
        await _check_participant_link(session, role, participant_id)
    user.role = role.value
    user.participant_id = participant_id
    if data.password is not None:
        user.password_hash = hash_password(data.password.get_secret_value())
    if "facility_codes" in fields and data.facility_codes is not None:
        user.facility_ids = [str(f) for f in await ids_by_codes(session, data.facility_codes)]
        user.all_facilities = False
    if data.all_facilities is not None:
        user.all_facilities = data.all_facilities
    _check_role(role, user.all_facilities)
    user.version += 1
    user.updated_at = utcnow()
    w = Writer(session, principal)
    w.audit("user.update", "user", user.id)
    w.invalidate_auth(subject=user.id)
    if data.password is not None or "role" in fields:
        await _revoke_user_refresh_tokens(session, user.id)
    await w.commit()
    return user


async def set_user_active(*, session: AsyncSession, principal: Principal, user_id: uuid.UUID,
                          active: bool, if_match: str | None = None) -> User:
    user = await get_user(session=session, user_id=user_id)
    check_version(user.version, if_match)
    if user.id == principal.id and not active:
        raise RuleViolation("You cannot deactivate your own account.", code="self_deactivation")
    if user.active == active:
        return user
    user.active = active
    user.version += 1
    user.updated_at = utcnow()
    if not active:
        await _revoke_user_refresh_tokens(session, user.id)
    w = Writer(session, principal)
    w.audit("user.activate" if active else "user.deactivate", "user", user.id)
    w.invalidate_auth(subject=user.id)
    await w.commit()
    return user


async def _revoke_user_refresh_tokens(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(update(RefreshToken)
                          .where(RefreshToken.user_id == user_id,
                                 RefreshToken.revoked_at.is_(None))  # type: ignore[union-attr]
                          .values(revoked_at=utcnow()))


# --- API clients -----------------------------------------------------------------------------

def _check_client_scopes(scopes: list[str]) -> list[str]:
    allowed = ROLE_SCOPES[Role.integration]
    bad = sorted(set(scopes) - allowed)
    if bad:
        raise RuleViolation("A client may hold only integration scopes.", code="scope_not_allowed",
                            errors=[{"field": "scopes", "message": f"not allowed: {s}",
                                     "type": "scope_not_allowed"} for s in bad])
    return sorted(set(scopes))


async def create_client(*, session: AsyncSession, principal: Principal | None,
                        data: ClientCreate) -> tuple[ApiClient, str]:
    secret = new_secret("pls_")
    facility_ids = await ids_by_codes(session, data.facility_codes or [])
    client = ApiClient(
        client_id=new_secret("plc_", 12), name=data.name, secret_hash=hash_password(secret),
        scopes=_check_client_scopes(data.scopes), all_facilities=data.facility_codes is None,
        facility_ids=[str(f) for f in facility_ids],
        networks=sorted({n.value for n in data.networks}),
    )
    session.add(client)
    w = Writer(session, principal)
    w.audit("client.create", "api_client", client.id)
    await w.commit()
    return client, secret


async def get_client(*, session: AsyncSession, client_id: uuid.UUID) -> ApiClient:
    client = await session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("No such API client.")
    return client


async def list_clients(*, session: AsyncSession, limit: int,
                       cursor: str | None) -> tuple[list[ApiClient], str | None]:
    return await keyset_page(session, select(ApiClient), ApiClient.__table__.c.id, kind="client",
                             limit=limit, cursor=cursor)


async def update_client(*, session: AsyncSession, principal: Principal, client_id: uuid.UUID,
                        data: ClientUpdate, if_match: str | None) -> ApiClient:
    client = await get_client(session=session, client_id=client_id)
    check_version(client.version, if_match)
    if data.name is not None:
        client.name = data.name
    if data.scopes is not None:
        client.scopes = _check_client_scopes(data.scopes)
    if data.facility_codes is not None:
        client.facility_ids = [str(f) for f in await ids_by_codes(session, data.facility_codes)]
        client.all_facilities = False
    if data.all_facilities is not None:
        client.all_facilities = data.all_facilities
    if data.networks is not None:
        client.networks = sorted({n.value for n in data.networks})
    if data.active is not None:
        client.active = data.active
    client.version += 1
    client.updated_at = utcnow()
    w = Writer(session, principal)
    w.audit("client.update", "api_client", client.id)
    w.invalidate_auth(subject=client.id)
    await w.commit()
    return client


async def rotate_client_secret(*, session: AsyncSession, principal: Principal,
                               client_id: uuid.UUID,
                               if_match: str | None = None) -> tuple[ApiClient, str]:
    client = await get_client(session=session, client_id=client_id)
    check_version(client.version, if_match)
    secret = new_secret("pls_")
    client.secret_hash = hash_password(secret)
    client.secret_rotated_at = client.updated_at = utcnow()
    client.version += 1
    w = Writer(session, principal)
    w.audit("client.rotate_secret", "api_client", client.id)
    await w.commit()
    return client, secret


async def display_names(session: AsyncSession, actors: set[str]) -> dict[str, str]:
    """Readable names for actor strings (`Principal.actor`: `user:<id>`, `client:<id>`): a user's
    username, a client's name; any other actor (the worker's `system`) is its own name. Actors
    whose account cannot be found are left out."""
    ids: dict[str, dict[uuid.UUID, str]] = {"user": {}, "client": {}}
    names: dict[str, str] = {}
    for actor in actors:
        kind, _, value = actor.partition(":")
        if kind in ids and value:
            try:
                ids[kind][uuid.UUID(value)] = actor
            except ValueError:
                continue
        elif not value:
            names[actor] = actor
    if ids["user"]:
        users = User.__table__.c
        for id_, username in await session.execute(
                select(users.id, users.username).where(users.id.in_(ids["user"]))):
            names[ids["user"][id_]] = username
    if ids["client"]:
        clients = ApiClient.__table__.c
        for id_, name in await session.execute(
                select(clients.id, clients.name).where(clients.id.in_(ids["client"]))):
            names[ids["client"][id_]] = name
    return names

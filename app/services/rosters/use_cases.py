"""Managing rosters: on-call shifts (create, change, end by `valid_until`) and overrides
(create, cancel), read through the roster wall (`scoping.roster_wall`: managers every entry in
scope, anyone else their own). Nothing is deleted: a shift ends, an override is cancelled."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import Facility, OnCallOverride, OnCallShift, User
from app.models.common import Network
from app.models.roster import (
    OverrideCreate,
    OverrideStatus,
    ShiftCreate,
    ShiftUpdate,
)
from app.security.principal import Principal
from app.services import scoping
from app.services.common import check_version
from app.services.facilities import settings_from
from app.services.pagination import keyset_page
from app.services.rosters.rules import account_refusal
from app.services.writer import Writer

SHIFTS = OnCallShift.__table__.c
OVERRIDES = OnCallOverride.__table__.c


def _refuse(field: str, code: str, message: str) -> RuleViolation:
    return RuleViolation(message, code=code,
                         errors=[{"field": field, "message": message, "type": code}])


async def _placement(session: AsyncSession, principal: Principal, *, facility_id: uuid.UUID,
                     network: str, level: str, user_id: uuid.UUID) -> None:
    """A roster entry goes to a facility and network the caller manages, names a level of that
    facility's chain, and a person who may hold it (`rules.holder_refusal`)."""
    facility = (await session.execute(scoping.facilities(principal).where(
        Facility.id == facility_id))).scalar_one_or_none()
    if facility is None:
        raise _refuse("facility_id", "unknown_facility", "No such facility.")
    if not principal.is_admin and Network(network) not in principal.networks:
        raise _refuse("network", "network_out_of_scope", "You do not manage this network.")
    chain = settings_from(facility.settings)["escalation_chain"]
    refusal = account_refusal(await session.get(User, user_id), chain=chain, level=level,
                              facility_id=facility.id, network=network)
    if refusal is not None:
        raise _refuse("level" if refusal.code == "unknown_level" else "user_id", refusal.code,
                      refusal.message)


# --- shifts ----------------------------------------------------------------------------------

async def get_shift(*, session: AsyncSession, principal: Principal, shift_id: uuid.UUID,
                    for_update: bool = False) -> OnCallShift:
    stmt = scoping.on_call_shifts(principal).where(SHIFTS.id == shift_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such shift.")
    return found


async def list_shifts(*, session: AsyncSession, principal: Principal,
                      facility_id: uuid.UUID | None, network: Network | None,
                      level: str | None, user_id: uuid.UUID | None, limit: int,
                      cursor: str | None) -> tuple[list[OnCallShift], str | None]:
    stmt = scoping.on_call_shifts(principal)
    for column, value in ((SHIFTS.facility_id, facility_id), (SHIFTS.level, level),
                          (SHIFTS.user_id, user_id),
                          (SHIFTS.network, network.value if network else None)):
        if value is not None:
            stmt = stmt.where(column == value)
    return await keyset_page(session, stmt, SHIFTS.id, kind="on_call_shift", limit=limit,
                             cursor=cursor)


async def create_shift(*, session: AsyncSession, principal: Principal,
                       data: ShiftCreate) -> OnCallShift:
    await _placement(session, principal, facility_id=data.facility_id,
                     network=data.network.value, level=data.level, user_id=data.user_id)
    shift = OnCallShift(**data.model_dump(mode="python", exclude={"network", "weekdays"}),
                        network=data.network.value, weekdays=[d.value for d in data.weekdays],
                        created_by=principal.actor)
    session.add(shift)
    await session.flush()
    writer = Writer(session, principal)
    writer.audit("on_call_shift.create", "on_call_shift", shift.id, shift.facility_id)
    await writer.commit()
    return shift


async def update_shift(*, session: AsyncSession, principal: Principal, shift_id: uuid.UUID,
                       data: ShiftUpdate, if_match: str | None) -> OnCallShift:
    """The changed shift must be one the rules accept as new (ShiftCreate, placement)."""
    shift = await get_shift(session=session, principal=principal, shift_id=shift_id,
                            for_update=True)
    check_version(shift.version, if_match)
    changes = data.model_dump(exclude_unset=True)
    if any(changes.get(k, 0) is None for k in ("user_id", "weekdays", "start_time",
                                                "duration_minutes", "valid_from")):
        raise RuleViolation("Only valid_until may be set to null.", code="invalid_change")
    merged: dict[str, Any] = {
        k: getattr(shift, k) for k in ("facility_id", "network", "level", "user_id", "weekdays",
                                       "start_time", "duration_minutes", "valid_from",
                                       "valid_until")} | changes
    try:
        checked = ShiftCreate.model_validate(merged)
    except ValidationError as exc:  # e.g. valid_until now before valid_from
        raise RuleViolation("The changed shift is not valid.", code="invalid_change",
                            errors=[{"field": ".".join(map(str, e["loc"])) or "body",
                                     "message": e["msg"], "type": "invalid_change"}
                                    for e in exc.errors(include_input=False)]) from None
    await _placement(session, principal, facility_id=shift.facility_id, network=shift.network,
                     level=shift.level, user_id=checked.user_id)
    for key in ("user_id", "start_time", "duration_minutes", "valid_from", "valid_until"):
        setattr(shift, key, getattr(checked, key))
    shift.weekdays = [d.value for d in checked.weekdays]
    shift.version += 1
    shift.updated_at = utcnow()
    writer = Writer(session, principal)
    writer.audit("on_call_shift.update", "on_call_shift", shift.id, shift.facility_id)
    await writer.commit()
    return shift


# --- overrides -------------------------------------------------------------------------------

async def get_override(*, session: AsyncSession, principal: Principal, override_id: uuid.UUID,
                       for_update: bool = False) -> OnCallOverride:
    stmt = scoping.on_call_overrides(principal).where(OVERRIDES.id == override_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such override.")
    return found


async def list_overrides(*, session: AsyncSession, principal: Principal,
                         facility_id: uuid.UUID | None, network: Network | None,
                         ends_after: datetime | None, limit: int,
                         cursor: str | None) -> tuple[list[OnCallOverride], str | None]:
    stmt = scoping.on_call_overrides(principal)
    if facility_id is not None:
        stmt = stmt.where(OVERRIDES.facility_id == facility_id)
    if network is not None:
        stmt = stmt.where(OVERRIDES.network == network.value)
    if ends_after is not None:
        if ends_after.tzinfo is None:
            raise _refuse("ends_after", "invalid_time", "ends_after needs a UTC offset.")
        stmt = stmt.where(OVERRIDES.ends_at > ends_after)
    return await keyset_page(session, stmt, OVERRIDES.id, kind="on_call_override",
                             limit=limit, cursor=cursor)


async def create_override(*, session: AsyncSession, principal: Principal,
                          data: OverrideCreate) -> OnCallOverride:
    await _placement(session, principal, facility_id=data.facility_id,
                     network=data.network.value, level=data.level, user_id=data.user_id)
    override = OnCallOverride(facility_id=data.facility_id, network=data.network.value,
                              level=data.level, user_id=data.user_id, starts_at=data.starts_at,
                              ends_at=data.ends_at, reason=data.reason,
                              created_by=principal.actor)
    session.add(override)
    await session.flush()
    writer = Writer(session, principal)
    writer.audit("on_call_override.create", "on_call_override", override.id,
                 override.facility_id)
    await writer.commit()
    return override


async def cancel_override(*, session: AsyncSession, principal: Principal,
                          override_id: uuid.UUID, if_match: str | None) -> OnCallOverride:
    override = await get_override(session=session, principal=principal,
                                  override_id=override_id, for_update=True)
    check_version(override.version, if_match)
    if override.status != OverrideStatus.active:
        raise Conflict("The override is already cancelled.", code="invalid_transition",
                       current_state=override.status)
    now = utcnow()
    override.status = OverrideStatus.cancelled.value
    override.cancelled_at, override.cancelled_by = now, principal.actor
    override.version += 1
    override.updated_at = now
    writer = Writer(session, principal)
    writer.audit("on_call_override.cancel", "on_call_override", override.id,
                 override.facility_id)
    await writer.commit()
    return override

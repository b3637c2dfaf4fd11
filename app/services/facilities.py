"""Facilities and housing units: admins write, everyone reads within scope."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import NotFound
from app.models import Facility, HousingUnit
from app.models.facility import FacilityCreate, FacilitySettings, FacilityUpdate, HousingUnitCreate
from app.security.principal import Principal
from app.services import scoping
from app.services.common import check_version, flush_unique
from app.services.pagination import keyset_page
from app.services.writer import Writer


async def get(*, session: AsyncSession, principal: Principal, facility_id: uuid.UUID) -> Facility:
    row = (await session.execute(
        scoping.facilities(principal).where(Facility.id == facility_id)
    )).scalar_one_or_none()
    if row is None:
        raise NotFound("No such facility.")
    return row


async def list_(*, session: AsyncSession, principal: Principal, limit: int,
                cursor: str | None) -> tuple[list[Facility], str | None]:
    return await keyset_page(session, scoping.facilities(principal), Facility.__table__.c.id,
                             kind="facility", limit=limit, cursor=cursor)


async def create(*, session: AsyncSession, principal: Principal, data: FacilityCreate) -> Facility:
    facility = Facility(code=data.code, name=data.name, timezone=data.timezone,
                        settings=data.settings.model_dump())
    session.add(facility)
    w = Writer(session, principal)
    w.audit("facility.create", "facility", facility.id, facility.id)
    await flush_unique(session, "A facility with this code exists.", code="facility_code_taken")
    await w.commit()
    return facility


async def update(*, session: AsyncSession, principal: Principal, facility_id: uuid.UUID,
                 data: FacilityUpdate, if_match: str | None) -> Facility:
    facility = await get(session=session, principal=principal, facility_id=facility_id)
    check_version(facility.version, if_match)
    values = data.model_dump(exclude_unset=True)
    if "settings" in values and data.settings is not None:
        values["settings"] = data.settings.model_dump()
    changed = {k: v for k, v in values.items() if v is not None and getattr(facility, k) != v}
    if not changed:
        return facility
    for k, v in changed.items():
        setattr(facility, k, v)
    facility.version += 1
    facility.updated_at = utcnow()
    w = Writer(session, principal)
    w.audit("facility.update", "facility", facility.id, facility.id)
    await w.commit()
    return facility


async def list_units(*, session: AsyncSession, principal: Principal,
                     facility_id: uuid.UUID) -> list[HousingUnit]:
    await get(session=session, principal=principal, facility_id=facility_id)
    rows = await session.execute(
        select(HousingUnit).where(HousingUnit.facility_id == facility_id).order_by(HousingUnit.code)
    )
    return list(rows.scalars())


async def create_unit(*, session: AsyncSession, principal: Principal, facility_id: uuid.UUID,
                      data: HousingUnitCreate) -> HousingUnit:
    await get(session=session, principal=principal, facility_id=facility_id)
    unit = HousingUnit(facility_id=facility_id, code=data.code, name=data.name)
    session.add(unit)
    await flush_unique(session, "This facility already has a unit with this code.",
                       code="housing_unit_code_taken")
    w = Writer(session, principal)
    w.audit("housing_unit.create", "housing_unit", unit.id, facility_id)
    await w.commit()
    return unit


async def ids_by_codes(session: AsyncSession, codes: list[str]) -> list[uuid.UUID]:
    """Resolves facility codes (as operators know them) to ids; unknown codes are a 422."""
    if not codes:
        return []
    rows = (await session.execute(select(Facility.code, Facility.id)
                                  .where(Facility.code.in_(codes)))).all()  # type: ignore[attr-defined]
    found = {r.code: r.id for r in rows}
    missing = sorted(set(codes) - set(found))
    if missing:
        from app.errors import RuleViolation

        raise RuleViolation("Unknown facility code(s).", code="unknown_facility",
                            errors=[{"field": "facility_codes", "message": f"unknown code {c}",
                                     "type": "unknown_facility"} for c in missing])
    return [found[c] for c in codes]


async def settings_of(session: AsyncSession, facility_id: uuid.UUID) -> dict[str, Any]:
    """A facility's settings with every default filled in (caps, clocks, the chain)."""
    raw = (await session.execute(select(Facility.__table__.c.settings).where(
        Facility.__table__.c.id == facility_id))).scalar_one()
    return settings_from(raw)


def settings_from(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Stored facility settings with every default filled in."""
    return FacilitySettings.model_validate(
        {k: v for k, v in (raw or {}).items() if k in FacilitySettings.model_fields}).model_dump()

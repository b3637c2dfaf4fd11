"""Where a participant body points: facilities within the caller's scope and their housing
units, loaded once for one body or a chunk of an import, and resolved by id or code."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import RuleViolation
from app.models import Facility, HousingUnit
from app.models.participant import ParticipantCreate, ParticipantUpdate
from app.security.principal import Principal
from app.services import scoping

_UNKNOWN_FACILITY = "The facility is unknown or outside your scope."


@dataclass
class Locations:
    """Facilities within the caller's scope and their housing units, by id and by code: what a
    body's facility and unit references resolve against. Loaded in one query, for one body or
    for a chunk of an import."""

    facility_by_code: dict[str, uuid.UUID] = field(default_factory=dict)
    facility_ids: set[uuid.UUID] = field(default_factory=set)
    unit_by_code: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)
    unit_facility: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession, principal: Principal, *,
                   ids: Iterable[uuid.UUID] = (), codes: Iterable[str] = ()) -> Locations:
        loc = cls()
        ids, codes = set(ids), set(codes)
        if not ids and not codes:
            return loc
        facility, unit = Facility.__table__, HousingUnit.__table__
        match = [c for c in (facility.c.id.in_(ids) if ids else None,
                             facility.c.code.in_(codes) if codes else None) if c is not None]
        rows = await session.execute(
            select(facility.c.id, facility.c.code, unit.c.id.label("unit_id"),
                   unit.c.code.label("unit_code"))
            .select_from(facility.outerjoin(unit, unit.c.facility_id == facility.c.id))
            .where(or_(*match), *scoping.facility_clauses(principal)))
        for r in rows:
            loc.facility_by_code[r.code] = r.id
            loc.facility_ids.add(r.id)
            if r.unit_id is not None:
                loc.unit_by_code[(r.id, r.unit_code)] = r.unit_id
                loc.unit_facility[r.unit_id] = r.id
        return loc

    def resolve(self, *, facility_id: uuid.UUID | None, facility_code: str | None,
                unit_id: uuid.UUID | None, unit_code: str | None,
                ) -> tuple[uuid.UUID, uuid.UUID | None]:
        """Facility (within scope) and housing unit (of that facility)."""
        fid = (facility_id if facility_id in self.facility_ids else None) if facility_id \
            else self.facility_by_code.get(facility_code or "")
        if fid is None:
            raise RuleViolation(_UNKNOWN_FACILITY, code="unknown_facility",
                                errors=[{"field": "facility_id" if facility_id else "facility_code",
                                         "message": "unknown facility", "type": "unknown_facility"}])
        if unit_id is None and unit_code is None:
            return fid, None
        uid = (unit_id if self.unit_facility.get(unit_id) == fid else None) if unit_id \
            else self.unit_by_code.get((fid, unit_code or ""))
        if uid is None:
            raise RuleViolation("The housing unit is not one of this facility's.",
                                code="unknown_housing_unit",
                                errors=[{"field": "housing_unit_id" if unit_id else "housing_unit_code",
                                         "message": "unknown housing unit for this facility",
                                         "type": "unknown_housing_unit"}])
        return fid, uid


def wanted(data: ParticipantCreate | ParticipantUpdate,
           current_facility: uuid.UUID | None) -> tuple[set[uuid.UUID], set[str]]:
    """The facility ids and codes a body refers to (what Locations.load needs for it)."""
    ids = {i for i in (data.facility_id, current_facility) if i is not None}
    return ids, {data.facility_code} if data.facility_code else set()

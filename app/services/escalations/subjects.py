"""Whom and where an escalation is about, as a raise gives it: the place, bounded by the
raiser's facilities (`place_of`); whether the raiser can see the person they name (`seen_by`);
and the server's own lookup across every wall (`lookup`: by our id or another system's, following
merges), whose result the raiser is never told."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import RuleViolation
from app.models import HousingUnit, Pairing, Participant, ParticipantExternalId
from app.models.common import Network
from app.models.escalation import EscalationCreate
from app.models.pairing import HOLDING
from app.security.principal import Principal
from app.services import scoping

PEOPLE = scoping.P
PAIRINGS = Pairing.__table__.c
EXTERNAL_IDS = ParticipantExternalId.__table__.c
MERGE_HOPS = 5  # a chain of merges longer than this is a data error; stop at the last found


async def place_of(session: AsyncSession, principal: Principal,
                   data: EscalationCreate) -> tuple[uuid.UUID | None, HousingUnit | None]:
    """The place the raiser gave, checked against their own facilities (never against what a
    lookup finds): `facility_id`, else the unit's facility, else the raiser's only facility;
    None when none of these says. A facility or unit outside their scope is refused (422)."""
    facility_id = data.facility_id
    if facility_id is not None:
        found = (await session.execute(select(scoping.F.id).where(
            *scoping.facility_clauses(principal), scoping.F.id == facility_id))).first()
        if found is None:
            raise RuleViolation("The facility is unknown or outside your scope.",
                                code="unknown_facility",
                                errors=[{"field": "facility_id", "message": "unknown facility",
                                         "type": "unknown_facility"}])
    unit = None
    if data.location_unit_id is not None:
        unit = (await session.execute(scoping.housing_units(principal).where(
            scoping.HU.id == data.location_unit_id))).scalar_one_or_none()
        if unit is None or (facility_id is not None and unit.facility_id != facility_id):
            raise RuleViolation("The location is not a unit of the facility.",
                                code="unknown_housing_unit")
        facility_id = facility_id or unit.facility_id
    if facility_id is None and not principal.all_facilities and len(principal.facility_ids) == 1:
        facility_id = next(iter(principal.facility_ids))
    return facility_id, unit


async def lookup(session: AsyncSession, data: EscalationCreate,
                 place: uuid.UUID | None = None) -> Participant | None:
    """The person the raise names, across every wall, following merges to the survivor. An
    external id is unique per facility: of several holders, the one at `place` (the raise's
    facility) comes first."""
    if data.participant_id is not None:
        person = await session.get(Participant, data.participant_id)
    elif data.external_id is not None:
        stmt = (select(Participant).join(ParticipantExternalId,
                                         EXTERNAL_IDS.participant_id == PEOPLE.id)
                .where(EXTERNAL_IDS.source == data.external_id.source,
                       EXTERNAL_IDS.value == data.external_id.value))
        if place is not None:
            stmt = stmt.order_by((PEOPLE.facility_id == place).desc())
        person = (await session.execute(stmt.order_by(PEOPLE.id).limit(1))).scalars().first()
    else:
        return None
    for _ in range(MERGE_HOPS):
        if person is None or person.merged_into_id is None:
            break
        person = await session.get(Participant, person.merged_into_id)
    return person


async def seen_by(session: AsyncSession, principal: Principal, person: Participant) -> bool:
    """Whether the raiser can see the person: within their walls, or (a peer supporter) one of
    the people they support."""
    if (await session.execute(scoping.participants(principal, PEOPLE.id).where(
            PEOPLE.id == person.id))).first() is not None:
        return True
    if principal.is_peer and principal.participant_id:
        return (await session.execute(select(PAIRINGS.id).where(
            PAIRINGS.supporter_id == principal.participant_id,
            PAIRINGS.recipient_id == person.id, PAIRINGS.status.in_(HOLDING)))).first() is not None
    return False


def network_of_place(principal: Principal) -> str:
    """The network of an escalation about a place alone: the raiser's, when they hold one;
    else (a clinician, who holds both) incarcerated, where custody staff cover the place."""
    if len(principal.networks) == 1:
        return next(iter(principal.networks)).value
    return Network.incarcerated.value

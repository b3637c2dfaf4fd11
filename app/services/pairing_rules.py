"""The pairing rules: the workflow table, the eligibility rules as one pure function over a
pair's facts (`refusals`, shared by propose/activate/resume, the certification sweep and the
candidates ranking), their supporter half for a peer who leads a group (`facilitator_refusals`,
DOMAIN rule 2, used by support sessions), and the gathering of the facts.

A module beside the pairings package, not in it: support sessions apply rule 2 to a group's
facilitator, and the pairings package asks support sessions to cancel, so the rules live where
both can import them without a cycle (tests/test_layers.py counts package imports)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import NotFound
from app.models import Escalation, KeepApartOrder, Pairing, Participant
from app.models.common import Network
from app.models.escalation import UNRESOLVED, Tier
from app.models.keep_apart import KeepApartStatus
from app.models.pairing import HOLDING, PairingStatus
from app.models.participant import Availability, CustodyStatus, EmploymentStatus
from app.security.principal import Principal
from app.security.scopes import COORDINATORS
from app.services import certification, scoping, secrecy
from app.services.facilities import settings_of
from app.services.workflow import Transition, table

PAIRINGS = Pairing.__table__.c
ORDERS = KeepApartOrder.__table__.c
ESCALATIONS = Escalation.__table__.c
PEOPLE = scoping.P

PAIRING_FLOW = table(
    Transition("activate", frozenset({PairingStatus.proposed.value}),
               PairingStatus.active.value, COORDINATORS),
    Transition("pause", frozenset({PairingStatus.active.value}),
               PairingStatus.paused.value, COORDINATORS),
    Transition("resume", frozenset({PairingStatus.paused.value}),
               PairingStatus.active.value, COORDINATORS),
    Transition("end", frozenset({PairingStatus.proposed.value, PairingStatus.active.value,
                                 PairingStatus.paused.value}),
               PairingStatus.ended.value, COORDINATORS),
)
# The moves that bring a pair together, so every rule is checked again (and propose).
CHECKED = frozenset({"activate", "resume"})
# A pairing that has not ended: what a cascade ends, or a keep-apart stands against.
NOT_ENDED = (PairingStatus.proposed.value, PairingStatus.active.value,
             PairingStatus.paused.value)
CRISIS_TIERS = (Tier.high.value, Tier.imminent.value)

# The enum values `refusals` compares with, read once (candidates runs it per supporter).
_INCARCERATED, _STAFF = Network.incarcerated.value, Network.staff.value
_IN_CUSTODY = CustodyStatus.in_custody.value
_EMPLOYED = EmploymentStatus.employed.value
_AVAILABLE = Availability.active.value

Refusal = tuple[str, str, int]  # (code, detail, status)


@dataclass(slots=True)
class SupporterRow:
    """The columns the rules and the ranking read, as a plain object (attribute reads on it
    cost a tenth of those on a database row; candidates reads them 2,000 times)."""

    id: uuid.UUID
    network: str
    facility_id: uuid.UUID
    is_supporter: bool
    archived_at: Any
    custody_status: str | None
    employment_status: str | None
    supporter_availability: str | None
    caseload_cap: int | None
    languages: list[str] | None
    housing_unit_id: uuid.UUID | None
    preferred_name: str | None


SUPPORTER_COLUMNS = (PEOPLE.id, PEOPLE.network, PEOPLE.facility_id, PEOPLE.is_supporter,
                     PEOPLE.archived_at, PEOPLE.custody_status, PEOPLE.employment_status,
                     PEOPLE.supporter_availability, PEOPLE.caseload_cap, PEOPLE.languages,
                     PEOPLE.housing_unit_id, PEOPLE.preferred_name)


@dataclass(slots=True)
class Facts:
    supporter: Any
    recipient: Any
    certified: bool
    keep_apart: bool
    caseload: int
    cap: int
    recipient_holding: int
    in_crisis: bool = False  # an open high/imminent escalation about the supporter


def refusals(facts: Facts, *, override: bool) -> list[Refusal]:
    """Every rule the pair breaks, in order: (code, detail, status). Pure."""
    supporter, recipient = facts.supporter, facts.recipient
    out: list[Refusal] = []
    if supporter.id == recipient.id:
        out.append(("self_pairing", "A person cannot support themselves.", 422))
    out += _role("supporter", supporter)
    if not recipient.is_recipient:
        out.append(("not_a_recipient", "The recipient does not hold the recipient role.", 422))
    if supporter.network != recipient.network:
        out.append(("network_mismatch", "Supporter and recipient are in different networks.",
                    422))
    if supporter.facility_id != recipient.facility_id:
        out.append(("different_facility", "Supporter and recipient are at different facilities.",
                    422))
    out += _standing("supporter", supporter) + _standing("recipient", recipient)
    out += _readiness("supporter", supporter, certified=facts.certified,
                      in_crisis=facts.in_crisis)
    if facts.keep_apart:
        out.append(("keep_apart", "An open keep-apart order stands between the two.", 422))
    if facts.caseload >= facts.cap:
        out.append(("caseload_full", f"The supporter's caseload is full ({facts.cap}).", 409))
    if facts.recipient_holding and not override:
        out.append(("recipient_already_paired",
                    "The recipient already has an active pairing; a coordinator may override "
                    "with a written reason.", 409))
    return out


@dataclass(slots=True)
class FacilitatorFacts:
    facilitator: Any
    facility_id: uuid.UUID  # where the group meets
    certified: bool
    in_crisis: bool = False  # an open high/imminent escalation about the facilitator


def facilitator_refusals(facts: FacilitatorFacts) -> list[Refusal]:
    """Every rule 2 check a peer who leads a group breaks, in order. Pure. The supporter's own
    checks of `refusals` (role, standing, availability, certification, crisis) and the group's
    facility; a group has no recipient or caseload, and its attendees' keep-aparts are checked
    as they join."""
    person = facts.facilitator
    out = _role("facilitator", person)
    if person.facility_id != facts.facility_id:
        out.append(("different_facility", "The facilitator is at another facility.", 422))
    out += _standing("facilitator", person)
    out += _readiness("facilitator", person, certified=facts.certified, in_crisis=facts.in_crisis)
    return out


# The checks `refusals` and `facilitator_refusals` share, each written once.
def _role(who: str, person: Any) -> list[Refusal]:
    if not person.is_supporter:
        return [("not_a_supporter", f"The {who} does not hold the supporter role.", 422)]
    return []


def _standing(who: str, person: Any) -> list[Refusal]:
    """Still in the program: not archived, in custody (or employed)."""
    if person.archived_at is not None:
        return [("archived", f"The {who}'s record is archived.", 422)]
    if person.network == _INCARCERATED and person.custody_status != _IN_CUSTODY:
        return [("not_in_custody", f"The {who} is not in custody.", 422)]
    if person.network == _STAFF and person.employment_status != _EMPLOYED:
        return [("not_employed", f"The {who} is not currently employed.", 422)]
    return []


def _readiness(who: str, person: Any, *, certified: bool, in_crisis: bool) -> list[Refusal]:
    """Fit to support someone now: available, certified, not in crisis themselves."""
    out: list[Refusal] = []
    if person.supporter_availability != _AVAILABLE:
        out.append(("supporter_unavailable", f"The {who} is not available.", 422))
    if not certified:
        out.append(("supporter_not_certified", f"The {who} is not certified.", 422))
    if in_crisis:
        out.append(("supporter_escalation",
                    f"An open high or imminent escalation concerns the {who}.", 422))
    return out


def refuse(principal: Principal, found: list[Refusal]) -> None:
    """Raises the first refusal as this caller may see it (a keep-apart only to those who may
    know of it: `secrecy.refusal`)."""
    code, detail, status = found[0]
    raise secrecy.refusal(principal, code, detail, status=status)


async def lock_people(session: AsyncSession, principal: Principal,
                      *ids: uuid.UUID) -> dict[uuid.UUID, Participant]:
    """Both people, row-locked in id order (two coordinators racing for the last slot of a
    caseload queue here; the loser then sees the winner's pairing)."""
    rows = (await session.execute(
        scoping.participants(principal).where(PEOPLE.id.in_(sorted(set(ids))))
        .order_by(PEOPLE.id).with_for_update())).scalars().all()
    found = {person.id: person for person in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("No such participant.")
    return found


async def gather_facts(session: AsyncSession, settings: Settings, supporter: Participant,
                       recipient: Participant, exclude: uuid.UUID | None) -> Facts:
    """One pair's facts (`exclude`: the pairing being moved, which holds no slot against
    itself)."""
    low, high = sorted((supporter.id, recipient.id))
    keep_apart = (await session.execute(
        select(func.count()).select_from(KeepApartOrder.__table__)
        .where(ORDERS.participant_a_id == low, ORDERS.participant_b_id == high,
               ORDERS.status == KeepApartStatus.open.value))).scalar_one() > 0
    others = PAIRINGS.id != exclude if exclude else True

    async def holding(column: Any, person_id: uuid.UUID) -> int:
        return int((await session.execute(
            select(func.count()).select_from(Pairing.__table__)
            .where(column == person_id, PAIRINGS.status.in_(HOLDING), others))).scalar_one())

    facility_cap = (await settings_of(session, supporter.facility_id))["caseload_cap"]
    cap = min(facility_cap, supporter.caseload_cap or facility_cap)
    cert = await certification.state_of(session, settings, supporter)
    crisis = await in_crisis(session, select(PEOPLE.id).where(PEOPLE.id == supporter.id))
    return Facts(supporter=supporter, recipient=recipient, certified=cert.certified,
                 keep_apart=keep_apart,
                 caseload=await holding(PAIRINGS.supporter_id, supporter.id), cap=cap,
                 recipient_holding=await holding(PAIRINGS.recipient_id, recipient.id),
                 in_crisis=supporter.id in crisis)


async def gather_facilitator_facts(session: AsyncSession, settings: Settings,
                                   facilitator: Participant,
                                   facility_id: uuid.UUID) -> FacilitatorFacts:
    """A group facilitator's facts, for `facilitator_refusals`."""
    cert = await certification.state_of(session, settings, facilitator)
    crisis = await in_crisis(session, select(PEOPLE.id).where(PEOPLE.id == facilitator.id))
    return FacilitatorFacts(facilitator=facilitator, facility_id=facility_id,
                            certified=cert.certified, in_crisis=facilitator.id in crisis)


async def in_crisis(session: AsyncSession, among: Any) -> set[uuid.UUID]:
    """People (of the `among` id subquery) with an open high or imminent escalation."""
    rows = await session.execute(select(ESCALATIONS.participant_id).where(
        ESCALATIONS.participant_id.in_(among), ESCALATIONS.status.in_(UNRESOLVED),
        ESCALATIONS.tier.in_(CRISIS_TIERS)))
    return set(rows.scalars())

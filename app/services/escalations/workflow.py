"""Working an escalation: raising it (idempotent), the workflow (acknowledge, resolve,
reopen: `ESCALATION_FLOW`), assignment and tier changes; each writes its timeline entry, audit
row and event in one transaction."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, Forbidden, RuleViolation
from app.models import Escalation, EscalationEvent, User
from app.models.common import Role
from app.models.escalation import TIER_ORDER, WAITING, EscalationCreate, EscalationStatus, Tier
from app.security.principal import Principal
from app.security.scopes import ESCALATION_WORKERS
from app.services import scoping
from app.services.common import check_version
from app.services.escalations import paging, subjects
from app.services.escalations.triage import ack_deadline, triage
from app.services.escalations.views import get
from app.services.facilities import settings_of
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

PEOPLE = scoping.P


class EscalationAction(StrEnum):
    acknowledge = "acknowledge"
    resolve = "resolve"
    reopen = "reopen"


ESCALATION_FLOW = table(
    Transition(EscalationAction.acknowledge.value,
               frozenset({EscalationStatus.open.value, EscalationStatus.reopened.value}),
               EscalationStatus.acknowledged.value, ESCALATION_WORKERS),
    Transition(EscalationAction.resolve.value, frozenset({EscalationStatus.acknowledged.value}),
               EscalationStatus.resolved.value, ESCALATION_WORKERS),
    Transition(EscalationAction.reopen.value, frozenset({EscalationStatus.resolved.value}),
               EscalationStatus.reopened.value, ESCALATION_WORKERS),
)

# Resolving one of these needs a clinician, a follow-up plan and a review date.
CLINICIAN_TIERS = frozenset({Tier.high, Tier.imminent})


async def raise_(*, session: AsyncSession, principal: Principal, data: EscalationCreate,
                 w: Writer | None = None, commit: bool = True) -> Escalation:
    """Opens an escalation (a retried POST is made safe by its Idempotency-Key, handled for
    every POST by app.idempotency). `w` and `commit=False`: inside a caller's transaction (a
    risk disclosure).

    About a person the raiser can see: as it always was (at the person's facility unless a
    place is given). Otherwise the raise is blind (`subjects`): it needs a place (the raiser's
    facilities bound it), is recorded there against the person the server finds across the
    walls, or nobody, and the raiser holds a receipt; nothing that fails depends on the lookup.
    """
    place, unit = await subjects.place_of(session, principal, data)
    person = await subjects.lookup(session, data, place)
    seen = person if person is not None and await subjects.seen_by(session, principal,
                                                                    person) else None
    blind = seen is None
    if seen is not None:
        facility_id, network = place if data.facility_id else seen.facility_id, seen.network
        if unit is not None and unit.facility_id != facility_id:
            raise RuleViolation("The location is not a unit of the person's facility.",
                                code="unknown_housing_unit")
    elif place is None:
        raise RuleViolation("Say where: a facility (or housing unit) of yours.",
                            code="place_required",
                            errors=[{"field": "facility_id", "message": "required",
                                     "type": "place_required"}])
    else:  # where it was seen; the person's network keeps it behind the right wall
        facility_id = place
        network = person.network if person is not None else subjects.network_of_place(principal)
    screener = None
    if data.screener is not None:
        tier, rule = triage(data.screener)
        screener = {"answers": data.screener.model_dump(), "derived_tier": tier.value,
                    "rule": rule}
    else:
        tier = data.tier  # type: ignore[assignment]  # EscalationCreate: tier or screener
    facility_settings = await settings_of(session, facility_id)
    now = utcnow()
    at_persons_place = person is not None and person.facility_id == facility_id
    esc = Escalation(
        participant_id=person.id if person is not None else None, facility_id=facility_id,
        network=network, category=data.category.value, description=data.description,
        location_unit_id=data.location_unit_id or (
            person.housing_unit_id if person is not None and at_persons_place else None),
        location_text=data.location_text, tier=tier.value, screener=screener,
        ack_deadline=ack_deadline(facility_settings, tier.value, now),
        raised_by=principal.actor, raised_at=now, raised_blind=blind,
        reported=data.model_dump(mode="json", include={
            "participant_id", "external_id", "facility_id", "location_unit_id", "location_text"}))
    session.add(esc)
    await session.flush()
    writer = w or Writer(session, principal)
    timeline_entry(session, esc, "created", principal.actor, {"tier": tier.value})
    writer.audit("escalation.create", "escalation", esc.id, esc.facility_id)
    emit(writer, "escalation.created", esc)
    await paging.page_on_raise(session, writer, esc)
    if commit:
        await writer.commit()
    return esc


def timeline_entry(session: AsyncSession, esc: Escalation, kind: str, by: str,
                   detail: dict[str, Any] | None = None) -> None:
    session.add(EscalationEvent(escalation_id=esc.id, kind=kind, at=utcnow(), by=by,
                                detail=detail or {}))


def emit(writer: Writer, type_: str, esc: Escalation, **data: Any) -> None:
    """A thin event: ids and `data`; readers fetch the rest with their own rights."""
    writer.emit(type_, "escalation", esc.id, facility_id=esc.facility_id, network=esc.network,
                data=data)


async def transition(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                     action: str, body: Any = None, if_match: str | None = None) -> Escalation:
    """One step of ESCALATION_FLOW; `body`: the action's input (Acknowledge, Resolve, Reopen)."""
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True, to_work=True)
    check_version(esc.version, if_match)
    target = step(ESCALATION_FLOW, action, esc.status, principal.role)
    now = utcnow()
    if action == EscalationAction.acknowledge and esc.acknowledged_at is None:
        esc.acknowledged_at, esc.acknowledged_by = now, principal.actor
    if action == EscalationAction.acknowledge:
        await paging.close_pages(session, esc, principal.actor, now)
    if action == EscalationAction.resolve:
        if esc.tier in CLINICIAN_TIERS:
            if not principal.is_clinician:
                raise Forbidden("Resolving a high or imminent escalation needs a clinician.",
                                code="clinician_required")
            if not body.follow_up_plan or not body.review_date:
                raise RuleViolation("A follow-up plan and a review date are required.",
                                    code="follow_up_required")
        if esc.resolved_at is None:  # stamped once; a later resolution is in the timeline
            esc.resolved_at, esc.resolved_by = now, principal.actor
        esc.outcome, esc.follow_up_plan, esc.review_date = (body.outcome, body.follow_up_plan,
                                                            body.review_date)
    if action == EscalationAction.reopen:
        facility_settings = await settings_of(session, esc.facility_id)
        esc.ack_deadline = ack_deadline(facility_settings, esc.tier, now)
        esc.breached, esc.chain_level = False, 0
    esc.status = target
    esc.version += 1
    esc.updated_at = now
    writer = Writer(session, principal)
    # Named after the state reached, with what the caller said (clinical text: views.py).
    timeline_entry(session, esc, target, principal.actor, _said(action, body))
    writer.audit(f"escalation.{action}", "escalation", esc.id, esc.facility_id)
    emit(writer, f"escalation.{target}", esc)
    await writer.commit()
    return esc


def _said(action: str, body: Any) -> dict[str, Any]:
    """What a transition's caller said, for its timeline entry: the acknowledgement note, the
    resolution's outcome, plan and review date, the reopen reason."""
    if action == EscalationAction.acknowledge:
        return {"note": body.note if body is not None else None}
    if action == EscalationAction.resolve:
        return {"outcome": body.outcome, "follow_up_plan": body.follow_up_plan,
                "review_date": body.review_date.isoformat() if body.review_date else None}
    if action == EscalationAction.reopen:
        return {"reason": body.reason}
    return {}


async def assign(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                 user_id: uuid.UUID, if_match: str | None) -> Escalation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True, to_work=True)
    check_version(esc.version, if_match)
    if esc.status == EscalationStatus.resolved:
        raise Conflict("A resolved escalation is not assigned; reopen it first.",
                       code="invalid_transition")
    user = await session.get(User, user_id)
    eligible = (user is not None and user.active
                and (user.all_facilities or str(esc.facility_id) in (user.facility_ids or []))
                and Role(user.role) in ESCALATION_WORKERS)
    if not eligible:
        raise RuleViolation("The assignee must be an active clinician or coordinator of the "
                            "facility.", code="assignee_not_eligible")
    esc.assigned_to = user_id
    esc.version += 1
    esc.updated_at = utcnow()
    writer = Writer(session, principal)
    timeline_entry(session, esc, "assigned", principal.actor, {"user_id": str(user_id)})
    writer.audit("escalation.assign", "escalation", esc.id, esc.facility_id)
    emit(writer, "escalation.assigned", esc)
    await writer.commit()
    return esc


async def change_tier(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                      tier: Tier, reason: str, if_match: str | None) -> Escalation:
    """Raised by anyone who may act on it, at any time; lowered only by a clinician."""
    if principal.role not in ESCALATION_WORKERS:
        raise Forbidden("Your role may not change the tier.", code="transition_not_allowed")
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True, to_work=True)
    check_version(esc.version, if_match)
    old = Tier(esc.tier)
    if tier == old:
        return esc
    if TIER_ORDER[tier] < TIER_ORDER[old] and not principal.is_clinician:
        raise Forbidden("Only a clinician may lower the tier.", code="clinician_required")
    if esc.status == EscalationStatus.resolved:
        raise Conflict("A resolved escalation's tier is final; reopen it first.",
                       code="invalid_transition")
    now = utcnow()
    if esc.status in WAITING and TIER_ORDER[tier] > TIER_ORDER[old]:
        facility_settings = await settings_of(session, esc.facility_id)
        # A higher tier can only bring the deadline closer.
        esc.ack_deadline = min(esc.ack_deadline,
                               ack_deadline(facility_settings, tier.value, now))
    esc.tier = tier.value
    esc.version += 1
    esc.updated_at = now
    writer = Writer(session, principal)
    timeline_entry(session, esc, "tier_changed", principal.actor,
                   {"from": old.value, "to": tier.value, "reason": reason})
    writer.audit("escalation.tier_change", "escalation", esc.id, esc.facility_id)
    emit(writer, "escalation.tier_changed", esc)  # thin: the tier is read with the reader's rights
    await writer.commit()
    return esc


async def link_subject(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                       participant_id: uuid.UUID, if_match: str | None) -> Escalation:
    """Names (or corrects) the person an escalation is about: one the caller can see. The
    escalation's facility and network follow the person (a unit of another facility gives way to
    the person's own; what the raiser reported stays in `reported`); the deadline runs on."""
    if principal.role not in ESCALATION_WORKERS:
        raise Forbidden("Your role may not link the person.", code="transition_not_allowed")
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True, to_work=True)
    check_version(esc.version, if_match)
    if esc.status == EscalationStatus.resolved:
        raise Conflict("A resolved escalation's person is final; reopen it first.",
                       code="invalid_transition")
    person = (await session.execute(scoping.participants(principal).where(
        PEOPLE.id == participant_id))).scalar_one_or_none()
    if person is None:
        raise RuleViolation("No such participant within your scope.", code="unknown_participant",
                            errors=[{"field": "participant_id", "message": "unknown participant",
                                     "type": "unknown_participant"}])
    if person.id == esc.participant_id:
        return esc
    before = {"from_participant_id": str(esc.participant_id) if esc.participant_id else None,
              "from_facility_id": str(esc.facility_id), "from_network": esc.network}
    if esc.facility_id != person.facility_id or esc.location_unit_id is None:
        esc.location_unit_id = person.housing_unit_id
    esc.participant_id, esc.facility_id, esc.network = (person.id, person.facility_id,
                                                        person.network)
    esc.version += 1
    esc.updated_at = utcnow()
    writer = Writer(session, principal)
    timeline_entry(session, esc, "subject_linked", principal.actor, {
        "participant_id": str(person.id), "from_participant_id": before["from_participant_id"],
        "facility_id": str(person.facility_id), "from_facility_id": before["from_facility_id"],
        "network": person.network, "from_network": before["from_network"]})
    writer.audit("escalation.link_subject", "escalation", esc.id, esc.facility_id)
    emit(writer, "escalation.subject_linked", esc)
    await writer.commit()
    return esc

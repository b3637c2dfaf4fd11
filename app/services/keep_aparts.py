"""Keep-apart orders: open, close, reopen; one open order per pair; never shown to peers."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import KeepApartOrder, Participant
from app.models.keep_apart import KeepApartCreate, KeepApartStatus, ordered_pair
from app.security.principal import Principal
from app.services import pairings, scoping
from app.services.common import check_version
from app.services.pagination import keyset_page
from app.services.writer import Writer


async def get(*, session: AsyncSession, principal: Principal, order_id: uuid.UUID,
              for_update: bool = False) -> KeepApartOrder:
    stmt = scoping.keep_apart_orders(principal).where(KeepApartOrder.id == order_id)
    if for_update:
        stmt = stmt.with_for_update()
    order = (await session.execute(stmt)).scalar_one_or_none()
    if order is None:
        raise NotFound("No such keep-apart order.")
    return order


async def list_(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID | None,
                status: KeepApartStatus | None, limit: int,
                cursor: str | None) -> tuple[list[KeepApartOrder], str | None]:
    stmt = scoping.keep_apart_orders(principal)
    if participant_id:
        stmt = stmt.where((KeepApartOrder.participant_a_id == participant_id)
                          | (KeepApartOrder.participant_b_id == participant_id))
    if status:
        stmt = stmt.where(KeepApartOrder.status == status.value)
    return await keyset_page(session, stmt, KeepApartOrder.__table__.c.id, kind="keep_apart",
                             limit=limit, cursor=cursor)


def _event_scope(p: Participant) -> dict[str, object]:
    return {"facility_id": p.facility_id, "network": p.network}


async def create(*, session: AsyncSession, principal: Principal,
                 data: KeepApartCreate) -> KeepApartOrder:
    a, b = ordered_pair(*data.participant_ids)
    people = (await session.execute(
        scoping.participants(principal).where(Participant.id.in_([a, b]))  # type: ignore[attr-defined]
    )).scalars().all()
    if len(people) != 2:
        raise RuleViolation("Both participants must exist and be within your scope.",
                            code="unknown_participant",
                            errors=[{"field": "participant_ids", "message": "unknown participant",
                                     "type": "unknown_participant"}])
    if people[0].network != people[1].network:
        raise RuleViolation("A keep-apart order joins two people of the same network.",
                            code="network_mismatch")
    existing = (await session.execute(select(func.count()).select_from(KeepApartOrder).where(
        KeepApartOrder.participant_a_id == a, KeepApartOrder.participant_b_id == b,
        KeepApartOrder.status == "open"))).scalar_one()
    if existing:
        raise Conflict("An open keep-apart order exists for this pair.", code="keep_apart_exists")
    now = utcnow()
    order = KeepApartOrder(
        participant_a_id=a, participant_b_id=b, reason=data.reason.value, scope=data.scope.value,
        authorised_by=data.authorised_by, external_source=data.external_source,
        external_id=data.external_id, opened_at=now, opened_by=principal.actor,
        status_changed_at=now, status_changed_by=principal.actor,
    )
    session.add(order)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict("An open keep-apart order exists for this pair, or the external id is "
                       "taken.", code="keep_apart_exists") from None
    w = Writer(session, principal)
    w.audit("keep_apart.open", "keep_apart_order", order.id, people[0].facility_id)
    await pairings.end_between(session, w, a, b)
    w.emit("keep_apart.opened", "keep_apart_order", order.id, **_event_scope(people[0]))  # type: ignore[arg-type]
    await w.commit()
    return order


async def transition(*, session: AsyncSession, principal: Principal, order_id: uuid.UUID,
                     to: KeepApartStatus, reason: str, if_match: str | None) -> KeepApartOrder:
    order = await get(session=session, principal=principal, order_id=order_id, for_update=True)
    check_version(order.version, if_match)
    if order.status == to.value:
        raise Conflict(f"The order is already {to.value}.", code=f"already_{to.value}")
    if to == KeepApartStatus.open:
        clash = (await session.execute(select(func.count()).select_from(KeepApartOrder).where(
            KeepApartOrder.participant_a_id == order.participant_a_id,
            KeepApartOrder.participant_b_id == order.participant_b_id,
            KeepApartOrder.status == "open"))).scalar_one()
        if clash:
            raise Conflict("Another open keep-apart order exists for this pair.",
                           code="keep_apart_exists")
    now = utcnow()
    order.status = to.value
    order.status_changed_at = now
    order.status_changed_by = principal.actor
    order.status_reason = reason
    order.version += 1
    order.updated_at = now
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict("Another open keep-apart order exists for this pair.",
                       code="keep_apart_exists") from None
    a = (await session.execute(select(Participant.facility_id, Participant.network)
                               .where(Participant.id == order.participant_a_id))).one()
    w = Writer(session, principal)
    verb = "open" if to == KeepApartStatus.open else "close"
    w.audit(f"keep_apart.{'reopen' if verb == 'open' else 'close'}", "keep_apart_order",
            order.id, a.facility_id)
    w.emit("keep_apart.opened" if verb == "open" else "keep_apart.closed", "keep_apart_order",
           order.id, facility_id=a.facility_id, network=a.network)
    if verb == "open":
        await pairings.end_between(session, w, order.participant_a_id, order.participant_b_id)
    await w.commit()
    return order

"""Reading escalations: one by id (the walls of `scoping.escalation_wall`), the dashboard and
list (one prebuilt statement per shape), and the timeline."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Escalation, EscalationEvent
from app.models.escalation import EscalationStatus
from app.security.principal import Principal
from app.services import scoping
from app.services.pagination import decode_uuid_cursor, encode_cursor

ESCALATIONS = Escalation.__table__.c
TIMELINE = EscalationEvent.__table__.c


async def get(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
              for_update: bool = False) -> Escalation:
    stmt = scoping.escalations(principal).where(ESCALATIONS.id == escalation_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such escalation.")
    return found


# What a list reads: every column a role-shaped view may show (app/routers/escalations.views).
VIEW_FIELDS = (
    "id", "participant_id", "facility_id", "network", "category", "description",
    "location_unit_id", "location_text", "tier", "screener", "status", "ack_deadline", "breached",
    "chain_level", "assigned_to", "raised_by", "raised_at", "acknowledged_at", "acknowledged_by",
    "resolved_at", "resolved_by", "outcome", "follow_up_plan", "review_date", "version")
_VIEW_COLUMNS = [ESCALATIONS[name] for name in VIEW_FIELDS]


@lru_cache(maxsize=64)
def _list_statement(wall: frozenset[str], status: bool, by_deadline: bool, after: bool) -> Any:
    """One prebuilt statement per shape: the walls of `scoping.escalation_wall` with
    placeholders, plain rows (the dashboard is refreshed every few seconds)."""
    stmt = select(*_VIEW_COLUMNS).where(
        *scoping.Wall("escalation", wall).clauses(bound=False))
    if status:
        stmt = stmt.where(ESCALATIONS.status == bindparam("status"))
    if by_deadline:  # the dashboard: most urgent first, one screenful
        return stmt.order_by(ESCALATIONS.ack_deadline, ESCALATIONS.id).limit(bindparam("lim", type_=Integer))
    if after:
        stmt = stmt.where(ESCALATIONS.id > bindparam("after"))
    return stmt.order_by(ESCALATIONS.id).limit(bindparam("lim", type_=Integer))


async def list_(*, session: AsyncSession, principal: Principal, status: EscalationStatus | None,
                by_deadline: bool, limit: int, cursor: str | None,
                ) -> tuple[list[dict[str, Any]], str | None]:
    """Plain dicts of VIEW_FIELDS (no ORM objects) for the role-shaped views; by deadline: one
    page, no cursor."""
    after = None if by_deadline else decode_uuid_cursor(cursor, "escalation")
    wall = scoping.escalation_wall(principal)
    if wall.nothing:
        return [], None
    params: dict[str, Any] = {**wall.params, "lim": limit if by_deadline else limit + 1}
    if status:
        params["status"] = status.value
    if after is not None:
        params["after"] = after
    stmt = _list_statement(wall.shape, status is not None, by_deadline, after is not None)
    rows = [dict(zip(VIEW_FIELDS, row, strict=True))
            for row in await session.execute(stmt, params)]
    if by_deadline:
        return rows, None
    more = len(rows) > limit
    return rows[:limit], encode_cursor("escalation", rows[limit - 1]["id"]) if more else None


async def timeline(*, session: AsyncSession, principal: Principal,
                   escalation_id: uuid.UUID) -> list[EscalationEvent]:
    await get(session=session, principal=principal, escalation_id=escalation_id)
    rows = await session.execute(select(EscalationEvent)
                                 .where(TIMELINE.escalation_id == escalation_id)
                                 .order_by(TIMELINE.at, TIMELINE.id))
    return list(rows.scalars())

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

E = Escalation.__table__.c


def escalations(principal: Principal) -> Any:
    """The scoped base query (the walls: `scoping.escalation_wall`)."""
    return scoping.escalations(principal)


async def get(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
              for_update: bool = False) -> Escalation:
    stmt = escalations(principal).where(E.id == escalation_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such escalation.")
    return found


# What a list reads: every column a role-shaped view may show (app/routers/escalations.view).
_VIEW_COLUMNS = [E.id, E.participant_id, E.facility_id, E.network, E.category, E.description,
                 E.location_unit_id, E.location_text, E.tier, E.screener, E.status,
                 E.ack_deadline, E.breached, E.chain_level, E.assigned_to, E.raised_by,
                 E.raised_at, E.acknowledged_at, E.acknowledged_by, E.resolved_at, E.resolved_by,
                 E.outcome, E.follow_up_plan, E.review_date, E.version]
VIEW_FIELDS = tuple(c.name for c in _VIEW_COLUMNS)


@lru_cache(maxsize=64)
def _list_statement(wall: frozenset[str], status: bool, by_deadline: bool, after: bool) -> Any:
    """One prebuilt statement per shape: the walls of `scoping.escalation_wall` with
    placeholders, plain rows (the dashboard is refreshed every few seconds)."""
    stmt = select(*_VIEW_COLUMNS).where(
        *scoping.Wall("escalation", wall).clauses(bound=False))
    if status:
        stmt = stmt.where(E.status == bindparam("status"))
    if by_deadline:  # the dashboard: most urgent first, one screenful
        return stmt.order_by(E.ack_deadline, E.id).limit(bindparam("lim", type_=Integer))
    if after:
        stmt = stmt.where(E.id > bindparam("after"))
    return stmt.order_by(E.id).limit(bindparam("lim", type_=Integer))


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
    nxt = encode_cursor("escalation", rows[limit - 1]["id"]) if len(rows) > limit else None
    return rows[:limit], nxt


async def timeline(*, session: AsyncSession, principal: Principal,
                   escalation_id: uuid.UUID) -> list[EscalationEvent]:
    await get(session=session, principal=principal, escalation_id=escalation_id)
    X = EscalationEvent.__table__.c
    rows = await session.execute(select(EscalationEvent).where(X.escalation_id == escalation_id)
                                 .order_by(X.at, X.id))
    return list(rows.scalars())

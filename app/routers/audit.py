"""/v1/audit-events: the audit trail, for auditors and admins."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from app.deps import Principal, SessionDep, require
from app.models import AuditEvent
from app.models.audit import AuditEventRead
from app.models.common import Page
from app.routers.common import AUTHED, DEFAULT, Cursor, Limit
from app.services import scoping
from app.services.pagination import decode_int_cursor, encode_cursor

router = APIRouter(prefix="/v1/audit-events", tags=["audit"], responses=AUTHED)


@router.get("", response_model=Page[AuditEventRead])
async def list_audit_events(
    session: SessionDep, principal: Principal = require("audit:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, actor_id: str | None = None,
    entity_type: str | None = None, entity_id: str | None = None, action: str | None = None,
    outcome: str | None = None, since: datetime | None = None, until: datetime | None = None,
) -> Page[AuditEventRead]:
    """Oldest first; follow next_cursor to read on."""
    after = decode_int_cursor(cursor, "audit")
    stmt = scoping.audit_events(principal)
    if after is not None:
        stmt = stmt.where(AuditEvent.id > after)  # type: ignore[operator]
    for column, value in ((AuditEvent.actor_id, actor_id), (AuditEvent.entity_type, entity_type),
                          (AuditEvent.entity_id, entity_id), (AuditEvent.action, action),
                          (AuditEvent.outcome, outcome)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    rows = list((await session.execute(stmt.order_by(AuditEvent.id).limit(limit + 1))).scalars())  # type: ignore[arg-type]
    nxt = encode_cursor("audit", rows[limit - 1].id) if len(rows) > limit else None
    return Page(items=[AuditEventRead.model_validate(r) for r in rows[:limit]], next_cursor=nxt)

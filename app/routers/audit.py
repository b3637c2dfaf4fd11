"""/v1/audit-events: the audit trail, for auditors and admins."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import Principal, SessionDep, require
from app.models.audit import AuditEventRead
from app.models.common import Page
from app.routers.common import AUTHED, DEFAULT, Cursor, Instant, Limit
from app.services import audit as svc

router = APIRouter(prefix="/v1/audit-events", tags=["audit"], responses=AUTHED)


@router.get("", response_model=Page[AuditEventRead])
async def list_audit_events(
    session: SessionDep, principal: Principal = require("audit:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, actor_id: str | None = None,
    entity_type: str | None = None, entity_id: str | None = None, action: str | None = None,
    outcome: str | None = None, since: Instant | None = None,
    until: Instant | None = None,
) -> Page[AuditEventRead]:
    """Oldest first; follow next_cursor to read on."""
    rows, nxt = await svc.list_events(
        session=session, principal=principal, limit=limit, cursor=cursor,
        filters={"actor_id": actor_id, "entity_type": entity_type, "entity_id": entity_id,
                 "action": action, "outcome": outcome}, since=since, until=until)
    return Page(items=[AuditEventRead.model_validate(r) for r in rows], next_cursor=nxt)

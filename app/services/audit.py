"""The tamper-evident audit trail: every write, every confidential read, every denial.

Each row's hash covers its fields and the previous row's hash, so a row changed or removed
behind the service's back breaks the chain (`peerlink audit verify`). Appends are serialised
(PostgreSQL: a transaction-scoped advisory lock; SQLite: write transactions begin IMMEDIATE),
and UNIQUE(hash) forbids a fork.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgi_correlation_id import correlation_id
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.db import insert_rows, utcnow
from app.models import AuditEvent
from app.proxies import CLIENT_ADDRESS
from app.security.principal import Principal
from app.services import scoping
from app.services.pagination import keyset_page

log = logging.getLogger("peerlink.audit")
GENESIS = "0" * 64
_LOCK_KEY = 0x70656572  # "peer"


@dataclass(frozen=True)
class AuditEntry:
    action: str
    outcome: str = "success"
    entity_type: str | None = None
    entity_id: str | None = None
    facility_id: uuid.UUID | None = None


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    payload = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def _hashed_fields(e: AuditEvent | dict[str, Any]) -> dict[str, Any]:
    get = e.get if isinstance(e, dict) else e.__getattribute__
    facility_id = get("facility_id")
    fields: dict[str, Any] = {
        "occurred_at": get("occurred_at").isoformat(timespec="microseconds"),
        "actor_type": get("actor_type"), "actor_id": get("actor_id"), "role": get("role"),
        "client_id": get("client_id"),
        "facility_id": str(facility_id) if facility_id else None,
        "action": get("action"), "entity_type": get("entity_type"),
        "entity_id": get("entity_id"), "outcome": get("outcome"),
        "request_id": get("request_id"),
    }
    # Hashed only when present, so rows written before the column existed verify unchanged.
    if get("client_address") is not None:
        fields["client_address"] = get("client_address")
    return fields


async def lock_chain(session: AsyncSession) -> None:
    """PostgreSQL: serialises appends until this transaction ends (re-entrant)."""
    if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


async def _last_hash(session: AsyncSession) -> str:
    await lock_chain(session)
    last = (await session.execute(
        select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)  # type: ignore[union-attr]
    )).scalar()
    return last or GENESIS


async def append(session: AsyncSession, entries: Iterable[AuditEntry], *, actor_type: str,
                 actor_id: str | None, role: str | None, client_id: str | None) -> None:
    entries = list(entries)
    if not entries:
        return
    prev = await _last_hash(session)
    now = utcnow()
    request_id = correlation_id.get()
    client_address = CLIENT_ADDRESS.get()
    rows = []
    for entry in entries:
        row: dict[str, Any] = {
            "occurred_at": now, "actor_type": actor_type, "actor_id": actor_id, "role": role,
            "client_id": client_id, "facility_id": entry.facility_id, "action": entry.action,
            "entity_type": entry.entity_type, "entity_id": entry.entity_id,
            "outcome": entry.outcome, "request_id": request_id,
            "client_address": client_address, "prev_hash": prev,
        }
        row["hash"] = prev = _digest(prev, _hashed_fields(row))
        rows.append(row)
    # Together, in chain order (ids follow the rows' order).
    await insert_rows(session, AuditEvent.__table__, rows)


async def record_denial(maker: async_sessionmaker[AsyncSession], *, principal: Principal | None,
                        status: int, action: str, entity_type: str | None,
                        entity_id: str | None) -> None:
    """Audits a refused request in a transaction of its own (the request's own was rolled
    back). `action` is "<METHOD> <route template>"."""
    entry = AuditEntry(action=action,
                       outcome={404: "not_found", 422: "refused"}.get(status, "denied"),
                       entity_type=entity_type, entity_id=entity_id)
    async with maker() as session:
        await append(
            session, [entry],
            actor_type=principal.kind if principal else "anonymous",
            actor_id=str(principal.id) if principal else None,
            role=principal.role.value if principal else None,
            client_id=principal.name if principal and principal.kind == "client" else None,
        )
        await session.commit()


def verify_chain(session: Session, batch: int = 5000) -> tuple[int, list[int]]:
    """Walks the chain in id order; returns (rows checked, ids whose hash does not hold)."""
    bad: list[int] = []
    prev = GENESIS
    count = 0
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id)  # type: ignore[operator]
            .order_by(AuditEvent.id).limit(batch)  # type: ignore[arg-type]
        ).all()
        if not rows:
            break
        for e in rows:
            count += 1
            if e.prev_hash != prev or e.hash != _digest(prev, _hashed_fields(e)):
                bad.append(int(e.id))  # type: ignore[arg-type]
            prev = e.hash
            last_id = int(e.id)  # type: ignore[arg-type]
        session.expunge_all()
    return count, bad


async def list_events(*, session: AsyncSession, principal: Principal, limit: int,
                      cursor: str | None, filters: dict[str, str | None],
                      since: datetime | None, until: datetime | None,
                      ) -> tuple[list[AuditEvent], str | None]:
    table = AuditEvent.__table__
    stmt = scoping.audit_events(principal)
    for name, value in filters.items():
        if value is not None:
            stmt = stmt.where(table.c[name] == value)
    if since:
        stmt = stmt.where(table.c.occurred_at >= since)
    if until:
        stmt = stmt.where(table.c.occurred_at < until)
    return await keyset_page(session, stmt, table.c.id, kind="audit", limit=limit, cursor=cursor)

"""One transaction per write: the change, its audit rows and its domain events, all or nothing.

A service collects audit entries and events on a Writer while it works, then calls commit():
its follow-up steps run, then events go to the outbox and audit rows join the chain with the
COMMIT itself (audit.commit: under the chain's lock, taken last), and the transaction commits
once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow, uuid7
from app.event_types import EVENTS
from app.models import OutboxEvent
from app.security.principal import PRINCIPALS, Principal
from app.services import audit, idempotency
from app.services.audit import AuditEntry

# Committed outbox events wake the live stream's hub (services/stream) in every API process:
# on PostgreSQL through NOTIFY on this channel (payload: the newest outbox id, sent inside the
# transaction so it is delivered exactly when it commits); on SQLite (one process) by calling
# these, with the same id, right after the commit.
EVENTS_CHANNEL = "peerlink_events"
COMMITTED: set[Callable[[int], None]] = set()


class Writer:
    def __init__(self, session: AsyncSession, principal: Principal | None) -> None:
        self.session = session
        self.principal = principal
        self._audit: list[AuditEntry] = []
        self._events: list[dict[str, Any]] = []
        self._auth_changes: list[str] = []
        self._pending: list[Any] = []
        self._batches: dict[str, list[Any]] = {}
        # The request's Idempotency-Key claim, when the session is the request's and the
        # middleware took one (bound by deps.SessionDep): commit() marks it committed in this
        # same transaction.
        self.claim = idempotency.bound_claim(session)

    def audit(self, action: str, entity_type: str, entity_id: Any,
              facility_id: uuid.UUID | None = None, network: str | None = None,
              outcome: str = "success") -> None:
        """`network`: the record's; when not given, the one of an event this change emits
        about the same record (audit.commit)."""
        self._audit.append(AuditEntry(action=action, outcome=outcome, entity_type=entity_type,
                                      entity_id=str(entity_id) if entity_id else None,
                                      facility_id=facility_id, network=network))

    def emit(self, type_: str, entity_type: str, entity_id: uuid.UUID, *,
             facility_id: uuid.UUID | None = None, network: str | None = None,
             data: dict[str, Any] | None = None) -> None:
        """Thin events only: ids, type, time. Never names, notes or free text. The type must
        be registered (app/event_types.py), or no one could subscribe to it."""
        if type_ not in EVENTS:
            raise ValueError(f"unregistered event type {type_!r}: add it to app/event_types.py")
        # Plain rows, inserted together at commit (a bulk import emits thousands).
        self._events.append({
            "event_id": uuid7(), "type": type_, "occurred_at": utcnow(),
            "entity_type": entity_type, "entity_id": entity_id, "facility_id": facility_id,
            "network": network, "data": data or {},
        })

    def after_flush(self, step: Any) -> None:
        """Follow-up work (a callable returning a coroutine: a cascade found while applying a
        change), run before this transaction commits."""
        self._pending.append(step)

    def after_flush_for(self, key: str, item: Any, step: Any) -> None:
        """Follow-up work for many items at once: `step(items)` runs once, before commit, with
        every item added under `key` (one query for all the pairings a bulk import ends)."""
        items = self._batches.get(key)
        if items is None:
            items = self._batches[key] = []
            self._pending.append(lambda: step(self._batches.pop(key)))
        items.append(item)

    def invalidate_auth(self, *, subject: uuid.UUID | None = None, jti: str | None = None) -> None:
        """Cached principals of this account / token are dropped when the change commits."""
        self._auth_changes.append(f"sub:{subject}" if subject else f"jti:{jti}")

    @property
    def events(self) -> list[OutboxEvent]:
        return [OutboxEvent(**e) for e in self._events]

    async def commit(self) -> None:
        while self._pending:
            await self._pending.pop(0)()
        # The claim also learns what this write created (its `<type>.create` audit entry).
        await idempotency.mark_committed(self.session, self.claim, self._audit)
        if self._auth_changes and self.session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            for message in self._auth_changes:
                await self.session.execute(text("SELECT pg_notify(:c, :m)"),
                                           {"c": "peerlink_auth", "m": message})
        # Last: the outbox events and the audit rows join the chain with the COMMIT, under the
        # chain's lock (services/audit.py): ids and hashes in commit order, all or nothing. The
        # live stream is woken with the newest outbox id: NOTIFY in that same last query on
        # PostgreSQL, the in-process hub after the commit on SQLite.
        newest = await audit.commit(self.session, self._audit, self._events,
                                    audit.Actor.of(self.principal), notify=EVENTS_CHANNEL)
        if newest is not None:
            for told in list(COMMITTED):
                told(newest)
        for message in self._auth_changes:
            PRINCIPALS.apply(message)  # this process at once; the others on NOTIFY
        self._audit.clear()
        self._events.clear()
        self._auth_changes.clear()

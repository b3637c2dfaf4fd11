"""The two ways a decided participant update is written: RouteChanges changes ORM objects
(a route answers with the record), ImportChanges changes plain rows and writes a chunk's back
in one statement (no ORM object per row)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from app.db import one_of, update_rows, utcnow
from app.models import Participant
from app.models.participant import ExternalId, ParticipantCreate, ParticipantUpdate
from app.security.principal import Principal
from app.services.participants.changes import Changes
from app.services.participants.decision import DECIDE_COLUMNS, DECIDE_NAMES, state_of
from app.services.scoping import PARTICIPANT, P
from app.services.writer import Writer


def bump(p: Participant) -> None:
    p.version += 1
    p.updated_at = utcnow()


class RouteChanges(Changes):
    """One record's changes, for a route: whole rows are loaded (an unchanged upsert answers
    with one), an update is applied to the locked ORM object, which `updated` then holds."""

    columns = (PARTICIPANT,)
    lock_on_load = True

    def __init__(self, session: AsyncSession, principal: Principal, w: Writer) -> None:
        super().__init__(session, principal, w)
        self.updated: dict[uuid.UUID, Participant] = {}

    def update(self, p: Participant, data: ParticipantCreate | ParticipantUpdate,
               fields_set: set[str], *, action: str = "participant.update",
               add_ids: list[ExternalId] | None = None) -> list[str]:
        """Applies the fields a body set (and external ids to add); records the custody events
        and queues the cascades. Returns the changed fields ([] = nothing written)."""
        decision = self.decide(state_of(p), data, fields_set, add_ids)
        if not decision.writes:
            return []
        for name, value in decision.writes.items():
            setattr(p, name, value)
        bump(p)
        self.record(decision, action)
        return decision.fields

    async def _apply_pending(self) -> None:
        # The rows `load` read are locked already: they become the session's objects as they
        # were read (no second read), and the update is decided again on them.
        loaded = {row.id: row for row in self.by_key.values()}
        for u in self._pending:
            if u.participant_id in self.updated:
                continue
            record = {c.key: loaded[u.participant_id]._mapping[c] for c in PARTICIPANT.c}
            p = Participant(**record)
            make_transient_to_detached(p)
            self.updated[p.id] = p
            self.session.add(p)
        for u in self._pending:
            self.update(self.updated[u.participant_id], u.data, u.fields,
                        action="participant.upsert", add_ids=u.ids)


class ImportChanges(Changes):
    """An import chunk's changes: only the columns the rules compare (and the version) are
    loaded; the records that change are locked, changed in place as plain rows and written
    back by one statement for the whole chunk."""

    columns = (*DECIDE_COLUMNS, P.version)

    async def _apply_pending(self) -> None:
        # Locking reads only the versions: a record whose version is the one `load` read is
        # still that record (every write of a participant bumps it), so its values and the
        # decision made on them stand; only the others are read again, now locked. (Reading
        # every locked record whole was a second copy of most of the chunk's data.)
        ids = [u.participant_id for u in self._pending]
        locked = await self.session.execute(
            select(P.id, P.version).where(one_of(self.session, P.id, ids))
            .order_by(P.id).with_for_update())
        seen = {u.participant_id: u.seen for u in self._pending}
        names = (*DECIDE_NAMES, "version")
        records: dict[uuid.UUID, dict[str, Any]] = {}
        stale = []
        for pid, version in locked:
            if seen[pid]["version"] == version:
                records[pid] = {n: seen[pid][n] for n in names}
            else:
                stale.append(pid)
        if stale:
            fresh = await self.session.execute(
                select(*DECIDE_COLUMNS, P.version).where(one_of(self.session, P.id, stale)))
            records.update({r.id: dict(r._mapping) for r in fresh})
        changed: set[uuid.UUID] = set()
        for u in self._pending:
            record = records[u.participant_id]
            if u.participant_id not in changed and record["version"] == u.seen["version"]:
                # As it was read (no one wrote it since, nor did this chunk): the rules are
                # pure, so deciding again would give the same decision. Most rows of a chunk.
                decision = u.decision
            else:
                decision = self.decide(record, u.data, u.fields, u.ids)
            if not decision.writes:
                continue
            record.update(decision.writes)
            record["version"] += 1
            record["updated_at"] = utcnow()
            changed.add(u.participant_id)
            self.record(decision, "participant.upsert")
        # Every changed row has the same keys (the compared columns, version, updated_at).
        await update_rows(self.session, Participant.__table__,
                          [r for pid, r in records.items() if pid in changed])

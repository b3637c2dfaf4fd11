"""What one transaction does to participants: every create, update and upsert by external id
goes through Changes, for one record (a route) or a chunk of an import.

The records a chunk refers to are read in one query, each row's change is decided by the pure
rules of decision.py, new records are inserted together (COPY on PostgreSQL), and each kind of
cascade (a release ends pairings, ...) runs once for the people it concerns, in this
transaction. How a decided update is written depends on the caller: appliers.py holds the
route's (ORM objects) and the import's (plain rows, one statement per chunk).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_rows, one_of, utcnow, uuid7
from app.errors import RuleViolation
from app.models import Participant, ParticipantExternalId
from app.models.participant import ExternalId, ParticipantCreate, ParticipantUpdate
from app.security.principal import Principal
from app.services import pairings, scoping
from app.services.participants import locations
from app.services.participants.decision import (
    CASCADE_ORDER,
    Cascade,
    Decision,
    decide,
    external_id_taken,
    new_values,
    unique_ids,
)
from app.services.participants.locations import Locations
from app.services.scoping import P
from app.services.writer import Writer

_INSERT_COLUMNS = tuple(c.name for c in Participant.__table__.columns)
EXTERNAL_ID = ParticipantExternalId.__table__.c


class PendingUpdate(NamedTuple):
    """An update upsert decided on the unlocked record; flush decides it again, locked (or,
    for an import, keeps this decision when the locked record is still the one it was made
    on)."""

    participant_id: uuid.UUID
    data: ParticipantCreate
    fields: set[str]
    ids: list[ExternalId]
    decision: Decision
    seen: Mapping[str, Any]  # the record it was decided on (its DECIDE_COLUMNS at least)


class Changes(ABC):
    """The shared part: loading what the bodies refer to, creating, deciding upserts,
    recording a decision's events and audit, and flushing. Subclasses (appliers.py) load the
    columns they need and write decided updates their way."""

    # What `load` reads of the records the external ids name.
    columns: ClassVar[tuple[Any, ...]]
    # Whether `load` locks the records it reads (a route's one record: the lock costs no
    # round trip there, and flush then writes without reading the record again).
    lock_on_load: ClassVar[bool] = False

    def __init__(self, session: AsyncSession, principal: Principal, w: Writer) -> None:
        self.session, self.principal, self.w = session, principal, w
        self.locations = Locations()
        # Existing records as read-only rows: most rows of a JMS file change nothing, and only
        # the ones that do are locked and written (in flush).
        self.by_key: dict[tuple[str, str], Row[Any]] = {}
        self.holder: dict[tuple[str, str], uuid.UUID] = {}  # any scope: who holds an external id
        self._new: list[dict[str, Any]] = []
        self._new_ids: list[dict[str, Any]] = []
        self._pending: list[PendingUpdate] = []
        self._cascades: dict[Cascade, list[uuid.UUID]] = {}

    async def load(self, keys: Iterable[tuple[str, str]],
                   bodies: Iterable[ParticipantCreate]) -> None:
        """The participants holding these external ids (the visible ones as rows, the others
        only known to be taken) and the facilities the bodies refer to: three queries at most.
        Nothing is locked yet: most rows of a JMS file change nothing."""
        keys = set(keys)
        for source, values in _by_source(keys).items():
            stmt = (scoping.participants(self.principal, *self.columns)
                    .add_columns(EXTERNAL_ID.source.label("external_source"),
                                 EXTERNAL_ID.value.label("external_value"))
                    .join(ParticipantExternalId.__table__, EXTERNAL_ID.participant_id == P.id)
                    .where(EXTERNAL_ID.source == source,
                           one_of(self.session, EXTERNAL_ID.value, values)))
            if self.lock_on_load:  # in id order, as `_apply_pending` would lock them
                stmt = stmt.order_by(P.id).with_for_update(of=Participant.__table__)
            rows = await self.session.execute(stmt)
            for row in rows:
                self.by_key[(row.external_source, row.external_value)] = row
                self.holder[(row.external_source, row.external_value)] = row.id
        # Ids are unique per facility and network: one held outside the caller's walls is
        # unused for this caller (it may create a record with it in its own scope).
        mine = [EXTERNAL_ID.network.in_(sorted(n.value for n in self.principal.networks))]
        if not self.principal.all_facilities:
            mine.append(EXTERNAL_ID.facility_id.in_(sorted(self.principal.facility_ids)))
        for source, values in _by_source(keys - self.holder.keys()).items():
            rows = await self.session.execute(
                select(EXTERNAL_ID.source, EXTERNAL_ID.value, EXTERNAL_ID.participant_id)
                .where(EXTERNAL_ID.source == source, one_of(self.session, EXTERNAL_ID.value, values),
                       *mine))
            for row in rows:
                self.holder[(row.source, row.value)] = row.participant_id
        ids: set[uuid.UUID] = {p.facility_id for p in self.by_key.values()}
        codes: set[str] = set()
        for body in bodies:
            i, c = locations.wanted(body, None)
            ids |= i
            codes |= c
        self.locations = await Locations.load(self.session, self.principal, ids=ids, codes=codes)

    # --- deciding ------------------------------------------------------------------------------

    def create(self, data: ParticipantCreate, ids: list[ExternalId] | None = None
               ) -> dict[str, Any]:
        """A new participant's row (inserted by flush; a plain row, not an ORM object: an
        import creates thousands)."""
        values = new_values(self.principal, data, self.locations)
        ids = unique_ids(data.external_ids if ids is None else ids)
        if any((e.source, e.value) in self.holder for e in ids):
            raise external_id_taken()
        now = utcnow()
        row: dict[str, Any] = dict.fromkeys(_INSERT_COLUMNS)
        row.update(id=uuid7(), network=data.network.value, is_supporter=False,
                   is_recipient=False, external_ids=[{"source": e.source, "value": e.value}
                                                     for e in ids],
                   version=1, created_at=now, updated_at=now)
        row.update(values)
        self._new.append(row)
        pid = row["id"]
        for e in ids:
            self._new_ids.append({"id": uuid7(), "participant_id": pid, "source": e.source,
                                  "value": e.value, "facility_id": row["facility_id"],
                                  "network": row["network"], "created_at": now})
            self.holder[(e.source, e.value)] = pid
        self.w.audit("participant.create", "participant", pid, row["facility_id"])
        self.w.emit("participant.created", "participant", pid, facility_id=row["facility_id"],
                    network=row["network"])
        return row

    def upsert(self, source: str, value: str, data: ParticipantCreate
               ) -> tuple[Row[Any] | dict[str, Any], str]:
        """Idempotent by external id: (the stored row, or a new one's row; "created" |
        "updated" | "unchanged"). An update is decided here (and raises here) and applied by
        flush."""
        ids = unique_ids([ExternalId.model_construct(source=source, value=value),
                          *data.external_ids])
        row = self.by_key.get((source, value))
        if row is None:  # unused, or held at a facility outside the caller's scope
            return self.create(data, ids), "created"
        if row.network != data.network.value:
            raise RuleViolation("A participant's network cannot change.", code="network_immutable")
        fields = set(data.model_fields_set) - {"network", "external_ids"}
        decision = self.decide(row._mapping, data, fields, ids)
        if not decision.writes:
            return row, "unchanged"
        self._pending.append(PendingUpdate(row.id, data, fields, ids, decision, row._mapping))
        return row, "updated"

    def decide(self, current: Mapping[str, Any], data: ParticipantCreate | ParticipantUpdate,
               fields_set: set[str], add_ids: list[ExternalId] | None) -> Decision:
        """decision.decide against what this transaction knows; the external ids it adds are
        noted as held from here on."""
        decision = decide(current, data, fields_set, add_ids, locations=self.locations,
                          holder=self.holder)
        for e in decision.new_ids:
            self.holder[(e.source, e.value)] = decision.participant_id
        return decision

    def record(self, decision: Decision, action: str) -> None:
        """An applied update's events and audit row; its new external ids' rows; its cascades,
        queued for flush."""
        pid, w = decision.participant_id, self.w
        for event in decision.events:
            w.emit(event.type, "participant", pid, data=event.data,
                   facility_id=decision.facility_id, network=decision.network)
        for c in decision.cascades:
            self._cascades.setdefault(c, []).append(pid)
        for e in decision.new_ids:
            # facility_id, network: the holder's once its change is written (set by a trigger)
            self._new_ids.append({"id": uuid7(), "participant_id": pid, "source": e.source,
                                  "value": e.value, "facility_id": None, "network": None,
                                  "created_at": utcnow()})
        w.audit(action, "participant", pid, decision.facility_id)

    # --- writing it all ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Writes the changed records, inserts the new ones, runs the queued cascades."""
        if self._pending:
            await self._apply_pending()
            self._pending.clear()
        try:
            await insert_rows(self.session, Participant.__table__, self._new)
            await insert_rows(self.session, ParticipantExternalId.__table__, self._new_ids)
            await self.session.flush()
        except IntegrityError:
            await self.session.rollback()
            raise external_id_taken() from None
        self._new.clear()
        self._new_ids.clear()
        for c in CASCADE_ORDER:
            people = self._cascades.pop(c, None)
            if not people:
                continue
            if c.action == "keep_apart":
                await pairings.pause_keep_apart_conflicts(self.session, self.w, people)
            else:
                await pairings.cascade(self.session, self.w, people, action=c.action,
                                       reason=c.reason, only_as_supporter=c.only_as_supporter,
                                       statuses=c.statuses)

    @abstractmethod
    async def _apply_pending(self) -> None:
        """Locks the records upsert decided to change, decides each again on its locked state
        (a concurrent writer may have been first) and writes it."""


def _by_source(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for source, value in keys:
        out.setdefault(source, []).append(value)
    return out

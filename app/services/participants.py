"""Participants: create, read, list, change, upsert by external id, merge, archive.

Custody changes (a housing move, a transfer, a release) arrive as updates; each is recorded
as a domain event in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import Row, and_, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_rows, one_of, update_rows, utcnow, uuid7
from app.errors import Conflict, NotFound, RuleViolation
from app.models import (
    Facility,
    HousingUnit,
    KeepApartOrder,
    Participant,
    ParticipantExternalId,
    User,
)
from app.models.common import Network
from app.models.keep_apart import KeepApartStatus, ordered_pair
from app.models.participant import (
    Availability,
    CustodyStatus,
    ExternalId,
    ParticipantCreate,
    ParticipantUpdate,
    ProgramRole,
)
from app.security.principal import Principal
from app.services import keep_aparts, scoping
from app.services.common import check_version
from app.services.pagination import keyset_page
from app.services.scoping import PARTICIPANT, P
from app.services.writer import Writer


@dataclass
class ListFilters:
    facility_id: uuid.UUID | None = None
    network: Network | None = None
    custody_status: CustodyStatus | None = None
    program_role: ProgramRole | None = None
    housing_unit_id: uuid.UUID | None = None
    q: str | None = None
    updated_since: datetime | None = None
    include_archived: bool = False


async def get(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
              for_update: bool = False) -> Participant:
    stmt = scoping.participants(principal).where(Participant.id == participant_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("No such participant.")
    return row


async def read(*, session: AsyncSession, principal: Principal,
               participant_id: uuid.UUID) -> Row[Any]:
    """One participant as a Core row (the read path: no ORM object is built)."""
    row = (await session.execute(
        scoping.participant_rows(principal).where(P.id == participant_id))).first()
    if row is None:
        raise NotFound("No such participant.")
    return row


async def list_(*, session: AsyncSession, principal: Principal, filters: ListFilters,
                limit: int, cursor: str | None) -> tuple[list[Row[Any]], str | None]:
    stmt = scoping.participant_rows(principal)
    f = filters
    if f.facility_id:
        stmt = stmt.where(P.facility_id == f.facility_id)
    if f.network:
        stmt = stmt.where(P.network == f.network.value)
    if f.custody_status:
        stmt = stmt.where(P.custody_status == f.custody_status.value)
    if f.program_role == ProgramRole.supporter:
        stmt = stmt.where(P.is_supporter.is_(True))
    elif f.program_role == ProgramRole.recipient:
        stmt = stmt.where(P.is_recipient.is_(True))
    if f.housing_unit_id:
        stmt = stmt.where(P.housing_unit_id == f.housing_unit_id)
    if f.updated_since:
        stmt = stmt.where(P.updated_at >= f.updated_since)
    if not f.include_archived:
        stmt = stmt.where(P.archived_at.is_(None))
    if f.q:
        pattern = f"%{_escape(f.q)}%"
        stmt = stmt.where(or_(P.legal_name.ilike(pattern, escape="\\"),
                              P.preferred_name.ilike(pattern, escape="\\")))
    return await keyset_page(session, stmt, P.id, kind="participant", limit=limit, cursor=cursor,
                             rows=True)


def _escape(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- writing ---------------------------------------------------------------------------------

_UNKNOWN_FACILITY = "The facility is unknown or outside your scope."


@dataclass
class Locations:
    """Facilities within the caller's scope and their housing units, by id and by code: what a
    body's facility and unit references resolve against. Loaded in one query, for one body or
    for a chunk of an import."""

    facility_by_code: dict[str, uuid.UUID] = field(default_factory=dict)
    facility_ids: set[uuid.UUID] = field(default_factory=set)
    unit_by_code: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)
    unit_facility: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession, principal: Principal, *,
                   ids: Iterable[uuid.UUID] = (), codes: Iterable[str] = ()) -> Locations:
        loc = cls()
        ids, codes = set(ids), set(codes)
        if not ids and not codes:
            return loc
        fac, unit = Facility.__table__, HousingUnit.__table__
        match = [c for c in (fac.c.id.in_(ids) if ids else None,
                             fac.c.code.in_(codes) if codes else None) if c is not None]
        rows = await session.execute(
            select(fac.c.id, fac.c.code, unit.c.id.label("unit_id"), unit.c.code.label("unit_code"))
            .select_from(fac.outerjoin(unit, unit.c.facility_id == fac.c.id))
            .where(or_(*match), *scoping.facility_clauses(principal)))
        for r in rows:
            loc.facility_by_code[r.code] = r.id
            loc.facility_ids.add(r.id)
            if r.unit_id is not None:
                loc.unit_by_code[(r.id, r.unit_code)] = r.unit_id
                loc.unit_facility[r.unit_id] = r.id
        return loc

    def resolve(self, *, facility_id: uuid.UUID | None, facility_code: str | None,
                unit_id: uuid.UUID | None, unit_code: str | None,
                ) -> tuple[uuid.UUID, uuid.UUID | None]:
        """Facility (within scope) and housing unit (of that facility)."""
        fid = (facility_id if facility_id in self.facility_ids else None) if facility_id \
            else self.facility_by_code.get(facility_code or "")
        if fid is None:
            raise RuleViolation(_UNKNOWN_FACILITY, code="unknown_facility",
                                errors=[{"field": "facility_id" if facility_id else "facility_code",
                                         "message": "unknown facility", "type": "unknown_facility"}])
        if unit_id is None and unit_code is None:
            return fid, None
        uid = (unit_id if self.unit_facility.get(unit_id) == fid else None) if unit_id \
            else self.unit_by_code.get((fid, unit_code or ""))
        if uid is None:
            raise RuleViolation("The housing unit is not one of this facility's.",
                                code="unknown_housing_unit",
                                errors=[{"field": "housing_unit_id" if unit_id else "housing_unit_code",
                                         "message": "unknown housing unit for this facility",
                                         "type": "unknown_housing_unit"}])
        return fid, uid


def _check_network(principal: Principal, network: Network) -> None:
    if network not in principal.networks:
        raise RuleViolation("You may not write records of this network.",
                            code="network_not_allowed",
                            errors=[{"field": "network", "message": "network not allowed",
                                     "type": "network_not_allowed"}])


# What a body may set (an import row's own fields, such as its external id, are not columns).
_BODY_FIELDS = frozenset(ParticipantUpdate.model_fields)
_COLUMN_FIELDS = _BODY_FIELDS - {"facility_code", "housing_unit_code", "program_roles"}
_LOCATION_FIELDS = frozenset({"facility_id", "facility_code", "housing_unit_id", "housing_unit_code"})


def _desired(data: ParticipantCreate | ParticipantUpdate, fields_set: set[str]) -> dict[str, Any]:
    """The column values a body asks for (only the fields it set)."""
    out: dict[str, Any] = {}
    for k in fields_set & _COLUMN_FIELDS:
        v = getattr(data, k)  # plain values (str, date, int, lists of str) but for the enums
        out[k] = v.value if isinstance(v, Enum) else v
    for k in ("custody_status", "employment_status", "supporter_availability"):
        if k in out and out[k] is None:
            del out[k]  # null never clears a status: an upsert without it leaves it as it is
    if "program_roles" in fields_set:
        roles = set(data.program_roles or [])
        out["is_supporter"] = ProgramRole.supporter in roles
        out["is_recipient"] = ProgramRole.recipient in roles
    return out


def _wanted_locations(data: ParticipantCreate | ParticipantUpdate,
                      current_facility: uuid.UUID | None) -> tuple[set[uuid.UUID], set[str]]:
    """The facility ids and codes a body refers to (what Locations.load needs for it)."""
    ids = {i for i in (data.facility_id, current_facility) if i is not None}
    return ids, {data.facility_code} if data.facility_code else set()


def _new_values(principal: Principal, data: ParticipantCreate, locations: Locations
                ) -> dict[str, Any]:
    """Every column of a new participant, by the creation rules. Raises before anything
    changes."""
    _check_network(principal, data.network)
    facility_id, unit_id = locations.resolve(
        facility_id=data.facility_id, facility_code=data.facility_code,
        unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
    values = _desired(data, set(data.model_fields_set) | {"program_roles", "languages"})
    values.update(facility_id=facility_id, housing_unit_id=unit_id)
    if data.network == Network.incarcerated and values.get("custody_status") is None:
        values["custody_status"] = CustodyStatus.in_custody.value
    if data.network == Network.staff and values.get("employment_status") is None:
        values["employment_status"] = "employed"
    if values.get("is_supporter") and values.get("supporter_availability") is None:
        values["supporter_availability"] = Availability.active.value
    return values


def _changed_values(p: Participant, data: ParticipantCreate | ParticipantUpdate,
                    fields_set: set[str], locations: Locations) -> dict[str, Any]:
    """The columns a body would change on an existing participant, by the update rules.
    Pure: raises (unknown facility or unit, wrong network field) before anything changes."""
    values = _desired(data, fields_set)
    if fields_set & _LOCATION_FIELDS:
        fid, fcode = data.facility_id, data.facility_code
        if fid is None and fcode is None:
            fid = p.facility_id
        facility_id, unit_id = locations.resolve(
            facility_id=fid, facility_code=fcode,
            unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
        values["facility_id"] = facility_id
        # A facility move without a unit leaves the person unassigned in the new facility.
        if not fields_set & {"housing_unit_id", "housing_unit_code"}:
            unit_id = p.housing_unit_id if facility_id == p.facility_id else None
        values["housing_unit_id"] = unit_id
    if p.network == Network.incarcerated.value and values.get("employment_status"):
        raise RuleViolation("employment_status is for the staff network.", code="wrong_network_field")
    if p.network == Network.staff.value and values.get("custody_status"):
        raise RuleViolation("custody_status is for the incarcerated network.",
                            code="wrong_network_field")
    return {k: v for k, v in values.items() if getattr(p, k) != v}


@dataclass(frozen=True, slots=True)
class _Cascade:
    """One kind of pairing cascade; the people it concerns are gathered and moved together."""

    action: str  # "end" | "pause" | "keep_apart"
    reason: str = ""
    only_as_supporter: bool = False
    statuses: tuple[str, ...] = ("proposed", "active", "paused")


# The order the single-record path has always applied them in (ends before pauses).
_END_RELEASED = _Cascade("end", "released")
_END_TRANSFERRED = _Cascade("end", "transferred")
_END_SEPARATED = _Cascade("end", "other")
_PAUSE_LEAVE = _Cascade("pause", "not_employed", True, ("active",))
_PAUSE_UNAVAILABLE = _Cascade("pause", "supporter_unavailable", True, ("active",))
_PAUSE_KEEP_APART = _Cascade("keep_apart")
_CASCADE_ORDER = (_END_RELEASED, _END_TRANSFERRED, _END_SEPARATED, _PAUSE_LEAVE,
                  _PAUSE_UNAVAILABLE, _PAUSE_KEEP_APART)


def _cascades_for(p: Participant, changed: dict[str, Any], before_facility: uuid.UUID
                  ) -> list[_Cascade]:
    """Custody and availability changes move the person's pairings (pure: which moves)."""
    out = []
    if "custody_status" in changed and p.custody_status == CustodyStatus.released.value:
        out.append(_END_RELEASED)
    elif p.facility_id != before_facility or (
            "custody_status" in changed and p.custody_status == CustodyStatus.transferred.value):
        out.append(_END_TRANSFERRED)
    elif "employment_status" in changed and p.employment_status == "separated":
        out.append(_END_SEPARATED)
    if "employment_status" in changed and p.employment_status == "on_leave":
        out.append(_PAUSE_LEAVE)
    if "supporter_availability" in changed and p.supporter_availability != Availability.active:
        out.append(_PAUSE_UNAVAILABLE)
    if "housing_unit_id" in changed:
        out.append(_PAUSE_KEEP_APART)
    return out


def _bump(p: Participant) -> None:
    p.version += 1
    p.updated_at = utcnow()


_INSERT_COLUMNS = tuple(c.name for c in Participant.__table__.columns)
# What the rules compare (no timestamps: an unchanged row costs as little as it can).
_DECIDE_COLUMNS = tuple(P[c] for c in ("id", "network", "external_ids", *sorted(
    _COLUMN_FIELDS | {"is_supporter", "is_recipient"})))


class Changes:
    """What one transaction does to participants: every create, update and upsert by external
    id goes through here, for one record (the routes) or a chunk of an import. The records a
    chunk refers to are read in one query, each row's change is decided in Python by the same
    rules (only the records that change are then locked and loaded as ORM objects), new
    records are inserted together, and each kind of cascade (release ends pairings, ...) runs
    once for the people it concerns, in this transaction. A row that breaks a rule raises
    before it changes anything."""

    def __init__(self, session: AsyncSession, principal: Principal, w: Writer) -> None:
        self.session, self.principal, self.w = session, principal, w
        self.locations = Locations()
        # Existing records as read-only rows: most rows of a JMS file change nothing, and only
        # the ones that do become ORM objects (in flush).
        self.by_key: dict[tuple[str, str], Row[Any]] = {}
        self.holder: dict[tuple[str, str], uuid.UUID] = {}  # any scope: who holds an external id
        self.updated: dict[uuid.UUID, Participant] = {}
        self._new: list[dict[str, Any]] = []
        self._new_ids: list[dict[str, Any]] = []
        self._updates: list[tuple[uuid.UUID, ParticipantCreate, set[str], list[ExternalId]]] = []
        self._cascades: dict[_Cascade, list[uuid.UUID]] = {}
        self._whole = True

    async def load(self, keys: Iterable[tuple[str, str]], bodies: Iterable[ParticipantCreate],
                   *, whole: bool = True) -> None:
        """The participants holding these external ids (the visible ones as rows, the others
        only known to be taken) and the facilities the bodies refer to: three queries at most.
        Nothing is locked yet: most rows of a JMS file change nothing."""
        keys = set(keys)
        ext = ParticipantExternalId.__table__.c
        by_source: dict[str, list[str]] = {}
        for source, value in keys:
            by_source.setdefault(source, []).append(value)
        for source, values in by_source.items():
            # Whole rows for a route's answer; for an import only what the rules compare.
            self._whole = whole
            columns = (PARTICIPANT,) if whole else _DECIDE_COLUMNS
            rows = await self.session.execute(
                scoping.participants(self.principal, *columns)
                .add_columns(ext.source.label("ext_source"), ext.value.label("ext_value"))
                .join(ParticipantExternalId.__table__, ext.participant_id == P.id)
                .where(ext.source == source, one_of(self.session, ext.value, values)))
            for row in rows:
                self.by_key[(row.ext_source, row.ext_value)] = row
                self.holder[(row.ext_source, row.ext_value)] = row.id
        unknown = keys - self.holder.keys()
        if unknown:
            by_source = {}
            for source, value in unknown:
                by_source.setdefault(source, []).append(value)
            for source, values in by_source.items():
                rows = await self.session.execute(
                    select(ext.source, ext.value, ext.participant_id)
                    .where(ext.source == source, one_of(self.session, ext.value, values)))
                for row in rows:
                    self.holder[(row.source, row.value)] = row.participant_id
        ids: set[uuid.UUID] = {p.facility_id for p in self.by_key.values()}
        codes: set[str] = set()
        for body in bodies:
            i, c = _wanted_locations(body, None)
            ids |= i
            codes |= c
        self.locations = await Locations.load(self.session, self.principal, ids=ids, codes=codes)

    # --- one record -------------------------------------------------------------------------

    def create(self, data: ParticipantCreate, ids: list[ExternalId] | None = None
               ) -> dict[str, Any]:
        """A new participant's row (inserted by flush; a plain row, not an ORM object: an
        import creates thousands)."""
        values = _new_values(self.principal, data, self.locations)
        ids = _unique_ids(data.external_ids if ids is None else ids)
        if any((e.source, e.value) in self.holder for e in ids):
            raise Conflict("An external id is already linked to another participant.",
                           code="external_id_taken")
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
                                  "value": e.value, "created_at": now})
            self.holder[(e.source, e.value)] = pid
        self.w.audit("participant.create", "participant", pid, row["facility_id"])
        self.w.emit("participant.created", "participant", pid, facility_id=row["facility_id"],
                    network=row["network"])
        return row

    def update(self, p: Participant, data: ParticipantCreate | ParticipantUpdate,
               fields_set: set[str], *, action: str = "participant.update",
               add_ids: list[ExternalId] | None = None) -> list[str]:
        """Applies the fields a body set (and external ids to add); records the custody events
        and queues the cascades. Returns the changed fields ([] = nothing written)."""
        changed, new_ids = self._decide(p, data, fields_set, add_ids)
        if not changed and not new_ids:
            return []
        before_facility, before_status = p.facility_id, p.custody_status
        for k, v in changed.items():
            setattr(p, k, v)
        if p.is_supporter and p.supporter_availability is None:
            p.supporter_availability = Availability.active.value
        ev = {"facility_id": p.facility_id, "network": p.network}
        w = self.w
        if changed:
            if "custody_status" in changed and p.custody_status == CustodyStatus.released.value:
                w.emit("participant.released", "participant", p.id, **ev)
            if ("facility_id" in changed and p.facility_id != before_facility) or (
                    "custody_status" in changed
                    and p.custody_status == CustodyStatus.transferred.value
                    and before_status != p.custody_status):
                w.emit("participant.transferred", "participant", p.id,
                       data={"from_facility_id": str(before_facility)}, **ev)
            w.emit("participant.updated", "participant", p.id, data={"changed": sorted(changed)},
                   **ev)
            for c in _cascades_for(p, changed, before_facility):
                self._cascades.setdefault(c, []).append(p.id)
        else:
            w.emit("participant.updated", "participant", p.id, data={"changed": ["external_ids"]},
                   **ev)
        if new_ids:
            p.external_ids = [*(p.external_ids or []),
                              *({"source": e.source, "value": e.value} for e in new_ids)]
            for e in new_ids:
                self._new_ids.append({"id": uuid7(), "participant_id": p.id, "source": e.source,
                                      "value": e.value, "created_at": utcnow()})
                self.holder[(e.source, e.value)] = p.id
        _bump(p)
        w.audit(action, "participant", p.id, p.facility_id)
        return sorted(changed) + (["external_ids"] if new_ids else [])

    def _decide(self, p: Any, data: ParticipantCreate | ParticipantUpdate, fields_set: set[str],
                add_ids: list[ExternalId] | None) -> tuple[dict[str, Any], list[ExternalId]]:
        """The columns and external ids a body changes on p (a row or an ORM object). Pure
        but for noting the new ids as taken; raises on a broken rule."""
        changed = _changed_values(p, data, fields_set, self.locations)
        have = {(e["source"], e["value"]) for e in (p.external_ids or [])}
        new_ids = [e for e in _unique_ids(add_ids or []) if (e.source, e.value) not in have]
        for e in new_ids:
            if self.holder.get((e.source, e.value), p.id) != p.id:
                raise Conflict("An external id is already linked to another participant.",
                               code="external_id_taken")
        for e in new_ids:
            self.holder[(e.source, e.value)] = p.id
        return changed, new_ids

    def upsert(self, source: str, value: str, data: ParticipantCreate
               ) -> tuple[Row[Any] | dict[str, Any], str]:
        """Idempotent by external id: (the stored row, or a new one's row; "created" |
        "updated" | "unchanged"). An update is decided here (and raises here) and applied by
        flush, which then holds the record in `updated`."""
        ids = _unique_ids([ExternalId.model_construct(source=source, value=value),
                           *data.external_ids])
        row = self.by_key.get((source, value))
        if row is None:
            if (source, value) in self.holder:  # someone outside the caller's scope holds it
                raise NotFound("No such participant.")
            return self.create(data, ids), "created"
        if row.network != data.network.value:
            raise RuleViolation("A participant's network cannot change.", code="network_immutable")
        fields = set(data.model_fields_set) - {"network", "external_ids"}
        changed, new_ids = self._decide(row, data, fields, ids)
        if not changed and not new_ids:
            return row, "unchanged"
        self._updates.append((row.id, data, fields, ids))
        return row, "updated"

    # --- writing it all ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Inserts the new records, writes the changed ones, runs the queued cascades."""
        if self._updates:
            await self._apply_updates()
        try:
            await insert_rows(self.session, Participant.__table__, self._new)
            await insert_rows(self.session, ParticipantExternalId.__table__, self._new_ids)
            await self.session.flush()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict("An external id is already linked to another participant.",
                           code="external_id_taken") from None
        self._new.clear()
        self._new_ids.clear()
        from app.services import pairings

        for c in _CASCADE_ORDER:
            people = self._cascades.pop(c, None)
            if not people:
                continue
            if c.action == "keep_apart":
                await pairings.pause_keep_apart_conflicts(self.session, self.w, people)
            else:
                await pairings.cascade(self.session, self.w, people, action=c.action,
                                       reason=c.reason, only_as_supporter=c.only_as_supporter,
                                       statuses=c.statuses)


    async def _apply_updates(self) -> None:
        """The records upsert decided to change are locked and decided again on their locked
        state (a concurrent writer may have been first), then changed by `update`. For one
        record (a route) that is an ORM object, returned in `updated`; for an import's chunk,
        plain records written back with one statement (no ORM object per row)."""
        ids = [u[0] for u in self._updates]
        if self._whole:
            found = (await self.session.execute(select(Participant).where(
                one_of(self.session, P.id, ids)).order_by(P.id).with_for_update())).scalars()
            self.updated.update({p.id: p for p in found})
            for pid, data, fields, add in self._updates:
                self.update(self.updated[pid], data, fields, action="participant.upsert",
                            add_ids=add)
        else:
            rows = await self.session.execute(
                select(*_DECIDE_COLUMNS, P.version).where(one_of(self.session, P.id, ids))
                .order_by(P.id).with_for_update())
            records = {r.id: _Record(dict(r._mapping)) for r in rows}
            for pid, data, fields, add in self._updates:
                self.update(records[pid], data, fields,  # type: ignore[arg-type]
                            action="participant.upsert", add_ids=add)
            await update_rows(self.session, Participant.__table__,
                              [r.values for r in records.values() if r.changed])
        self._updates.clear()


class _Record:
    """A participant's columns as a plain object with attributes: what `Changes.update`
    changes on it is written back by update_rows, for a whole chunk at once."""

    __slots__ = ("values", "changed")

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "changed", False)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.values[name] = value
        object.__setattr__(self, "changed", True)


def _unique_ids(ids: Iterable[ExternalId]) -> list[ExternalId]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in ids:
        if (e.source, e.value) not in seen:
            seen.add((e.source, e.value))
            out.append(e)
    return out


async def create(*, session: AsyncSession, principal: Principal,
                 data: ParticipantCreate) -> Participant:
    w = Writer(session, principal)
    changes = Changes(session, principal, w)
    await changes.load([(e.source, e.value) for e in data.external_ids], [data])
    row = changes.create(data)
    await changes.flush()
    await w.commit()
    return Participant(**row)


async def update(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                 data: ParticipantUpdate, if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.merged_into_id is not None:
        raise Conflict("This record was merged into another; update that one.",
                       code="participant_merged")
    w = Writer(session, principal)
    changes = Changes(session, principal, w)
    fields = set(data.model_fields_set)
    if fields & _LOCATION_FIELDS:
        ids, codes = _wanted_locations(data, p.facility_id)
        changes.locations = await Locations.load(session, principal, ids=ids, codes=codes)
    if not changes.update(p, data, fields):
        return p
    await changes.flush()
    await w.commit()
    return p


async def upsert_by_external_id(*, session: AsyncSession, principal: Principal, source: str,
                                value: str, data: ParticipantCreate,
                                _retry: bool = True) -> tuple[Participant | Row[Any], bool]:
    """Idempotent: the same body twice changes nothing and emits nothing the second time."""
    w = Writer(session, principal)
    changes = Changes(session, principal, w)
    await changes.load([(source, value), *((e.source, e.value) for e in data.external_ids)], [data])
    found, outcome = changes.upsert(source, value, data)
    if outcome == "unchanged" and not isinstance(found, dict):
        return found, False  # nothing written; the request's transaction simply ends
    try:
        await changes.flush()
    except Conflict:
        if not _retry or outcome != "created":
            raise
        # A concurrent upsert created it first: take the update path.
        return await upsert_by_external_id(session=session, principal=principal, source=source,
                                           value=value, data=data, _retry=False)
    await w.commit()
    if isinstance(found, dict):
        return Participant(**found), True
    return changes.updated[found.id], False


async def archive(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                  if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.archived_at is not None:
        return p
    p.archived_at = utcnow()
    _bump(p)
    w = Writer(session, principal)
    w.audit("participant.archive", "participant", p.id, p.facility_id)
    from app.services import pairings

    await pairings.cascade(session, w, p.id, action="end", reason="other")
    w.emit("participant.archived", "participant", p.id, facility_id=p.facility_id,
           network=p.network)
    await w.commit()
    return p


async def merge(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                duplicate_id: uuid.UUID, if_match: str | None) -> Participant:
    """The duplicate's external ids, keep-apart orders and accounts move to the survivor;
    the duplicate is archived as merged (never deleted)."""
    if participant_id == duplicate_id:
        raise RuleViolation("A record cannot be merged into itself.", code="merge_self")
    survivor = await get(session=session, principal=principal, participant_id=participant_id,
                         for_update=True)
    check_version(survivor.version, if_match)
    dup = await get(session=session, principal=principal, participant_id=duplicate_id,
                    for_update=True)
    if survivor.network != dup.network:
        raise RuleViolation("Records of different networks cannot be merged.",
                            code="network_mismatch")
    for rec in (survivor, dup):
        if rec.merged_into_id is not None or rec.archived_at is not None:
            raise Conflict("An archived or merged record cannot take part in a merge.",
                           code="participant_archived")
    now = utcnow()
    w = Writer(session, principal)
    await session.execute(
        sql_update(ParticipantExternalId).where(ParticipantExternalId.participant_id == dup.id)
        .values(participant_id=survivor.id))
    survivor.external_ids = [*(survivor.external_ids or []), *(dup.external_ids or [])]
    dup.external_ids = []
    await _move_keep_aparts(session, survivor.id, dup.id, now, principal, w, survivor)
    from app.services import pairings

    # The duplicate's pairings end with the record; the survivor's pairings with anyone an
    # order now keeps them apart from end too.
    await pairings.cascade(session, w, dup.id, action="end", reason="other")
    await pairings.end_keep_apart_conflicts(session, w, survivor.id)
    linked = (await session.execute(select(User.id).where(User.participant_id == dup.id))).scalars()
    for user_id in list(linked):
        w.invalidate_auth(subject=user_id)
    await session.execute(sql_update(User).where(User.participant_id == dup.id)
                          .values(participant_id=survivor.id))
    dup.archived_at = now
    dup.merged_into_id = survivor.id
    _bump(dup)
    _bump(survivor)
    w.audit("participant.merge", "participant", survivor.id, survivor.facility_id)
    w.audit("participant.merged_away", "participant", dup.id, dup.facility_id)
    w.emit("participant.merged", "participant", survivor.id, facility_id=survivor.facility_id,
           network=survivor.network, data={"duplicate_id": str(dup.id)})
    await w.commit()
    return survivor


async def _move_keep_aparts(session: AsyncSession, survivor: uuid.UUID, dup: uuid.UUID,
                            now: datetime, principal: Principal, w: Writer,
                            scope: Participant) -> None:
    orders = (await session.execute(select(KeepApartOrder).where(or_(
        KeepApartOrder.participant_a_id == dup, KeepApartOrder.participant_b_id == dup)))).scalars()
    for o in list(orders):
        other = o.participant_b_id if o.participant_a_id == dup else o.participant_a_id
        if other == survivor:
            # An order between the two halves of one person no longer means anything.
            if o.status == "open":
                keep_aparts.set_status(o, KeepApartStatus.closed,
                                       "merged: both records are one person", principal)
                keep_aparts.record(w, o, "close", scope)
            continue
        a, b = ordered_pair(survivor, other)
        if o.status == "open":
            twin = (await session.execute(select(KeepApartOrder.id).where(and_(
                KeepApartOrder.participant_a_id == a, KeepApartOrder.participant_b_id == b,
                KeepApartOrder.status == "open")))).scalar_one_or_none()
            if twin is not None:
                keep_aparts.set_status(o, KeepApartStatus.closed,
                                       "merged: the survivor already has this order", principal)
                keep_aparts.record(w, o, "close", scope)
        o.participant_a_id, o.participant_b_id = a, b
        w.audit("keep_apart.merge_move", "keep_apart_order", o.id, scope.facility_id)
        o.version += 1
        o.updated_at = now
        await session.flush()



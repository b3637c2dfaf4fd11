"""The tamper-evident audit trail: every write, every confidential read, every denial.

Each row's hash covers its fields and the previous row's hash, so a row changed, removed or
inserted behind the service's back breaks the chain (`peerlink audit verify`).

`commit()` ends a write: its outbox events and audit rows go in with the COMMIT. On PostgreSQL
the chain is extended under a transaction-scoped advisory lock taken as late as it can be: one
statement (`audit_chain_append`, a migration's function) takes it, draws the outbox ids, reads
the tail, hashes and inserts the rows, and COMMIT follows in the same query string, so the lock
is never held while the API process is busy elsewhere. Outbox ids are drawn under that lock, so
they become visible in commit order (a feed cursor never skips a late commit). Routine writers
queue for a gate lock before the chain's; crisis work (`db.crisis_work`) goes straight to the
chain's, behind at most one routine writer. SQLite: write transactions begin IMMEDIATE (one
writer at a time) and the rows are chained here.
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

import orjson
from asgi_correlation_id import correlation_id
from sqlalchemy import bindparam, func, literal, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.db import crisis_work, insert_rows, utcnow
from app.models import (
    AuditEvent,
    Enrollment,
    Escalation,
    EscalationNotification,
    Facility,
    KeepApartOrder,
    OnCallOverride,
    OnCallShift,
    OutboxEvent,
    Pairing,
    Participant,
    ParticipantExternalId,
    SupportSession,
)
from app.proxies import CLIENT_ADDRESS
from app.security.principal import Principal
from app.services import scoping
from app.services.pagination import keyset_page

log = logging.getLogger("peerlink.audit")
GENESIS = "0" * 64
_LOCK_KEY = 0x70656572  # "peer": the chain's lock
_GATE_KEY = 0x70656571  # routine writers queue here before the chain's lock


@dataclass(frozen=True)
class AuditEntry:
    action: str
    outcome: str = "success"
    entity_type: str | None = None
    entity_id: str | None = None
    facility_id: uuid.UUID | None = None
    network: str | None = None


def _payload(fields: dict[str, Any]) -> str:
    """A row's canonical JSON (ASCII): what its hash covers after the previous row's hash."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _payload(row)).encode()).hexdigest()


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
    for late in ("client_address", "network"):
        if get(late) is not None:
            fields[late] = get(late)
    return fields


async def _last_hash(session: AsyncSession) -> str:
    """SQLite: the tail, read under the write lock the transaction began with."""
    last = (await session.execute(
        select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)  # type: ignore[union-attr]
    )).scalar()
    return last or GENESIS


@dataclass(frozen=True)
class Actor:
    actor_type: str
    actor_id: str | None = None
    role: str | None = None
    client_id: str | None = None

    @classmethod
    def of(cls, principal: Principal | None, anonymous: str = "system") -> Actor:
        if principal is None:
            return cls(anonymous)
        return cls(principal.kind, str(principal.id), principal.role.value,
                   principal.name if principal.kind == "client" else None)


def _rows(entries: Iterable[AuditEntry], actor: Actor,
          events: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The audit rows; an entry that names no network takes the one of its change's event
    (the same record's, in the same transaction: every write emits one with its network)."""
    now = utcnow()
    request_id = correlation_id.get()
    networks = {(e["entity_type"], str(e["entity_id"])): e["network"] for e in events
                if e.get("network")}
    return [{"occurred_at": now, "actor_type": actor.actor_type, "actor_id": actor.actor_id,
             "role": actor.role, "client_id": actor.client_id, "facility_id": e.facility_id,
             "network": e.network or networks.get((e.entity_type, e.entity_id)),
             "action": e.action, "entity_type": e.entity_type, "entity_id": e.entity_id,
             "outcome": e.outcome, "request_id": request_id,
             "client_address": CLIENT_ADDRESS.get()} for e in entries]


async def commit(session: AsyncSession, entries: Iterable[AuditEntry],
                 events: list[dict[str, Any]], actor: Actor, *,
                 notify: str | None = None) -> int | None:
    """Commits the session's transaction with `events` (outbox rows) and `entries` (audit rows,
    appended to the chain): all of it or nothing. With events, the channel `notify` is told the
    newest outbox id: on PostgreSQL by NOTIFY inside the transaction (None is returned); on
    SQLite the id is returned for the caller to tell after the commit."""
    rows = _rows(entries, actor, events)
    if not rows and not events:
        await session.commit()
        return None
    newest = None
    if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        await session.flush()  # everything else is written before the lock is taken
        await _append_and_commit(session, rows, events, notify if events else None)
    else:
        await insert_rows(session, OutboxEvent.__table__, events)
        await _chain_here(session, rows)
        if events and notify:
            newest = (await session.execute(select(func.max(OutboxEvent.id)))).scalar()
    await session.commit()
    return newest


async def append(session: AsyncSession, entries: Iterable[AuditEntry], *, actor_type: str,
                 actor_id: str | None, role: str | None, client_id: str | None) -> None:
    """Appends `entries` to the chain in the session's transaction, which the caller commits
    at once (an audited read or sign-in in a transaction of its own): on PostgreSQL the
    chain's lock is held from here to that COMMIT. A write ends with commit() instead."""
    rows = _rows(entries, Actor(actor_type, actor_id, role, client_id))
    if not rows:
        return
    if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        await session.flush()
        await session.execute(text(
            "SELECT audit_chain_append(:gate, :chain, CAST(:entries AS jsonb), "
            "CAST(:payloads AS text[]), CAST('[]' AS jsonb))"), _arguments(rows))
        return
    await _chain_here(session, rows)


async def _chain_here(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """SQLite: the rows hashed here, after the tail, read under the write lock the transaction
    began with."""
    if not rows:
        return
    prev = await _last_hash(session)
    for row in rows:
        row["prev_hash"] = prev
        row["hash"] = prev = _digest(prev, _hashed_fields(row))
    # Together, in chain order (ids follow the rows' order).
    await insert_rows(session, AuditEvent.__table__, rows)


def _arguments(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """audit_chain_append's: the gate (none for crisis work), the chain's lock, the rows and
    the canonical JSON each one's hash covers."""
    return {"gate": None if crisis_work.get() else _GATE_KEY, "chain": _LOCK_KEY,
            "entries": orjson.dumps(rows).decode(),
            "payloads": _text_array(_payloads(rows))}


_q = json.encoder.encode_basestring_ascii  # what json.dumps writes a str with (ensure_ascii)


def _payloads(rows: list[dict[str, Any]]) -> list[str]:
    """`_payload(_hashed_fields(row))` of each of _rows' rows, byte for byte, without a dict and
    a JSON encoder per row (a 10,000-row import chains 8,000 rows): the keys in sorted order,
    the fields a commit's rows share (time, actor, request) encoded once. A row with a value
    that is not a plain str or None takes the general path."""
    shared: dict[tuple[Any, ...], tuple[str, str, str]] = {}
    facilities: dict[Any, str] = {}
    out = []
    for r in rows:
        action, entity_id, entity_type, outcome, network = (
            r["action"], r["entity_id"], r["entity_type"], r["outcome"], r["network"])
        key = (r["occurred_at"], r["actor_type"], r["actor_id"], r["role"], r["client_id"],
               r["request_id"], r["client_address"])
        parts = shared.get(key)
        if parts is None:
            parts = shared[key] = _shared_parts(*key)
        fid = r["facility_id"]
        facility = facilities.get(fid)
        if facility is None:
            facility = facilities[fid] = _q(str(fid)) if fid else "null"
        if (parts[0] == "" or type(action) is not str or type(outcome) is not str
                or not (entity_id is None or type(entity_id) is str)
                or not (entity_type is None or type(entity_type) is str)
                or not (network is None or type(network) is str)):
            out.append(_payload(_hashed_fields(r)))
            continue
        out.append("".join((
            '{"action":', _q(action), parts[0],
            "null" if entity_id is None else _q(entity_id), ',"entity_type":',
            "null" if entity_type is None else _q(entity_type), ',"facility_id":', facility,
            "" if network is None else ',"network":' + _q(network), parts[1], _q(outcome),
            parts[2])))
    return out


def _shared_parts(occurred_at: datetime, actor_type: Any, actor_id: Any, role: Any,
                  client_id: Any, request_id: Any, client_address: Any) -> tuple[str, str, str]:
    """The canonical JSON around a row's own fields: from after `action` to `entity_id`'s
    value, from `occurred_at` to `outcome`'s value, and after it; ("", "", "") when a value is
    not a plain str or None (the row then takes the general path)."""
    values = (actor_type, actor_id, role, client_id, request_id, client_address)
    if not isinstance(occurred_at, datetime) or any(
            v is not None and type(v) is not str for v in values):
        return "", "", ""

    def enc(v: str | None) -> str:
        return "null" if v is None else _q(v)

    return (
        ',"actor_id":' + enc(actor_id) + ',"actor_type":' + enc(actor_type)
        + ("" if client_address is None else ',"client_address":' + enc(client_address))
        + ',"client_id":' + enc(client_id) + ',"entity_id":',
        ',"occurred_at":' + enc(occurred_at.isoformat(timespec="microseconds")) + ',"outcome":',
        ',"request_id":' + enc(request_id) + ',"role":' + enc(role) + "}")


def _text_array(items: list[str]) -> str:
    """A text[] literal, `{"a","b"}`, for `CAST(... AS text[])`. The driver's own list dumper
    escapes each element with a regular expression and a replacement template per quote: over
    6 s of a 10,000-row import's 30 (each payload is JSON, full of quotes)."""
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for i in items) + "}"


_APPEND = ("SELECT audit_chain_append(%(gate)s::bigint, %(chain)s::bigint, "
           "%(entries)s::jsonb, %(payloads)s::text[], %(events)s::jsonb); ")
# Our outbox ids are the newest: drawn under the chain's lock, which is held to this COMMIT.
_NOTIFY = "SELECT pg_notify(%(channel)s, (SELECT max(id) FROM outbox_event)::text); "


async def _append_and_commit(session: AsyncSession, rows: list[dict[str, Any]],
                             events: list[dict[str, Any]], notify: str | None) -> None:
    """PostgreSQL: one query string, so no round trip to this process (and its event loop)
    falls between taking the lock and COMMIT. The parameters are bound client-side (a query
    of two statements cannot use server-side binding). The session's own commit() after it
    finds the transaction over and sends nothing."""
    import psycopg

    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    try:
        async with psycopg.AsyncClientCursor(raw) as cur:
            await cur.execute(_APPEND + (_NOTIFY if notify else "") + "COMMIT",
                              _arguments(rows) | {"events": orjson.dumps(events).decode(),
                                                  "channel": notify})
    except psycopg.errors.IntegrityError as exc:
        # Raised as SQLAlchemy's, as insert_rows does, so callers handle it the same way.
        raise IntegrityError("audit_chain_append", None, exc) from None


async def record_denial(maker: async_sessionmaker[AsyncSession], *, principal: Principal | None,
                        status: int, action: str, entity_type: str | None,
                        entity_id: str | None,
                        path_params: dict[str, Any] | None = None) -> None:
    """Audits a refused request in a transaction of its own (the request's own was rolled
    back). `action` is "<METHOD> <route template>". The row carries the facility of the record
    the path names (`path_params`), found whatever the caller's scope, so that only auditors of
    that facility see a refusal about it; a row naming no record's facility is seen only by
    auditors of all facilities (scoping.audit_event_wall)."""
    entry = AuditEntry(action=action,
                       outcome={404: "not_found", 422: "refused"}.get(status, "denied"),
                       entity_type=entity_type, entity_id=entity_id)
    async with maker() as session:
        place = await place_of_record(session, path_params or {})
        if place is not None:
            entry = AuditEntry(entry.action, entry.outcome, entry.entity_type, entry.entity_id,
                               place.facility_id, place.network)
        await commit(session, [entry], [], Actor.of(principal, anonymous="anonymous"))


_P, _EXT = Participant.__table__.c, ParticipantExternalId.__table__.c
_F = Facility.__table__.c
_ID: Any = bindparam("id")
# A path parameter -> the statement that finds the facility and network of the record it
# names. Records of no facility (accounts, clients, courses, webhooks, import jobs) are not
# listed.
_PLACE_OF: dict[str, Any] = {
    "participant_id": select(_P.facility_id, _P.network).where(_P.id == _ID),
    "facility_id": select(_F.id, literal(None)).where(_F.id == _ID),
    **{name: select(model.__table__.c.facility_id, model.__table__.c.network)
       .where(model.__table__.c.id == _ID)
       for name, model in (("pairing_id", Pairing), ("session_id", SupportSession),
                           ("escalation_id", Escalation),
                           ("notification_id", EscalationNotification),
                           ("shift_id", OnCallShift), ("override_id", OnCallOverride))},
    "enrollment_id": select(_P.facility_id, _P.network).join(
        Enrollment.__table__, Enrollment.__table__.c.participant_id == _P.id)
        .where(Enrollment.__table__.c.id == _ID),
    "order_id": select(_P.facility_id, _P.network).join(
        KeepApartOrder.__table__, KeepApartOrder.__table__.c.participant_a_id == _P.id)
        .where(KeepApartOrder.__table__.c.id == _ID),
}


@dataclass(frozen=True)
class Place:
    """Where a record is: what its audit rows are stamped with."""

    facility_id: uuid.UUID
    network: str | None


def callers_place(principal: Principal) -> Place | None:
    """The place of a record that belongs to its caller's place rather than to one facility's
    record (an import job): the caller's facility when they have exactly one (and their network
    when they have exactly one); None (auditors of all facilities only) otherwise."""
    if principal.all_facilities or len(principal.facility_ids) != 1:
        return None
    networks = sorted(n.value for n in principal.networks)
    return Place(next(iter(principal.facility_ids)), networks[0] if len(networks) == 1 else None)


async def place_of_record(session: AsyncSession, path_params: dict[str, Any]) -> Place | None:
    """The facility and network of the record a request's path names (its first id the table
    above knows, or an external id), read past every wall: written to the audit row, never shown
    to the caller. None when the path names no such record or none exists; of several holders
    of an external id, none is chosen (the row names no facility)."""
    if "source" in path_params and "value" in path_params:
        rows = (await session.execute(
            select(_P.facility_id, _P.network)
            .join(ParticipantExternalId.__table__, _EXT.participant_id == _P.id)
            .where(_EXT.source == str(path_params["source"]),
                   _EXT.value == str(path_params["value"])).limit(2))).all()
        return Place(rows[0][0], rows[0][1]) if len(rows) == 1 else None
    for name, value in path_params.items():
        if name not in _PLACE_OF:
            continue
        try:
            record_id = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError:
            return None
        row = (await session.execute(_PLACE_OF[name], {"id": record_id})).first()
        if row is None or row[0] is None:
            return None
        facility = row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(str(row[0]))
        return Place(facility, row[1])
    return None


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

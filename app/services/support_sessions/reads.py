"""Reading support sessions: the scoped base query, single reads, the list (one prebuilt
statement per shape, attendees aggregated as JSON in the same statement) and a pairing's
outcomes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Integer, and_, bindparam, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import NotFound
from app.models import Pairing, SessionAttendee, SupportSession
from app.models.common import Network
from app.models.support_session import (
    Attendance,
    AttendeeRead,
    PairingSummary,
    SessionKind,
    SessionRead,
    SessionStatus,
)
from app.security.principal import Principal
from app.services import scoping
from app.services.pagination import decode_uuid_cursor, encode_cursor
from app.services.support_sessions.tables import ATTENDEES, PAIRINGS, SESSIONS


def sessions(principal: Principal) -> Any:
    """The scoped base query (the walls: `scoping.support_session_wall`)."""
    return scoping.support_sessions(principal)


async def get(*, session: AsyncSession, principal: Principal, session_id: uuid.UUID,
              for_update: bool = False) -> SupportSession:
    stmt = sessions(principal).where(SESSIONS.id == session_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such support session.")
    return found


async def to_reads(session: AsyncSession, items: list[SupportSession]) -> list[SessionRead]:
    """Read models of sessions just loaded or written, with their attendees in one more query
    (single-record answers; the list reads through `list_`)."""
    ids = [s.id for s in items]
    by_session: dict[uuid.UUID, list[AttendeeRead]] = {i: [] for i in ids}
    if ids:
        for a in await session.execute(
                select(ATTENDEES.session_id, ATTENDEES.participant_id, ATTENDEES.status,
                       ATTENDEES.reason, ATTENDEES.wellbeing_before, ATTENDEES.wellbeing_after)
                .where(ATTENDEES.session_id.in_(ids)).order_by(ATTENDEES.id)):
            by_session[a.session_id].append(AttendeeRead(
                participant_id=a.participant_id, status=a.status, reason=a.reason,
                wellbeing_before=a.wellbeing_before, wellbeing_after=a.wellbeing_after))
    return [SessionRead(
        id=s.id, kind=SessionKind(s.kind), pairing_id=s.pairing_id, facilitator_id=s.facilitator_id,
        facilitator_user_id=s.facilitator_user_id, facility_id=s.facility_id,
        network=Network(s.network), status=SessionStatus(s.status), scheduled_at=s.scheduled_at,
        scheduled_by=s.scheduled_by, actual_start=s.actual_start,
        duration_minutes=s.duration_minutes, location=s.location, topics=list(s.topics or []),
        closed_at=s.closed_at, closed_by=s.closed_by, close_reason=s.close_reason,
        has_note=s.note_ciphertext is not None, attendees=by_session[s.id], version=s.version,
        updated_at=s.updated_at) for s in items]


# The list: one prebuilt statement per shape (which filters, which walls apply), its values
# bound per request; plain rows, and each session's attendees aggregated in the same statement
# as JSON, so a page is one round trip and no ORM object or read model is built per row (the
# router writes the rows as they are: routers.common.json_page).
# The attendee rows being aggregated (aliased: the participant filter names the table itself).
_ATTENDEE = SessionAttendee.__table__.alias("a")
_OUTER = SupportSession.__table__  # the list's own table, which the attendee subqueries follow


def _attendee_object(build: Any) -> Any:
    """One attendee as a JSON object of AttendeeRead's fields, in its order."""
    keys_and_values: list[Any] = []
    for name in AttendeeRead.model_fields:  # the key as an SQL string literal, then the column
        keys_and_values += [literal_column(f"'{name}'"), _ATTENDEE.c[name]]
    return build(*keys_and_values)


def _attendees_postgresql() -> Any:
    ordered = func.json_agg(_attendee_object(func.json_build_object)).aggregate_order_by(
        _ATTENDEE.c.id)
    return (select(func.coalesce(ordered, cast(literal_column("'[]'"), JSON)))
            .where(_ATTENDEE.c.session_id == _OUTER.c.id).correlate(_OUTER).scalar_subquery())


def _attendees_sqlite() -> Any:
    # SQLite before 3.44 has no ORDER BY inside an aggregate: the ordered subquery is not
    # flattened into an aggregate query, so json_group_array sees its rows in that order.
    rows = (select(_attendee_object(func.json_object).label("attendee"))
            .where(_ATTENDEE.c.session_id == _OUTER.c.id).order_by(_ATTENDEE.c.id)
            .correlate(_OUTER).subquery())
    return select(func.json_group_array(func.json(rows.c.attendee), type_=JSON)
                  ).scalar_subquery()


_ATTENDEES = {"postgresql": _attendees_postgresql, "sqlite": _attendees_sqlite}


def _attendees(dialect: str) -> Any:
    """Each session's attendees as one JSON array of AttendeeRead objects (`[]` for none)."""
    return _ATTENDEES[dialect]()


_LIST_COLUMNS = [SESSIONS.id, SESSIONS.kind, SESSIONS.pairing_id, SESSIONS.facilitator_id,
                 SESSIONS.facilitator_user_id, SESSIONS.facility_id, SESSIONS.network,
                 SESSIONS.status, SESSIONS.scheduled_at, SESSIONS.scheduled_by,
                 SESSIONS.actual_start, SESSIONS.duration_minutes, SESSIONS.location,
                 SESSIONS.topics, SESSIONS.closed_at, SESSIONS.closed_by, SESSIONS.close_reason,
                 SESSIONS.note_ciphertext.is_not(None).label("has_note")]
# The list's items are these, in SessionRead's field order (the router writes them as they
# are, without the model: see routers.common.json_page).
_LIST_FIELDS = (*(c.name for c in _LIST_COLUMNS), "attendees", "version", "updated_at")
_FILTERS: dict[str, Any] = {
    "participant_id": lambda: SESSIONS.id.in_(select(ATTENDEES.session_id).where(
        ATTENDEES.participant_id == bindparam("participant_id"))),
    "pairing_id": lambda: SESSIONS.pairing_id == bindparam("pairing_id"),
    "facilitator_id": lambda: SESSIONS.facilitator_id == bindparam("facilitator_id"),
    "facility_id": lambda: SESSIONS.facility_id == bindparam("facility_id"),
    "kind": lambda: SESSIONS.kind == bindparam("kind"),
    "status": lambda: SESSIONS.status == bindparam("status"),
    "scheduled_from": lambda: SESSIONS.scheduled_at >= bindparam("scheduled_from"),
    "scheduled_to": lambda: SESSIONS.scheduled_at < bindparam("scheduled_to"),
    "updated_since": lambda: SESSIONS.updated_at >= bindparam("updated_since"),
}
_ENUM_FILTERS = ("kind", "status")  # bound as their values


@lru_cache(maxsize=256)
def _list_statement(dialect: str, wall: frozenset[str], keys: tuple[str, ...],
                    after: bool) -> Any:
    """The walls of `scoping.support_session_wall` with placeholders, one statement per
    shape."""
    stmt = select(*_LIST_COLUMNS, _attendees(dialect).label("attendees"),
                  SESSIONS.version, SESSIONS.updated_at,  # SessionRead's order: _LIST_FIELDS
                  ).where(*scoping.Wall("support_session", wall).clauses(bound=False))
    for key in keys:
        stmt = stmt.where(_FILTERS[key]())
    if after:
        stmt = stmt.where(SESSIONS.id > bindparam("after"))
    return stmt.order_by(SESSIONS.id).limit(bindparam("lim", type_=Integer))


def _hyphenate_attendee_ids(items: list[dict[str, Any]]) -> None:
    """SQLite keeps uuids as 32 hex digits, and JSON built in the database carries them so;
    the answer hyphenates them, as the single read does."""
    for item in items:
        for attendee in item["attendees"]:
            attendee["participant_id"] = str(uuid.UUID(attendee["participant_id"]))


async def list_(*, session: AsyncSession, principal: Principal, filters: dict[str, Any],
                limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of sessions as plain dicts in SessionRead's shape and field order (attendees
    included)."""
    after = decode_uuid_cursor(cursor, "support_session")
    wall = scoping.support_session_wall(principal)
    if wall.nothing:
        return [], None
    params: dict[str, Any] = {**wall.params, "lim": limit + 1}
    keys = tuple(k for k in _FILTERS if filters.get(k))
    for key in keys:
        value = filters[key]
        params[key] = value.value if key in _ENUM_FILTERS else value
    if after is not None:
        params["after"] = after
    dialect = session.get_bind().dialect.name
    stmt = _list_statement(dialect, wall.shape, keys, after is not None)
    items = [dict(zip(_LIST_FIELDS, row, strict=True))
             for row in await session.execute(stmt, params)]
    if dialect == "sqlite":
        _hyphenate_attendee_ids(items)
    nxt = encode_cursor("support_session", items[limit - 1]["id"]) if len(items) > limit \
        else None
    return items[:limit], nxt


@lru_cache(maxsize=8)
def _summary_statement(wall: frozenset[str]) -> Any:
    """The pairing (within the walls of `scoping.pairing_wall`, values as parameters) and
    its outcomes in one statement: its completed sessions joined with the recipient's
    attendance. No row: no such pairing for this caller."""
    held = and_(SESSIONS.pairing_id == PAIRINGS.id,
                SESSIONS.status == SessionStatus.completed.value)
    recipient = and_(ATTENDEES.session_id == SESSIONS.id,
                     ATTENDEES.participant_id == PAIRINGS.recipient_id)
    attended = case((ATTENDEES.status == Attendance.attended.value, 1), else_=0)
    change = (cast(ATTENDEES.wellbeing_after, Integer)
              - cast(ATTENDEES.wellbeing_before, Integer))
    return (
        select(PAIRINGS.id, PAIRINGS.activated_at, PAIRINGS.proposed_at,
               # one joined row per held session: the recipient's attendance
               func.count(SESSIONS.id).label("sessions_held"),
               func.coalesce(func.sum(attended), 0).label("sessions_attended"),
               func.avg(change).label("wellbeing_change"),
               func.min(SESSIONS.actual_start).label("first_session"),
               func.max(SESSIONS.actual_start).label("last_session"))
        .select_from(Pairing.__table__.outerjoin(SupportSession.__table__, held)
                     .outerjoin(SessionAttendee.__table__, recipient))
        .where(PAIRINGS.id == bindparam("pairing_id"),
               *scoping.Wall("pairing", wall).clauses(bound=False))
        .group_by(PAIRINGS.id, PAIRINGS.activated_at, PAIRINGS.proposed_at))


async def summary(*, session: AsyncSession, principal: Principal,
                  pairing_id: uuid.UUID) -> PairingSummary:
    """Outcomes of a pairing, computed by the database (aggregates, no rows loaded)."""
    wall = scoping.pairing_wall(principal)
    row = None
    if not wall.nothing:
        row = (await session.execute(_summary_statement(wall.shape),
                                     {**wall.params, "pairing_id": pairing_id})).first()
    if row is None:
        raise NotFound("No such pairing.")
    start = row.activated_at or row.proposed_at
    change = row.wellbeing_change
    return PairingSummary(
        pairing_id=row.id, sessions_held=row.sessions_held,
        sessions_attended=row.sessions_attended,
        average_wellbeing_change=round(float(change), 2) if change is not None else None,
        days_to_first_session=_days_between(start, row.first_session),
        days_since_last_session=_days_between(row.last_session, utcnow()))


def _days_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, (_aware(end) - _aware(start)).days)


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)

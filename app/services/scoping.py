"""The scoped base query of each aggregate: facility and network walls applied here, once.

Every read and every write-lookup starts from one of these, so a record outside the caller's
facilities or network is simply not found (404), exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.sql import Select

from app.models import AuditEvent, Facility, HousingUnit, KeepApartOrder, Participant
from app.models.common import Role
from app.security.principal import Principal


def _facility_clause(principal: Principal, column: Any) -> Any:
    if principal.all_facilities:
        return None
    if not principal.facility_ids:
        return false()
    return column.in_(principal.facility_ids)


def _where(stmt: Select[Any], *clauses: Any) -> Select[Any]:
    real = [c for c in clauses if c is not None]
    return stmt.where(*real) if real else stmt


# Reads select from the Core table (rows, not ORM objects: several times cheaper per row);
# writes select the ORM entity. Both take their WHERE clauses from participant_clauses.
PARTICIPANT = Participant.__table__
P = PARTICIPANT.c


def participant_clauses(principal: Principal) -> list[Any]:
    clauses: list[Any] = [
        P.network.in_([n.value for n in principal.networks]) if principal.networks else false(),
        _facility_clause(principal, P.facility_id),
    ]
    if principal.role == Role.peer_supporter:
        # Until pairings exist a peer supporter sees only their own record.
        clauses.append(P.id == principal.participant_id if principal.participant_id else false())
    return [c for c in clauses if c is not None]


def participants(principal: Principal, *columns: Any) -> Select[Any]:
    """ORM entities (for writes) or the given columns."""
    stmt = select(*columns) if columns else select(Participant)
    return stmt.where(*participant_clauses(principal))


def participant_rows(principal: Principal) -> Select[Any]:
    """Core rows of every participant column (for reads)."""
    return select(PARTICIPANT).where(*participant_clauses(principal))


def visible_participant_ids(principal: Principal) -> Select[Any]:
    return participants(principal, P.id)


def facility_clauses_for(principal: Principal, column: Any) -> list[Any]:
    clause = _facility_clause(principal, column)
    return [] if clause is None else [clause]


def facility_clauses(principal: Principal) -> list[Any]:
    clause = _facility_clause(principal, Facility.__table__.c.id)
    return [] if clause is None else [clause]


def facilities(principal: Principal) -> Select[Any]:
    return _where(select(Facility), _facility_clause(principal, Facility.id))


def housing_units(principal: Principal) -> Select[Any]:
    return _where(select(HousingUnit), _facility_clause(principal, HousingUnit.facility_id))


def keep_apart_orders(principal: Principal) -> Select[Any]:
    """Visible when either person is visible to the caller and both are of the caller's
    networks (an order never carries one network's ids across the wall)."""
    visible = visible_participant_ids(principal)
    networks = [n.value for n in principal.networks]
    of_my_networks = select(Participant.id).where(Participant.network.in_(networks))
    return select(KeepApartOrder).where(
        or_(KeepApartOrder.participant_a_id.in_(visible),
            KeepApartOrder.participant_b_id.in_(visible)),
        KeepApartOrder.participant_a_id.in_(of_my_networks),
        KeepApartOrder.participant_b_id.in_(of_my_networks),
    )


def audit_events(principal: Principal) -> Select[Any]:
    clause = _facility_clause(principal, AuditEvent.facility_id)
    if clause is not None:
        clause = or_(clause, AuditEvent.facility_id.is_(None))  # type: ignore[union-attr]
    return _where(select(AuditEvent), clause)

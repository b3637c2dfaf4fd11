"""The walls: which records of each aggregate a caller may see, each aggregate's defined once,
here.

A wall is a function of the caller (`Wall`): its shape (which clauses apply to this caller) and
the caller's values for them. Ad-hoc queries take the clauses with the values bound
(`wall.clauses()`, or the `select` helpers below); the prebuilt hot statements take the same
clauses with placeholders (`wall.clauses(bound=False)`, built once per shape, the values passed
at execution as `wall.params`). Both come from the one definition of the aggregate's clauses
(registered with `walls.defines`; the machinery is `app.services.walls`), so a list and a
single read can never disagree, and a record outside the caller's facilities or network is
simply not found (404), exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, not_, or_, select
from sqlalchemy.sql import Select

from app.models import (
    AuditEvent,
    Escalation,
    EscalationNotification,
    Facility,
    HousingUnit,
    KeepApartOrder,
    OnCallOverride,
    OnCallShift,
    Pairing,
    Participant,
    Referral,
    SupportSession,
)
from app.models.common import Network
from app.models.escalation import UNRESOLVED
from app.security.principal import Principal
from app.security.scopes import DEIDENTIFIED_READERS, REFERRAL_READERS, ROSTER_MANAGERS
from app.services.walls import (
    Binder,
    Wall,
    caller_parts,
    defines,
    facs,
    wall_of,
)

# Reads select from the Core tables (rows, not ORM objects: several times cheaper per row);
# writes select the ORM entity. Both take their WHERE clauses from the aggregate's wall.
PARTICIPANT = Participant.__table__
P = PARTICIPANT.c
PR = Pairing.__table__.c
E = Escalation.__table__.c
S = SupportSession.__table__.c
F = Facility.__table__.c
HU = HousingUnit.__table__.c
AE = AuditEvent.__table__.c
SHIFTS = OnCallShift.__table__.c
OVERRIDES = OnCallOverride.__table__.c
NOTIFICATIONS = EscalationNotification.__table__.c
RF = Referral.__table__.c

# --- participants ----------------------------------------------------------------------------

def participant_wall(principal: Principal) -> Wall:
    """The caller's networks and facilities; a peer supporter: their own record."""
    return wall_of("participant", caller_parts(principal, me="me_person"))


@defines("participant")
def _participant_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    out = [P.network.in_(b("nets", expanding=True)), *facs(shape, b, P.facility_id)]
    if "me_person" in shape:
        out.append(P.id == b("me", type_=P.id.type))
    return out


def participant_clauses(principal: Principal) -> list[Any]:
    return participant_wall(principal).clauses()


def participants(principal: Principal, *columns: Any) -> Select[Any]:
    """ORM entities (for writes) or the given columns."""
    stmt = select(*columns) if columns else select(Participant)
    return stmt.where(*participant_clauses(principal))


def participant_rows(principal: Principal) -> Select[Any]:
    """Core rows of every participant column (for reads)."""
    return select(PARTICIPANT).where(*participant_clauses(principal))


@lru_cache(maxsize=64)
def participant_row_by_id(shape: frozenset[str]) -> Select[Any]:
    """The single read's statement, built once per wall shape: the wall's placeholders and
    `participant_id` (the values: `participant_wall(...).params`). The hottest read there is."""
    return select(PARTICIPANT).where(*Wall("participant", shape).clauses(bound=False),
                                     P.id == bindparam("participant_id"))


def visible_participant_ids(principal: Principal) -> Select[Any]:
    return participants(principal, P.id)


# --- pairings ---------------------------------------------------------------------------------

def pairing_wall(principal: Principal) -> Wall:
    """The caller's networks and facilities; a peer supporter: the pairings they support."""
    return wall_of("pairing", caller_parts(principal, me="me_supporter"))


@defines("pairing")
def _pairing_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    out = [PR.network.in_(b("nets", expanding=True)), *facs(shape, b, PR.facility_id)]
    if "me_supporter" in shape:
        out.append(PR.supporter_id == b("me", type_=PR.supporter_id.type))
    return out


def pairings(principal: Principal, *columns: Any) -> Select[Any]:
    stmt = select(*columns) if columns else select(Pairing)
    return stmt.where(*pairing_wall(principal).clauses())


# --- support sessions -------------------------------------------------------------------------

def support_session_wall(principal: Principal) -> Wall:
    """The caller's networks and facilities; a peer supporter: the sessions of the pairings
    they support and the groups they facilitate."""
    return wall_of("support_session", caller_parts(principal, me="me_supporter"))


@defines("support_session")
def _support_session_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    out = [S.network.in_(b("nets", expanding=True)), *facs(shape, b, S.facility_id)]
    if "me_supporter" in shape:
        me = b("me", type_=PR.supporter_id.type)
        out.append(or_(S.pairing_id.in_(select(PR.id).where(PR.supporter_id == me)),
                       S.facilitator_id == me))
    return out


def support_sessions(principal: Principal, *columns: Any) -> Select[Any]:
    stmt = select(*columns) if columns else select(SupportSession)
    return stmt.where(*support_session_wall(principal).clauses())


# --- escalations ------------------------------------------------------------------------------

def escalation_wall(principal: Principal, *, to_work: bool = False) -> Wall:
    """The caller's facilities; a peer supporter: the escalations they raised (of any
    network); others: their networks, and an officer only those not yet resolved. And, to read
    (not `to_work`), a user's own blind raises wherever they are now: whatever the server found
    or was linked later, the raiser holds their receipt (views.py), so nothing they see depends
    on it. `to_work` (work it, read its timeline or watch log): never one's own blind raise,
    even inside the walls, for the same reason."""
    if principal.is_peer:
        found = caller_parts(principal, networks=False)
        if found is not None:
            found[0].add("raised_by_me")
    else:
        found = caller_parts(principal)
        if found is not None and principal.is_officer:
            found[0].add("unresolved")
    if found is not None and principal.kind == "user":
        found[0].add("not_my_blind_raises" if to_work else "my_blind_raises")
    if found is not None and found[0] & {"raised_by_me", "not_my_blind_raises",
                                         "my_blind_raises"}:
        found[1]["actor"] = principal.actor
    return wall_of("escalation", found)


@defines("escalation")
def _escalation_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    out = facs(shape, b, E.facility_id)
    if "raised_by_me" in shape:
        out.append(E.raised_by == b("actor"))
    else:
        out.append(E.network.in_(b("nets", expanding=True)))
    if "unresolved" in shape:
        out.append(E.status.in_(UNRESOLVED))
    if "not_my_blind_raises" in shape:
        out.append(not_(and_(E.raised_by == b("actor"), E.raised_blind.is_(True))))
    if "my_blind_raises" in shape:
        return [or_(and_(*out), and_(E.raised_by == b("actor"), E.raised_blind.is_(True)))]
    return out


def escalations(principal: Principal, *columns: Any, to_work: bool = False) -> Select[Any]:
    stmt = select(*columns) if columns else select(Escalation)
    return stmt.where(*escalation_wall(principal, to_work=to_work).clauses())


# --- referrals --------------------------------------------------------------------------------

def referral_wall(principal: Principal) -> Wall:
    """Coordinators and clinicians (REFERRAL_READERS): their networks and facilities. Anyone
    else who refers (an officer, an integration): the referrals they made, inside their networks
    and facilities; a peer supporter: the referrals they made at their facilities (the person
    referred may be one they cannot otherwise see: self-referrals through a peer)."""
    found = caller_parts(principal, networks=not principal.is_peer)
    if found is not None and principal.role not in REFERRAL_READERS:
        found[0].add("made_by_me")
        found[1]["actor"] = principal.actor
    return wall_of("referral", found)


@defines("referral")
def _referral_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    out = facs(shape, b, RF.facility_id)
    if "nets" in shape:
        out.append(RF.network.in_(b("nets", expanding=True)))
    if "made_by_me" in shape:
        out.append(RF.referred_by == b("actor"))
    return out


def referrals(principal: Principal, *columns: Any) -> Select[Any]:
    stmt = select(*columns) if columns else select(Referral)
    return stmt.where(*referral_wall(principal).clauses())


# --- on-call rosters and escalation notifications --------------------------------------------

def on_call_wall(principal: Principal) -> Wall:
    """Who is on call (the board): the caller's facilities and networks; an admin's facilities
    in every network (rosters name staff accounts, which admins manage, never participants)."""
    return wall_of("on_call_shift", caller_parts(principal, networks=not principal.is_admin))


def roster_wall(principal: Principal, aggregate: str = "on_call_shift") -> Wall:
    """Roster entries (shifts, overrides) as records: the board's wall for those who manage
    rosters (ROSTER_MANAGERS); anyone else sees only their own entries."""
    found = caller_parts(principal, networks=not principal.is_admin)
    if found is not None and principal.role not in ROSTER_MANAGERS:
        found[0].add("mine")
        found[1]["me"] = principal.id
    return wall_of(aggregate, found)


def _roster_clauses(columns: Any, shape: frozenset[str], b: Binder) -> list[Any]:
    out = facs(shape, b, columns.facility_id)
    if "nets" in shape:
        out.append(columns.network.in_(b("nets", expanding=True)))
    if "mine" in shape:
        out.append(columns.user_id == b("me", type_=columns.user_id.type))
    return out


@defines("on_call_shift")
def _on_call_shift_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    return _roster_clauses(SHIFTS, shape, b)


@defines("on_call_override")
def _on_call_override_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    return _roster_clauses(OVERRIDES, shape, b)


def on_call_shifts(principal: Principal) -> Select[Any]:
    return select(OnCallShift).where(*roster_wall(principal).clauses())


def on_call_overrides(principal: Principal) -> Select[Any]:
    return select(OnCallOverride).where(
        *roster_wall(principal, "on_call_override").clauses())


def board_shifts(principal: Principal) -> Select[Any]:
    """Every shift of the board's wall (who is on call now), not only the caller's own."""
    return select(OnCallShift).where(*on_call_wall(principal).clauses())


def board_overrides(principal: Principal) -> Select[Any]:
    wall = on_call_wall(principal)
    return select(OnCallOverride).where(
        *Wall("on_call_override", wall.shape, wall.params).clauses())


def notification_wall(principal: Principal) -> Wall:
    """Pages: the caller's facilities and networks (the escalation's, copied on each page)."""
    return wall_of("escalation_notification", caller_parts(principal))


@defines("escalation_notification")
def _notification_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    return [NOTIFICATIONS.network.in_(b("nets", expanding=True)),
            *facs(shape, b, NOTIFICATIONS.facility_id)]


def notifications(principal: Principal) -> Select[Any]:
    return select(EscalationNotification).where(*notification_wall(principal).clauses())


# --- facilities, housing units, keep-apart orders, the audit trail ----------------------------

def facility_wall(principal: Principal) -> Wall:
    return wall_of("facility", caller_parts(principal, networks=False))


@defines("facility")
def _facility_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    return facs(shape, b, F.id)


def facility_clauses(principal: Principal) -> list[Any]:
    return facility_wall(principal).clauses()


def facilities(principal: Principal) -> Select[Any]:
    return select(Facility).where(*facility_clauses(principal))


def housing_unit_wall(principal: Principal) -> Wall:
    return wall_of("housing_unit", caller_parts(principal, networks=False))


@defines("housing_unit")
def _housing_unit_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    return facs(shape, b, HU.facility_id)


def housing_units(principal: Principal) -> Select[Any]:
    return select(HousingUnit).where(*housing_unit_wall(principal).clauses())


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


def audit_event_wall(principal: Principal) -> Wall:
    """The rows stamped with one of the caller's facilities. A row that names no facility
    (an account, a client, a sign-in, a record of no facility, a refusal that named no record)
    is for auditors of all facilities only: it may concern any place."""
    if principal.all_facilities:
        return Wall("audit_event", frozenset())
    return Wall("audit_event", frozenset({"facs"}), {"facs": sorted(principal.facility_ids)})


@defines("audit_event")
def _audit_event_clauses(shape: frozenset[str], b: Binder) -> list[Any]:
    if "facs" not in shape:
        return []
    return [AE.facility_id.in_(b("facs", expanding=True))]


def audit_events(principal: Principal) -> Select[Any]:
    return select(AuditEvent).where(*audit_event_wall(principal).clauses())


# --- reports ----------------------------------------------------------------------------------

def report_scope(principal: Principal) -> tuple[frozenset[str], frozenset[uuid.UUID] | None]:
    """Which networks and facilities (None: all) a caller's reports cover: a coordinator's
    networks at their facilities; a de-identified reader (auditor) every network at theirs. The
    figures are aggregated from rows filtered by these, in app/reports."""
    if principal.role in DEIDENTIFIED_READERS:
        nets = frozenset(n.value for n in Network)
    else:
        nets = frozenset(n.value for n in principal.networks)
    if principal.all_facilities:
        return nets, None
    return nets, frozenset(principal.facility_ids)


WALLS: dict[str, Callable[[Principal], Wall]] = {
    "participant": participant_wall,
    "pairing": pairing_wall,
    "support_session": support_session_wall,
    "escalation": escalation_wall,
    "facility": facility_wall,
    "housing_unit": housing_unit_wall,
    "audit_event": audit_event_wall,
    "on_call": on_call_wall,
    "on_call_shift": roster_wall,
    "on_call_override": lambda principal: roster_wall(principal, "on_call_override"),
    "escalation_notification": notification_wall,
    "referral": referral_wall,
}

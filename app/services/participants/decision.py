"""The participant rules as pure functions: what a body makes of a new record, and what it
changes on an existing one (its columns, external ids, events and pairing cascades).

Shared by every writer: a route applies a Decision to an ORM object, an import's chunk to a
plain row (see appliers.py). Nothing here reads the database or writes anything; a broken
rule raises before anything changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, NamedTuple

from app.errors import Conflict, RuleViolation
from app.models.common import Network
from app.models.pairing import EndReason, PairingStatus
from app.models.participant import (
    Availability,
    CustodyStatus,
    EmploymentStatus,
    ExternalId,
    ParticipantCreate,
    ParticipantUpdate,
    ProgramRole,
)
from app.security.principal import Principal
from app.services.participants.locations import Locations
from app.services.scoping import P

# What a body may set (an import row's own fields, such as its external id, are not columns).
BODY_FIELDS = frozenset(ParticipantUpdate.model_fields)
COLUMN_FIELDS = BODY_FIELDS - {"facility_code", "housing_unit_code", "program_roles"}
LOCATION_FIELDS = frozenset({"facility_id", "facility_code", "housing_unit_id",
                             "housing_unit_code"})
# What the rules compare (no timestamps: an unchanged row costs as little as it can).
DECIDE_COLUMNS = tuple(P[c] for c in ("id", "network", "external_ids", *sorted(
    COLUMN_FIELDS | {"is_supporter", "is_recipient"})))
DECIDE_NAMES = tuple(c.name for c in DECIDE_COLUMNS)


def external_id_taken() -> Conflict:
    return Conflict("An external id is already linked to another participant.",
                    code="external_id_taken")


def check_network(principal: Principal, network: Network) -> None:
    if network not in principal.networks:
        raise RuleViolation("You may not write records of this network.",
                            code="network_not_allowed",
                            errors=[{"field": "network", "message": "network not allowed",
                                     "type": "network_not_allowed"}])


def unique_ids(ids: Iterable[ExternalId]) -> list[ExternalId]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in ids:
        if (e.source, e.value) not in seen:
            seen.add((e.source, e.value))
            out.append(e)
    return out


def _desired(data: ParticipantCreate | ParticipantUpdate, fields_set: set[str]) -> dict[str, Any]:
    """The column values a body asks for (only the fields it set)."""
    out: dict[str, Any] = {}
    for k in fields_set & COLUMN_FIELDS:
        v = getattr(data, k)  # plain values (str, date, int, lists of str) but for the enums
        # `_value_`, not the `value` property: the enum's descriptor costs more than the rest
        # of this loop (13,000 calls in a 10,000-row import).
        out[k] = v._value_ if isinstance(v, Enum) else v
    for k in ("custody_status", "employment_status", "supporter_availability"):
        if k in out and out[k] is None:
            del out[k]  # null never clears a status: an upsert without it leaves it as it is
    if "program_roles" in fields_set:
        roles = set(data.program_roles or [])
        out["is_supporter"] = ProgramRole.supporter in roles
        out["is_recipient"] = ProgramRole.recipient in roles
    return out


def new_values(principal: Principal, data: ParticipantCreate, locations: Locations
               ) -> dict[str, Any]:
    """Every column a body sets on a new participant, by the creation rules. Raises before
    anything changes."""
    check_network(principal, data.network)
    facility_id, unit_id = locations.resolve(
        facility_id=data.facility_id, facility_code=data.facility_code,
        unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
    values = _desired(data, set(data.model_fields_set) | {"program_roles", "languages"})
    values.update(facility_id=facility_id, housing_unit_id=unit_id)
    if data.network == Network.incarcerated and values.get("custody_status") is None:
        values["custody_status"] = CustodyStatus.in_custody.value
    if data.network == Network.staff and values.get("employment_status") is None:
        values["employment_status"] = EmploymentStatus.employed.value
    if values.get("is_supporter") and values.get("supporter_availability") is None:
        values["supporter_availability"] = Availability.active.value
    return values


def _changed_values(current: Mapping[str, Any], data: ParticipantCreate | ParticipantUpdate,
                    fields_set: set[str], locations: Locations) -> dict[str, Any]:
    """The columns a body would change on an existing participant, by the update rules."""
    values = _desired(data, fields_set)
    if fields_set & LOCATION_FIELDS:
        fid, fcode = data.facility_id, data.facility_code
        if fid is None and fcode is None:
            fid = current["facility_id"]
        facility_id, unit_id = locations.resolve(
            facility_id=fid, facility_code=fcode,
            unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
        values["facility_id"] = facility_id
        # A facility move without a unit leaves the person unassigned in the new facility.
        if not fields_set & {"housing_unit_id", "housing_unit_code"}:
            unit_id = current["housing_unit_id"] if facility_id == current["facility_id"] else None
        values["housing_unit_id"] = unit_id
    if current["network"] == Network.incarcerated and values.get("employment_status"):
        raise RuleViolation("employment_status is for the staff network.", code="wrong_network_field")
    if current["network"] == Network.staff and values.get("custody_status"):
        raise RuleViolation("custody_status is for the incarcerated network.",
                            code="wrong_network_field")
    return {k: v for k, v in values.items() if current[k] != v}


# --- cascades --------------------------------------------------------------------------------

_UNFINISHED = (PairingStatus.proposed.value, PairingStatus.active.value,
               PairingStatus.paused.value)


@dataclass(frozen=True, slots=True)
class Cascade:
    """One kind of pairing cascade; the people it concerns are gathered and moved together
    (pairings.cascade, or pairings.pause_keep_apart_conflicts for "keep_apart")."""

    action: Literal["end", "pause", "keep_apart"]
    reason: str = ""
    only_as_supporter: bool = False
    statuses: tuple[str, ...] = _UNFINISHED


_END_RELEASED = Cascade("end", EndReason.released.value)
_END_TRANSFERRED = Cascade("end", EndReason.transferred.value)
_END_SEPARATED = Cascade("end", EndReason.other.value)
_PAUSE_LEAVE = Cascade("pause", "not_employed", True, (PairingStatus.active.value,))
_PAUSE_UNAVAILABLE = Cascade("pause", "supporter_unavailable", True, (PairingStatus.active.value,))
_PAUSE_KEEP_APART = Cascade("keep_apart")
# The order the single-record path has always applied them in (ends before pauses).
CASCADE_ORDER = (_END_RELEASED, _END_TRANSFERRED, _END_SEPARATED, _PAUSE_LEAVE,
                 _PAUSE_UNAVAILABLE, _PAUSE_KEEP_APART)


# What _cascades_for reads of the state after a change.
_CASCADE_NAMES = ("custody_status", "facility_id", "employment_status", "supporter_availability")


def _cascades_for(after: Mapping[str, Any], changed: Mapping[str, Any],
                  before_facility: uuid.UUID) -> list[Cascade]:
    """Custody and availability changes move the person's pairings (which moves). `after`:
    the _CASCADE_NAMES columns after the change."""
    out = []
    if "custody_status" in changed and after["custody_status"] == CustodyStatus.released:
        out.append(_END_RELEASED)
    elif after["facility_id"] != before_facility or (
            "custody_status" in changed and after["custody_status"] == CustodyStatus.transferred):
        out.append(_END_TRANSFERRED)
    elif ("employment_status" in changed
          and after["employment_status"] == EmploymentStatus.separated):
        out.append(_END_SEPARATED)
    if "employment_status" in changed and after["employment_status"] == EmploymentStatus.on_leave:
        out.append(_PAUSE_LEAVE)
    if ("supporter_availability" in changed
            and after["supporter_availability"] != Availability.active):
        out.append(_PAUSE_UNAVAILABLE)
    if "housing_unit_id" in changed:
        out.append(_PAUSE_KEEP_APART)
    return out


# --- the decision ----------------------------------------------------------------------------

class Event(NamedTuple):
    type: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What a body changes on one participant. `writes` holds every column to set (the
    changed ones, the availability a new supporter starts with, the external ids' read copy);
    empty when nothing changes. Events and audit belong to the facility after the change."""

    participant_id: uuid.UUID
    facility_id: uuid.UUID
    network: str
    changed: tuple[str, ...] = ()
    new_ids: tuple[ExternalId, ...] = ()
    writes: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    cascades: tuple[Cascade, ...] = ()

    @property
    def fields(self) -> list[str]:
        """The fields reported as changed."""
        return [*self.changed, *(["external_ids"] if self.new_ids else [])]


def state_of(record: Any) -> dict[str, Any]:
    """The columns the rules compare, from an ORM object."""
    return {name: getattr(record, name) for name in DECIDE_NAMES}


def decide(current: Mapping[str, Any], data: ParticipantCreate | ParticipantUpdate,
           fields_set: set[str], add_ids: Iterable[ExternalId] | None, *, locations: Locations,
           holder: Mapping[tuple[str, str], uuid.UUID]) -> Decision:
    """What a body (the fields it set, and external ids to add) changes on a participant in
    state `current` (its DECIDE_COLUMNS at least). `holder`: who holds each external id the
    body names. Raises on a broken rule (unknown facility or unit, a field of the other
    network, an external id held by someone else)."""
    pid = current["id"]
    changed = _changed_values(current, data, fields_set, locations)
    have = {(e["source"], e["value"]) for e in (current["external_ids"] or [])}
    new_ids = [e for e in unique_ids(add_ids or []) if (e.source, e.value) not in have]
    if any(holder.get((e.source, e.value), pid) != pid for e in new_ids):
        raise external_id_taken()
    if not changed and not new_ids:
        return Decision(pid, current["facility_id"], current["network"])

    writes = dict(changed)

    def after(name: str) -> Any:
        return writes[name] if name in writes else current[name]

    if after("is_supporter") and after("supporter_availability") is None:
        writes["supporter_availability"] = Availability.active.value
    if new_ids:
        writes["external_ids"] = [*(current["external_ids"] or []),
                                  *({"source": e.source, "value": e.value} for e in new_ids)]
    before_facility = current["facility_id"]
    events: list[Event] = []
    cascades: list[Cascade] = []
    if changed:
        now_status = after("custody_status")
        if "custody_status" in changed and now_status == CustodyStatus.released:
            events.append(Event("participant.released"))
        if ("facility_id" in changed and after("facility_id") != before_facility) or (
                "custody_status" in changed and now_status == CustodyStatus.transferred
                and current["custody_status"] != now_status):
            events.append(Event("participant.transferred",
                                {"from_facility_id": str(before_facility)}))
        events.append(Event("participant.updated", {"changed": sorted(changed)}))
        cascades = _cascades_for({k: after(k) for k in _CASCADE_NAMES}, changed, before_facility)
    else:
        events.append(Event("participant.updated", {"changed": ["external_ids"]}))
    return Decision(pid, after("facility_id"), current["network"], tuple(sorted(changed)),
                    tuple(new_ids), writes, tuple(events), tuple(cascades))

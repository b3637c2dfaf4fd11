"""Reading escalations: one by id (the walls of `scoping.escalation_wall`), the dashboard and
list (one prebuilt statement per shape), the timeline (actors by display name, clinical text for
clinicians), and what each role sees of one (`views`: clinicians everything, others no clinical
detail, peers and machines the status)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import NotFound
from app.models import Escalation, EscalationEvent
from app.models.escalation import (
    WAITING,
    EscalationRead,
    EscalationReceipt,
    EscalationReport,
    EscalationStatus,
    EscalationStatusView,
)
from app.security.principal import Principal
from app.security.scopes import ESCALATION_STATUS_ONLY
from app.services import scoping
from app.services.accounts import display_names
from app.services.pagination import decode_uuid_cursor, encode_cursor

ESCALATIONS = Escalation.__table__.c
TIMELINE = EscalationEvent.__table__.c


async def get(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
              for_update: bool = False, to_work: bool = False) -> Escalation:
    """To read it (and add an observation); `to_work`: to act on it or read its timeline or
    watch log, which its blind raiser may not (`scoping.escalation_wall`)."""
    stmt = scoping.escalations(principal, to_work=to_work).where(ESCALATIONS.id == escalation_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such escalation.")
    return found


# What a list reads: every column a role-shaped view may show (`views`).
VIEW_FIELDS = (
    "id", "participant_id", "facility_id", "network", "category", "description",
    "location_unit_id", "location_text", "tier", "screener", "status", "ack_deadline", "breached",
    "chain_level", "assigned_to", "raised_by", "raised_at", "acknowledged_at", "acknowledged_by",
    "resolved_at", "resolved_by", "outcome", "follow_up_plan", "review_date", "version",
    "raised_blind", "reported")
_VIEW_COLUMNS = [ESCALATIONS[name] for name in VIEW_FIELDS]
# The views' fields, in their read model's order (the list writes them as they are).
_READ_FIELDS = tuple(EscalationRead.model_fields)
_STATUS_FIELDS = tuple(EscalationStatusView.model_fields)
_RECEIPT_FIELDS = tuple(EscalationReceipt.model_fields)
_REPORT_FIELDS = tuple(EscalationReport.model_fields)


def is_receipt(principal: Principal, e: Any) -> bool:
    """The caller raised it blind: they hold a receipt (a row dict or an Escalation)."""
    get_ = e.get if isinstance(e, dict) else lambda k: getattr(e, k)
    return bool(get_("raised_blind")) and get_("raised_by") == principal.actor


def _report(reported: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored report in EscalationReport's shape and order."""
    if reported is None:
        return None
    return {k: reported.get(k) for k in _REPORT_FIELDS}


def etag_version(principal: Principal, esc: Escalation) -> int | None:
    """The version a caller may hold (ETag), none for a receipt: its changes would tell the
    raiser when others act on the escalation."""
    return None if is_receipt(principal, esc) else esc.version
_CLINICAL_HIDDEN = dict.fromkeys(("description", "screener", "outcome", "follow_up_plan",
                                  "review_date"))


def views(principal: Principal, rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Clinicians see everything; others who/where/tier/deadline/status without the clinical
    detail; a peer supporter and a machine client only the status; the raiser of a blind raise
    their receipt. Shaped as plain dicts in the field order of EscalationRead /
    EscalationStatusView / EscalationReceipt, from dicts of VIEW_FIELDS (the list's rows are
    written as they are: `routers.common.json_page`)."""
    status_only = principal.role in ESCALATION_STATUS_ONLY
    hide = not principal.is_clinician
    out = []
    for e in rows:
        e["reported"] = _report(e["reported"])
        if is_receipt(principal, e):
            e["view"] = "receipt"
            out.append({k: e[k] for k in _RECEIPT_FIELDS})
            continue
        if status_only:
            e["view"] = "status"
            out.append({k: e[k] for k in _STATUS_FIELDS})
            continue
        e["view"] = "full"
        # One clock for both fields, so they cannot disagree (EscalationRead describes them):
        # breached = the current deadline has passed unacknowledged.
        left = (math.ceil((e["ack_deadline"] - now).total_seconds())
                if e["status"] in WAITING else None)
        e["seconds_remaining"] = left
        e["breached"] = left is not None and left <= 0
        if hide:
            e.update(_CLINICAL_HIDDEN)
        out.append({k: e[k] for k in _READ_FIELDS})
    return out


def view(principal: Principal, esc: Escalation) -> dict[str, Any]:
    """One escalation (an ORM object) in the caller's view."""
    return views(principal, [{f: getattr(esc, f) for f in VIEW_FIELDS}], utcnow())[0]


@lru_cache(maxsize=64)
def _list_statement(wall: frozenset[str], status: bool, by_deadline: bool, after: bool) -> Any:
    """One prebuilt statement per shape: the walls of `scoping.escalation_wall` with
    placeholders, plain rows (the dashboard is refreshed every few seconds)."""
    stmt = select(*_VIEW_COLUMNS).where(
        *scoping.Wall("escalation", wall).clauses(bound=False))
    if status:
        stmt = stmt.where(ESCALATIONS.status == bindparam("status"))
    if by_deadline:  # the dashboard: most urgent first, one screenful
        return (stmt.order_by(ESCALATIONS.ack_deadline, ESCALATIONS.id)
                .limit(bindparam("lim", type_=Integer)))
    if after:
        stmt = stmt.where(ESCALATIONS.id > bindparam("after"))
    return stmt.order_by(ESCALATIONS.id).limit(bindparam("lim", type_=Integer))


async def list_(*, session: AsyncSession, principal: Principal, status: EscalationStatus | None,
                by_deadline: bool, limit: int, cursor: str | None,
                ) -> tuple[list[dict[str, Any]], str | None]:
    """The caller's views (`views`), built from plain rows (no ORM objects); by deadline: one
    page, no cursor."""
    after = None if by_deadline else decode_uuid_cursor(cursor, "escalation")
    wall = scoping.escalation_wall(principal)
    if wall.nothing:
        return [], None
    params: dict[str, Any] = {**wall.params, "lim": limit if by_deadline else limit + 1}
    if status:
        params["status"] = status.value
    if after is not None:
        params["after"] = after
    stmt = _list_statement(wall.shape, status is not None, by_deadline, after is not None)
    rows = [dict(zip(VIEW_FIELDS, row, strict=True))
            for row in await session.execute(stmt, params)]
    next_cursor = None
    if not by_deadline and len(rows) > limit:
        next_cursor = encode_cursor("escalation", rows[limit - 1]["id"])
        rows = rows[:limit]
    return views(principal, rows, utcnow()), next_cursor


# The timeline's free text (acknowledgement note, outcome and plan, reopen and tier change
# reasons): clinical detail, shown as the escalation's own view shows it (clinicians only).
CLINICAL_DETAIL = frozenset({"note", "outcome", "follow_up_plan", "review_date", "reason"})


# A person named in an entry (a linked subject), and the network that says who may see them:
# the escalation may have moved between networks, its readers never cross the wall.
PERSON_DETAIL = {"participant_id": "network", "from_participant_id": "from_network"}


def _shown(principal: Principal, detail: dict[str, Any]) -> dict[str, Any]:
    hide_text = not principal.is_clinician
    networks = {n.value for n in principal.networks}
    out = {}
    for k, v in detail.items():
        if (hide_text and k in CLINICAL_DETAIL) or (
                k in PERSON_DETAIL and detail.get(PERSON_DETAIL[k]) not in networks):
            v = None
        out[k] = v
    return out


def timeline_views(principal: Principal, entries: list[EscalationEvent],
                   names: dict[str, str]) -> list[dict[str, Any]]:
    """Each entry with its actor's display name, the clinical text for clinicians only, and a
    person only to a reader of that person's network."""
    return [{"kind": t.kind, "at": t.at, "by": t.by, "by_name": names.get(t.by),
             "detail": _shown(principal, t.detail or {})}
            for t in entries]


async def timeline(*, session: AsyncSession, principal: Principal,
                   escalation_id: uuid.UUID) -> list[dict[str, Any]]:
    await get(session=session, principal=principal, escalation_id=escalation_id, to_work=True)
    entries = list((await session.execute(select(EscalationEvent)
                                          .where(TIMELINE.escalation_id == escalation_id)
                                          .order_by(TIMELINE.at, TIMELINE.id))).scalars())
    names = await display_names(session, {t.by for t in entries})
    return timeline_views(principal, entries, names)

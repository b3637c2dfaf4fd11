"""Which domain events a caller may see: one visibility rule for the event feed and webhooks.

An event type's family needs the read scope of its records (participant.* needs
participants:read...); the event's network must be one of the caller's (or none), and its
facility one of the caller's (an event with no facility only for callers with every facility),
the same walls `scoping` puts on the records themselves. Unknown types are seen by nobody. A
peer supporter sees no record events, only the status changes of the escalations they raised
(RAISER_TYPES; which escalations: `scoping.escalation_wall`): what a tablet is pushed.
An admin reads no records (DOMAIN: no confidential content) and belongs to no network: their
feed is the webhook endpoint events (every endpoint's), never a record event; the contract says
so on the feed and on `events:read`.

Ordering: outbox ids are drawn under the audit chain's lock held until COMMIT (Writer.commit),
so on PostgreSQL ids become visible in commit order, and SQLite has one writer at a time: a
reader that has seen id n has seen every committed id below it. The feed's cursor is the id.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import RuleViolation
from app.event_types import EVENTS
from app.models import ApiClient, OutboxEvent, User
from app.models.common import Network, Role
from app.models.webhook import WebhookEndpoint
from app.security.principal import Principal
from app.security.scopes import REFERRAL_READERS, ROLE_NETWORKS, ROLE_SCOPES, scopes_for
from app.services import scoping
from app.services.pagination import decode_int_cursor, encode_cursor

OE = OutboxEvent.__table__.c
WE = WebhookEndpoint.__table__.c

# Event family -> the read scope its records need. The pages (`escalation.paged`,
# `escalation.page_acknowledged`: entity an escalation_notification) and `escalation.unstaffed`
# are of the escalation family: whoever may read the escalation sees them; reading a page's
# detail (whom to page) needs notifications:read besides.
FAMILY_SCOPES: dict[str, str] = {
    "participant": "participants:read",
    "keep_apart": "keep_apart:read",
    "pairing": "pairings:read",
    "escalation": "escalations:read",
    "observation": "escalations:read",
    "support_session": "sessions:read",
    "disclosure": "disclosures:read",
    "enrollment": "training:read",
    "certification": "training:read",
    "webhook_endpoint": "webhooks:read",
    "referral": "referrals:read",
}

# Every event type the services emit: the registry, one line each (app/event_types.py).
EVENT_TYPES: tuple[str, ...] = tuple(EVENTS)

_LINKS = {
    "participant": "/v1/participants/{}", "keep_apart_order": "/v1/keep-apart-orders/{}",
    "pairing": "/v1/pairings/{}", "escalation": "/v1/escalations/{}",
    "escalation_notification": "/v1/escalation-notifications/{}",
    "support_session": "/v1/support-sessions/{}", "enrollment": "/v1/enrollments/{}",
    "webhook_endpoint": "/v1/webhook-endpoints/{}", "referral": "/v1/referrals/{}",
}


def scope_of(event_type: str) -> str | None:
    return FAMILY_SCOPES.get(event_type.split(".", 1)[0])


# What a peer supporter is told of an escalation they raised: its status changing (their view
# of it is the status: EscalationStatusView); not its tier, assignment or breaches.
RAISER_TYPES: tuple[str, ...] = ("escalation.created", "escalation.acknowledged",
                                 "escalation.resolved", "escalation.reopened")


def visible_types(principal: Principal) -> list[str]:
    if principal.is_peer:
        # A peer sees single records of their own, which record events cannot express; the
        # escalations they raised are the one exception (event_clauses).
        return [t for t in RAISER_TYPES if scope_of(t) in principal.scopes]
    return [t for t in EVENT_TYPES if scope_of(t) in principal.scopes]


def owned_endpoints(principal: Principal) -> Any:
    """The webhook endpoints a caller manages: an admin every one, anyone else their own."""
    if principal.is_admin:
        return True
    return and_(WE.owner_kind == principal.kind, WE.owner_id == principal.id)


def event_clauses(principal: Principal, types: list[str] | None = None) -> list[Any]:
    """THE visibility rule (feed, webhook fan-out and live stream alike), as WHERE clauses on
    outbox_event. Record events: the family's read scope, the network and facility walls.
    Endpoint events (no facility, no network): an admin's, or the owner's of that endpoint. A
    peer supporter: RAISER_TYPES about the escalations the escalation wall shows them."""
    allowed = visible_types(principal)
    if types is not None:
        allowed = [t for t in allowed if t in types]
    if principal.is_peer:
        if not allowed:
            return [false()]
        raised = scoping.escalations(principal, scoping.E.id)
        return [and_(OE.type.in_(allowed), OE.entity_id.in_(raised))]
    about_endpoints = [t for t in allowed if t.startswith("webhook_endpoint.")]
    # Referrals of a caller who reads only the ones they made (scoping.referral_wall): those.
    own_referrals = ([t for t in allowed if t.startswith("referral.")]
                     if principal.role not in REFERRAL_READERS else [])
    about_records = [t for t in allowed if t not in about_endpoints and t not in own_referrals]
    parts: list[Any] = []
    if own_referrals:
        parts.append(and_(OE.type.in_(own_referrals),
                          OE.entity_id.in_(scoping.referrals(principal, scoping.RF.id))))
    if about_records:
        nets = [n.value for n in principal.networks]
        walls: list[Any] = [
            OE.type.in_(about_records),
            or_(OE.network.is_(None), OE.network.in_(nets)) if nets else OE.network.is_(None),
        ]
        if not principal.all_facilities:
            walls.append(OE.facility_id.in_(principal.facility_ids) if principal.facility_ids
                         else false())
        parts.append(and_(*walls))
    if about_endpoints:
        parts.append(and_(OE.type.in_(about_endpoints),
                          true() if principal.is_admin else
                          OE.entity_id.in_(select(WE.id).where(owned_endpoints(principal)))))
    return [or_(*parts)] if parts else [false()]


def check_types(types: list[str]) -> None:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise RuleViolation("Unknown event type(s).", code="unknown_event_type",
                            errors=[{"field": "types", "message": f"unknown: {t}",
                                     "type": "unknown_event_type"} for t in unknown])


def envelope(row: Any) -> dict[str, Any]:
    """Thin: ids, type, time, a link. Never names, notes or free text."""
    link = _LINKS.get(row.entity_type)
    data = {"id": str(row.entity_id), "entity_type": row.entity_type,
            "facility_id": str(row.facility_id) if row.facility_id else None,
            "network": row.network, **(row.data or {})}
    return {"id": str(row.event_id), "type": row.type,
            "occurred_at": row.occurred_at.isoformat().replace("+00:00", "Z"), "data": data,
            "url": link.format(row.entity_id) if link else None}



async def newest_id(session: AsyncSession) -> int:
    """The newest outbox id: every id up to it is committed (ids are drawn in commit order)."""
    return int((await session.execute(select(func.max(OE.id)))).scalar() or 0)

async def feed(*, session: AsyncSession, principal: Principal, after: str | None,
               types: list[str] | None, limit: int) -> tuple[list[dict[str, Any]], str]:
    """Events after the cursor, in id order. The next cursor is always given: past the last
    event returned, or, on a short page, past every event that existed when the query ran
    (what the caller may not see is skipped for good), or the same place when nothing is new."""
    if types is not None:
        check_types(types)
    after_id = decode_int_cursor(after, "event") or 0
    # Bound the page by the newest id first: every id up to it is committed already (commit
    # order), so a short page may move the cursor there without skipping a late commit.
    newest = await newest_id(session)
    rows = (await session.execute(
        select(OutboxEvent.__table__)
        .where(OE.id > after_id, OE.id <= newest, *event_clauses(principal, types))
        .order_by(OE.id).limit(limit))).all()
    last = rows[-1].id if len(rows) == limit else max(after_id, newest)
    return [envelope(r) for r in rows], encode_cursor("event", last)


async def owner_principals(session: AsyncSession,
                           owners: set[tuple[str, uuid.UUID]]) -> dict[tuple[str, uuid.UUID],
                                                                    Principal]:
    """The owners' *current* state as principals (two queries). Absent: an owner who is
    inactive or no longer holds webhooks:read (they may not receive webhooks at all)."""
    out: dict[tuple[str, uuid.UUID], Principal] = {}
    client_ids = [i for k, i in owners if k == "client"]
    user_ids = [i for k, i in owners if k == "user"]
    if client_ids:
        for c in (await session.execute(select(ApiClient).where(
                ApiClient.id.in_(client_ids), ApiClient.active.is_(True)))).scalars():
            out[("client", c.id)] = Principal(
                kind="client", id=c.id, name=c.client_id, role=Role.integration,
                scopes=frozenset(c.scopes) & ROLE_SCOPES[Role.integration],
                all_facilities=c.all_facilities,
                facility_ids=frozenset(uuid.UUID(f) for f in c.facility_ids),
                networks=frozenset(Network(n) for n in c.networks), participant_id=None)
    if user_ids:
        for u in (await session.execute(select(User).where(
                User.id.in_(user_ids), User.active.is_(True)))).scalars():
            role = Role(u.role)
            out[("user", u.id)] = Principal(
                kind="user", id=u.id, name=u.username, role=role,
                scopes=scopes_for(role, u.all_facilities), all_facilities=u.all_facilities,
                facility_ids=frozenset(uuid.UUID(f) for f in u.facility_ids),
                networks=ROLE_NETWORKS[role], participant_id=u.participant_id)
    return {k: p for k, p in out.items() if "webhooks:read" in p.scopes}

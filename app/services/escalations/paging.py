"""Paging the people on call. A raise (high, imminent) or a breach resolves a level of the
facility's chain to the people on call now (`services.rosters.on_call`) and pages each: an
escalation_notification row, a timeline entry and an `escalation.paged` event, which the live
stream carries to boards and a facility's paging gateway takes by webhook (it reads whom to page
at the event's link). A level with nobody on call is itself an alert (`escalation.unstaffed`
and a timeline entry) and the escalation moves on to the next level at once, until a level has
someone or the chain is exhausted (the alert then stands at the top level).

Delivery is at least once: `repage_sweep` pages again every `page_repeat_minutes` while a page
is `paging` and its escalation waits for acknowledgement. A person's acknowledgement stops the
pages of their level (their level-mates' pages stand down, and a later breach does not page that
level again); acknowledging the escalation closes all its pages (`close_pages`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Forbidden, NotFound
from app.models import Escalation, EscalationEvent, EscalationNotification, Facility, User
from app.models.escalation import WAITING, Tier
from app.models.notification import NotificationRead, NotificationReason, NotificationStatus
from app.security.principal import Principal
from app.security.scopes import ESCALATION_WORKERS, ON_CALL_HOLDERS
from app.services import scoping
from app.services.common import check_version
from app.services.rosters import on_call
from app.services.rosters.rules import display_name
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

NOTIFICATIONS = EscalationNotification.__table__.c
ESCALATIONS = Escalation.__table__.c
SYSTEM = "system"
PAGED_AT_RAISE = frozenset({Tier.high.value, Tier.imminent.value})
REPAGES_PER_ROUND = 500
_S = NotificationStatus

# The paging state machine. `acknowledge`: the person paged (a route); `stand_down`: what a
# level-mate's acknowledgement does to the other pages of the level; `close`: what
# acknowledging the escalation does to all its pages. Re-paging keeps a page `paging`.
NOTIFICATION_FLOW = table(
    Transition("acknowledge", frozenset({_S.paging.value, _S.stood_down.value}),
               _S.acknowledged.value, ON_CALL_HOLDERS),
    Transition("stand_down", frozenset({_S.paging.value}), _S.stood_down.value,
               ON_CALL_HOLDERS),
    Transition("close", frozenset({_S.paging.value, _S.acknowledged.value,
                                   _S.stood_down.value}), _S.closed.value, ESCALATION_WORKERS),
)

Rosters = dict[tuple[uuid.UUID, str], on_call.Roster]


def _timeline(session: AsyncSession, esc: Escalation, kind: str, detail: dict[str, Any],
              by: str = SYSTEM) -> None:
    session.add(EscalationEvent(escalation_id=esc.id, kind=kind, at=utcnow(), by=by,
                                detail=detail))


def _paged(session: AsyncSession, writer: Writer, esc: Escalation,
           page: EscalationNotification) -> None:
    """One page: its timeline entry and its thin event (ids, level, attempt; no names)."""
    _timeline(session, esc, "paged", {
        "notification_id": str(page.id), "level": page.level, "level_name": page.level_name,
        "user_id": str(page.user_id), "attempt": page.attempts, "reason": page.reason})
    writer.emit("escalation.paged", "escalation_notification", page.id,
                facility_id=page.facility_id, network=page.network,
                data={"escalation_id": str(esc.id), "level": page.level,
                      "user_id": str(page.user_id), "attempt": page.attempts})


async def _roster(session: AsyncSession, rosters: Rosters, esc: Escalation,
                  now: datetime) -> on_call.Roster:
    key = (esc.facility_id, esc.network)
    if key not in rosters:
        facility = await session.get(Facility, esc.facility_id)
        rosters[key] = await on_call.load(session, facility, esc.network, now)  # type: ignore[arg-type]
    return rosters[key]


async def page_from(session: AsyncSession, writer: Writer, esc: Escalation, level: int,
                    reason: NotificationReason, now: datetime,
                    rosters: Rosters | None = None) -> int:
    """Pages the people on call at `level` (1-based) of the chain, moving on past the levels
    with nobody on call; the escalation's `chain_level` becomes the level reached. Someone
    already being paged at that level is not paged twice (the re-page sweep keeps paging them);
    a level someone acknowledged is not paged again. Returns the pages sent."""
    roster = await _roster(session, {} if rosters is None else rosters, esc, now)
    chain = roster.chain
    level = max(1, min(level, len(chain)))
    people = roster.on_call(chain[level - 1], now)
    while not people:
        moved_to = level + 1 if level < len(chain) else None
        _timeline(session, esc, "unstaffed", {"level": level, "level_name": chain[level - 1],
                                              "moved_to": moved_to})
        writer.emit("escalation.unstaffed", "escalation", esc.id, facility_id=esc.facility_id,
                    network=esc.network, data={"level": level, "notify": chain[level - 1]})
        if moved_to is None:
            break
        level = moved_to
        people = roster.on_call(chain[level - 1], now)
    esc.chain_level = level
    live = list((await session.execute(select(EscalationNotification).where(
        NOTIFICATIONS.escalation_id == esc.id, NOTIFICATIONS.level == level,
        NOTIFICATIONS.status != _S.closed.value))).scalars())
    if any(page.status != _S.paging for page in live):
        return 0  # someone at this level acknowledged: its pages stopped
    already = {page.user_id for page in live}
    pages = [EscalationNotification(
        escalation_id=esc.id, facility_id=esc.facility_id, network=esc.network, level=level,
        level_name=chain[level - 1], user_id=h.user_id, reason=reason.value, notified_at=now,
        last_paged_at=now) for h in people if h.user_id not in already]
    session.add_all(pages)
    await session.flush()
    for page in pages:
        _paged(session, writer, esc, page)
    return len(pages)


async def page_on_raise(session: AsyncSession, writer: Writer, esc: Escalation) -> None:
    """A high or imminent escalation pages the chain's first level at once (a lower tier waits
    for its deadline: the board shows it, and a breach pages)."""
    if esc.tier in PAGED_AT_RAISE:
        await page_from(session, writer, esc, 1, NotificationReason.raised, utcnow())


async def close_pages(session: AsyncSession, esc: Escalation, by: str, now: datetime) -> int:
    """The escalation was acknowledged: every page of it closes, and those still paging count
    as acknowledged by whoever acknowledged the escalation."""
    pages = list((await session.execute(select(EscalationNotification).where(
        NOTIFICATIONS.escalation_id == esc.id,
        NOTIFICATIONS.status.in_(NOTIFICATION_FLOW["close"].sources)))).scalars())
    for page in pages:
        if page.status == _S.paging:
            page.acknowledged_at, page.acknowledged_by = now, by
        page.status = NOTIFICATION_FLOW["close"].target
        page.closed_at = now
        page.version += 1
    return len(pages)


async def repage_sweep(session: AsyncSession, settings: Settings,
                       now: datetime | None = None) -> dict[str, int]:
    """Pages again every page unacknowledged for `page_repeat_minutes` whose escalation still
    waits for acknowledgement (a new `escalation.paged`, the attempt counted). Rows are taken
    FOR UPDATE SKIP LOCKED: workers share, never repeat; a killed round rolls back and its pages
    stay due."""
    now = now or utcnow()
    cutoff = now - timedelta(minutes=settings.page_repeat_minutes)
    due = (await session.execute(
        select(EscalationNotification, Escalation)
        .join(Escalation, ESCALATIONS.id == NOTIFICATIONS.escalation_id)
        .where(NOTIFICATIONS.status == _S.paging.value, NOTIFICATIONS.last_paged_at <= cutoff,
               ESCALATIONS.status.in_(WAITING))
        .order_by(NOTIFICATIONS.last_paged_at).limit(REPAGES_PER_ROUND)
        .with_for_update(of=EscalationNotification.__table__, skip_locked=True))).all()
    if not due:
        return {"repaged": 0}
    writer = Writer(session, None)
    for page, esc in due:
        page.attempts += 1
        page.last_paged_at = now
        page.version += 1
        _paged(session, writer, esc, page)
        writer.audit("escalation.repage", "escalation_notification", page.id, page.facility_id)
    await writer.commit()
    return {"repaged": len(due)}


# --- the routes' use cases -----------------------------------------------------------------

async def _find(session: AsyncSession, principal: Principal,
                notification_id: uuid.UUID) -> EscalationNotification:
    page = (await session.execute(scoping.notifications(principal).where(
        NOTIFICATIONS.id == notification_id))).scalar_one_or_none()
    if page is None:
        raise NotFound("No such notification.")
    return page


async def read(session: AsyncSession, page: EscalationNotification) -> NotificationRead:
    """Whom to page: the person's id and display name, the level, the escalation and the
    facility. Never clinical detail."""
    user = await session.get(User, page.user_id)
    code = (await session.execute(select(Facility.__table__.c.code).where(
        Facility.__table__.c.id == page.facility_id))).scalar_one()
    return NotificationRead(
        id=page.id, escalation_id=page.escalation_id, facility_id=page.facility_id,
        facility_code=code, network=page.network, level=page.level,  # type: ignore[arg-type]
        level_name=page.level_name, user_id=page.user_id, display_name=display_name(user),
        channel=page.channel, reason=page.reason, status=page.status,  # type: ignore[arg-type]
        attempts=page.attempts, notified_at=page.notified_at, last_paged_at=page.last_paged_at,
        acknowledged_at=page.acknowledged_at, acknowledged_by=page.acknowledged_by,
        stood_down_at=page.stood_down_at, closed_at=page.closed_at, version=page.version)


async def get(*, session: AsyncSession, principal: Principal,
              notification_id: uuid.UUID) -> NotificationRead:
    return await read(session, await _find(session, principal, notification_id))


async def acknowledge(*, session: AsyncSession, principal: Principal,
                      notification_id: uuid.UUID, if_match: str | None) -> NotificationRead:
    """The person paged says they have it: their page is acknowledged, the other pages of their
    level stand down, and the level is not paged again. The escalation itself still needs
    acknowledging (its clock runs on)."""
    page = await _find(session, principal, notification_id)
    if principal.kind != "user" or page.user_id != principal.id:
        raise Forbidden("Only the person paged acknowledges a page.", code="not_your_page")
    # The escalation first, then its pages: the one lock order of every page change.
    esc = (await session.execute(select(Escalation).where(
        ESCALATIONS.id == page.escalation_id).with_for_update())).scalar_one()
    await session.refresh(page, with_for_update=True)
    check_version(page.version, if_match)
    page.status = step(NOTIFICATION_FLOW, "acknowledge", page.status, principal.role)
    now = utcnow()
    page.acknowledged_at, page.acknowledged_by = now, principal.actor
    page.version += 1
    mates = list((await session.execute(select(EscalationNotification).where(
        NOTIFICATIONS.escalation_id == esc.id, NOTIFICATIONS.level == page.level,
        NOTIFICATIONS.id != page.id,
        NOTIFICATIONS.status.in_(NOTIFICATION_FLOW["stand_down"].sources)))).scalars())
    for mate in mates:
        mate.status = NOTIFICATION_FLOW["stand_down"].target
        mate.stood_down_at = now
        mate.version += 1
    writer = Writer(session, principal)
    _timeline(session, esc, "page_acknowledged", {
        "notification_id": str(page.id), "level": page.level, "level_name": page.level_name,
        "user_id": str(page.user_id), "stood_down": len(mates)}, by=principal.actor)
    writer.audit("escalation.page_acknowledge", "escalation_notification", page.id,
                 page.facility_id)
    writer.emit("escalation.page_acknowledged", "escalation_notification", page.id,
                facility_id=page.facility_id, network=page.network,
                data={"escalation_id": str(esc.id), "level": page.level,
                      "user_id": str(page.user_id)})
    await writer.commit()
    return await read(session, page)

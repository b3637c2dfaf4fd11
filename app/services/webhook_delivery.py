"""Webhook delivery from the outbox, run by the worker: fan out, claim, send, record.

1. Fan-out: each active endpoint reads the outbox past its cursor, keeping the event types it
   subscribed to that its owner may see *now* (`events.event_clauses`, the feed's rule), and
   queues one delivery per event.
2. Claim: the head of each endpoint's queue (its oldest pending event; a later one waits until
   the earlier is delivered or given up), when due, taken FOR UPDATE SKIP LOCKED and leased
   (committed) before anything is sent: several workers never send one attempt twice, and a
   worker killed mid-send leaves a lease that runs out, so the delivery is sent again
   (at-least-once; receivers dedupe on `webhook-id`). The owner's current right to see the
   event is checked again here; a delivery they may no longer see is skipped, never sent.
3. Send (outside any transaction): Standard Webhooks headers and signatures (both secrets
   during a rotation's overlap), the SSRF guard resolved again for this attempt, no
   redirects, the response body never read.
4. Record: each attempt (status, duration, error class); 2xx delivered; 410 disables the
   endpoint; otherwise exponential backoff with jitter until the retry window (about three
   days) is spent; a run of failed attempts disables the endpoint and emits
   `webhook_endpoint.disabled`.
The clock is a parameter (`now`), so tests drive retries without sleeping; the signature's
timestamp is the real time of sending, as receivers check it against their clock.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.db import utcnow
from app.models import OutboxEvent
from app.models.webhook import (
    DeliveryStatus,
    EndpointStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.security.notes import NoteCipher
from app.services import events, outbound
from app.services.webhooks import disable, signing_secrets
from app.services.writer import Writer

WE = WebhookEndpoint.__table__.c
WD = WebhookDelivery.__table__.c
OE = OutboxEvent.__table__.c
FAN_OUT_WINDOW = 5000  # outbox ids one endpoint considers per round
CLAIM_BATCH = 50
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=12)
USER_AGENT = "peerlink-webhooks/1"


def backoff(attempts: int) -> timedelta:
    """Delay after the n-th failed attempt: 30 s doubling, capped at 12 h, jitter +-20%."""
    base = min(MAX_DELAY, BASE_DELAY * (2 ** min(attempts - 1, 20)))
    return base * (0.8 + secrets.randbelow(401) / 1000)


def lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.webhook_timeout_seconds + 60)


async def fan_out(session: AsyncSession, now: datetime) -> int:
    eps = list((await session.execute(
        select(WebhookEndpoint).where(WE.status == EndpointStatus.active.value)
        .order_by(WE.id).with_for_update(skip_locked=True))).scalars())
    if not eps:
        await session.commit()
        return 0
    owners = await events.owner_principals(session, {(e.owner_kind, e.owner_id) for e in eps})
    newest = await events.newest_id(session)
    queued = 0
    for ep in eps:
        owner = owners.get((ep.owner_kind, ep.owner_id))
        if owner is None or ep.last_event_id >= newest:
            continue  # an inactive owner gets nothing (its cursor waits)
        upper = min(newest, ep.last_event_id + FAN_OUT_WINDOW)
        rows = (await session.execute(
            select(OE.id, OE.type).where(OE.id > ep.last_event_id, OE.id <= upper,
                                         *events.event_clauses(owner, list(ep.event_types)))
            .order_by(OE.id))).all()
        session.add_all([WebhookDelivery(endpoint_id=ep.id, event_id=r.id, event_type=r.type,
                                         next_attempt_at=now) for r in rows])
        ep.last_event_id = upper
        queued += len(rows)
    await session.commit()
    return queued


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secrets: list[str]
    body: str
    msg_id: str
    lease_until: datetime


async def claim(session: AsyncSession, settings: Settings, now: datetime,
                cipher: NoteCipher) -> list[Claimed]:
    earlier = aliased(WebhookDelivery)
    blocked_by_earlier = exists().where(
        earlier.endpoint_id == WebhookDelivery.endpoint_id,
        earlier.status == DeliveryStatus.pending.value, earlier.manual.is_(False),
        earlier.event_id < WebhookDelivery.event_id)
    due = list((await session.execute(
        select(WebhookDelivery)
        .join(WebhookEndpoint, WE.id == WD.endpoint_id)
        .where(WD.status == DeliveryStatus.pending.value, WD.next_attempt_at <= now,
               WE.status == EndpointStatus.active.value,
               or_(WD.lease_until.is_(None), WD.lease_until <= now),
               or_(WD.manual.is_(True), ~blocked_by_earlier))
        .order_by(WD.next_attempt_at).limit(CLAIM_BATCH)
        .with_for_update(of=WebhookDelivery, skip_locked=True))).scalars())
    if not due:
        await session.commit()
        return []
    eps = {e.id: e for e in (await session.execute(
        select(WebhookEndpoint).where(WE.id.in_({d.endpoint_id for d in due})))).scalars()}
    owners = await events.owner_principals(
        session, {(e.owner_kind, e.owner_id) for e in eps.values()})
    # The owner's current right to each event: the feed's rule again, one query per owner.
    by_owner: dict[tuple[str, uuid.UUID], list[int]] = defaultdict(list)
    for d in due:
        ep = eps[d.endpoint_id]
        by_owner[(ep.owner_kind, ep.owner_id)].append(d.event_id)
    visible: dict[int, Any] = {}
    for key, ids in by_owner.items():
        owner = owners.get(key)
        if owner is None:
            continue
        for found_row in (await session.execute(select(OutboxEvent.__table__).where(
                OE.id.in_(ids), *events.event_clauses(owner)))).all():
            visible[found_row.id] = found_row
    out: list[Claimed] = []
    until = now + lease(settings)
    for d in due:
        ep = eps[d.endpoint_id]
        row = visible.get(d.event_id)
        if row is None or (d.event_type not in ep.event_types and not d.manual):
            d.status, d.last_error, d.lease_until = DeliveryStatus.skipped.value, "not_visible", None
            d.updated_at = now
            continue
        d.attempts += 1
        d.first_attempt_at = d.first_attempt_at or now
        d.lease_until = until
        d.updated_at = now
        out.append(Claimed(
            delivery_id=d.id, endpoint_id=ep.id, url=ep.url,
            secrets=signing_secrets(cipher, ep, now),
            body=json.dumps(events.envelope(row), separators=(",", ":")),
            msg_id=str(row.event_id), lease_until=until))
    await session.commit()
    return out


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None \
            and 200 <= self.status_code < 300


def signature_headers(c: Claimed, sent_at: datetime) -> dict[str, str]:
    signatures = " ".join(Webhook(s).sign(c.msg_id, sent_at, c.body) for s in c.secrets)
    return {"webhook-id": c.msg_id, "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": USER_AGENT}


async def send(c: Claimed, settings: Settings, http: httpx.AsyncClient) -> Outcome:
    start = time.monotonic()

    def done(status: int | None, error: str | None) -> Outcome:
        return Outcome(c, status, int((time.monotonic() - start) * 1000), error)

    try:
        target = await outbound.resolve(c.url, settings)
    except outbound.TargetRefused as exc:
        return done(None, "address_refused" if exc.code.endswith("address_refused")
                    else exc.code.removeprefix("webhook_url_")[:32])
    headers = signature_headers(c, utcnow())
    if target.host_header:
        headers["host"] = target.host_header
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        async with http.stream("POST", target.url, content=c.body.encode(), headers=headers,
                               extensions=extensions) as response:
            status = response.status_code  # the body is never read
    except httpx.TimeoutException:
        return done(None, "timeout")
    except httpx.ConnectError:
        return done(None, "connect_error")
    except httpx.HTTPError:
        return done(None, "http_error")
    if 300 <= status < 400:
        return done(status, "redirect_refused")
    return done(status, None if 200 <= status < 300 else "http_status")


async def record(session: AsyncSession, settings: Settings, now: datetime,
                 outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"delivered": 0, "retrying": 0, "failed": 0, "disabled": 0}
    if not outcomes:
        return counts
    w = Writer(session, None)
    # Endpoints before deliveries, each in id order: the order every writer of both takes.
    eps = {e.id: e for e in (await session.execute(
        select(WebhookEndpoint).where(WE.id.in_({o.claimed.endpoint_id for o in outcomes}))
        .order_by(WE.id).with_for_update())).scalars()}
    found = {d.id: d for d in (await session.execute(
        select(WebhookDelivery).where(WD.id.in_([o.claimed.delivery_id for o in outcomes]))
        .order_by(WD.id).with_for_update())).scalars()}
    window = timedelta(hours=settings.webhook_retry_hours)
    for o in outcomes:
        d = found[o.claimed.delivery_id]
        ep = eps[d.endpoint_id]
        session.add(WebhookAttempt(delivery_id=d.id, attempted_at=now, status_code=o.status_code,
                                   duration_ms=o.duration_ms, error=o.error))
        if d.status != DeliveryStatus.pending.value or d.lease_until != o.claimed.lease_until:
            continue  # our lease ran out and another worker took it over: it decides
        d.last_status_code, d.last_error, d.lease_until = o.status_code, o.error, None
        d.updated_at = now
        if o.ok:
            d.status, d.delivered_at = DeliveryStatus.delivered.value, now
            ep.consecutive_failures = 0
            counts["delivered"] += 1
            continue
        ep.consecutive_failures += 1
        delay = backoff(d.attempts)
        first = d.first_attempt_at or now
        if o.status_code == 410 or d.manual or now + delay - first > window:
            d.status = DeliveryStatus.failed.value
            counts["failed"] += 1
        else:
            d.next_attempt_at = now + delay
            counts["retrying"] += 1
        if ep.status == EndpointStatus.active.value and (
                o.status_code == 410
                or ep.consecutive_failures >= settings.webhook_disable_after_failures):
            disable(w, ep, "gone" if o.status_code == 410 else "failures", now)
            counts["disabled"] += 1
    await w.commit()
    return counts


async def deliver_round(session: AsyncSession, settings: Settings, now: datetime | None = None,
                        http: httpx.AsyncClient | None = None) -> dict[str, int]:
    """One round: fan out, claim what is due, send, record."""
    now = now or utcnow()
    cipher = NoteCipher.from_settings(settings)
    queued = await fan_out(session, now)
    claimed = await claim(session, settings, now, cipher)
    if not claimed:
        return {"queued": queued, "sent": 0}
    own = http is None
    client = http or httpx.AsyncClient(timeout=settings.webhook_timeout_seconds,
                                       follow_redirects=False, trust_env=False)
    try:
        limit = asyncio.Semaphore(20)

        async def one(c: Claimed) -> Outcome:
            async with limit:
                return await send(c, settings, client)

        outcomes = list(await asyncio.gather(*(one(c) for c in claimed)))
    finally:
        if own:
            await client.aclose()
    counts = await record(session, settings, now, outcomes)
    return {"queued": queued, "sent": len(outcomes), **counts}



async def purge_log(session: AsyncSession, settings: Settings, now: datetime | None = None,
                    batch: int = 5_000) -> dict[str, int]:
    """Worker job: finished deliveries older than `webhook_log_days` leave the log, with their
    attempts, a batch per round (pending ones stay, whatever their age)."""
    cut = (now or utcnow()) - timedelta(days=settings.webhook_log_days)
    old = (select(WebhookDelivery.id)
           .where(WebhookDelivery.status.in_((DeliveryStatus.delivered.value,
                                              DeliveryStatus.failed.value,
                                              DeliveryStatus.skipped.value)),
                  WebhookDelivery.created_at < cut)
           .order_by(WebhookDelivery.created_at).limit(batch))
    ids = list((await session.execute(old)).scalars())
    if ids:
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    await session.commit()
    return {"webhook_deliveries_purged": len(ids)}

"""Webhook delivery from the outbox, run by the worker: fan out, claim, send, record.

Order is kept per record, not per endpoint: an endpoint's deliveries about one record (the
outbox event's entity: a participant, an escalation...) go one at a time in event order, while
deliveries about different records go side by side. Crisis events (escalation.*,
observation.*) travel in their own lane: claimed first, with send slots of their own, so they
never wait behind routine events (an import's thousands of participant events).

1. Fan-out: each active endpoint reads the outbox past its cursor, keeping the event types it
   subscribed to that its owner may see *now* (`events.event_clauses`, the feed's rule), and
   queues one delivery per event. Crisis events past the cursor's window are queued at once
   (the cursor catches up later and skips what is queued).
2. Claim: the heads of each endpoint's records (a record's oldest pending event; a later one
   waits until the earlier is delivered or given up), when due, crisis lane first, as many as
   the endpoint has free send slots, taken FOR UPDATE SKIP LOCKED and leased (committed)
   before anything is sent: several workers never send one attempt twice. A lease names the
   worker process holding it (app.services.leaseholder, on PostgreSQL): a worker killed
   mid-send loses its advisory lock, and another takes the delivery over at its next claim
   (seconds); without an owner (SQLite) the lease runs out. Either way it is sent again
   (at-least-once; receivers dedupe on `webhook-id`). The owner's current right to see the event is checked
   again here; a delivery they may no longer see is skipped, never sent.
3. Send (outside any transaction, concurrently, bounded per endpoint): Standard Webhooks
   headers and signatures (both secrets during a rotation's overlap), the SSRF guard resolved
   again for this attempt, no redirects, the response body never read.
4. Record: each attempt (status, duration, error class); 2xx delivered; 410 disables the
   endpoint; otherwise exponential backoff with jitter until the retry window (about three
   days) is spent. The endpoint counts failed rounds (attempts recorded together, none
   answered 2xx): while failing it gets one routine attempt at a time, paced by that count's
   backoff, and a run of `webhook_disable_after_failures` disables it and emits
   `webhook_endpoint.disabled`. Crisis deliveries keep their own schedule meanwhile.
A round loops through these steps while there is work (and, for the worker, polls a little
longer for new events), so a backlog drains without waiting for the next round. The clock is
a parameter (`now`), so tests drive retries without sleeping; the signature's timestamp is the
real time of sending, as receivers check it against their clock.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import ssl
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.db import insert_rows, utcnow, uuid7
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
from app.services.leaseholder import HOLDER, live_owners
from app.services.webhooks import disable, signing_secrets
from app.services.writer import Writer

WE = WebhookEndpoint.__table__.c
WD = WebhookDelivery.__table__.c
OE = OutboxEvent.__table__.c
FAN_OUT_WINDOW = 5000  # outbox ids one endpoint considers per fan-out
CRISIS_FAMILIES = frozenset({"escalation", "observation"})  # raise, breach, page, watch
ROUTINE_SLOTS = 16  # routine sends in flight per endpoint (per worker)
ROUTINE_HELD = 2 * ROUTINE_SLOTS  # routine deliveries claimed per endpoint: sending + ready
CRISIS_SLOTS = 4  # crisis sends in flight per endpoint on top: never wait for a routine slot
ROUND_SECONDS = 5.0  # a round takes routine work this long at most, then drains and returns
FAN_OUT_EVERY = 0.1  # seconds between fan-outs within a round
POLL = 0.2  # seconds a round waits for a send to finish or new work before looking again
GATHER = 0.02  # seconds a finished send waits for others to finish, to record them together
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=12)
USER_AGENT = "peerlink-webhooks/1"


def is_crisis(event_type: str) -> bool:
    return event_type.split(".", 1)[0] in CRISIS_FAMILIES


def backoff(attempts: int) -> timedelta:
    """Delay after the n-th failed attempt: 30 s doubling, capped at 12 h, jitter +-20%."""
    base = min(MAX_DELAY, BASE_DELAY * (2 ** min(attempts - 1, 20)))
    return base * (0.8 + secrets.randbelow(401) / 1000)


@functools.cache
def _tls() -> ssl.SSLContext:
    """The default verifying context, built once (loading the CA bundle costs a quarter of a
    second on a loaded machine: once per process, not once per round)."""
    return httpx.create_ssl_context()


def lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.webhook_timeout_seconds + 60)


async def fan_out(session: AsyncSession, now: datetime) -> int:
    newest = await events.newest_id(session)
    eps = list((await session.execute(
        select(WebhookEndpoint).where(WE.status == EndpointStatus.active.value,
                                      WE.last_event_id < newest)
        .order_by(WE.id).with_for_update(skip_locked=True))).scalars())
    if not eps:
        await session.commit()
        return 0
    owners = await events.owner_principals(session, {(e.owner_kind, e.owner_id) for e in eps})
    queued = 0
    for ep in eps:
        owner = owners.get((ep.owner_kind, ep.owner_id))
        if owner is None:
            continue  # an inactive owner gets nothing (its cursor waits)
        upper = min(newest, ep.last_event_id + FAN_OUT_WINDOW)
        not_queued = ~exists().where(WD.endpoint_id == ep.id, WD.event_id == OE.id)
        cols = (OE.id, OE.type, OE.entity_id)
        rows = list((await session.execute(
            select(*cols).where(OE.id > ep.last_event_id, OE.id <= upper, not_queued,
                                *events.event_clauses(owner, list(ep.event_types)))
            .order_by(OE.id))).all())
        crisis_types = [t for t in ep.event_types if is_crisis(t)]
        # Crisis events beyond the window: now. Their records (escalations) have crisis events
        # only, so none overtakes an earlier event of its own record left behind the cursor.
        if upper < newest and crisis_types:
            rows += (await session.execute(
                select(*cols).where(OE.id > upper, OE.id <= newest, not_queued,
                                    *events.event_clauses(owner, crisis_types))
                .order_by(OE.id).limit(FAN_OUT_WINDOW))).all()
        await insert_rows(session, WebhookDelivery.__table__, [
            {"id": uuid7(), "endpoint_id": ep.id, "event_id": r.id, "event_type": r.type,
             "entity_id": r.entity_id, "crisis": is_crisis(r.type),
             "status": DeliveryStatus.pending.value, "manual": False, "attempts": 0,
             "next_attempt_at": now, "created_at": now, "updated_at": now} for r in rows])
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
    crisis: bool = False
    lease_owner: int | None = None


def _heads(endpoint_id: uuid.UUID, crisis: bool, now: datetime, room: int,
           live: set[int] | None = None) -> Any:
    """An endpoint's due heads in one lane: no earlier pending event of the same record on this
    endpoint (a manual redelivery stands outside the order), oldest due first. Not leased, or
    the lease ran out, or (PostgreSQL) its owner is not among the `live` worker processes."""
    free = or_(WD.lease_until.is_(None), WD.lease_until <= now)
    if live is not None:
        free = or_(free, and_(WD.lease_owner.is_not(None), WD.lease_owner.not_in(live)))
    earlier = aliased(WebhookDelivery)
    blocked_by_earlier = exists().where(
        earlier.endpoint_id == WebhookDelivery.endpoint_id,
        earlier.entity_id == WebhookDelivery.entity_id,
        earlier.status == DeliveryStatus.pending.value, earlier.manual.is_(False),
        earlier.event_id < WebhookDelivery.event_id)
    return (select(WebhookDelivery)
            .where(WD.endpoint_id == endpoint_id, WD.crisis == crisis,
                   WD.status == DeliveryStatus.pending.value, WD.next_attempt_at <= now,
                   free, or_(WD.manual.is_(True), ~blocked_by_earlier))
            .order_by(WD.next_attempt_at, WD.event_id).limit(room)
            .with_for_update(of=WebhookDelivery, skip_locked=True))


async def claim(session: AsyncSession, settings: Settings, now: datetime, cipher: NoteCipher,
                busy: Mapping[tuple[uuid.UUID, bool], int] | None = None,
                routine: bool = True, holder: int | None = None) -> list[Claimed]:
    """Leases what each endpoint has room for: `busy` counts what this worker holds (sending or
    claimed) per (endpoint, crisis lane); `routine=False` takes the crisis lane only. `holder`
    names this worker process in its leases (app.services.leaseholder): when it dies, another
    worker takes them over at its next claim."""
    busy = busy or {}
    live = await live_owners(session)
    eps = {e.id: e for e in (await session.execute(
        select(WebhookEndpoint).where(WE.status == EndpointStatus.active.value)
        .order_by(WE.id))).scalars()}
    due: list[WebhookDelivery] = []
    for ep in eps.values():
        lanes = [(True, CRISIS_SLOTS - busy.get((ep.id, True), 0))]
        if routine and (ep.retry_at is None or ep.retry_at <= now):
            # A failing endpoint gets one routine attempt at a time (a probe).
            slots = ROUTINE_HELD if ep.consecutive_failures == 0 else 1
            lanes.append((False, slots - busy.get((ep.id, False), 0)))
        for crisis, room in lanes:
            if room > 0:
                due += (await session.execute(_heads(ep.id, crisis, now, room, live))).scalars()
    if live is not None and any(d.lease_until is not None and d.lease_until > now for d in due):
        # Taking over from owners that looked dead: asked again now that the rows are ours (a
        # worker that started after the first look already holds its lock, as it did before
        # any lease it committed), so only the truly dead lose their leases.
        alive = await live_owners(session) or set()
        due = [d for d in due if d.lease_until is None or d.lease_until <= now
               or d.lease_owner not in alive]
    if not due:
        await session.commit()
        return []
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
        d.lease_until, d.lease_owner = until, holder
        d.updated_at = now
        out.append(Claimed(
            delivery_id=d.id, endpoint_id=ep.id, url=ep.url,
            secrets=signing_secrets(cipher, ep, now),
            body=json.dumps(events.envelope(row), separators=(",", ":")),
            msg_id=str(row.event_id), lease_until=until, crisis=d.crisis, lease_owner=holder))
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
    by_endpoint: dict[uuid.UUID, list[Outcome]] = defaultdict(list)
    for o in sorted(outcomes, key=lambda o: found[o.claimed.delivery_id].event_id):
        d = found[o.claimed.delivery_id]
        session.add(WebhookAttempt(delivery_id=d.id, attempted_at=now, status_code=o.status_code,
                                   duration_ms=o.duration_ms, error=o.error))
        if d.status != DeliveryStatus.pending.value or d.lease_until != o.claimed.lease_until \
                or d.lease_owner != o.claimed.lease_owner:
            continue  # our lease ran out and another worker took it over: it decides
        by_endpoint[d.endpoint_id].append(o)
    for endpoint_id, outs in by_endpoint.items():
        ep = eps[endpoint_id]
        # The endpoint's side: these attempts, recorded together, are one round. Any 2xx: it
        # answers. None: one more failed round, unless it was already waiting (attempts made
        # meanwhile, crisis ones or stragglers, neither count nor move its retry time).
        counted = False
        if any(o.ok for o in outs):
            ep.consecutive_failures, ep.retry_at = 0, None
        elif ep.retry_at is None or ep.retry_at <= now:
            ep.consecutive_failures += 1
            ep.retry_at = None  # the earliest retry of this round's routine deliveries, below
            counted = True
        for o in outs:
            d = found[o.claimed.delivery_id]
            d.last_status_code, d.last_error, d.lease_until = o.status_code, o.error, None
            d.updated_at = now
            if o.ok:
                d.status, d.delivered_at = DeliveryStatus.delivered.value, now
                counts["delivered"] += 1
                continue
            # A routine delivery waits as long as its endpoint's run of failures says (one
            # delivery alone: the same count); a crisis one keeps its own schedule.
            delay = backoff(d.attempts if d.crisis else max(d.attempts,
                                                             ep.consecutive_failures))
            first = d.first_attempt_at or now
            if o.status_code == 410 or d.manual or now + delay - first > window:
                d.status = DeliveryStatus.failed.value
                counts["failed"] += 1
                continue
            d.next_attempt_at = now + delay
            counts["retrying"] += 1
            if counted and not d.crisis:
                ep.retry_at = min(ep.retry_at or d.next_attempt_at, d.next_attempt_at)
        if ep.status == EndpointStatus.active.value and (
                any(o.status_code == 410 for o in outs)
                or ep.consecutive_failures >= settings.webhook_disable_after_failures):
            disable(w, ep, "gone" if any(o.status_code == 410 for o in outs) else "failures",
                    now)
            counts["disabled"] += 1
    await w.commit()
    return counts


async def deliver_round(session: AsyncSession, settings: Settings, now: datetime | None = None,
                        http: httpx.AsyncClient | None = None, *,
                        linger: float = 0.0) -> dict[str, int]:
    """One round: fan out, claim, send, record, again and again while there is work, up to
    ROUND_SECONDS of routine work; then what is claimed is sent and waited for (crisis events
    are still taken meanwhile). Each endpoint has ROUTINE_SLOTS routine sends in flight and as
    many claimed ready to go, so a slot is refilled at once while the database work (recording,
    claiming the next) runs beside the sends. With `linger` the round keeps looking for new
    events that long even when idle."""
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    cipher = NoteCipher.from_settings(settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    cap = max(linger, ROUND_SECONDS)
    totals: Counter[str] = Counter(queued=0, sent=0)
    inflight: dict[asyncio.Task[Outcome], Claimed] = {}
    sending: Counter[tuple[uuid.UUID, bool]] = Counter()  # per (endpoint, crisis lane)
    held: Counter[tuple[uuid.UUID, bool]] = Counter()  # sending + claimed, waiting for a slot
    ready: list[Claimed] = []
    own = http is None
    client = http or httpx.AsyncClient(timeout=settings.webhook_timeout_seconds,
                                       follow_redirects=False, trust_env=False,
                                       verify=_tls())

    def start() -> None:
        for c in list(ready):
            lane = (c.endpoint_id, c.crisis)
            if sending[lane] < (CRISIS_SLOTS if c.crisis else ROUTINE_SLOTS):
                ready.remove(c)
                sending[lane] += 1
                inflight[asyncio.create_task(send(c, settings, client))] = c

    last_fan_out: float | None = None
    try:
        while True:
            if last_fan_out is None or loop.time() - last_fan_out >= FAN_OUT_EVERY:
                last_fan_out = loop.time()
                totals["queued"] += await fan_out(session, clock())
            routine = loop.time() - started < cap
            for c in await claim(session, settings, clock(), cipher, held, routine,
                                 HOLDER.owner):
                ready.append(c)
                held[(c.endpoint_id, c.crisis)] += 1
            start()
            if not inflight:
                if not routine or loop.time() - started >= linger:
                    break
                await asyncio.sleep(POLL)
                continue
            done, pending = await asyncio.wait(inflight, timeout=POLL,
                                               return_when=asyncio.FIRST_COMPLETED)
            if done and pending:  # let the sends finishing about now join: one record for all
                more, _ = await asyncio.wait(pending, timeout=GATHER)
                done |= more
            outcomes = []
            for task in done:
                c = inflight.pop(task)
                sending[(c.endpoint_id, c.crisis)] -= 1
                held[(c.endpoint_id, c.crisis)] -= 1
                outcomes.append(task.result())
            start()  # the freed slots take what is ready before the database work below
            if outcomes:
                totals["sent"] += len(outcomes)
                totals.update(await record(session, settings, clock(), outcomes))
    finally:
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        if own:
            await client.aclose()
    return dict(totals)


async def delivery_job(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """The worker's round: delivers, and looks for new events every FAN_OUT_EVERY-POLL seconds
    for `webhook_poll_seconds` even when idle, so a crisis event is not left waiting for the
    next round."""
    return await deliver_round(session, settings, linger=settings.webhook_poll_seconds)


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

"""One open stream: replay what the caller missed, then live events from the hub, with a
heartbeat that also checks the caller's token and account again.

Live events already queued when a stream wakes go out together, as one chunk (one send).

The seam between replay and live: the subscriber joins the hub *before* the replay reads the
table, so an event committed meanwhile is either in the replay (committed before its read) or
handed out by the hub afterwards, or both: ids at or below the last one sent are dropped, so
nothing is missed and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.models import OutboxEvent
from app.security.principal import Principal, current
from app.security.tokens import InvalidToken
from app.services import events
from app.services.events import OE
from app.services.stream.hub import Hub, message

log = logging.getLogger("peerlink.stream")
SCOPE = "events:stream"
REPLAY_PAGE = 200


@dataclass(frozen=True)
class Caller:
    """Who holds a stream: the principal now, and the verified claims of the token that opened
    it (directly, or through a ticket), checked again at every heartbeat."""

    principal: Principal
    claims: dict[str, Any]


def comment(text: str) -> bytes:
    return ServerSentEvent(comment=text).encode()


async def still_allowed(read_maker: async_sessionmaker[AsyncSession],
                        caller: Caller) -> Principal | None:
    """The caller as they stand now, or None: the token expired or was revoked, the account
    was deactivated, or it no longer holds the stream's scope. A database that cannot answer
    closes the stream too (the client reconnects and resumes)."""
    if float(caller.claims.get("exp", 0)) <= time.time():
        return None
    try:
        principal = await current(read_maker, caller.claims)
    except InvalidToken:
        return None
    except (SQLAlchemyError, OSError):
        log.warning("stream: the caller's account could not be checked; closing")
        return None
    return principal if SCOPE in principal.scopes else None


async def messages(*, hub: Hub, read_maker: async_sessionmaker[AsyncSession], caller: Caller,
                   after: int | None, types: list[str] | None,
                   heartbeat: float) -> AsyncIterator[bytes]:
    sub = hub.subscribe(caller.principal, types)
    try:
        async with read_maker() as session:
            upto = await events.newest_id(session)
        last = upto if after is None else after
        while last < upto:  # the replay, a page per short session
            async with read_maker() as session:
                rows = (await session.execute(
                    select(OutboxEvent.__table__)
                    .where(OE.id > last, OE.id <= upto,
                           *events.event_clauses(sub.principal, types))
                    .order_by(OE.id).limit(REPLAY_PAGE))).all()
            for row in rows:
                yield message(row)
            last = rows[-1].id if len(rows) == REPLAY_PAGE else upto
        yield comment("live")
        # Spread the checks of streams opened together (a restart reconnects every board).
        check_at = time.monotonic() + heartbeat * random.uniform(0.5, 1.0)  # noqa: S311
        while True:
            if sub.dropped:
                yield comment("closed: events arrived faster than this stream read them; "
                              "reconnect with Last-Event-ID")
                return
            wait = check_at - time.monotonic()
            if wait <= 0:
                principal = await still_allowed(read_maker, caller)
                if principal is None:
                    yield comment("closed: the credentials that opened this stream are no "
                                  "longer valid")
                    return
                if principal != sub.principal:
                    hub.regroup(sub, principal)
                yield comment("heartbeat")
                check_at = time.monotonic() + heartbeat
                continue
            try:
                async with asyncio.timeout(wait):  # no task per wait, unlike wait_for
                    item = await sub.queue.get()
            except TimeoutError:
                continue
            # What else is queued goes with it: one send per wake-up, not one per event (a
            # raise is several events; each send crosses the middleware stack).
            chunk = []
            while True:
                if item.id > last:
                    last = item.id
                    chunk.append(item.message)
                try:
                    item = sub.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if chunk:
                yield b"".join(chunk)
    finally:
        hub.leave(sub)

"""The live stream's hub, one per API process: every open stream of the process is a queue
here, and no stream holds a database connection.

Woken by committed outbox ids (PostgreSQL: NOTIFY on the process's LISTEN connection; SQLite:
`Writer.COMMITTED`, right after the commit), the hub hands out what committed since its last
round, at most BATCH events a round, in ONE statement: the new events, each with one boolean
column per *group* of subscribers saying whether that group may see it. Subscribers whose
visibility clauses (`events.event_clauses`, the walls of `scoping`; compiled: shape and bound
values) are the same form one group, and each group's clause is a column of the round's
statement (its parameters made unique, so two groups' `facs` never meet). 500 boards of 26
walls cost one query per round, not 26 (or 500), whatever arrived since the last wake-up. Each
event's SSE message is built once and put on the queues of the groups that may see it: O(1)
per event per stream. A queue that is full (a reader that does not keep up) drops its
subscriber: the stream closes and the client resumes with Last-Event-ID.

Every id up to `position` has been handed out; `target` is the newest committed id known. Ids
become visible in commit order (events.py), so reading (position, target] never skips a late
commit. While the LISTEN connection is down nothing arrives; when it is back (`listening`), the
hub reads the newest id and catches up from `position`: nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sse_starlette import ServerSentEvent

from app import tasks
from app.db import make_sessionmaker
from app.models import OutboxEvent
from app.security.principal import Principal
from app.services import events
from app.services.events import OE
from app.services.pagination import encode_cursor

log = logging.getLogger("peerlink.stream")
OUTBOX = OutboxEvent.__table__
BATCH = 1_000  # events read per round at most (a 50,000-row import commits in chunks)
# Groups (one column each) per statement at most: PostgreSQL allows 1,664 columns a SELECT,
# SQLite 2,000. Past it (hundreds of distinct walls on one process) a round takes a statement
# per GROUPS_PER_STATEMENT groups.
GROUPS_PER_STATEMENT = 400


def message(row: Any) -> bytes:
    """One event as an SSE message: `id:` the feed's cursor, `event:` its type, `data:` the
    feed's thin envelope."""
    return ServerSentEvent(data=orjson.dumps(events.envelope(row)).decode(), event=row.type,
                           id=encode_cursor("event", row.id)).encode()


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    message: bytes


@dataclass(eq=False)
class Subscriber:
    principal: Principal
    types: list[str] | None
    queue: asyncio.Queue[Item]
    group: Group | None = None
    dropped: bool = False  # its queue overflowed: the stream closes

    def offer(self, item: Item) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True


@dataclass(eq=False)
class Group:
    key: Hashable
    clause: Any
    members: set[Subscriber] = field(default_factory=set)


def _frozen(value: Any) -> Hashable:
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_frozen(v) for v in value)
    return value  # type: ignore[no-any-return]


class Hub:
    def __init__(self, engine: AsyncEngine, *, queue_size: int) -> None:
        self._maker = make_sessionmaker(engine)
        self._dialect = engine.dialect
        self.queue_size = queue_size
        self.groups: dict[Hashable, Group] = {}
        self.position = 0
        self.target = 0
        self.rounds = 0
        self.statements = 0  # the rounds' queries (one a round, up to GROUPS_PER_STATEMENT)
        self._wake = asyncio.Event()
        self._resync = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- subscribers -----------------------------------------------------------------------

    def subscribe(self, principal: Principal, types: list[str] | None = None) -> Subscriber:
        sub = Subscriber(principal, types, asyncio.Queue(self.queue_size))
        self._join(sub)
        return sub

    def leave(self, sub: Subscriber) -> None:
        group, sub.group = sub.group, None
        if group is not None:
            group.members.discard(sub)
            if not group.members:
                self.groups.pop(group.key, None)

    def regroup(self, sub: Subscriber, principal: Principal) -> None:
        """The caller's account changed (facilities, role...): from now on, their new walls."""
        self.leave(sub)
        sub.principal = principal
        self._join(sub)

    @property
    def subscribers(self) -> int:
        return sum(len(g.members) for g in self.groups.values())

    def _join(self, sub: Subscriber) -> None:
        clause = and_(*events.event_clauses(sub.principal, sub.types))
        compiled = clause.compile(dialect=self._dialect)
        key = (str(compiled), tuple(sorted((k, _frozen(v)) for k, v in compiled.params.items())))
        group = self.groups.get(key)
        if group is None:
            # Unique parameters: the walls name theirs (`facs`, `actor`...), and every group is
            # a column of the same statement.
            group = self.groups[key] = Group(key, clause.unique_params())
        group.members.add(sub)
        sub.group = group

    # --- wake-ups ----------------------------------------------------------------------------

    def notified(self, payload: str) -> None:
        """NOTIFY peerlink_events (the newest committed outbox id), on the listener's task."""
        try:
            newest = int(payload)
        except ValueError:
            self._resync = True
        else:
            self.target = max(self.target, newest)
        self._wake.set()

    def listening(self) -> None:
        """LISTEN is (re)established: what was sent meanwhile is read from the table."""
        self._resync = True
        self._wake.set()

    def committed(self, newest: int) -> None:
        """Writer.COMMITTED (SQLite): may be called from another thread's loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self.notified, str(newest))

    # --- the task ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.position = self.target = await self._newest()
        self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def stop(self) -> None:
        await tasks.stop(self._task)
        self._loop = None

    async def _newest(self) -> int:
        async with self._maker() as session:
            return await events.newest_id(session)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync:
                    self._resync = False
                    self.target = max(self.target, await self._newest())
                while self.position < self.target:
                    await self._round(self.target)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("stream hub: reading new events failed; retrying", exc_info=True)
                self._resync = True
                self._wake.set()
                await asyncio.sleep(1.0)

    async def _round(self, upto: int) -> None:
        """Hands out the events in (position, upto], at most BATCH of them: one statement reads
        them with, per group, whether it may see each (see the module's docstring)."""
        start = self.position
        if not self.groups:  # nobody is listening: nothing to read
            self.position = upto
            return
        self.rounds += 1
        groups = list(self.groups.values())
        chunks = [groups[i:i + GROUPS_PER_STATEMENT]
                  for i in range(0, len(groups), GROUPS_PER_STATEMENT)]
        async with self._maker() as session:
            rows = (await session.execute(self._statement(OUTBOX, chunks[0], start, upto)
                                          .limit(BATCH))).all()
            self.statements += 1
            last = rows[-1].id if len(rows) == BATCH else upto
            flags = [(chunks[0], rows)]
            if rows:
                for chunk in chunks[1:]:
                    flags.append((chunk, (await session.execute(
                        self._statement(OE.id, chunk, start, last))).all()))
                    self.statements += 1
        built: dict[int, Item] = {}  # each event's message built once, if anyone sees it
        for chunk, flagged in flags:
            width = len(flagged[0]) - len(chunk) if flagged else 0
            for row, flagged_row in zip(rows, flagged, strict=True):
                for group, may_see in zip(chunk, flagged_row[width:], strict=True):
                    if may_see:
                        item = built.get(row.id)
                        if item is None:
                            item = built[row.id] = Item(row.id, message(row))
                        for sub in list(group.members):
                            sub.offer(item)
        self.position = last

    @staticmethod
    def _statement(what: Any, groups: list[Group], start: int, upto: int) -> Any:
        return (select(what, *(g.clause.label(f"g{i}") for i, g in enumerate(groups)))
                .where(OE.id > start, OE.id <= upto).order_by(OE.id))

"""Idempotency-Key (IETF httpapi idempotency-key draft, Stripe's semantics), for every POST.

A request with a key first *claims* it in a short transaction of its own: the row holds the
request's fingerprint, an owner token and a lease. The request then runs; when its business
transaction commits, `Writer.commit` marks the claim `committed` in that same transaction, and
only while this attempt still owns it (`mark_committed`), so two attempts can never both land.
Afterwards the response is stored (encrypted) and the key is `completed`.

The claim's way to the Writer: the middleware (app/idempotency.py) puts it on the request
(`request_claim`), the request's session dependency (deps.SessionDep) `bind`s it to the
request's database session, and a Writer on that session reads it (`bound_claim`). Other
sessions (an import job running after its request, the worker) carry none.

A retry with the same key and fingerprint gets the stored response; another fingerprint is a
422; a claim whose attempt is still running is a 409 with Retry-After. A failed request that
wrote nothing releases its key, so the client can fix and retry.

When the process running an attempt dies (killed, crashed), its claim is left behind. Each API
process has an instance id and proves it is alive (`Liveness`: on PostgreSQL a session-level
advisory lock held on a connection of its own for the process lifetime; on SQLite, one process,
an instance other than this one is gone by definition); the claim names its `holder`. A retry
finds the holder dead, or the lease run out, and then:
- the attempt never committed: the retry takes the key over at once and runs the request;
- it committed but its answer was not stored: the business transaction recorded what it
  created (`mark_committed`: `result_type`, `result_id`), and a route that declares how its
  answer is rebuilt (routemarks.rebuilt_by) answers the retry from that record
  (app/idempotency.py); a route that does not answers 409 `idempotency_outcome_unknown`
  (replaying could apply the change twice).
Whatever a process believes about another, two attempts never both land: `mark_committed`
only marks a claim its attempt still owns, so a takeover of a live attempt costs that attempt
a 409, never a second write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import tasks
from app.config import Settings
from app.db import utcnow
from app.errors import Conflict
from app.models.idempotency import IdempotencyKey as Row
from app.security.notes import NoteCipher

if TYPE_CHECKING:
    from app.services.audit import AuditEntry

log = logging.getLogger("peerlink.idempotency")


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID
    owner: str
    expires_at: datetime
    # Set when this claim took over a key whose attempt committed and then died before its
    # answer was stored: (type, id) of what that attempt created. The request is not run
    # again; its answer is rebuilt from the record (app/idempotency.py).
    created: tuple[str, str] | None = None


@dataclass(frozen=True)
class Stored:
    status: int
    headers: list[list[str]]
    body: bytes
    expires_at: datetime


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    detail: str
    retry_after: int | None = None


# The namespace of the liveness locks: pg_advisory_lock(int4, int4) (the audit chain and the
# worker's jobs use the one-bigint form, a separate key space).
_LIVENESS_NS = 0x69646D70  # "idmp"


class Liveness:
    """This API process's instance id (`holder`), and whether another holder is alive.

    PostgreSQL: the process takes a session-level advisory lock (namespace, a random int4 no
    live process holds) on a connection of its own and keeps it for its lifetime; when the
    process dies, its connection closes and the server drops the lock. A holder is dead when
    its lock can be taken (`pg_try_advisory_xact_lock`, in the claim's transaction). The
    connection is checked every few seconds; while it is down the process has no holder id
    (its new claims are judged by their lease) and it reconnects under a new id.
    SQLite: one process; a holder other than this instance is a previous instance, dead.
    Before `running()` (or without it: a test's own claims) the holder is None, and the lease
    alone decides.
    """

    def __init__(self, settings: Settings, check_seconds: float = 5.0) -> None:
        self.settings = settings
        self.check_seconds = check_seconds
        self.holder: str | None = None

    @staticmethod
    def _key(holder: str) -> int | None:
        head = holder.partition(".")[0]
        return int(head) if head.isdigit() else None

    async def alive(self, session: AsyncSession, holder: str | None) -> bool | None:
        """Whether the process named by `holder` still runs; None: cannot tell."""
        if holder is None:
            return None
        if holder == self.holder:
            return True
        if self.settings.is_sqlite:
            return False
        key = self._key(holder)
        if key is None:
            return None
        took = (await session.execute(text("SELECT pg_try_advisory_xact_lock(:ns, :k)"),
                                      {"ns": _LIVENESS_NS, "k": key})).scalar_one()
        return not took  # held: its process's connection is still open

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Liveness]:
        """For the process lifetime (the app's lifespan)."""
        if self.settings.is_sqlite:
            self.holder = f"sqlite.{secrets.token_hex(8)}"
            try:
                yield self
            finally:
                self.holder = None
            return
        ready = asyncio.Event()
        task = asyncio.create_task(self._hold(ready))
        await tasks.wait(ready.wait(), 5)
        try:
            yield self
        finally:
            await tasks.stop(task)
            self.holder = None

    async def _hold(self, ready: asyncio.Event) -> None:
        conninfo = make_url(self.settings.sync_database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        while True:
            self.holder = None
            try:
                async with await psycopg.AsyncConnection.connect(conninfo,
                                                                 autocommit=True) as conn:
                    while True:  # a key no live process holds
                        key = 1 + secrets.randbelow(2**31 - 2)
                        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                 (_LIVENESS_NS, key))
                        row = await cur.fetchone()
                        if row and row[0]:
                            break
                    self.holder = f"{key}.{secrets.token_hex(6)}"
                    ready.set()
                    while True:
                        await asyncio.sleep(self.check_seconds)
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("idempotency liveness lost its connection; reconnecting")
                self.holder = None
                await asyncio.sleep(1.0)


_BOUND = "idempotency_claim"  # the key in a session's `info`


def bind(session: AsyncSession, claim_: Claim) -> None:
    """The request's claim goes with the request's session (deps.SessionDep)."""
    session.info[_BOUND] = claim_


def bound_claim(session: AsyncSession) -> Claim | None:
    """The claim a Writer on this session marks committed (Writer.commit), if any."""
    return session.info.get(_BOUND)


async def claim(maker: async_sessionmaker[AsyncSession], settings: Settings, *, caller: str,
                key: str, fingerprint: str, cipher: NoteCipher, liveness: Liveness | None = None,
                rebuilds: str | None = None,
                now: datetime | None = None) -> Claim | Stored | Refused:
    """`liveness`: this process's (its holder goes on the claim, and it judges other holders).
    `rebuilds`: the type of record from which the route can rebuild its answer (its
    routemarks.rebuilt_by), if any."""
    now = now or utcnow()
    holder = liveness.holder if liveness is not None else None
    lease = timedelta(seconds=settings.idempotency_lease_seconds)
    for _ in range(3):  # a lost insert race is answered by reading the winner's row
        async with maker() as session:
            row = (await session.execute(
                select(Row).where(Row.caller == caller, Row.key == key).with_for_update()
            )).scalar_one_or_none()
            owner = secrets.token_hex(8)
            if row is None or row.expires_at <= now:
                if row is not None:
                    await session.delete(row)
                    await session.flush()
                row = Row(caller=caller, key=key, fingerprint=fingerprint, state="in_flight",
                          owner=owner, holder=holder, locked_until=now + lease, created_at=now,
                          expires_at=now + timedelta(hours=settings.idempotency_hours))
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    continue
                return Claim(row.id, owner, row.expires_at)
            if row.fingerprint != fingerprint:
                return Refused(422, "idempotency_key_reused",
                               "This Idempotency-Key was used with another request body.")
            if row.state == "completed" and row.response_body is None:
                return Refused(409, "idempotency_response_not_kept",
                               "The first request with this Idempotency-Key was applied; its "
                               "answer carried a secret shown once and is not kept.")
            if row.state == "completed":
                body = cipher.decrypt(row.response_body or b"", row.response_key or b"",
                                      row.response_key_id or "", row.id.bytes)
                return Stored(row.response_status or 200, row.response_headers,
                              body.encode(), row.expires_at)
            # In flight, or committed and not yet answered: still running unless its lease ran
            # out or the process holding it is gone.
            gone = row.locked_until <= now
            if not gone and liveness is not None:
                gone = await liveness.alive(session, row.holder) is False
            if not gone:
                wait = max(1, int((row.locked_until - now).total_seconds()))
                return Refused(409, "idempotency_key_in_flight",
                               "A request with this Idempotency-Key is still being processed; "
                               "retry later.", retry_after=min(wait, 5))
            created = None
            if row.state == "committed":  # applied, then the process died before answering
                if rebuilds is None or row.result_type != rebuilds or row.result_id is None:
                    return Refused(409, "idempotency_outcome_unknown",
                                   "The first request with this Idempotency-Key was applied but "
                                   "its response was lost; look the resource up instead of "
                                   "retrying.")
                created = (row.result_type, row.result_id)
            # The earlier attempt died: this one takes the key over, to run the request (it
            # wrote nothing) or to answer from what it created.
            row.owner, row.holder, row.locked_until = owner, holder, now + lease
            await session.commit()
            return Claim(row.id, owner, row.expires_at, created)
    # Runs in middleware, outside the error handlers: answer, never raise.
    return Refused(409, "idempotency_key_in_flight",
                   "A request with this Idempotency-Key is still being processed; retry later.",
                   retry_after=1)


def _created(entries: Iterable[AuditEntry]) -> dict[str, str]:
    """What a write created: the record of its first `<type>.create` audit entry."""
    for e in entries:
        if e.action.endswith(".create") and e.entity_type and e.entity_id:
            return {"result_type": e.entity_type[:40], "result_id": e.entity_id[:64]}
    return {}


async def mark_committed(session: AsyncSession, current: Claim | None,
                         entries: Iterable[AuditEntry] = ()) -> None:
    """Called by Writer.commit inside the business transaction, with the write's audit
    entries: the claim records what the write created, so that a retry whose answer was lost
    can be answered from it. Refuses (and so rolls the change back) when this attempt no longer
    owns its key."""
    if current is None:
        return
    result = await session.execute(
        update(Row).where(Row.id == current.id, Row.owner == current.owner,
                          Row.state.in_(("in_flight", "committed")))
        .values(state="committed", **_created(entries))
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Another request took over this Idempotency-Key.",
                       code="idempotency_key_in_flight")


async def finish(maker: async_sessionmaker[AsyncSession], claim_: Claim, *, status: int,
                 headers: list[list[str]], body: bytes, cipher: NoteCipher,
                 keep_body: bool = True) -> None:
    """Store the response of a request that succeeded or wrote something; otherwise release
    the key so that the client may correct the request and retry. An answer marked no-store
    (a secret shown once) is remembered as done, but its body is not kept."""
    async with maker() as session:
        row = (await session.execute(
            select(Row).where(Row.id == claim_.id, Row.owner == claim_.owner).with_for_update()
        )).scalar_one_or_none()
        if row is None:
            return
        if status >= 400 and row.state == "in_flight":
            await session.delete(row)
        else:
            row.state, row.response_status, row.response_headers = "completed", status, headers
            if keep_body:
                row.response_body, row.response_key, row.response_key_id = cipher.encrypt(
                    body.decode("utf-8", "replace"), row.id.bytes)
        await session.commit()


async def release(maker: async_sessionmaker[AsyncSession], claim_: Claim) -> None:
    """The request failed without an answer: free its key if it wrote nothing; if it did, the
    key stays `committed` (a retry gets 409 `idempotency_outcome_unknown`, never a re-run)."""
    async with maker() as session:
        await session.execute(delete(Row).where(Row.id == claim_.id, Row.owner == claim_.owner,
                                                Row.state == "in_flight"))
        await session.commit()


async def give_back(maker: async_sessionmaker[AsyncSession], claim_: Claim) -> None:
    """A taken-over committed key whose answer could not be rebuilt (the record is gone from
    the caller's sight): free it for the next retry, which will try again."""
    async with maker() as session:
        await session.execute(update(Row).where(Row.id == claim_.id, Row.owner == claim_.owner)
                              .values(holder=None, locked_until=utcnow())
                              .execution_options(synchronize_session=False))
        await session.commit()


async def purge(session: AsyncSession, settings: Settings, now: datetime | None = None,
                **_: Any) -> dict[str, int]:
    """Worker job: drop keys past their expiry."""
    result = await session.execute(delete(Row).where(Row.expires_at <= (now or utcnow())))
    await session.commit()
    return {"expired_keys": result.rowcount or 0}  # type: ignore[attr-defined]

"""This worker process's identity for the leases it takes (webhook deliveries), proven alive by
PostgreSQL itself: a session-level advisory lock (NAMESPACE, id) held on a connection of its
own for the process's lifetime.

A lease names its owner. A process that dies (SIGKILL, OOM, a lost host) loses its connection,
PostgreSQL releases the lock, and the next claim by any other worker sees the owner gone and
takes the lease over at once, instead of waiting for its expiry (webhook timeout + 60 s). A
live owner's lease is never taken over before it runs out. Should the lock's own connection
drop while the process lives, its leases may be taken over (and sent twice: deliveries are at
least once, receivers dedupe on `webhook-id`) until it holds the lock again.

SQLite has one worker, inside the service: no owner, leases simply run out."""

from __future__ import annotations

import asyncio
import logging
import secrets

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings

NAMESPACE = 0x706C  # the advisory lock's first key: peerlink worker identities
APPLICATION_NAME = "peerlink-worker-lease"
log = logging.getLogger("peerlink.worker.lease")


class LeaseHolder:
    def __init__(self) -> None:
        self.owner: int | None = None  # set while this process holds its lock

    async def run(self, settings: Settings, ready: asyncio.Event | None = None) -> None:
        """Holds the lock until cancelled; re-takes it (under a new id if need be) after the
        connection drops, checking the connection every second."""
        conninfo = make_url(settings.sync_database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        conninfo, autocommit=True, application_name=APPLICATION_NAME) as conn:
                    while self.owner is None:
                        candidate = 1 + secrets.randbelow(2**31 - 2)
                        got = await (await conn.execute(
                            "SELECT pg_try_advisory_lock(%s, %s)",
                            (NAMESPACE, candidate))).fetchone()
                        if got and got[0]:
                            self.owner = candidate
                    if ready is not None:
                        ready.set()
                    while True:
                        await asyncio.sleep(1.0)
                        async with asyncio.timeout(5):  # never wait_for: app/tasks.py
                            await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                self.owner = None
                raise
            except Exception:
                self.owner = None
                log.warning("lost the worker's lease lock connection; retrying")
                await asyncio.sleep(1.0)


HOLDER = LeaseHolder()


async def live_owners(session: AsyncSession) -> set[int] | None:
    """The ids of every worker process alive now (their locks); None on SQLite (no owners)."""
    if session.bind.dialect.name != "postgresql":  # type: ignore[union-attr]
        return None
    rows = await session.execute(text(
        "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = :ns AND objsubid = 2 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        {"ns": NAMESPACE})
    return {int(r) for r in rows.scalars()}

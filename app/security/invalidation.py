"""Cross-process invalidation of cached principals: PostgreSQL LISTEN/NOTIFY, on the process's
one LISTEN connection (which also serves the live stream's channel: `Channel`).

Writers send `pg_notify('peerlink_auth', ...)` inside the transaction that revokes a token or
changes an account, so the message is delivered exactly when the change commits. Each API
process listens on one connection; while it is not listening (starting, reconnecting) its
principal cache is switched off and emptied, so a missed message can never leave a revoked
token usable. Revocation never depends on that connection staying up: the cache is served
only while the connection answers a heartbeat (every `principal_cache_heartbeat_seconds`,
trusted for two of them) and while no byte waits unread on its socket. A connection the
server cuts is noticed by the next request (the socket reads as closed); one that dies
silently, after at most two heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from app import tasks
from app.config import Settings
from app.security.principal import PRINCIPALS

CHANNEL = "peerlink_auth"
APPLICATION_NAME = "peerlink-listen"  # how pg_stat_activity names the LISTEN connection
log = logging.getLogger("peerlink.auth.invalidation")


@dataclass(frozen=True)
class Channel:
    """Another channel on the same connection. `listening` is called each time LISTEN is
    (re)established: what was sent while the connection was down is lost, so the owner catches
    up from its own state. Both callbacks run on the listener's task and must not block."""

    name: str
    notified: Callable[[str], None]
    listening: Callable[[], None]


def _conninfo(settings: Settings) -> str:
    return make_url(settings.sync_database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


async def listen(settings: Settings, ready: asyncio.Event | None = None,
                 channels: Sequence[Channel] = ()) -> None:
    others = {c.name: c for c in channels}
    beat = settings.principal_cache_heartbeat_seconds
    while True:
        PRINCIPALS.stop_trusting()
        try:
            async with await psycopg.AsyncConnection.connect(
                    _conninfo(settings), autocommit=True,
                    application_name=APPLICATION_NAME) as conn:
                for name in (CHANNEL, *others):
                    await conn.execute(f"LISTEN {name}")
                fileno: int | None = conn.pgconn.socket
                for other in others.values():
                    other.listening()
                while True:
                    # The heartbeat: a round trip that starts at `sent` returns after every
                    # notification committed before `sent` (the server sends them first), so
                    # the cache may be trusted until `sent` plus the lease. A connection that
                    # died silently stops answering, and the lease runs out.
                    sent = time.monotonic()
                    async with asyncio.timeout(beat * 2):  # never wait_for: app/tasks.py
                        await conn.execute("SELECT 1")
                    PRINCIPALS.listening(fileno, sent + beat * 2)
                    fileno = None
                    if ready is not None:
                        ready.set()
                    # Notifications received during the round trip come first, before any
                    # other task runs; then those that arrive within the next beat.
                    async for note in conn.notifies(timeout=beat):
                        if note.channel == CHANNEL:
                            PRINCIPALS.apply(note.payload)
                        else:
                            others[note.channel].notified(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Before anything else: another request must not be served from the cache while
            # this task waits to reconnect.
            PRINCIPALS.stop_trusting()
            log.warning("the LISTEN connection (auth invalidation, live stream) was lost; "
                        "retrying")
            await asyncio.sleep(min(1.0, beat))


@contextlib.asynccontextmanager
async def running(settings: Settings, channels: Sequence[Channel] = ()):  # type: ignore[no-untyped-def]
    """Runs the listener for the app's lifetime (PostgreSQL only; SQLite is one process)."""
    if settings.is_sqlite:
        PRINCIPALS.listening(None, math.inf)
        yield
        return
    ready = asyncio.Event()
    task = asyncio.create_task(listen(settings, ready, channels))
    await tasks.wait(ready.wait(), 5)
    try:
        yield
    finally:
        await tasks.stop(task)
        PRINCIPALS.stop_trusting()

"""Cross-process invalidation of cached principals: PostgreSQL LISTEN/NOTIFY, on the process's
one LISTEN connection (which also serves the live stream's channel: `Channel`).

Writers send `pg_notify('peerlink_auth', ...)` inside the transaction that revokes a token or
changes an account, so the message is delivered exactly when the change commits. Each API
process listens on one connection; while it is not listening (starting, reconnecting) its
principal cache is switched off and emptied, so a missed message can never leave a revoked
token usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.security.principal import PRINCIPALS

CHANNEL = "peerlink_auth"
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
    while True:
        PRINCIPALS.enabled = False
        PRINCIPALS.clear()
        try:
            async with await psycopg.AsyncConnection.connect(_conninfo(settings),
                                                             autocommit=True) as conn:
                for name in (CHANNEL, *others):
                    await conn.execute(f"LISTEN {name}")
                PRINCIPALS.enabled = True
                for other in others.values():
                    other.listening()
                if ready is not None:
                    ready.set()
                async for note in conn.notifies():
                    if note.channel == CHANNEL:
                        PRINCIPALS.apply(note.payload)
                    else:
                        others[note.channel].notified(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("the LISTEN connection (auth invalidation, live stream) was lost; "
                        "retrying")
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def running(settings: Settings, channels: Sequence[Channel] = ()):  # type: ignore[no-untyped-def]
    """Runs the listener for the app's lifetime (PostgreSQL only; SQLite is one process)."""
    if settings.is_sqlite:
        PRINCIPALS.enabled = True
        yield
        return
    ready = asyncio.Event()
    task = asyncio.create_task(listen(settings, ready, channels))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), timeout=5)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        PRINCIPALS.enabled = False
        PRINCIPALS.clear()

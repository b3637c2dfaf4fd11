"""Cross-process invalidation of cached principals: PostgreSQL LISTEN/NOTIFY.

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

import psycopg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.security.principal import PRINCIPALS

CHANNEL = "peerlink_auth"
log = logging.getLogger("peerlink.auth.invalidation")


def _conninfo(settings: Settings) -> str:
    return make_url(settings.sync_database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


async def listen(settings: Settings, ready: asyncio.Event | None = None) -> None:
    while True:
        PRINCIPALS.enabled = False
        PRINCIPALS.clear()
        try:
            async with await psycopg.AsyncConnection.connect(_conninfo(settings),
                                                             autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                PRINCIPALS.enabled = True
                if ready is not None:
                    ready.set()
                async for note in conn.notifies():
                    PRINCIPALS.apply(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("auth invalidation listener lost its connection; retrying")
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def running(settings: Settings):  # type: ignore[no-untyped-def]
    """Runs the listener for the app's lifetime (PostgreSQL only; SQLite is one process)."""
    if settings.is_sqlite:
        PRINCIPALS.enabled = True
        yield
        return
    ready = asyncio.Event()
    task = asyncio.create_task(listen(settings, ready))
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

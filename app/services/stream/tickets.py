"""Stream tickets, for browsers: `EventSource` cannot send an Authorization header, and a
long-lived token must never sit in a URL (logs, history, proxies). An authenticated POST gets a
random ticket that lives seconds and opens one stream: only its SHA-256 is stored, and it is
consumed by one DELETE ... RETURNING, so two processes can never both accept it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.models import StreamTicket
from app.security.passwords import new_secret, token_digest
from app.security.principal import Principal
from app.services.writer import Writer

T = StreamTicket.__table__.c


async def issue(*, session: AsyncSession, principal: Principal, claims: dict[str, Any],
                seconds: int) -> tuple[str, datetime]:
    """A ticket for the stream of the token whose verified `claims` are given (audited, like
    every credential issued); expired tickets nobody used are cleared on the way."""
    ticket = new_secret("stk_")
    now = utcnow()
    expires_at = now + timedelta(seconds=seconds)
    await session.execute(delete(StreamTicket).where(T.expires_at < now))
    session.add(StreamTicket(id=token_digest(ticket), claims=claims, created_at=now,
                             expires_at=expires_at))
    w = Writer(session, principal)
    w.audit("auth.stream_ticket", principal.kind, principal.id)
    await w.commit()
    return ticket, expires_at


async def redeem(maker: async_sessionmaker[AsyncSession], ticket: str) -> dict[str, Any] | None:
    """The claims the ticket was issued for, once: None when it is unknown, used or expired."""
    async with maker() as session:
        row = (await session.execute(
            delete(StreamTicket).where(T.id == token_digest(ticket))
            .returning(T.claims, T.expires_at))).first()
        await session.commit()
    if row is None or row.expires_at <= utcnow():
        return None
    return dict(row.claims)

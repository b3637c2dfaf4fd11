"""Streams: what the app builds once for the live stream (the hub and what a stream needs to
authenticate its caller and replay), started and stopped by the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import make_read_engine
from app.errors import Unauthorized
from app.security.invalidation import Channel
from app.security.principal import Principal, current
from app.security.tokens import InvalidToken, KeyRing
from app.services.stream import live, tickets
from app.services.stream.hub import Hub
from app.services.writer import COMMITTED, EVENTS_CHANNEL


class Streams:
    def __init__(self, *, settings: Settings, keyring: KeyRing, engine: AsyncEngine,
                 sessionmaker: async_sessionmaker[AsyncSession],
                 read_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.keyring = keyring
        self.app_engine = engine
        self.write_maker = sessionmaker
        self.read_maker = read_sessionmaker
        self.hub: Hub | None = None

    @property
    def channel(self) -> Channel:
        """The hub's channel on the process's one LISTEN connection (security.invalidation)."""
        assert self.hub is not None, "Streams.running() first"
        return Channel(EVENTS_CHANNEL, self.hub.notified, self.hub.listening)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Streams]:
        """A hub for the app's lifetime (the lifespan's). PostgreSQL: on a pool of its own, one
        connection, so pushing an event never waits behind the requests for a connection."""
        engine = make_read_engine(self.settings.model_copy(update={"db_pool_size": 1}),
                                  self.app_engine)
        hub, outer = Hub(engine, queue_size=self.settings.stream_queue_size), self.hub
        await hub.start()
        self.hub = hub
        if self.settings.is_sqlite:
            COMMITTED.add(hub.committed)
        try:
            yield self
        finally:
            COMMITTED.discard(hub.committed)
            await hub.stop()
            self.hub = outer
            if engine is not self.app_engine:
                await engine.dispose()

    @property
    def _hub(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the live stream's hub is not running (the app's lifespan)")
        return self.hub

    async def authenticate(self, *, token: str | None, ticket: str | None) -> live.Caller:
        """A ticket (browsers) or a bearer token (scripts); Unauthorized for anything else."""
        try:
            if ticket is not None:
                claims = await tickets.redeem(self.write_maker, ticket)
                if claims is None:
                    raise Unauthorized("The stream ticket is unknown, used or expired.",
                                       code="invalid_stream_ticket")
            elif token:
                claims = self.keyring.verify_cached(token, settings=self.settings)
            else:
                raise Unauthorized()
            return live.Caller(await current(self.read_maker, claims), claims)
        except InvalidToken:
            raise Unauthorized() from None

    async def issue_ticket(self, *, session: AsyncSession, principal: Principal,
                           token: str) -> tuple[str, datetime]:
        claims: dict[str, Any] = self.keyring.verify_cached(token, settings=self.settings)
        return await tickets.issue(session=session, principal=principal, claims=claims,
                                   seconds=self.settings.stream_ticket_seconds)

    def open(self, caller: live.Caller, *, after: int | None,
             types: list[str] | None) -> AsyncIterator[bytes]:
        return live.messages(hub=self._hub, read_maker=self.read_maker, caller=caller,
                             after=after, types=types,
                             heartbeat=self.settings.stream_heartbeat_seconds)

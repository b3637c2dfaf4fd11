"""Database engines, the metadata naming convention, and the per-request session."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, MetaData, create_engine, event, types
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import SQLModel
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata

JSONVariant = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7) for index locality."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is switched off; _sqlite_begin starts each one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """IMMEDIATE takes the write lock up front: two writers queue (busy_timeout) instead of
    failing on a stale snapshot, and the audit chain's tail is read under the lock."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sync_engine(settings: Settings) -> Engine:
    # hide_parameters: values (names, dates of birth) never reach an error message or a log.
    engine = create_engine(settings.sync_database_url, pool_pre_ping=True, hide_parameters=True)
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def make_async_engine(settings: Settings) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    if not settings.is_sqlite:
        kwargs.update(pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size)
    engine = create_async_engine(settings.async_database_url, hide_parameters=True,
                                 json_deserializer=orjson.loads, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def make_read_engine(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """GET and HEAD run on their own pool of autocommit connections on PostgreSQL: no
    BEGIN/ROLLBACK around a read, nothing to reset when a connection goes back. A read that
    must write (an audited confidential read) opens its own transaction with
    app.state.sessionmaker, as audit.record_denial does. SQLite shares the one engine."""
    if settings.is_sqlite:
        return engine
    return create_async_engine(settings.async_database_url, isolation_level="AUTOCOMMIT",
                               hide_parameters=True, json_deserializer=orjson.loads,
                               pool_reset_on_return=None, pool_size=settings.db_pool_size,
                               max_overflow=settings.db_pool_size)


_READ_METHODS = frozenset({"GET", "HEAD"})


class _LazySession:
    __slots__ = ("maker", "session")

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.maker = maker
        self.session: AsyncSession | None = None

    def get(self) -> AsyncSession:
        if self.session is None:
            self.session = self.maker()
        return self.session


class SessionMiddleware:
    """One database session per request, opened on first use and closed (rolled back if
    uncommitted) when the request ends. Cheaper than a yield-dependency, and a request that
    never touches the database (a cached principal on /v1/auth/me) never opens one."""

    def __init__(self, app: ASGIApp, *, sessionmaker: async_sessionmaker[AsyncSession],
                 read_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.app = app
        self.write = sessionmaker
        self.read = read_sessionmaker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lazy = _LazySession(self.read if scope["method"] in _READ_METHODS else self.write)
        scope.setdefault("state", {})["db"] = lazy
        try:
            await self.app(scope, receive, send)
        finally:
            if lazy.session is not None:
                await lazy.session.close()


async def get_session(request: Request) -> AsyncSession:
    return request.state.db.get()  # type: ignore[no-any-return]

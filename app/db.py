"""Database engines, the metadata naming convention, and the per-request session."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    DateTime,
    MetaData,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    text,
    types,
)
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


_UUID, _new, _set, _UNKNOWN = uuid.UUID, object.__new__, object.__setattr__, uuid.SafeUUID.unknown


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7) for index locality."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    # What uuid.UUID(int=value) builds, without its argument checks (the value is in range by
    # construction): a 10,000-row import draws 19,000 of these, and the checks were half the
    # cost.
    u = _new(_UUID)
    _set(u, "int", value)
    _set(u, "is_safe", _UNKNOWN)
    return u


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
    # orjson reads JSON columns several times faster (an import reads thousands of rows).
    engine = create_async_engine(settings.async_database_url, hide_parameters=True,
                                 json_deserializer=orjson.loads, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def make_crisis_engine(engine: AsyncEngine, size: int) -> AsyncEngine:
    """A pool of its own, of `size` connections, on `engine`'s database: the worker's crisis
    sweeps take their connections here, never waiting for one a routine job holds (worker.py).
    An in-memory SQLite database cannot be opened twice: its engine is shared."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return engine
        crisis = create_async_engine(url, hide_parameters=True, json_deserializer=orjson.loads)
        event.listen(crisis.sync_engine, "connect", _sqlite_pragmas)
        event.listen(crisis.sync_engine, "begin", _sqlite_begin)
        return crisis
    return create_async_engine(url, hide_parameters=True, json_deserializer=orjson.loads,
                               pool_size=max(size, 1), max_overflow=1)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def make_read_engine(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """GET and HEAD run on their own pool of autocommit connections on PostgreSQL: no
    BEGIN/ROLLBACK around a read, nothing to reset when a connection goes back. A read that
    must write (an audited confidential read) opens its own transaction with the write
    sessionmaker, as audit.record_denial does. SQLite shares the one engine."""
    if settings.is_sqlite:
        return engine
    return create_async_engine(settings.async_database_url, isolation_level="AUTOCOMMIT",
                               hide_parameters=True, json_deserializer=orjson.loads,
                               pool_reset_on_return=None, pool_size=settings.db_pool_size,
                               max_overflow=settings.db_pool_size)


_READ_METHODS = frozenset({"GET", "HEAD"})

# Set while a request of the crisis workflow runs (app/admission.py, from the routes' marks):
# its writes go to the audit chain's lock ahead of routine ones (services/audit.py).
crisis_work: ContextVar[bool] = ContextVar("crisis_work", default=False)


class _LazySession:
    __slots__ = ("maker", "session")

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.maker = maker
        self.session: AsyncSession | None = None

    def get(self) -> AsyncSession:
        if self.session is None:
            self.session = self.maker()
        return self.session

    async def end(self) -> None:
        """Closes the session now (rolled back if uncommitted) and gives its connection back."""
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()


class SessionMiddleware:
    """One database session per request, opened on first use and closed (rolled back if
    uncommitted) when the response completes, or earlier when the request fails
    (end_request_transaction). Cheaper than a yield-dependency, and a request that never
    touches the database (a cached principal on /v1/auth/me) never opens one."""

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

        async def release_then_send(message: Message) -> None:
            # Once the response is complete the request is done with the database: give the
            # connection back (and, on SQLite, the write lock) before the bytes go out, so what
            # runs around the response (storing an idempotent reply) never waits on it.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await lazy.end()
            await send(message)

        try:
            await self.app(scope, receive, release_then_send)
        finally:
            await lazy.end()


async def get_session(request: Request) -> AsyncSession:
    return request.state.db.get()  # type: ignore[no-any-return]


async def end_request_transaction(request: Request) -> None:
    """Ends the request's transaction now, rolled back, instead of when its response completes:
    a refused request changes nothing, and what is still written about it (its denial's audit
    row, in a transaction of its own) must not wait on this one's locks (on SQLite, the
    database's write lock; on PostgreSQL, perhaps the audit chain's). The error handlers call
    it before they answer; a yield-dependency could do it, at ~50 us on every request."""
    lazy: _LazySession | None = getattr(request.state, "db", None)
    if lazy is not None:
        await lazy.end()


_COPY_FROM = 20


async def insert_rows(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Inserts many rows (all with the same keys) in the session's transaction, in order.
    PostgreSQL: COPY on the session's own connection, several times faster than an INSERT per
    row (what executemany amounts to); SQLite: one executemany."""
    if not rows:
        return
    # A few rows (one request's audit row and event) cost less as a plain INSERT.
    if len(rows) < _COPY_FROM or session.bind.dialect.name != "postgresql":  # type: ignore[union-attr]
        await session.execute(table.insert(), rows)
        return
    from psycopg import errors as pg_errors
    from sqlalchemy.exc import IntegrityError

    names = list(rows[0])
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
    wrap = [n in json_cols for n in names]
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    columns = ", ".join(f'"{n}"' for n in names)
    try:
        async with raw.cursor() as cur, \
                cur.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as cp:
            # JSON as its text: COPY's text format reads a jsonb column from it, as from what
            # psycopg's Jsonb wrapper would send (without a wrapper and a dumper call per cell).
            for row in rows:
                await cp.write_row([_json_text(row[n]) if j and row[n] is not None
                                    else row[n] for n, j in zip(names, wrap, strict=True)])
    except pg_errors.IntegrityError as exc:
        # The driver's own error (COPY bypasses SQLAlchemy): raised as SQLAlchemy's, so a
        # caller handles a unique violation the same way on both databases.
        raise IntegrityError(f"COPY {table.name}", None, exc) from None


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def one_of(session: AsyncSession, column: Any, values: Iterable[Any]) -> Any:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`: one parameter however many
    values (an import's chunk has a thousand), so nothing is expanded or re-parsed per call."""
    values = list(values)
    if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


async def update_rows(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Writes many rows back by primary key `id` (every row with the same keys: the columns
    to set). PostgreSQL: one UPDATE ... FROM jsonb_to_recordset(one parameter); SQLite: one
    executemany."""
    if not rows:
        return
    names = [n for n in rows[0] if n != "id"]
    if session.bind.dialect.name != "postgresql":  # type: ignore[union-attr]
        stmt = table.update().where(table.c.id == bindparam("_id")).values(
            {n: bindparam(n) for n in names})
        await session.execute(stmt, [{"_id": r["id"], **{n: r[n] for n in names}} for r in rows])
        return
    dialect = session.bind.dialect  # type: ignore[union-attr]
    spec = ", ".join(f'"{c}" {table.c[c].type.compile(dialect=dialect)}' for c in ["id", *names])
    sets = ", ".join(f'"{n}" = v."{n}"' for n in names)
    # Column names and types come from the table's metadata, never from input.
    sql = (f'UPDATE "{table.name}" AS t SET {sets} FROM jsonb_to_recordset(CAST(:rows AS jsonb))'  # noqa: S608
           f' AS v({spec}) WHERE t.id = v.id')
    await session.execute(text(sql), {"rows": orjson.dumps(rows).decode()})

"""Keyset pagination: opaque cursors over a unique, stable sort key; cost does not grow with depth."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import DomainError

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class BadCursor(DomainError):
    status, code, title = 422, "invalid_cursor", "Invalid cursor"


def encode_cursor(kind: str, key: Any) -> str:
    raw = json.dumps({"k": kind, "v": str(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, kind: str) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("v"), str):
            raise ValueError
        return str(data["v"])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("The cursor is not one this list issued.") from None


def decode_uuid_cursor(cursor: str | None, kind: str) -> uuid.UUID | None:
    value = decode_cursor(cursor, kind)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadCursor("The cursor is not one this list issued.") from None


def decode_int_cursor(cursor: str | None, kind: str) -> int | None:
    value = decode_cursor(cursor, kind)
    if value is None:
        return None
    if not value.isdigit():
        raise BadCursor("The cursor is not one this list issued.")
    return int(value)


async def keyset_page(session: AsyncSession, stmt: Select[Any], key: Any, *, kind: str,
                      limit: int, cursor: str | None, rows: bool = False,
                      ) -> tuple[list[Any], str | None]:
    """One page of `stmt` ordered by the unique `key` (a UUID or integer id column), after the
    cursor's key: `WHERE key > :after ORDER BY key LIMIT n+1`, so page 1,000 costs what page 1
    does. `rows=True` returns Core rows, else the first entity of each row."""
    integer = key.type.python_type is int
    after = decode_int_cursor(cursor, kind) if integer else decode_uuid_cursor(cursor, kind)
    if after is not None:
        stmt = stmt.where(key > after)
    result = await session.execute(stmt.order_by(key).limit(limit + 1))
    items = list(result.all() if rows else result.scalars())
    nxt = encode_cursor(kind, items[limit - 1].id) if len(items) > limit else None
    return items[:limit], nxt

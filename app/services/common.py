"""What writes share: the If-Match check, and a unique constraint turned into a 409."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, PreconditionFailed


async def flush_unique(session: AsyncSession, detail: str, *, code: str) -> None:
    """Flushes pending rows; a unique constraint they break is a 409 with this code (and the
    transaction is rolled back, so nothing of the request lands)."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(detail, code=code) from None


def check_version(current: int, if_match: str | None) -> None:
    """If-Match carries the ETag we sent ("<version>"); a mismatch is 412."""
    if if_match is None:
        return
    tags = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
    if "*" in tags:
        return
    if str(current) not in tags:
        raise PreconditionFailed("The resource changed since you read it; fetch it again.",
                                 code="version_mismatch")

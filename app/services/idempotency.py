"""Idempotency-Key (IETF httpapi idempotency-key draft, Stripe's semantics), for every POST.

A request with a key first *claims* it in a short transaction of its own: the row holds the
request's fingerprint, an owner token and a lease. The request then runs; when its business
transaction commits, `Writer.commit` marks the claim `committed` in that same transaction, and
only while this attempt still owns it (`mark_committed`), so two attempts can never both land.
Afterwards the response is stored (encrypted) and the key is `completed`.

The claim's way to the Writer: the middleware (app/idempotency.py) puts it on the request
(`request_claim`), the request's session dependency (deps.SessionDep) `bind`s it to the
request's database session, and a Writer on that session reads it (`bound_claim`). Other
sessions (an import job running after its request, the worker) carry none.

A retry with the same key and fingerprint gets the stored response; another fingerprint is a
422; a claim still in its lease is a 409. A failed request that wrote nothing releases its key,
so the client can fix and retry. A claim whose lease ran out and that never committed (the
process died) may be taken over. One that committed but lost its response (the process died in
between) answers 409 `idempotency_outcome_unknown`: replaying could apply the change twice.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict
from app.models.idempotency import IdempotencyKey as Row
from app.security.notes import NoteCipher


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID
    owner: str
    expires_at: datetime


@dataclass(frozen=True)
class Stored:
    status: int
    headers: list[list[str]]
    body: bytes
    expires_at: datetime


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    detail: str
    retry_after: int | None = None


_BOUND = "idempotency_claim"  # the key in a session's `info`


def bind(session: AsyncSession, claim_: Claim) -> None:
    """The request's claim goes with the request's session (deps.SessionDep)."""
    session.info[_BOUND] = claim_


def bound_claim(session: AsyncSession) -> Claim | None:
    """The claim a Writer on this session marks committed (Writer.commit), if any."""
    return session.info.get(_BOUND)


async def claim(maker: async_sessionmaker[AsyncSession], settings: Settings, *, caller: str,
                key: str, fingerprint: str, cipher: NoteCipher,
                now: datetime | None = None) -> Claim | Stored | Refused:
    now = now or utcnow()
    lease = timedelta(seconds=settings.idempotency_lease_seconds)
    for _ in range(3):  # a lost insert race is answered by reading the winner's row
        async with maker() as session:
            row = (await session.execute(
                select(Row).where(Row.caller == caller, Row.key == key).with_for_update()
            )).scalar_one_or_none()
            owner = secrets.token_hex(8)
            if row is None or row.expires_at <= now:
                if row is not None:
                    await session.delete(row)
                    await session.flush()
                row = Row(caller=caller, key=key, fingerprint=fingerprint, state="in_flight",
                          owner=owner, locked_until=now + lease, created_at=now,
                          expires_at=now + timedelta(hours=settings.idempotency_hours))
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    continue
                return Claim(row.id, owner, row.expires_at)
            if row.fingerprint != fingerprint:
                return Refused(422, "idempotency_key_reused",
                               "This Idempotency-Key was used with another request body.")
            if row.state == "completed" and row.response_body is None:
                return Refused(409, "idempotency_response_not_kept",
                               "The first request with this Idempotency-Key was applied; its "
                               "answer carried a secret shown once and is not kept.")
            if row.state == "completed":
                body = cipher.decrypt(row.response_body or b"", row.response_key or b"",
                                      row.response_key_id or "", row.id.bytes)
                return Stored(row.response_status or 200, row.response_headers,
                              body.encode(), row.expires_at)
            if row.locked_until > now:  # still running (perhaps committed, not yet answered)
                wait = max(1, int((row.locked_until - now).total_seconds()))
                return Refused(409, "idempotency_key_in_flight",
                               "A request with this Idempotency-Key is still being processed; "
                               "retry later.", retry_after=min(wait, 5))
            if row.state == "committed":  # applied, then the process died before answering
                return Refused(409, "idempotency_outcome_unknown",
                               "The first request with this Idempotency-Key was applied but its "
                               "response was lost; look the resource up instead of retrying.")
            # The earlier attempt died before writing anything: this one takes the key over.
            row.owner, row.locked_until = owner, now + lease
            await session.commit()
            return Claim(row.id, owner, row.expires_at)
    # Runs in middleware, outside the error handlers: answer, never raise.
    return Refused(409, "idempotency_key_in_flight",
                   "A request with this Idempotency-Key is still being processed; retry later.",
                   retry_after=1)


async def mark_committed(session: AsyncSession, current: Claim | None) -> None:
    """Called by Writer.commit inside the business transaction. Refuses (and so rolls the
    change back) when this attempt no longer owns its key."""
    if current is None:
        return
    result = await session.execute(
        update(Row).where(Row.id == current.id, Row.owner == current.owner,
                          Row.state.in_(("in_flight", "committed")))
        .values(state="committed").execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Another request took over this Idempotency-Key.",
                       code="idempotency_key_in_flight")


async def finish(maker: async_sessionmaker[AsyncSession], claim_: Claim, *, status: int,
                 headers: list[list[str]], body: bytes, cipher: NoteCipher,
                 keep_body: bool = True) -> None:
    """Store the response of a request that succeeded or wrote something; otherwise release
    the key so that the client may correct the request and retry. An answer marked no-store
    (a secret shown once) is remembered as done, but its body is not kept."""
    async with maker() as session:
        row = (await session.execute(
            select(Row).where(Row.id == claim_.id, Row.owner == claim_.owner).with_for_update()
        )).scalar_one_or_none()
        if row is None:
            return
        if status >= 400 and row.state == "in_flight":
            await session.delete(row)
        else:
            row.state, row.response_status, row.response_headers = "completed", status, headers
            if keep_body:
                row.response_body, row.response_key, row.response_key_id = cipher.encrypt(
                    body.decode("utf-8", "replace"), row.id.bytes)
        await session.commit()


async def release(maker: async_sessionmaker[AsyncSession], claim_: Claim) -> None:
    """The request failed without an answer: free its key if it wrote nothing; if it did, the
    key stays `committed` (a retry gets 409 `idempotency_outcome_unknown`, never a re-run)."""
    async with maker() as session:
        await session.execute(delete(Row).where(Row.id == claim_.id, Row.owner == claim_.owner,
                                                Row.state == "in_flight"))
        await session.commit()


async def purge(session: AsyncSession, settings: Settings, now: datetime | None = None,
                **_: Any) -> dict[str, int]:
    """Worker job: drop keys past their expiry."""
    result = await session.execute(delete(Row).where(Row.expires_at <= (now or utcnow())))
    await session.commit()
    return {"expired_keys": result.rowcount or 0}  # type: ignore[attr-defined]

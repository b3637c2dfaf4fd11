"""Reading referrals: one through the wall (`get`), the coordinator's queue (`list_`: most
urgent first, then oldest, keyset-paginated), and what each role sees of one (`view`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Referral
from app.models.referral import ReferralRead, ReferralSource, ReferralStatus
from app.security.principal import Principal
from app.security.scopes import REFERRAL_READERS
from app.services import scoping
from app.services.pagination import BadCursor, decode_cursor, encode_cursor

RF = scoping.RF
REFERRALS = Referral.__table__
_CURSOR = "referral"


async def get(*, session: AsyncSession, principal: Principal, referral_id: uuid.UUID,
              for_update: bool = False) -> Referral:
    stmt = scoping.referrals(principal).where(RF.id == referral_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such referral.")
    return found


def _after(cursor: str | None) -> tuple[int, datetime, uuid.UUID] | None:
    value = decode_cursor(cursor, _CURSOR)
    if value is None:
        return None
    try:
        rank, at, id_ = value.split("|")
        return int(rank), datetime.fromisoformat(at), uuid.UUID(id_)
    except ValueError:
        raise BadCursor("The cursor is not one this list issued.") from None


def _cursor_of(row: Any) -> str:
    return encode_cursor(_CURSOR, f"{row.urgency_rank}|{row.received_at.isoformat()}|{row.id}")


async def list_(*, session: AsyncSession, principal: Principal,
                statuses: list[ReferralStatus] | None, facility_id: uuid.UUID | None,
                participant_id: uuid.UUID | None, limit: int,
                cursor: str | None) -> tuple[list[Any], str | None]:
    """The queue: most urgent first, then oldest first (`urgency_rank, received_at, id`: a
    unique key, so the keyset never skips or repeats a row; `ix_referral_queue` serves it)."""
    stmt = scoping.referrals(principal, REFERRALS)
    if statuses:
        stmt = stmt.where(RF.status.in_([s.value for s in statuses]))
    if facility_id is not None:
        stmt = stmt.where(RF.facility_id == facility_id)
    if participant_id is not None:
        stmt = stmt.where(RF.participant_id == participant_id)
    after = _after(cursor)
    if after is not None:
        rank, at, id_ = after
        stmt = stmt.where(tuple_(RF.urgency_rank, RF.received_at, RF.id) > tuple_(
            literal(rank, RF.urgency_rank.type), literal(at, RF.received_at.type),
            literal(id_, RF.id.type)))
    rows = list((await session.execute(
        stmt.order_by(RF.urgency_rank, RF.received_at, RF.id).limit(limit + 1))).all())
    nxt = _cursor_of(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], nxt


def view(principal: Principal, r: Any) -> ReferralRead:
    """Everything, for those who work or read the queue. A referrer who reads only their own
    referrals does not see the coordinator's decline note (it may name a reason they must not
    learn, such as a keep-apart: secrecy.py); a peer supporter not the person's housing unit
    either, nor, for a self-referral they passed on (a person they may not otherwise see), who
    the server found: they learn nothing more than they gave."""
    read = ReferralRead.model_validate(r)
    if principal.role in REFERRAL_READERS:
        return read
    hidden: dict[str, Any] = {"decline_note": None}
    if principal.is_peer:
        hidden["housing_unit_id"] = None
        if r.source == ReferralSource.self_via_peer.value:
            hidden["participant_id"] = None
    return read.model_copy(update=hidden)

"""What a role sees of a pairing: a peer supporter sees the person they support by preferred
name and housing unit only, and never a coordinator's override reason; a keep-apart behind an
end or a pause is named only to those who may know of it (`secrecy.shown_reason`)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Pairing
from app.models.pairing import EndReason, PairingRead, PauseReason, RecipientView, pause_note
from app.security.principal import Principal
from app.services import secrecy
from app.services.pairing_rules import PEOPLE

# What a caller who may not know of a keep-apart reads instead.
NEUTRAL_END = EndReason.other
NEUTRAL_PAUSE = PauseReason.not_possible


async def recipient_views(session: AsyncSession,
                          items: list[Pairing]) -> dict[uuid.UUID, RecipientView]:
    """For a peer supporter's view: each recipient's preferred name and housing unit only."""
    ids = {p.recipient_id for p in items}
    if not ids:
        return {}
    rows = await session.execute(select(PEOPLE.id, PEOPLE.preferred_name, PEOPLE.housing_unit_id)
                                 .where(PEOPLE.id.in_(ids)))
    return {r.id: RecipientView(preferred_name=r.preferred_name, housing_unit_id=r.housing_unit_id)
            for r in rows}


async def seen_by(session: AsyncSession, principal: Principal,
                items: list[Pairing]) -> list[PairingRead]:
    """The pairings as this caller may read them."""
    out = [PairingRead.model_validate(p) for p in items]
    for read, p in zip(out, items, strict=True):
        read.pause_note = pause_note(p.pause_reason)
        if read.status == "paused" and read.pause_reason is None:
            read.pause_reason = PauseReason.requested  # paused by a person, no words given
    if principal.is_peer:
        recipients = await recipient_views(session, items)
        for read in out:
            read.recipient = recipients.get(read.recipient_id)
            read.override_reason = None
    for read in out:
        read.end_reason = secrecy.shown_reason(  # type: ignore[assignment]
            principal, read.end_reason, neutral=NEUTRAL_END)
        read.pause_reason = secrecy.shown_reason(  # type: ignore[assignment]
            principal, read.pause_reason, neutral=NEUTRAL_PAUSE)
    return out


async def one_seen_by(session: AsyncSession, principal: Principal,
                      pairing: Pairing) -> PairingRead:
    """One pairing as this caller may read it."""
    return (await seen_by(session, principal, [pairing]))[0]

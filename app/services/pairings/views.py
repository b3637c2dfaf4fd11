"""What a role sees of a pairing: a peer supporter sees the person they support by preferred
name and housing unit only, and never a coordinator's override reason; a keep-apart behind an
end or a pause is named only to those who may know of it (`secrecy.shown_reason`)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Pairing, PairingTransition
from app.models.pairing import (
    EndReason,
    PairingHistoryEntry,
    PairingRead,
    PauseReason,
    RecipientView,
    pause_note,
)
from app.security.principal import Principal
from app.services import secrecy
from app.services.accounts import display_names
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


def history_views(principal: Principal, pairing: Pairing, rows: list[PairingTransition],
                  names: dict[str, str]) -> list[PairingHistoryEntry]:
    """Each transition as this caller may read it: a keep-apart named only to those who may
    know of it (with the note given alongside such an end), a coordinator's override reason
    never to a peer supporter."""
    out = []
    may_know = secrecy.may_know_keep_aparts(principal)
    for t in rows:
        reason, end_reason = t.reason, None
        if t.action == "end":
            end_reason = pairing.end_reason
            if reason == end_reason:  # no note was given: the row holds the end reason itself
                reason = None
            if end_reason == secrecy.KEEP_APART and not may_know:
                end_reason, reason = NEUTRAL_END.value, None
        elif t.action == "propose" and principal.is_peer:
            reason = None
        else:
            reason = secrecy.shown_reason(principal, reason, neutral=NEUTRAL_PAUSE)
        out.append(PairingHistoryEntry.model_validate({
            "action": t.action, "from_status": t.from_status, "to_status": t.to_status,
            "at": t.at, "by": t.by, "by_name": names.get(t.by), "reason": reason,
            "end_reason": end_reason}))
    return out


async def history(session: AsyncSession, principal: Principal,
                  pairing: Pairing) -> list[PairingHistoryEntry]:
    """Every transition of a pairing the caller may read (its wall already passed), oldest
    first, each actor by stable id and display name."""
    t = PairingTransition.__table__.c
    rows = list((await session.execute(
        select(PairingTransition).where(t.pairing_id == pairing.id)
        .order_by(t.at, t.id))).scalars())
    names = await display_names(session, {r.by for r in rows})
    return history_views(principal, pairing, rows, names)

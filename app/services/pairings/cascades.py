"""What other changes do to pairings, in the transaction of the change that causes them
(DOMAIN rule 5): a release, transfer, availability change or merge ends or pauses a person's
pairings; a keep-apart order ends the pairings it stands against, and after a housing move
pauses them; the periodic certification sweep pauses a lapsed supporter's pairings and resumes
them once renewed."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import one_of
from app.models import KeepApartOrder, Pairing, Participant
from app.models.keep_apart import KeepApartStatus
from app.models.pairing import EndReason, PairingStatus
from app.services import certification
from app.services.pairing_rules import NOT_ENDED, ORDERS, PAIRINGS, PEOPLE, gather_facts, refusals
from app.services.pairings.moves import apply
from app.services.writer import Writer

_KEEP_APART = EndReason.keep_apart.value
_LAPSED = EndReason.certification_lapsed.value


def _people(participant_id: uuid.UUID | Collection[uuid.UUID]) -> list[uuid.UUID]:
    return [participant_id] if isinstance(participant_id, uuid.UUID) else list(participant_id)


def _move_all(session: AsyncSession, w: Writer, found: Collection[Pairing], action: str,
              reason: str) -> int:
    target = PairingStatus.ended.value if action == "end" else PairingStatus.paused.value
    for pairing in found:
        apply(session, w, pairing, action, target, None, reason=reason)
        w.audit(f"pairing.{action}", "pairing", pairing.id, pairing.facility_id)
    return len(found)


async def cascade(session: AsyncSession, w: Writer,
                  participant_id: uuid.UUID | Collection[uuid.UUID], *, action: str,
                  reason: str, only_as_supporter: bool = False,
                  statuses: tuple[str, ...] = NOT_ENDED) -> int:
    """Ends or pauses a person's (or several people's: a bulk import) pairings in the caller's
    transaction, each with its event."""
    ids = _people(participant_id)
    if not ids:
        return 0
    # Pairings an earlier cascade of this transaction moved must be seen as moved (autoflush
    # is off), or a release followed by an availability change would pause an ended pairing.
    await session.flush()
    as_supporter = one_of(session, PAIRINGS.supporter_id, ids)
    involved = as_supporter if only_as_supporter else or_(
        as_supporter, one_of(session, PAIRINGS.recipient_id, ids))
    found = (await session.execute(
        select(Pairing).where(involved, PAIRINGS.status.in_(statuses))
        .order_by(PAIRINGS.id).with_for_update())).scalars().all()
    return _move_all(session, w, found, action, reason)


def _against_open_order() -> Any:
    """Pairings joined to an open keep-apart order between their two people (orders store the
    pair in id order, so both ways round)."""
    return select(Pairing).join(KeepApartOrder.__table__, or_(
        (ORDERS.participant_a_id == PAIRINGS.supporter_id)
        & (ORDERS.participant_b_id == PAIRINGS.recipient_id),
        (ORDERS.participant_a_id == PAIRINGS.recipient_id)
        & (ORDERS.participant_b_id == PAIRINGS.supporter_id),
    )).where(ORDERS.status == KeepApartStatus.open.value)


async def pause_keep_apart_conflicts(session: AsyncSession, w: Writer,
                                     participant_id: uuid.UUID | Collection[uuid.UUID]) -> int:
    """After a housing move: an active pairing of this person (or these people) that now
    stands against an open keep-apart order is paused."""
    ids = _people(participant_id)
    if not ids:
        return 0
    await session.flush()
    found = (await session.execute(
        _against_open_order()
        .where(or_(one_of(session, PAIRINGS.supporter_id, ids),
                   one_of(session, PAIRINGS.recipient_id, ids)),
               PAIRINGS.status == PairingStatus.active.value)
        .order_by(PAIRINGS.id).with_for_update(of=Pairing.__table__)
    )).scalars().all()
    return _move_all(session, w, found, "pause", _KEEP_APART)


async def end_keep_apart_conflicts(session: AsyncSession, w: Writer,
                                   participant_id: uuid.UUID) -> int:
    """Ends every pairing of this person that stands against an open keep-apart order."""
    found = (await session.execute(
        _against_open_order()
        .where(or_(PAIRINGS.supporter_id == participant_id,
                   PAIRINGS.recipient_id == participant_id),
               PAIRINGS.status.in_(NOT_ENDED))
        .with_for_update(of=Pairing.__table__))).scalars().all()
    return _move_all(session, w, found, "end", _KEEP_APART)


async def end_between(session: AsyncSession, w: Writer, x: uuid.UUID, y: uuid.UUID) -> int:
    """A keep-apart order between two paired people ends their pairing."""
    return await end_between_pairs(session, w, [(x, y)])


async def end_between_pairs(session: AsyncSession, w: Writer,
                            pairs: Collection[tuple[uuid.UUID, uuid.UUID]]) -> int:
    """Keep-apart orders between paired people end their pairings: one query for all the pairs
    (an import opens a thousand orders a chunk)."""
    wanted = {frozenset(pair) for pair in pairs}
    if not wanted:
        return 0
    people = sorted({person for pair in pairs for person in pair})
    await session.flush()
    among = (await session.execute(select(Pairing).where(
        one_of(session, PAIRINGS.supporter_id, people),
        one_of(session, PAIRINGS.recipient_id, people),
        PAIRINGS.status.in_(NOT_ENDED)).order_by(PAIRINGS.id).with_for_update()
    )).scalars().all()
    found = [p for p in among if frozenset((p.supporter_id, p.recipient_id)) in wanted]
    return _move_all(session, w, found, "end", _KEEP_APART)


async def certification_sweep(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Periodic: a supporter whose certificate lapsed has active pairings paused
    (`certification_lapsed`, with `certification.lapsed`); once renewed, the pairings paused
    for that reason resume (if nothing else now stands in the way). One transaction."""
    lapsed_pause = ((PAIRINGS.status == PairingStatus.paused.value)
                    & (PAIRINGS.pause_reason == _LAPSED))
    involved = select(PAIRINGS.supporter_id).where(
        (PAIRINGS.status == PairingStatus.active.value) | lapsed_pause)
    people = (await session.execute(
        select(Participant).where(PEOPLE.id.in_(involved)))).scalars().all()
    states = await certification.states(session, settings, [(p.id, p.network) for p in people])
    w = Writer(session, None)
    paused = resumed = 0
    for person in people:
        if not states[person.id].certified:
            moved = await cascade(session, w, person.id, action="pause", reason=_LAPSED,
                                  only_as_supporter=True,
                                  statuses=(PairingStatus.active.value,))
            if moved:
                paused += moved
                w.emit("certification.lapsed", "participant", person.id,
                       facility_id=person.facility_id, network=person.network)
            continue
        waiting = (await session.execute(select(Pairing).where(
            PAIRINGS.supporter_id == person.id, lapsed_pause).with_for_update())).scalars().all()
        for pairing in waiting:
            recipient = await session.get(Participant, pairing.recipient_id)
            found = refusals(await gather_facts(session, settings, person, recipient, pairing.id),
                             override=bool(pairing.override_reason))
            if found:
                continue
            apply(session, w, pairing, "resume", PairingStatus.active.value, None,
                  reason="certified again")
            w.audit("pairing.resume", "pairing", pairing.id, pairing.facility_id)
            resumed += 1
    await w.commit()
    return {"supporters_checked": len(people), "paused": paused, "resumed": resumed}

"""Pairings: propose, activate, pause, resume, end, with the safeguards that make matching
safe. The eligibility rules are one pure function over gathered facts (`refusals`), used for a
single pair (propose/activate/resume) and for every supporter at once (candidates)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import one_of, utcnow
from app.errors import NotFound
from app.models import (
    Escalation,
    KeepApartOrder,
    Pairing,
    PairingTransition,
    Participant,
)
from app.models.common import Network
from app.models.escalation import UNRESOLVED
from app.models.pairing import (
    HOLDING,
    CandidateList,
    PairingCreate,
    PairingStatus,
    RecipientView,
)
from app.security.principal import Principal
from app.security.scopes import COORDINATORS
from app.services import certification, scoping, secrecy, support_sessions
from app.services.common import check_version
from app.services.facilities import settings_of
from app.services.pagination import keyset_page
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

PR = Pairing.__table__.c
K = KeepApartOrder.__table__.c
P = scoping.P
_COORDINATORS = COORDINATORS
_S = PairingStatus
PAIRING_FLOW = table(
    Transition("activate", frozenset({_S.proposed.value}), _S.active.value, _COORDINATORS),
    Transition("pause", frozenset({_S.active.value}), _S.paused.value, _COORDINATORS),
    Transition("resume", frozenset({_S.paused.value}), _S.active.value, _COORDINATORS),
    Transition("end", frozenset({_S.proposed.value, _S.active.value, _S.paused.value}),
               _S.ended.value, _COORDINATORS),
)
_CHECKED = {"activate", "resume"}  # and propose


_INC, _STAFF = Network.incarcerated.value, Network.staff.value


@dataclass(slots=True)
class SupporterRow:
    """The columns the rules and the ranking read, as a plain object (attribute reads on it
    cost a tenth of those on a database row; candidates reads them 2,000 times)."""

    id: uuid.UUID
    network: str
    facility_id: uuid.UUID
    is_supporter: bool
    archived_at: Any
    custody_status: str | None
    employment_status: str | None
    supporter_availability: str | None
    caseload_cap: int | None
    languages: list[str] | None
    housing_unit_id: uuid.UUID | None
    preferred_name: str | None


_SUPPORTER_COLUMNS = (P.id, P.network, P.facility_id, P.is_supporter, P.archived_at,
                      P.custody_status, P.employment_status, P.supporter_availability,
                      P.caseload_cap, P.languages, P.housing_unit_id, P.preferred_name)


@dataclass(slots=True)
class Facts:
    supporter: Any
    recipient: Any
    certified: bool
    keep_apart: bool
    caseload: int
    cap: int
    recipient_holding: int
    in_crisis: bool = False  # an open high/imminent escalation about the supporter


def refusals(f: Facts, *, override: bool) -> list[tuple[str, str, int]]:
    """Every rule the pair breaks, in order: (code, detail, status). Pure."""
    s, r = f.supporter, f.recipient
    out: list[tuple[str, str, int]] = []
    if s.id == r.id:
        out.append(("self_pairing", "A person cannot support themselves.", 422))
    if not s.is_supporter:
        out.append(("not_a_supporter", "The supporter does not hold the supporter role.", 422))
    if not r.is_recipient:
        out.append(("not_a_recipient", "The recipient does not hold the recipient role.", 422))
    if s.network != r.network:
        out.append(("network_mismatch", "Supporter and recipient are in different networks.",
                    422))
    if s.facility_id != r.facility_id:
        out.append(("different_facility", "Supporter and recipient are at different facilities.",
                    422))
    for who, p in (("supporter", s), ("recipient", r)):
        if p.archived_at is not None:
            out.append(("archived", f"The {who}'s record is archived.", 422))
        elif p.network == _INC and p.custody_status != "in_custody":
            out.append(("not_in_custody", f"The {who} is not in custody.", 422))
        elif p.network == _STAFF and p.employment_status != "employed":
            out.append(("not_employed", f"The {who} is not currently employed.", 422))
    if s.supporter_availability != "active":
        out.append(("supporter_unavailable", "The supporter is not available.", 422))
    if not f.certified:
        out.append(("supporter_not_certified", "The supporter is not certified.", 422))
    if f.in_crisis:
        out.append(("supporter_escalation",
                    "An open high or imminent escalation concerns the supporter.", 422))
    if f.keep_apart:
        out.append(("keep_apart", "An open keep-apart order stands between the two.", 422))
    if f.caseload >= f.cap:
        out.append(("caseload_full", f"The supporter's caseload is full ({f.cap}).", 409))
    if f.recipient_holding and not override:
        out.append(("recipient_already_paired",
                    "The recipient already has an active pairing; a coordinator may override "
                    "with a written reason.", 409))
    return out


def _raise(principal: Principal, found: list[tuple[str, str, int]]) -> None:
    code, detail, status = found[0]
    raise secrecy.refusal(principal, code, detail, status=status)


async def _lock_people(session: AsyncSession, principal: Principal, *ids: uuid.UUID) -> dict[
        uuid.UUID, Participant]:
    """Both people, row-locked in id order (two coordinators racing for the last slot of a
    caseload queue here; the loser then sees the winner's pairing)."""
    rows = (await session.execute(
        scoping.participants(principal).where(P.id.in_(sorted(set(ids))))
        .order_by(P.id).with_for_update())).scalars().all()
    found = {p.id: p for p in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("No such participant.")
    return found


async def _facts(session: AsyncSession, settings: Settings, supporter: Participant,
                 recipient: Participant, exclude: uuid.UUID | None) -> Facts:
    a, b = sorted((supporter.id, recipient.id))
    keep_apart = (await session.execute(select(func.count()).select_from(KeepApartOrder.__table__)
                                        .where(K.participant_a_id == a, K.participant_b_id == b,
                                               K.status == "open"))).scalar_one() > 0
    others = PR.id != exclude if exclude else True

    async def holding(column: Any, pid: uuid.UUID) -> int:
        return int((await session.execute(select(func.count()).select_from(Pairing.__table__)
                                           .where(column == pid, PR.status.in_(HOLDING), others))
                    ).scalar_one())

    facility_cap = (await settings_of(session, supporter.facility_id))["caseload_cap"]
    cap = min(facility_cap, supporter.caseload_cap or facility_cap)
    cert = await certification.state_of(session, settings, supporter)
    crisis = await _in_crisis(session, select(P.id).where(P.id == supporter.id))
    return Facts(supporter=supporter, recipient=recipient, certified=cert.certified,
                 keep_apart=keep_apart, caseload=await holding(PR.supporter_id, supporter.id),
                 cap=cap, recipient_holding=await holding(PR.recipient_id, recipient.id),
                 in_crisis=supporter.id in crisis)


async def _in_crisis(session: AsyncSession, among: Any) -> set[uuid.UUID]:
    """People (of the `among` id subquery) with an open high or imminent escalation."""
    X = Escalation.__table__.c
    rows = await session.execute(select(X.participant_id).where(
        X.participant_id.in_(among), X.status.in_(UNRESOLVED),
        X.tier.in_(("high", "imminent"))))
    return set(rows.scalars())


def _transition_row(pairing: Pairing, action: str, before: str | None, principal: Principal | None,
                    reason: str | None) -> PairingTransition:
    return PairingTransition(pairing_id=pairing.id, action=action, from_status=before,
                             to_status=pairing.status, at=utcnow(),
                             by=principal.actor if principal else "system", reason=reason)


def _event(w: Writer, type_: str, pairing: Pairing) -> None:
    w.emit(type_, "pairing", pairing.id, facility_id=pairing.facility_id, network=pairing.network)


async def propose(*, session: AsyncSession, settings: Settings, principal: Principal,
                  data: PairingCreate) -> Pairing:
    people = await _lock_people(session, principal, data.supporter_id, data.recipient_id)
    supporter, recipient = people[data.supporter_id], people[data.recipient_id]
    override = bool(data.override_reason) and principal.is_coordinator
    found = refusals(await _facts(session, settings, supporter, recipient, None),
                     override=override)
    if found:
        _raise(principal, found)
    pairing = Pairing(supporter_id=supporter.id, recipient_id=recipient.id,
                      facility_id=recipient.facility_id, network=recipient.network,
                      proposed_by=principal.actor,
                      override_reason=data.override_reason if override else None)
    session.add(pairing)
    await session.flush()
    session.add(_transition_row(pairing, "propose", None, principal, data.override_reason))
    w = Writer(session, principal)
    w.audit("pairing.propose", "pairing", pairing.id, pairing.facility_id)
    if override:
        w.audit("pairing.override_one_active", "pairing", pairing.id, pairing.facility_id)
    _event(w, "pairing.proposed", pairing)
    await w.commit()
    return pairing


def pairings(principal: Principal) -> Any:
    """The scoped base query (the walls: `scoping.pairing_wall`)."""
    return scoping.pairings(principal)


async def get(*, session: AsyncSession, principal: Principal, pairing_id: uuid.UUID,
              for_update: bool = False) -> Pairing:
    stmt = pairings(principal).where(PR.id == pairing_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such pairing.")
    return found


async def list_(*, session: AsyncSession, principal: Principal, status: PairingStatus | None,
                participant_id: uuid.UUID | None, facility_id: uuid.UUID | None, limit: int,
                cursor: str | None) -> tuple[list[Pairing], str | None]:
    stmt = pairings(principal)
    if status:
        stmt = stmt.where(PR.status == status.value)
    if participant_id:
        stmt = stmt.where(or_(PR.supporter_id == participant_id, PR.recipient_id == participant_id))
    if facility_id:
        stmt = stmt.where(PR.facility_id == facility_id)
    return await keyset_page(session, stmt, PR.id, kind="pairing", limit=limit, cursor=cursor)


async def recipient_views(session: AsyncSession, items: list[Pairing]) -> dict[uuid.UUID,
                                                                                RecipientView]:
    """For a peer supporter's view: each recipient's preferred name and housing unit only."""
    ids = {p.recipient_id for p in items}
    if not ids:
        return {}
    rows = await session.execute(select(P.id, P.preferred_name, P.housing_unit_id)
                                 .where(P.id.in_(ids)))
    return {r.id: RecipientView(preferred_name=r.preferred_name, housing_unit_id=r.housing_unit_id)
            for r in rows}


async def transition(*, session: AsyncSession, settings: Settings, principal: Principal,
                     pairing_id: uuid.UUID, action: str, reason: str | None = None,
                     override_reason: str | None = None, end_reason: str | None = None,
                     if_match: str | None = None) -> Pairing:
    if override_reason and not principal.is_coordinator:
        override_reason = None
    pairing = await get(session=session, principal=principal, pairing_id=pairing_id,
                        for_update=True)
    check_version(pairing.version, if_match)
    target = step(PAIRING_FLOW, action, pairing.status, principal.role)
    if action in _CHECKED:
        people = await _lock_people(session, principal, pairing.supporter_id,
                                    pairing.recipient_id)
        override = bool(override_reason or pairing.override_reason)
        found = refusals(await _facts(session, settings, people[pairing.supporter_id],
                                      people[pairing.recipient_id], pairing.id),
                         override=override)
        if found:
            _raise(principal, found)
    w = Writer(session, principal)
    if override_reason and not pairing.override_reason:
        pairing.override_reason = override_reason
        w.audit("pairing.override_one_active", "pairing", pairing.id, pairing.facility_id)
    apply(session, w, pairing, action, target, principal,
          reason=end_reason if action == "end" else reason, note=reason)
    w.audit(f"pairing.{action}", "pairing", pairing.id, pairing.facility_id)
    await w.commit()
    return pairing


_EVENTS = {"activate": "pairing.activated", "pause": "pairing.paused",
           "resume": "pairing.resumed", "end": "pairing.ended"}


def apply(session: AsyncSession, w: Writer, pairing: Pairing, action: str, target: str,
          principal: Principal | None, *, reason: str | None, note: str | None = None) -> None:
    """Moves a pairing (rules already checked): stamps, transition row, event. Shared by the
    endpoints and the cascades (release, transfer, keep-apart, availability, lapse)."""
    now, by = utcnow(), principal.actor if principal else "system"
    before = pairing.status
    if action == "activate" and pairing.activated_at is None:
        pairing.activated_at, pairing.activated_by = now, by
    if action == "end":
        pairing.ended_at, pairing.ended_by, pairing.end_reason = now, by, reason
    pairing.pause_reason = reason if action == "pause" else None
    pairing.status = target
    pairing.version += 1
    pairing.updated_at = now
    session.add(_transition_row(pairing, action, before, principal, note or reason))
    _event(w, _EVENTS[action], pairing)
    if action == "end":
        w.after_flush_for("cancel_scheduled_sessions", pairing,
                          lambda ended: support_sessions.cancel_for_ended_pairings(
                              session, w, ended))


def _people(participant_id: uuid.UUID | Collection[uuid.UUID]) -> list[uuid.UUID]:
    return [participant_id] if isinstance(participant_id, uuid.UUID) else list(participant_id)


async def cascade(session: AsyncSession, w: Writer,
                  participant_id: uuid.UUID | Collection[uuid.UUID], *, action: str,
                  reason: str, only_as_supporter: bool = False,
                  statuses: tuple[str, ...] = ("proposed", "active", "paused")) -> int:
    """Ends or pauses a person's (or several people's: a bulk import) pairings in the caller's
    transaction, each with its event."""
    ids = _people(participant_id)
    if not ids:
        return 0
    # Pairings an earlier cascade of this transaction moved must be seen as moved (autoflush
    # is off), or a release followed by an availability change would pause an ended pairing.
    await session.flush()
    cond = one_of(session, PR.supporter_id, ids) if only_as_supporter else or_(
        one_of(session, PR.supporter_id, ids), one_of(session, PR.recipient_id, ids))
    found = (await session.execute(select(Pairing).where(cond, PR.status.in_(statuses))
                                   .order_by(PR.id).with_for_update())).scalars().all()
    target = _S.ended.value if action == "end" else _S.paused.value
    for pairing in found:
        apply(session, w, pairing, action, target, None, reason=reason)
        w.audit(f"pairing.{action}", "pairing", pairing.id, pairing.facility_id)
    return len(found)


# --- candidates ------------------------------------------------------------------------------

async def candidates(*, session: AsyncSession, settings: Settings, principal: Principal,
                     recipient_id: uuid.UUID, limit: int = 25) -> CandidateList:
    """Eligible supporters for a recipient, ranked, with the score's parts; for coordinators
    also the ineligible ones and why. A fixed number of queries, whatever the supporters."""
    recipient = (await session.execute(scoping.participants(principal)
                                       .where(P.id == recipient_id))).scalar_one_or_none()
    if recipient is None:
        raise NotFound("No such participant.")
    pool = (P.facility_id == recipient.facility_id, P.network == recipient.network,
            P.is_supporter.is_(True), P.archived_at.is_(None), P.id != recipient.id)
    among = scoping.participants(principal, P.id).where(*pool)
    # Only the columns the rules and the ranking read (no names but the preferred one).
    people = [SupporterRow(*row) for row in (await session.execute(
        scoping.participants(principal, *_SUPPORTER_COLUMNS).where(*pool)))]
    certs = await certification.certified_among(session, settings, among, recipient.network)
    load: dict[uuid.UUID, int] = dict((await session.execute(
        select(PR.supporter_id, func.count()).where(PR.supporter_id.in_(among),
                                                    PR.status.in_(HOLDING))
        .group_by(PR.supporter_id))).all())
    apart: set[uuid.UUID] = set()
    for a, b in (await session.execute(select(K.participant_a_id, K.participant_b_id).where(
            K.status == "open",
            or_(K.participant_a_id == recipient.id, K.participant_b_id == recipient.id)))).all():
        apart.add(b if a == recipient.id else a)
    previous = set((await session.execute(select(PR.supporter_id).where(
        PR.recipient_id == recipient.id, PR.status == "ended"))).scalars())
    holding = int((await session.execute(select(func.count()).select_from(Pairing.__table__)
                                         .where(PR.recipient_id == recipient.id,
                                                PR.status.in_(HOLDING)))).scalar_one())
    crisis = await _in_crisis(session, among)
    facility_cap = (await settings_of(session, recipient.facility_id))["caseload_cap"]
    coordinator = principal.is_coordinator
    languages = set(recipient.languages or [])
    ranked: list[tuple[int, int, str, SupporterRow, dict[str, int]]] = []
    excluded: list[tuple[SupporterRow, int, list[tuple[str, str, int]]]] = []
    for s in people:
        cap = min(facility_cap, s.caseload_cap or facility_cap)
        cert = certs.get(s.id)
        caseload = load.get(s.id, 0)
        facts = Facts(supporter=s, recipient=recipient, certified=bool(cert and cert.certified),
                      keep_apart=s.id in apart, caseload=caseload, cap=cap,
                      recipient_holding=holding, in_crisis=s.id in crisis)
        found = [f for f in refusals(facts, override=False) if f[0] != "recipient_already_paired"]
        if found:
            excluded.append((s, caseload, found))
            continue
        parts = {
            "shared_language": 3 if languages & set(s.languages or []) else 0,
            "same_housing_unit": 2 if s.housing_unit_id and
            s.housing_unit_id == recipient.housing_unit_id else 0,
            "previous_supporter": 2 if s.id in previous else 0,
            "caseload": cap - caseload,
        }
        parts["total"] = sum(parts.values())
        ranked.append((-parts["total"], caseload, str(s.id), s, parts))
    ranked.sort(key=lambda t: t[:3])
    eligible = [{"supporter_id": s.id, "preferred_name": s.preferred_name, "eligible": True,
                 "caseload": load_, "score": parts} for _, load_, _, s, parts in ranked[:limit]]
    ineligible = [{"supporter_id": s.id, "preferred_name": s.preferred_name, "eligible": False,
                   "caseload": load_, "refusals": [{"code": c, "detail": d} for c, d, _ in found]}
                  for s, load_, found in excluded[:limit]] if coordinator else None
    # One validation of the whole answer (much cheaper than a model per candidate).
    return CandidateList.model_validate({
        "recipient_id": recipient.id, "eligible": eligible, "eligible_total": len(ranked),
        "ineligible": ineligible, "ineligible_total": len(excluded) if coordinator else None})


async def pause_keep_apart_conflicts(session: AsyncSession, w: Writer,
                                     participant_id: uuid.UUID | Collection[uuid.UUID]) -> int:
    """After a housing move: an active pairing of this person (or these people) that now
    stands against an open keep-apart order is paused."""
    ids = _people(participant_id)
    if not ids:
        return 0
    await session.flush()
    found = (await session.execute(
        select(Pairing).join(KeepApartOrder.__table__, or_(
            (K.participant_a_id == PR.supporter_id) & (K.participant_b_id == PR.recipient_id),
            (K.participant_a_id == PR.recipient_id) & (K.participant_b_id == PR.supporter_id)))
        .where(or_(one_of(session, PR.supporter_id, ids), one_of(session, PR.recipient_id, ids)),
               PR.status == "active", K.status == "open")
        .order_by(PR.id).with_for_update(of=Pairing.__table__)
    )).scalars().all()
    for pairing in found:
        apply(session, w, pairing, "pause", _S.paused.value, None, reason="keep_apart")
        w.audit("pairing.pause", "pairing", pairing.id, pairing.facility_id)
    return len(found)


async def end_keep_apart_conflicts(session: AsyncSession, w: Writer,
                                   participant_id: uuid.UUID) -> int:
    """Ends every pairing of this person that stands against an open keep-apart order."""
    found = (await session.execute(
        select(Pairing).join(KeepApartOrder.__table__, or_(
            (K.participant_a_id == PR.supporter_id) & (K.participant_b_id == PR.recipient_id),
            (K.participant_a_id == PR.recipient_id) & (K.participant_b_id == PR.supporter_id)))
        .where(or_(PR.supporter_id == participant_id, PR.recipient_id == participant_id),
               PR.status.in_(("proposed", "active", "paused")), K.status == "open")
        .with_for_update(of=Pairing.__table__))).scalars().all()
    for pairing in found:
        apply(session, w, pairing, "end", _S.ended.value, None, reason="keep_apart")
        w.audit("pairing.end", "pairing", pairing.id, pairing.facility_id)
    return len(found)


async def end_between(session: AsyncSession, w: Writer, x: uuid.UUID, y: uuid.UUID) -> int:
    """A keep-apart order between two paired people ends their pairing."""
    return await end_between_pairs(session, w, [(x, y)])


async def end_between_pairs(session: AsyncSession, w: Writer,
                            pairs: Collection[tuple[uuid.UUID, uuid.UUID]]) -> int:
    """Keep-apart orders between paired people end their pairings: one query for all the pairs
    (an import opens a thousand orders a chunk)."""
    wanted = {frozenset(p) for p in pairs}
    if not wanted:
        return 0
    people = sorted({i for p in pairs for i in p})
    await session.flush()
    candidates = (await session.execute(select(Pairing).where(
        one_of(session, PR.supporter_id, people), one_of(session, PR.recipient_id, people),
        PR.status.in_(("proposed", "active", "paused"))).order_by(PR.id).with_for_update()
    )).scalars().all()
    found = [p for p in candidates if frozenset((p.supporter_id, p.recipient_id)) in wanted]
    for pairing in found:
        apply(session, w, pairing, "end", _S.ended.value, None, reason="keep_apart")
        w.audit("pairing.end", "pairing", pairing.id, pairing.facility_id)
    return len(found)


async def certification_sweep(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Periodic: a supporter whose certificate lapsed has active pairings paused
    (`certification_lapsed`, with `certification.lapsed`); once renewed, the pairings paused
    for that reason resume (if nothing else now stands in the way). One transaction."""
    lapsed_pause = (PR.status == "paused") & (PR.pause_reason == "certification_lapsed")
    involved = select(PR.supporter_id).where((PR.status == "active") | lapsed_pause)
    people = (await session.execute(select(Participant).where(P.id.in_(involved)))).scalars().all()
    states = await certification.states(session, settings, [(p.id, p.network) for p in people])
    w = Writer(session, None)
    paused = resumed = 0
    for person in people:
        if not states[person.id].certified:
            n = await cascade(session, w, person.id, action="pause", reason="certification_lapsed",
                              only_as_supporter=True, statuses=("active",))
            if n:
                paused += n
                w.emit("certification.lapsed", "participant", person.id,
                       facility_id=person.facility_id, network=person.network)
            continue
        waiting = (await session.execute(select(Pairing).where(
            PR.supporter_id == person.id, lapsed_pause).with_for_update())).scalars().all()
        for pairing in waiting:
            recipient = await session.get(Participant, pairing.recipient_id)
            found = refusals(await _facts(session, settings, person, recipient, pairing.id),
                             override=bool(pairing.override_reason))
            if found:
                continue
            apply(session, w, pairing, "resume", _S.active.value, None, reason="certified again")
            w.audit("pairing.resume", "pairing", pairing.id, pairing.facility_id)
            resumed += 1
    await w.commit()
    return {"supporters_checked": len(people), "paused": paused, "resumed": resumed}

"""Keep-apart orders: open, close, reopen; one open order per pair; never shown to peers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import one_of, utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import KeepApartOrder, Participant, ParticipantExternalId
from app.models.keep_apart import (
    KeepApartCreate,
    KeepApartImportRow,
    KeepApartStatus,
    ordered_pair,
)
from app.security.principal import Principal
from app.services import pairings, scoping
from app.services.common import check_version, flush_unique
from app.services.pagination import keyset_page
from app.services.scoping import P
from app.services.writer import Writer


async def get(*, session: AsyncSession, principal: Principal, order_id: uuid.UUID,
              for_update: bool = False) -> KeepApartOrder:
    stmt = scoping.keep_apart_orders(principal).where(KeepApartOrder.id == order_id)
    if for_update:
        stmt = stmt.with_for_update()
    order = (await session.execute(stmt)).scalar_one_or_none()
    if order is None:
        raise NotFound("No such keep-apart order.")
    return order


async def list_(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID | None,
                status: KeepApartStatus | None, limit: int,
                cursor: str | None) -> tuple[list[KeepApartOrder], str | None]:
    stmt = scoping.keep_apart_orders(principal)
    if participant_id:
        stmt = stmt.where((KeepApartOrder.participant_a_id == participant_id)
                          | (KeepApartOrder.participant_b_id == participant_id))
    if status:
        stmt = stmt.where(KeepApartOrder.status == status.value)
    return await keyset_page(session, stmt, KeepApartOrder.__table__.c.id, kind="keep_apart",
                             limit=limit, cursor=cursor)


# --- the rules, shared by the single-order routes and the import ----------------------------

def _check_people(people: list[Any]) -> None:
    """Both people found within the caller's scope, of one network."""
    if len(people) != 2:
        raise RuleViolation("Both participants must exist and be within your scope.",
                            code="unknown_participant",
                            errors=[{"field": "participant_ids", "message": "unknown participant",
                                     "type": "unknown_participant"}])
    if people[0].network != people[1].network:
        raise RuleViolation("A keep-apart order joins two people of the same network.",
                            code="network_mismatch")


def _clash(reopen: bool = False) -> Conflict:
    return Conflict("Another open keep-apart order exists for this pair." if reopen else
                    "An open keep-apart order exists for this pair.", code="keep_apart_exists")


def _new_order(a: uuid.UUID, b: uuid.UUID, *, reason: str, scope: str, authorised_by: str,
               external_source: str | None, external_id: str | None,
               principal: Principal) -> KeepApartOrder:
    now = utcnow()
    return KeepApartOrder(
        participant_a_id=a, participant_b_id=b, reason=reason, scope=scope,
        authorised_by=authorised_by, external_source=external_source, external_id=external_id,
        opened_at=now, opened_by=principal.actor, status_changed_at=now,
        status_changed_by=principal.actor,
    )


def set_status(order: KeepApartOrder, to: KeepApartStatus, reason: str | None,
                principal: Principal) -> None:
    now = utcnow()
    order.status = to.value
    order.status_changed_at = now
    order.status_changed_by = principal.actor
    order.status_reason = reason
    order.version += 1
    order.updated_at = now


def record(w: Writer, order: KeepApartOrder, action: str, scope: Any) -> None:
    """Audit and event of an order opened, reopened or closed."""
    w.audit(f"keep_apart.{action}", "keep_apart_order", order.id, scope.facility_id)
    w.emit("keep_apart.closed" if action == "close" else "keep_apart.opened", "keep_apart_order",
           order.id, facility_id=scope.facility_id, network=scope.network)


async def create(*, session: AsyncSession, principal: Principal,
                 data: KeepApartCreate) -> KeepApartOrder:
    a, b = ordered_pair(*data.participant_ids)
    people = (await session.execute(
        scoping.participants(principal).where(P.id.in_([a, b]))
    )).scalars().all()
    _check_people(list(people))
    existing = (await session.execute(select(func.count()).select_from(KeepApartOrder).where(
        KeepApartOrder.participant_a_id == a, KeepApartOrder.participant_b_id == b,
        KeepApartOrder.status == KeepApartStatus.open.value))).scalar_one()
    if existing:
        raise _clash()
    order = _new_order(a, b, reason=data.reason.value, scope=data.scope.value,
                       authorised_by=data.authorised_by, external_source=data.external_source,
                       external_id=data.external_id, principal=principal)
    session.add(order)
    await flush_unique(session, "An open keep-apart order exists for this pair, or the external "
                       "id is taken.", code="keep_apart_exists")
    w = Writer(session, principal)
    await pairings.end_between(session, w, a, b)
    record(w, order, "open", people[0])
    await w.commit()
    return order


async def transition(*, session: AsyncSession, principal: Principal, order_id: uuid.UUID,
                     to: KeepApartStatus, reason: str, if_match: str | None) -> KeepApartOrder:
    order = await get(session=session, principal=principal, order_id=order_id, for_update=True)
    check_version(order.version, if_match)
    if order.status == to.value:
        raise Conflict(f"The order is already {to.value}.", code=f"already_{to.value}")
    if to == KeepApartStatus.open:
        clash = (await session.execute(select(func.count()).select_from(KeepApartOrder).where(
            KeepApartOrder.participant_a_id == order.participant_a_id,
            KeepApartOrder.participant_b_id == order.participant_b_id,
            KeepApartOrder.status == KeepApartStatus.open.value))).scalar_one()
        if clash:
            raise _clash(reopen=True)
    set_status(order, to, reason, principal)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise _clash(reopen=True) from None
    a = (await session.execute(select(Participant.facility_id, Participant.network)
                               .where(Participant.id == order.participant_a_id))).one()
    w = Writer(session, principal)
    record(w, order, "reopen" if to == KeepApartStatus.open else "close", a)
    if to == KeepApartStatus.open:
        await pairings.end_between(session, w, order.participant_a_id, order.participant_b_id)
    await w.commit()
    return order


class OrderChanges:
    """Keep-apart orders upserted by the JMS's own order id (external_source, external_id),
    for a chunk of an import, by the rules of create and transition above: the chunk's
    orders, people and open pairs are loaded in four queries; a new open order, or a reopened
    one, ends the pair's pairings in this transaction."""

    def __init__(self, session: AsyncSession, principal: Principal, w: Writer) -> None:
        self.session, self.principal, self.w = session, principal, w
        self.by_key: dict[tuple[str, str], KeepApartOrder] = {}
        self.taken: set[tuple[str, str]] = set()
        self.people: dict[tuple[str, str], Any] = {}
        self.open_pairs: set[tuple[uuid.UUID, uuid.UUID]] = set()
        self._new: list[KeepApartOrder] = []
        self._opened: list[tuple[uuid.UUID, uuid.UUID]] = []

    async def load(self, rows: list[KeepApartImportRow]) -> None:
        order = KeepApartOrder.__table__.c
        external = ParticipantExternalId.__table__.c
        by_source: dict[str, set[str]] = {}
        for r in rows:
            by_source.setdefault(r.external_source, set()).add(r.external_id)
        for source, values in by_source.items():
            found = (await self.session.execute(
                scoping.keep_apart_orders(self.principal)
                .where(order.external_source == source,
                       one_of(self.session, order.external_id, values))
                .order_by(order.id).with_for_update())).scalars().all()
            self.by_key.update({(o.external_source, o.external_id): o for o in found})
            rest = values - {o.external_id for o in found}
            if rest:
                self.taken |= {(source, v) for v in (await self.session.execute(
                    select(order.external_id).where(
                        order.external_source == source,
                        one_of(self.session, order.external_id, rest)))).scalars()}
        persons: dict[str, set[str]] = {}
        for r in rows:
            for source, value in r.people():
                persons.setdefault(source, set()).add(value)
        for source, values in persons.items():
            for row in await self.session.execute(
                    scoping.participants(self.principal, P.id, P.network, P.facility_id,
                                         external.value)
                    .join(ParticipantExternalId.__table__, external.participant_id == P.id)
                    .where(external.source == source,
                           one_of(self.session, external.value, values))):
                self.people[(source, row.value)] = _Person(row.id, row.network, row.facility_id)
        ids = {p.id for p in self.people.values()}
        if ids:
            self.open_pairs = {(a, b) for a, b in await self.session.execute(
                select(order.participant_a_id, order.participant_b_id).where(
                    order.status == KeepApartStatus.open.value,
                    one_of(self.session, order.participant_a_id, ids),
                    one_of(self.session, order.participant_b_id, ids)))}

    def upsert(self, row: KeepApartImportRow) -> str:
        """"created" | "updated" | "unchanged"; raises (changing nothing) on a broken rule."""
        key = (row.external_source, row.external_id)
        found = [self.people[k] for k in row.people() if k in self.people]
        _check_people(found)
        if found[0].id == found[1].id:
            raise RuleViolation("A keep-apart order needs two different participants.",
                                code="keep_apart_same_person")
        a, b = ordered_pair(found[0].id, found[1].id)
        order = self.by_key.get(key)
        to = KeepApartStatus(row.status)
        if order is None:
            if key in self.taken:  # an order outside the caller's scope holds this id
                raise NotFound("No such keep-apart order.")
            if to == KeepApartStatus.open and (a, b) in self.open_pairs:
                raise _clash()
            order = _new_order(a, b, reason=row.reason.value, scope=row.scope.value,
                               authorised_by=row.authorised_by, external_source=key[0],
                               external_id=key[1], principal=self.principal)
            self._new.append(order)
            self.by_key[key] = order
            record(self.w, order, "open", found[0])
            if to == KeepApartStatus.open:
                self.open_pairs.add((a, b))
                self._opened.append((a, b))
            else:  # the JMS's history: an order that was already closed there
                set_status(order, to, row.status_reason, self.principal)
                order.version = 1
                record(self.w, order, "close", found[0])
            return "created"
        if (order.participant_a_id, order.participant_b_id) != (a, b):
            raise RuleViolation("An order's two people cannot change; close it and open another.",
                                code="keep_apart_people_changed",
                                errors=[{"field": "person_a", "message": "other people",
                                         "type": "keep_apart_people_changed"}])
        fields = {"reason": row.reason.value, "scope": row.scope.value,
                  "authorised_by": row.authorised_by}
        changed = {k: v for k, v in fields.items() if getattr(order, k) != v}
        moved = order.status != to.value
        if moved and to == KeepApartStatus.open and (a, b) in self.open_pairs:
            raise _clash(reopen=True)
        if not changed and not moved:
            return "unchanged"
        for k, v in changed.items():
            setattr(order, k, v)
        if moved:
            set_status(order, to, row.status_reason or "imported", self.principal)
            record(self.w, order, "reopen" if to == KeepApartStatus.open else "close", found[0])
            if to == KeepApartStatus.open:
                self.open_pairs.add((a, b))
                self._opened.append((a, b))
            else:
                self.open_pairs.discard((a, b))
        else:
            order.version += 1
            order.updated_at = utcnow()
        if changed:
            self.w.audit("keep_apart.update", "keep_apart_order", order.id, found[0].facility_id)
        return "updated"

    async def flush(self) -> None:
        self.session.add_all(self._new)
        try:
            await self.session.flush()
        except IntegrityError:
            await self.session.rollback()
            raise _clash() from None
        await pairings.end_between_pairs(self.session, self.w, self._opened)
        self._new.clear()
        self._opened.clear()


@dataclass(frozen=True, slots=True)
class _Person:
    id: uuid.UUID
    network: str
    facility_id: uuid.UUID

"""Webhook endpoints and their delivery log: registration (URL guard, event types the owner
may see), secrets (shown once, encrypted at rest, rotation with an overlap), redelivery.

An admin manages every endpoint; anyone else (an integration client) only their own: another
owner's endpoint does not exist for them (404). Sending is `webhook_delivery` (the worker)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import ApiClient, OutboxEvent
from app.models.common import Role
from app.models.webhook import (
    AttemptRead,
    DeliveryRead,
    DeliveryStatus,
    EndpointCreate,
    EndpointStatus,
    EndpointUpdate,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.security.notes import NoteCipher
from app.security.principal import Principal
from app.services import events, outbound
from app.services.common import check_version
from app.services.pagination import keyset_page
from app.services.writer import Writer

WE = WebhookEndpoint.__table__.c
WD = WebhookDelivery.__table__.c
WA = WebhookAttempt.__table__.c
OE = OutboxEvent.__table__.c


# --- secrets -----------------------------------------------------------------------------

def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def secret_aad(endpoint_id: uuid.UUID) -> bytes:
    return endpoint_id.bytes + b"webhook-secret"


def seal(cipher: NoteCipher, ep: WebhookEndpoint, current: str, previous: str | None) -> None:
    blob = json.dumps({"current": current, "previous": previous})
    ep.secret_ciphertext, ep.secret_wrapped_key, ep.secret_key_id = cipher.encrypt(
        blob, secret_aad(ep.id))


def signing_secrets(cipher: NoteCipher, ep: Any, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    blob = json.loads(cipher.decrypt(ep.secret_ciphertext, ep.secret_wrapped_key, ep.secret_key_id,
                                     secret_aad(ep.id)))
    out = [blob["current"]]
    expires = ep.previous_secret_expires_at
    if blob.get("previous") and expires is not None and now < expires:
        out.append(blob["previous"])
    return out


# --- endpoints ---------------------------------------------------------------------------

def endpoints(principal: Principal) -> Any:
    return select(WebhookEndpoint).where(events.owned_endpoints(principal))


async def _refuse_url(url: str, settings: Settings) -> None:
    try:
        await outbound.resolve(url, settings)
    except outbound.TargetRefused as exc:
        raise RuleViolation(exc.message, code=exc.code, errors=[
            {"field": "url", "message": exc.message, "type": exc.code}]) from None


async def _owner(session: AsyncSession, principal: Principal,
                 client_id: uuid.UUID | None) -> tuple[str, uuid.UUID]:
    if client_id is None:
        return principal.kind, principal.id
    if principal.role != Role.admin:
        raise RuleViolation("Only an admin registers an endpoint for another client.",
                            code="owner_not_allowed", errors=[
                                {"field": "client_id", "message": "admins only",
                                 "type": "owner_not_allowed"}])
    row = (await session.execute(select(ApiClient.active, ApiClient.scopes)
                                 .where(ApiClient.id == client_id))).first()
    if row is None or not row.active:
        raise RuleViolation("No such active API client.", code="unknown_client", errors=[
            {"field": "client_id", "message": "no such active client", "type": "unknown_client"}])
    if "webhooks:read" not in row.scopes:
        raise RuleViolation("The client does not hold webhooks:read, so it may not receive "
                            "webhooks.", code="client_lacks_webhooks_scope", errors=[
                                {"field": "client_id", "message": "lacks webhooks:read",
                                 "type": "client_lacks_webhooks_scope"}])
    return "client", client_id


async def _check_types(session: AsyncSession, owner: tuple[str, uuid.UUID],
                       types: list[str]) -> list[str]:
    events.check_types(types)
    found = await events.owner_principals(session, {owner})
    visible = set(events.visible_types(found[owner])) if owner in found else set()
    refused = sorted(set(types) - visible)
    if refused:
        raise RuleViolation("The endpoint's owner may not see these event types (their scopes "
                            "do not cover the records).", code="event_type_not_allowed",
                            errors=[{"field": "event_types", "message": f"not allowed: {t}",
                                     "type": "event_type_not_allowed"} for t in refused])
    return sorted(set(types))


async def create(*, session: AsyncSession, principal: Principal, settings: Settings,
                 cipher: NoteCipher, data: EndpointCreate) -> tuple[WebhookEndpoint, str]:
    await _refuse_url(data.url, settings)
    owner = await _owner(session, principal, data.client_id)
    types = await _check_types(session, owner, data.event_types)
    secret = new_secret()
    ep = WebhookEndpoint(owner_kind=owner[0], owner_id=owner[1], url=data.url,
                         description=data.description, event_types=types,
                         secret_ciphertext=b"", secret_wrapped_key=b"", secret_key_id="",
                         # events from now on; history is in the feed
                         last_event_id=await events.newest_id(session), created_by=principal.actor)
    seal(cipher, ep, secret, None)
    session.add(ep)
    await session.flush()
    w = Writer(session, principal)
    w.audit("webhook_endpoint.create", "webhook_endpoint", ep.id)
    await w.commit()
    return ep, secret


async def get(*, session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID,
              for_update: bool = False) -> WebhookEndpoint:
    stmt = endpoints(principal).where(WE.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    ep = (await session.execute(stmt)).scalar_one_or_none()
    if ep is None:
        raise NotFound("No such webhook endpoint.")
    return ep


async def list_(*, session: AsyncSession, principal: Principal, status: EndpointStatus | None,
                limit: int, cursor: str | None) -> tuple[list[WebhookEndpoint], str | None]:
    stmt = endpoints(principal)
    if status is not None:
        stmt = stmt.where(WE.status == status.value)
    return await keyset_page(session, stmt, WE.id, kind="webhook_endpoint", limit=limit,
                             cursor=cursor)


async def update_(*, session: AsyncSession, principal: Principal, settings: Settings,
                  endpoint_id: uuid.UUID, data: EndpointUpdate,
                  if_match: str | None) -> WebhookEndpoint:
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id, for_update=True)
    check_version(ep.version, if_match)
    now = utcnow()
    if data.url is not None:
        await _refuse_url(data.url, settings)
        ep.url = data.url
    if data.event_types is not None:
        ep.event_types = await _check_types(session, (ep.owner_kind, ep.owner_id),
                                            data.event_types)
    if "description" in data.model_fields_set:
        ep.description = data.description
    w = Writer(session, principal)
    if data.status == EndpointStatus.disabled and ep.status == EndpointStatus.active.value:
        disable(w, ep, "manual", now)
    elif data.status == EndpointStatus.active and ep.status == EndpointStatus.disabled.value:
        # Re-enabled: what was queued resumes now; events of the disabled time are not
        # sent (they are in the feed).
        ep.status, ep.disabled_reason, ep.disabled_at = EndpointStatus.active.value, None, None
        ep.consecutive_failures, ep.retry_at = 0, None
        ep.last_event_id = await events.newest_id(session)
        await session.execute(update(WebhookDelivery).where(
            WD.endpoint_id == ep.id, WD.status == DeliveryStatus.pending.value)
            .values(next_attempt_at=now, lease_until=None))
        w.audit("webhook_endpoint.enable", "webhook_endpoint", ep.id)
    ep.version += 1
    ep.updated_at = now
    w.audit("webhook_endpoint.update", "webhook_endpoint", ep.id)
    await w.commit()
    return ep


def disable(w: Writer, ep: WebhookEndpoint, reason: str, now: datetime) -> None:
    """Disables the endpoint and tells the admins (the event carries no facility: it is seen
    by admins and by the endpoint's owner)."""
    ep.status, ep.disabled_reason, ep.disabled_at = EndpointStatus.disabled.value, reason, now
    ep.version += 1
    ep.updated_at = now
    w.audit("webhook_endpoint.disable", "webhook_endpoint", ep.id)
    w.emit("webhook_endpoint.disabled", "webhook_endpoint", ep.id, data={"reason": reason})


async def rotate_secret(*, session: AsyncSession, principal: Principal, cipher: NoteCipher,
                        endpoint_id: uuid.UUID, overlap_hours: int,
                        ) -> tuple[WebhookEndpoint, str]:
    ep = await get(session=session, principal=principal, endpoint_id=endpoint_id, for_update=True)
    now = utcnow()
    current = signing_secrets(cipher, ep, now)[0]
    secret = new_secret()
    seal(cipher, ep, secret, current if overlap_hours else None)
    ep.previous_secret_expires_at = now + timedelta(hours=overlap_hours) if overlap_hours else None
    ep.version += 1
    ep.updated_at = now
    w = Writer(session, principal)
    w.audit("webhook_endpoint.rotate_secret", "webhook_endpoint", ep.id)
    await w.commit()
    return ep, secret


# --- deliveries --------------------------------------------------------------------------

def _deliveries(principal: Principal) -> Any:
    return (select(WebhookDelivery.__table__, OE.event_id.label("event_uuid"))
            .join(OutboxEvent.__table__, OE.id == WD.event_id)
            .where(WD.endpoint_id.in_(select(WE.id).where(events.owned_endpoints(principal)))))


async def _views(session: AsyncSession, rows: list[Any]) -> list[DeliveryRead]:
    """Rows with their attempts (one query for the whole page)."""
    by_delivery: dict[uuid.UUID, list[AttemptRead]] = {r.id: [] for r in rows}
    if rows:
        for a in (await session.execute(select(WebhookAttempt.__table__)
                                        .where(WA.delivery_id.in_(list(by_delivery)))
                                        .order_by(WA.attempted_at, WA.id))).all():
            by_delivery[a.delivery_id].append(AttemptRead.model_validate(a))
    return [DeliveryRead(
        id=r.id, endpoint_id=r.endpoint_id, event_id=r.event_uuid, event_type=r.event_type,
        status=DeliveryStatus(r.status), manual=r.manual, attempts=r.attempts,
        next_attempt_at=r.next_attempt_at if r.status == DeliveryStatus.pending.value else None,
        last_status_code=r.last_status_code, last_error=r.last_error,
        delivered_at=r.delivered_at, created_at=r.created_at, attempt_log=by_delivery[r.id])
        for r in rows]


async def list_deliveries(*, session: AsyncSession, principal: Principal,
                          endpoint_id: uuid.UUID | None, status: DeliveryStatus | None,
                          event_type: str | None, since: datetime | None,
                          until: datetime | None, limit: int, cursor: str | None,
                          ) -> tuple[list[DeliveryRead], str | None]:
    stmt = _deliveries(principal)
    if endpoint_id is not None:
        stmt = stmt.where(WD.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WD.status == status.value)
    if event_type is not None:
        stmt = stmt.where(WD.event_type == event_type)
    if since is not None:
        stmt = stmt.where(WD.created_at >= since)
    if until is not None:
        stmt = stmt.where(WD.created_at < until)
    rows, nxt = await keyset_page(session, stmt, WD.id, kind="webhook_delivery", limit=limit,
                                  cursor=cursor, rows=True)
    return await _views(session, rows), nxt


async def get_delivery(*, session: AsyncSession, principal: Principal,
                       delivery_id: uuid.UUID) -> DeliveryRead:
    row = (await session.execute(_deliveries(principal).where(WD.id == delivery_id))).first()
    if row is None:
        raise NotFound("No such webhook delivery.")
    return (await _views(session, [row]))[0]


async def redeliver(*, session: AsyncSession, principal: Principal,
                    delivery_id: uuid.UUID) -> DeliveryRead:
    """Queues one more attempt at once, outside the endpoint's event order."""
    visible = select(WE.id).where(events.owned_endpoints(principal))
    d = (await session.execute(select(WebhookDelivery).where(
        WD.id == delivery_id, WD.endpoint_id.in_(visible)).with_for_update())).scalar_one_or_none()
    if d is None:
        raise NotFound("No such webhook delivery.")
    if d.status == DeliveryStatus.pending.value:
        raise Conflict("This delivery is still queued.", code="delivery_pending")
    status = (await session.execute(select(WE.status).where(WE.id == d.endpoint_id))).scalar_one()
    if status != EndpointStatus.active.value:
        raise Conflict("The endpoint is disabled; enable it first.", code="endpoint_disabled")
    now = utcnow()
    d.status, d.manual, d.next_attempt_at, d.lease_until = (DeliveryStatus.pending.value, True,
                                                            now, None)
    d.updated_at = now
    w = Writer(session, principal)
    w.audit("webhook_delivery.redeliver", "webhook_delivery", d.id)
    await w.commit()
    return await get_delivery(session=session, principal=principal, delivery_id=delivery_id)

"""/v1/webhook-endpoints, /v1/webhook-deliveries and the /v1/events feed.

An admin manages every endpoint; an integration client only its own (another's is 404). The
feed and the webhooks carry the same thin events, filtered by one visibility rule."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.deps import NoteCipherDep, Principal, SessionDep, SettingsDep, require
from app.models.common import Page
from app.models.webhook import (
    DeliveryRead,
    DeliveryStatus,
    EndpointCreate,
    EndpointRead,
    EndpointStatus,
    EndpointUpdate,
    EndpointWithSecret,
    EventPage,
    EventRead,
    RotateSecret,
)
from app.routers.common import AUTHED, DEFAULT, Cursor, IfMatch, Instant, Limit, problems, set_etag
from app.services import events as events_svc
from app.services import webhooks as svc

endpoints = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"], responses=AUTHED)
deliveries = APIRouter(prefix="/v1/webhook-deliveries", tags=["webhooks"], responses=AUTHED)
feed = APIRouter(prefix="/v1/events", tags=["events"], responses=AUTHED)


def _with_secret(ep: object, secret: str, response: Response) -> EndpointWithSecret:
    response.headers["Cache-Control"] = "no-store"
    set_etag(response, ep.version)  # type: ignore[attr-defined]
    return EndpointWithSecret(**EndpointRead.model_validate(ep).model_dump(), secret=secret)


@endpoints.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointWithSecret)
async def create_webhook_endpoint(body: EndpointCreate, session: SessionDep,
                                  settings: SettingsDep, cipher: NoteCipherDep,
                                  response: Response,
                                  principal: Principal = require("webhooks:write"),
                                  ) -> EndpointWithSecret:
    """Registers an endpoint. The signing secret (`whsec_...`) is in this response only.
    Production: https only, to public addresses. Event types must be ones the owner's scopes
    cover (422 `event_type_not_allowed`)."""
    ep, secret = await svc.create(session=session, principal=principal,
                                  settings=settings, cipher=cipher, data=body)
    response.headers["Location"] = f"/v1/webhook-endpoints/{ep.id}"
    return _with_secret(ep, secret, response)


@endpoints.get("", response_model=Page[EndpointRead])
async def list_webhook_endpoints(session: SessionDep,
                                 principal: Principal = require("webhooks:read"),
                                 limit: Limit = DEFAULT, cursor: Cursor = None,
                                 status: EndpointStatus | None = None) -> Page[EndpointRead]:
    rows, nxt = await svc.list_(session=session, principal=principal, status=status,
                                limit=limit, cursor=cursor)
    return Page(items=[EndpointRead.model_validate(e) for e in rows], next_cursor=nxt)


@endpoints.get("/{endpoint_id}", response_model=EndpointRead, responses=problems(404))
async def get_webhook_endpoint(endpoint_id: uuid.UUID, session: SessionDep, response: Response,
                               principal: Principal = require("webhooks:read")) -> EndpointRead:
    ep = await svc.get(session=session, principal=principal, endpoint_id=endpoint_id)
    set_etag(response, ep.version)
    return EndpointRead.model_validate(ep)


@endpoints.patch("/{endpoint_id}", response_model=EndpointRead, responses=problems(404, 412))
async def update_webhook_endpoint(endpoint_id: uuid.UUID, body: EndpointUpdate,
                                  session: SessionDep, settings: SettingsDep, response: Response,
                                  if_match: IfMatch = None,
                                  principal: Principal = require("webhooks:write"),
                                  ) -> EndpointRead:
    """Change the URL, event types, description; `status` disables or re-enables (queued
    deliveries resume; events of the disabled time are not sent: read them from the feed)."""
    ep = await svc.update_(session=session, principal=principal,
                           settings=settings, endpoint_id=endpoint_id,
                           data=body, if_match=if_match)
    set_etag(response, ep.version)
    return EndpointRead.model_validate(ep)


@endpoints.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret,
                responses=problems(404))
async def rotate_webhook_secret(endpoint_id: uuid.UUID, body: RotateSecret, session: SessionDep,
                                cipher: NoteCipherDep, response: Response,
                                principal: Principal = require("webhooks:write"),
                                ) -> EndpointWithSecret:
    """A new secret (in this response only). For `overlap_hours` the old one signs too: both
    signatures are sent in `webhook-signature`, space-separated."""
    ep, secret = await svc.rotate_secret(session=session, principal=principal,
                                         cipher=cipher,
                                         endpoint_id=endpoint_id, overlap_hours=body.overlap_hours)
    return _with_secret(ep, secret, response)


@deliveries.get("", response_model=Page[DeliveryRead])
async def list_webhook_deliveries(
    session: SessionDep, principal: Principal = require("webhooks:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, endpoint_id: uuid.UUID | None = None,
    status: DeliveryStatus | None = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    since: Instant | None = None, until: Instant | None = None,
) -> Page[DeliveryRead]:
    """Each delivery with its attempts (status code, duration, error class), oldest first."""
    rows, nxt = await svc.list_deliveries(session=session, principal=principal,
                                          endpoint_id=endpoint_id, status=status,
                                          event_type=event_type, since=since, until=until,
                                          limit=limit, cursor=cursor)
    return Page(items=rows, next_cursor=nxt)


@deliveries.get("/{delivery_id}", response_model=DeliveryRead, responses=problems(404))
async def get_webhook_delivery(delivery_id: uuid.UUID, session: SessionDep,
                               principal: Principal = require("webhooks:read")) -> DeliveryRead:
    return await svc.get_delivery(session=session, principal=principal, delivery_id=delivery_id)


@deliveries.post("/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
                 response_model=DeliveryRead, responses=problems(404, 409))
async def redeliver_webhook(delivery_id: uuid.UUID, session: SessionDep,
                            principal: Principal = require("webhooks:write")) -> DeliveryRead:
    """Queues one more attempt now (outside the endpoint's event order). 409 while the
    delivery is still queued or the endpoint is disabled."""
    return await svc.redeliver(session=session, principal=principal, delivery_id=delivery_id)


@feed.get("", response_model=EventPage)
async def list_events(
    session: SessionDep, principal: Principal = require("events:read"),
    after: Annotated[str | None, Query(max_length=512, description="next_cursor of the "
                                       "previous call; omitted: from the beginning")] = None,
    types: Annotated[str | None, Query(max_length=2000, description="Comma-separated event "
                                       "types")] = None,
    limit: Limit = DEFAULT,
) -> EventPage:
    """The events you may see (your scopes, facilities and networks), oldest first, the same
    ones webhooks carry. Keep `next_cursor` and poll with it: it survives restarts.

    A record event needs the read scope of its record (`participant.*`: `participants:read`,
    `pairing.*`: `pairings:read`...). An admin holds no record scope and belongs to no network
    (no confidential content): their feed carries the events of what they manage, every
    webhook endpoint's (`webhook_endpoint.disabled`), and never a record event."""
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    items, nxt = await events_svc.feed(session=session, principal=principal, after=after,
                                       types=wanted, limit=limit)
    return EventPage(items=[EventRead.model_validate(i) for i in items], next_cursor=nxt)

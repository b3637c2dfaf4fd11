"""/v1/keep-apart-orders: security information, never readable by peer supporters."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.deps import Principal, SessionDep, require
from app.models.common import Page
from app.models.keep_apart import (
    KeepApartCreate,
    KeepApartRead,
    KeepApartStatus,
    KeepApartTransition,
)
from app.routers.common import AUTHED, DEFAULT, Cursor, IfMatch, Limit, problems, set_etag
from app.services import keep_aparts as svc

router = APIRouter(prefix="/v1/keep-apart-orders", tags=["keep-apart orders"], responses=AUTHED)


def _out(response: Response, order: object) -> KeepApartRead:
    read = KeepApartRead.of(order)  # type: ignore[arg-type]
    set_etag(response, read.version)
    return read


@router.get("", response_model=Page[KeepApartRead])
async def list_keep_apart_orders(session: SessionDep,
                                 principal: Principal = require("keep_apart:read"),
                                 limit: Limit = DEFAULT, cursor: Cursor = None,
                                 participant_id: uuid.UUID | None = None,
                                 status: KeepApartStatus | None = None) -> Page[KeepApartRead]:
    rows, nxt = await svc.list_(session=session, principal=principal,
                                participant_id=participant_id, status=status, limit=limit,
                                cursor=cursor)
    return Page(items=[KeepApartRead.of(r) for r in rows], next_cursor=nxt)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeepApartRead,
             responses=problems(409))
async def create_keep_apart_order(body: KeepApartCreate, session: SessionDep, response: Response,
                                  principal: Principal = require("keep_apart:write"),
                                  ) -> KeepApartRead:
    order = await svc.create(session=session, principal=principal, data=body)
    response.headers["Location"] = f"/v1/keep-apart-orders/{order.id}"
    return _out(response, order)


@router.get("/{order_id}", response_model=KeepApartRead, responses=problems(404))
async def get_keep_apart_order(order_id: uuid.UUID, session: SessionDep, response: Response,
                               principal: Principal = require("keep_apart:read"),
                               ) -> KeepApartRead:
    return _out(response, await svc.get(session=session, principal=principal, order_id=order_id))


@router.post("/{order_id}/close", response_model=KeepApartRead, responses=problems(404, 409, 412))
async def close_keep_apart_order(order_id: uuid.UUID, body: KeepApartTransition,
                                 session: SessionDep, response: Response,
                                 if_match: IfMatch = None,
                                 principal: Principal = require("keep_apart:write"),
                                 ) -> KeepApartRead:
    order = await svc.transition(session=session, principal=principal, order_id=order_id,
                                 to=KeepApartStatus.closed, reason=body.reason, if_match=if_match)
    return _out(response, order)


@router.post("/{order_id}/reopen", response_model=KeepApartRead,
             responses=problems(404, 409, 412))
async def reopen_keep_apart_order(order_id: uuid.UUID, body: KeepApartTransition,
                                  session: SessionDep, response: Response,
                                  if_match: IfMatch = None,
                                  principal: Principal = require("keep_apart:write"),
                                  ) -> KeepApartRead:
    order = await svc.transition(session=session, principal=principal, order_id=order_id,
                                 to=KeepApartStatus.open, reason=body.reason, if_match=if_match)
    return _out(response, order)

"""/v1/on-call (who is on call now, per level, and the levels with nobody), /v1/on-call-shifts
and /v1/on-call-overrides (the rosters), /v1/escalation-notifications (the pages: what a paging
gateway reads, and the paged person's acknowledgement)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.deps import Principal, SessionDep, require
from app.models.common import Network, Page
from app.models.notification import NotificationRead
from app.models.roster import (
    OnCallRead,
    OverrideCreate,
    OverrideRead,
    ShiftCreate,
    ShiftRead,
    ShiftUpdate,
)
from app.routemarks import CrisisWorkflow
from app.routers.common import (
    AUTHED,
    DEFAULT,
    Cursor,
    DateTimeText,
    IfMatch,
    Limit,
    problems,
    set_etag,
)
from app.services.escalations import paging
from app.services.rosters import on_call, use_cases

board = APIRouter(prefix="/v1/on-call", tags=["on-call rosters"], responses=AUTHED)
shifts = APIRouter(prefix="/v1/on-call-shifts", tags=["on-call rosters"], responses=AUTHED)
overrides = APIRouter(prefix="/v1/on-call-overrides", tags=["on-call rosters"],
                      responses=AUTHED)
pages = APIRouter(prefix="/v1/escalation-notifications", tags=["escalations"],
                  responses=AUTHED)


def _etag(response: Response, record: Any) -> Any:
    set_etag(response, record.version)
    return record


@board.get("", response_model=OnCallRead, responses=problems(404))
async def get_on_call(
    session: SessionDep, facility_id: uuid.UUID,
    principal: Principal = require("rosters:read"),
    network: Annotated[Network | None, Query(description="Default: your network, if you have "
                                                         "one only")] = None,
    at: Annotated[datetime | None, DateTimeText, Query(description="An instant with its UTC offset; "
                                                     "default now")] = None,
) -> OnCallRead:
    """Who holds each level of the facility's escalation chain at `at`, with display names, and
    the levels with nobody on call (`unstaffed`: each one an alert). Shifts are resolved in the
    facility's timezone (wall-clock shifts across DST changes); an override replaces the
    level's shift holders for its window."""
    return await on_call.board(session=session, principal=principal, facility_id=facility_id,
                               network=network, at=at)


@shifts.get("", response_model=Page[ShiftRead])
async def list_on_call_shifts(
    session: SessionDep, principal: Principal = require("rosters:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, facility_id: uuid.UUID | None = None,
    network: Network | None = None, level: Annotated[str | None, Query(max_length=64)] = None,
    user_id: uuid.UUID | None = None,
) -> Page[ShiftRead]:
    """Coordinators and admins: every shift of their facilities (and networks); anyone else:
    their own shifts."""
    rows, nxt = await use_cases.list_shifts(session=session, principal=principal,
                                            facility_id=facility_id, network=network,
                                            level=level, user_id=user_id, limit=limit,
                                            cursor=cursor)
    return Page(items=[ShiftRead.model_validate(r) for r in rows], next_cursor=nxt)


@shifts.post("", status_code=status.HTTP_201_CREATED, response_model=ShiftRead)
async def create_on_call_shift(body: ShiftCreate, session: SessionDep, response: Response,
                               principal: Principal = require("rosters:write")) -> Any:
    """A recurring shift: the level's holder on the given local weekdays from `start_time`, for
    `duration_minutes` of wall-clock time. The holder must be an active account whose role and
    facilities fit the level (422 `unknown_level`, `holder_inactive`, `holder_role`,
    `holder_network`, `holder_facility`, `unknown_user`)."""
    shift = await use_cases.create_shift(session=session, principal=principal, data=body)
    response.headers["Location"] = f"/v1/on-call-shifts/{shift.id}"
    return _etag(response, shift)


@shifts.get("/{shift_id}", response_model=ShiftRead, responses=problems(404))
async def get_on_call_shift(shift_id: uuid.UUID, session: SessionDep, response: Response,
                            principal: Principal = require("rosters:read")) -> Any:
    return _etag(response, await use_cases.get_shift(session=session, principal=principal,
                                                     shift_id=shift_id))


@shifts.patch("/{shift_id}", response_model=ShiftRead, responses=problems(404, 412))
async def update_on_call_shift(shift_id: uuid.UUID, body: ShiftUpdate, session: SessionDep,
                               response: Response, if_match: IfMatch = None,
                               principal: Principal = require("rosters:write")) -> Any:
    """Change a shift, or end it by setting `valid_until` (nothing is deleted)."""
    return _etag(response, await use_cases.update_shift(
        session=session, principal=principal, shift_id=shift_id, data=body, if_match=if_match))


@overrides.get("", response_model=Page[OverrideRead])
async def list_on_call_overrides(
    session: SessionDep, principal: Principal = require("rosters:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, facility_id: uuid.UUID | None = None,
    network: Network | None = None,
    ends_after: Annotated[datetime | None, DateTimeText, Query(description="Only overrides ending after "
                                                             "this instant")] = None,
) -> Page[OverrideRead]:
    rows, nxt = await use_cases.list_overrides(session=session, principal=principal,
                                               facility_id=facility_id, network=network,
                                               ends_after=ends_after, limit=limit,
                                               cursor=cursor)
    return Page(items=[OverrideRead.model_validate(r) for r in rows], next_cursor=nxt)


@overrides.post("", status_code=status.HTTP_201_CREATED, response_model=OverrideRead)
async def create_on_call_override(body: OverrideCreate, session: SessionDep,
                                  response: Response,
                                  principal: Principal = require("rosters:write")) -> Any:
    """For its window (UTC), the override's person holds the level instead of the shift
    holders (several overrides in force at one level: all their people). The same holder rules
    as a shift."""
    override = await use_cases.create_override(session=session, principal=principal, data=body)
    response.headers["Location"] = f"/v1/on-call-overrides/{override.id}"
    return _etag(response, override)


@overrides.get("/{override_id}", response_model=OverrideRead, responses=problems(404))
async def get_on_call_override(override_id: uuid.UUID, session: SessionDep,
                               response: Response,
                               principal: Principal = require("rosters:read")) -> Any:
    return _etag(response, await use_cases.get_override(session=session, principal=principal,
                                                        override_id=override_id))


@overrides.post("/{override_id}/cancel", response_model=OverrideRead,
                responses=problems(404, 409, 412))
async def cancel_on_call_override(override_id: uuid.UUID, session: SessionDep,
                                  response: Response, if_match: IfMatch = None,
                                  principal: Principal = require("rosters:write")) -> Any:
    return _etag(response, await use_cases.cancel_override(
        session=session, principal=principal, override_id=override_id, if_match=if_match))


@pages.get("/{notification_id}", response_model=NotificationRead, responses=problems(404))
async def get_escalation_notification(notification_id: uuid.UUID, session: SessionDep,
                                      response: Response,
                                      principal: Principal = require("notifications:read"),
                                      ) -> Any:
    """A page (the link of `escalation.paged`): whom to page (person id and display name), the
    level, the escalation and the facility; `status` other than `paging` means stop. Never
    clinical detail."""
    return _etag(response, await paging.get(session=session, principal=principal,
                                            notification_id=notification_id))


@pages.post("/{notification_id}/acknowledge", response_model=NotificationRead,
            responses=problems(404, 409, 412), dependencies=[CrisisWorkflow])
async def acknowledge_escalation_notification(
    notification_id: uuid.UUID, session: SessionDep, response: Response,
    if_match: IfMatch = None, principal: Principal = require("notifications:acknowledge"),
) -> Any:
    """By the person paged only (403 `not_your_page` otherwise): stops the pages of their level
    (the others at the level stand down). The escalation itself still needs acknowledging;
    acknowledging the escalation closes all its pages."""
    return _etag(response, await paging.acknowledge(
        session=session, principal=principal, notification_id=notification_id,
        if_match=if_match))

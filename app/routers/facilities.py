"""/v1/facilities and their housing units."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.deps import Principal, SessionDep, require
from app.models.common import Page
from app.models.facility import (
    FacilityCreate,
    FacilityRead,
    FacilityUpdate,
    HousingUnitCreate,
    HousingUnitRead,
)
from app.routers.common import AUTHED, DEFAULT, Cursor, IfMatch, Limit, problems, set_etag
from app.services import facilities as svc

router = APIRouter(prefix="/v1/facilities", tags=["facilities"], responses=AUTHED)


@router.get("", response_model=Page[FacilityRead])
async def list_facilities(session: SessionDep, principal: Principal = require("facilities:read"),
                          limit: Limit = DEFAULT, cursor: Cursor = None) -> Page[FacilityRead]:
    rows, nxt = await svc.list_(session=session, principal=principal, limit=limit, cursor=cursor)
    return Page(items=[FacilityRead.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FacilityRead,
             responses=problems(409))
async def create_facility(body: FacilityCreate, session: SessionDep, response: Response,
                          principal: Principal = require("facilities:write")) -> FacilityRead:
    facility = await svc.create(session=session, principal=principal, data=body)
    set_etag(response, facility.version)
    response.headers["Location"] = f"/v1/facilities/{facility.id}"
    return FacilityRead.model_validate(facility)


@router.get("/{facility_id}", response_model=FacilityRead, responses=problems(404))
async def get_facility(facility_id: uuid.UUID, session: SessionDep, response: Response,
                       principal: Principal = require("facilities:read")) -> FacilityRead:
    facility = await svc.get(session=session, principal=principal, facility_id=facility_id)
    set_etag(response, facility.version)
    return FacilityRead.model_validate(facility)


@router.patch("/{facility_id}", response_model=FacilityRead, responses=problems(404, 412))
async def update_facility(facility_id: uuid.UUID, body: FacilityUpdate, session: SessionDep,
                          response: Response, if_match: IfMatch = None,
                          principal: Principal = require("facilities:write")) -> FacilityRead:
    facility = await svc.update(session=session, principal=principal, facility_id=facility_id,
                                data=body, if_match=if_match)
    set_etag(response, facility.version)
    return FacilityRead.model_validate(facility)


@router.get("/{facility_id}/housing-units", response_model=list[HousingUnitRead],
            responses=problems(404))
async def list_housing_units(facility_id: uuid.UUID, session: SessionDep,
                             principal: Principal = require("facilities:read"),
                             ) -> list[HousingUnitRead]:
    units = await svc.list_units(session=session, principal=principal, facility_id=facility_id)
    return [HousingUnitRead.model_validate(u) for u in units]


@router.post("/{facility_id}/housing-units", status_code=status.HTTP_201_CREATED,
             response_model=HousingUnitRead, responses=problems(404, 409))
async def create_housing_unit(facility_id: uuid.UUID, body: HousingUnitCreate,
                              session: SessionDep,
                              principal: Principal = require("facilities:write"),
                              ) -> HousingUnitRead:
    unit = await svc.create_unit(session=session, principal=principal, facility_id=facility_id,
                                 data=body)
    return HousingUnitRead.model_validate(unit)

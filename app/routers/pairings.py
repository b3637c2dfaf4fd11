"""/v1/pairings: propose, activate, pause, resume, end; candidates for a recipient."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.config import Settings
from app.deps import Principal, SessionDep, SettingsDep, require
from app.models.common import Page
from app.models.pairing import (
    CandidateList,
    PairingAction,
    PairingCreate,
    PairingEnd,
    PairingHistoryEntry,
    PairingRead,
    PairingStatus,
)
from app.routers.common import AUTHED, DEFAULT, Cursor, IfMatch, Limit, problems, set_etag
from app.services import pairings as svc

router = APIRouter(prefix="/v1/pairings", tags=["pairings"], responses=AUTHED)
_MOVE = problems(404, 409, 412)


async def _one(session: Any, principal: Principal, response: Response, p: Any) -> PairingRead:
    read = await svc.one_seen_by(session, principal, p)
    set_etag(response, read.version)
    return read


@router.get("", response_model=Page[PairingRead])
async def list_pairings(session: SessionDep, principal: Principal = require("pairings:read"),
                        limit: Limit = DEFAULT, cursor: Cursor = None,
                        status: PairingStatus | None = None,
                        participant_id: uuid.UUID | None = None,
                        facility_id: uuid.UUID | None = None) -> Page[PairingRead]:
    rows, nxt = await svc.list_(session=session, principal=principal, status=status,
                                participant_id=participant_id, facility_id=facility_id,
                                limit=limit, cursor=cursor)
    return Page(items=await svc.seen_by(session, principal, rows), next_cursor=nxt)


@router.get("/candidates", response_model=CandidateList, responses=problems(404))
async def list_pairing_candidates(
    settings: SettingsDep, session: SessionDep,
    recipient_id: Annotated[uuid.UUID, Query()],
    limit: Annotated[int, Query(ge=1, le=200, description="How many of each list")] = 25,
    principal: Principal = require("pairings:write"),
) -> CandidateList:
    """Eligible supporters for the recipient, ranked (shared language, same housing unit,
    previous supporter, free caseload) with the score's parts; coordinators also see the
    ineligible ones and the rule that excludes each."""
    return await svc.candidates(session=session, settings=settings,
                                principal=principal, recipient_id=recipient_id, limit=limit)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PairingRead,
             responses=problems(404, 409))
async def propose_pairing(body: PairingCreate, settings: SettingsDep, session: SessionDep,
                          response: Response,
                          principal: Principal = require("pairings:write")) -> PairingRead:
    """Checks every eligibility rule; each refusal has its own `code` (422, or 409 for the
    caseload cap and the one-active-pairing rule)."""
    p = await svc.propose(session=session, settings=settings,
                          principal=principal, data=body)
    response.headers["Location"] = f"/v1/pairings/{p.id}"
    return await _one(session, principal, response, p)


@router.get("/{pairing_id}", response_model=PairingRead, responses=problems(404))
async def get_pairing(pairing_id: uuid.UUID, session: SessionDep, response: Response,
                      principal: Principal = require("pairings:read")) -> PairingRead:
    p = await svc.get(session=session, principal=principal, pairing_id=pairing_id)
    return await _one(session, principal, response, p)


@router.get("/{pairing_id}/history", response_model=list[PairingHistoryEntry],
            responses=problems(404))
async def get_pairing_history(pairing_id: uuid.UUID, session: SessionDep,
                              principal: Principal = require("pairings:read"),
                              ) -> list[PairingHistoryEntry]:
    """Every transition (proposed, activated, paused, resumed, ended), oldest first: who (by
    stable id and display name), when, and why. A keep-apart behind a pause or end is named
    only to callers who may read keep-apart orders; a peer supporter never reads a
    coordinator's override reason. The same wall as the pairing: 404 outside it."""
    p = await svc.get(session=session, principal=principal, pairing_id=pairing_id)
    return await svc.history(session, principal, p)


async def _move(settings: Settings, session: Any, response: Response, principal: Principal,
                pairing_id: uuid.UUID, action: str, if_match: str | None,
                **kw: Any) -> PairingRead:
    p = await svc.transition(session=session, settings=settings,
                             principal=principal, pairing_id=pairing_id, action=action,
                             if_match=if_match, **kw)
    return await _one(session, principal, response, p)


@router.post("/{pairing_id}/activate", response_model=PairingRead, responses=_MOVE)
async def activate_pairing(pairing_id: uuid.UUID, body: PairingAction, settings: SettingsDep,
                           session: SessionDep, response: Response, if_match: IfMatch = None,
                           principal: Principal = require("pairings:write")) -> PairingRead:
    return await _move(settings, session, response, principal, pairing_id, "activate", if_match,
                       reason=body.reason, override_reason=body.override_reason)


@router.post("/{pairing_id}/pause", response_model=PairingRead, responses=_MOVE)
async def pause_pairing(pairing_id: uuid.UUID, body: PairingAction, settings: SettingsDep,
                        session: SessionDep, response: Response, if_match: IfMatch = None,
                        principal: Principal = require("pairings:write")) -> PairingRead:
    return await _move(settings, session, response, principal, pairing_id, "pause", if_match,
                       reason=body.reason)


@router.post("/{pairing_id}/resume", response_model=PairingRead, responses=_MOVE)
async def resume_pairing(pairing_id: uuid.UUID, body: PairingAction, settings: SettingsDep,
                         session: SessionDep, response: Response, if_match: IfMatch = None,
                         principal: Principal = require("pairings:write")) -> PairingRead:
    return await _move(settings, session, response, principal, pairing_id, "resume", if_match,
                       reason=body.reason, override_reason=body.override_reason)


@router.post("/{pairing_id}/end", response_model=PairingRead, responses=_MOVE)
async def end_pairing(pairing_id: uuid.UUID, body: PairingEnd, settings: SettingsDep,
                      session: SessionDep, response: Response, if_match: IfMatch = None,
                      principal: Principal = require("pairings:write")) -> PairingRead:
    """Ended is terminal; a new pairing is a new record."""
    return await _move(settings, session, response, principal, pairing_id, "end", if_match,
                       end_reason=body.reason.value, reason=body.note)

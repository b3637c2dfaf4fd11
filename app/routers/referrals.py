"""/v1/referrals: refer a person for peer support (a high-risk reason opens a crisis
escalation), the coordinator's queue, and the workflow: triage, match, decline, withdraw."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import Principal, SessionDep, require
from app.errors import NotFound
from app.models import Referral
from app.models.common import Page
from app.models.referral import (
    ReferralCreate,
    ReferralDecline,
    ReferralMatch,
    ReferralRead,
    ReferralStatus,
    ReferralTriage,
    ReferralWithdraw,
)
from app.routemarks import CrisisWorkflow, rebuilt_by
from app.routers.common import AUTHED, DEFAULT, Cursor, IfMatch, Limit, problems, set_etag
from app.services import referrals as svc

router = APIRouter(prefix="/v1/referrals", tags=["referrals"], responses=AUTHED)
_MOVE = problems(404, 409, 412)


def _one(principal: Principal, response: Response, r: Any) -> ReferralRead:
    set_etag(response, r.version)
    return svc.view(principal, r)


def _created(principal: Principal, response: Response, r: Any) -> ReferralRead:
    response.headers["Location"] = f"/v1/referrals/{r.id}"
    return _one(principal, response, r)


async def _created_again(session: AsyncSession, principal: Principal, referral_id: str,
                         response: Response) -> ReferralRead:
    """A retried referral whose first attempt committed and died before answering
    (app/idempotency.py): the referral that attempt made, if the caller made it."""
    r = await session.get(Referral, uuid.UUID(referral_id))
    if r is None or r.referred_by != principal.actor:
        raise NotFound("No such referral.")
    return _created(principal, response, r)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ReferralRead,
             responses=problems(404),
             # A high-risk reason opens an escalation: crisis work, as a risk disclosure is.
             dependencies=[CrisisWorkflow, rebuilt_by("referral", _created_again)])
async def create_referral(body: ReferralCreate, session: SessionDep, response: Response,
                          principal: Principal = require("referrals:write")) -> ReferralRead:
    """Refer a person for peer support: by `participant_id`, or `external_id` (integrations:
    the JMS or EHR's id). The `source` follows from your role (a coordinator, clinician,
    officer, integration); a peer supporter refers someone they support (`peer`, the default)
    or passes on a person's own request (`self_via_peer`: anyone of their network at their
    facilities). A person you may not refer is 404; one no longer here is 422
    `person_not_present`. A high-risk reason (`suicide_risk`, `self_harm_risk`) opens a crisis
    escalation (tier high) in the same transaction: `escalation_id`. Send an
    `Idempotency-Key`: a retry returns the first referral."""
    r = await svc.refer(session=session, principal=principal, data=body)
    return _created(principal, response, r)


@router.get("", response_model=Page[ReferralRead])
async def list_referrals(
    session: SessionDep, principal: Principal = require("referrals:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None,
    status: Annotated[list[ReferralStatus] | None, Query(
        description="One or more (repeat the parameter); all when absent")] = None,
    facility_id: uuid.UUID | None = None, participant_id: uuid.UUID | None = None,
) -> Page[ReferralRead]:
    """The queue: most urgent first, then oldest first. Coordinators and clinicians see the
    referrals of their facilities and network; anyone else the referrals they made."""
    rows, nxt = await svc.list_(session=session, principal=principal, statuses=status,
                                facility_id=facility_id, participant_id=participant_id,
                                limit=limit, cursor=cursor)
    return Page(items=[svc.view(principal, r) for r in rows], next_cursor=nxt)


@router.get("/{referral_id}", response_model=ReferralRead, responses=problems(404))
async def get_referral(referral_id: uuid.UUID, session: SessionDep, response: Response,
                       principal: Principal = require("referrals:read")) -> ReferralRead:
    r = await svc.get(session=session, principal=principal, referral_id=referral_id)
    return _one(principal, response, r)


async def _move(session: Any, response: Response, principal: Principal,
                referral_id: uuid.UUID, action: str, body: Any,
                if_match: str | None) -> ReferralRead:
    r = await svc.transition(session=session, principal=principal, referral_id=referral_id,
                             action=action, body=body, if_match=if_match)
    return _one(principal, response, r)


@router.post("/{referral_id}/triage", response_model=ReferralRead, responses=_MOVE)
async def triage_referral(referral_id: uuid.UUID, body: ReferralTriage, session: SessionDep,
                          response: Response, if_match: IfMatch = None,
                          principal: Principal = require("referrals:triage")) -> ReferralRead:
    """Coordinators: received -> triaged, optionally changing the urgency."""
    return await _move(session, response, principal, referral_id, "triage", body, if_match)


@router.post("/{referral_id}/match", response_model=ReferralRead, responses=_MOVE)
async def match_referral(referral_id: uuid.UUID, body: ReferralMatch, session: SessionDep,
                         response: Response, if_match: IfMatch = None,
                         principal: Principal = require("referrals:triage")) -> ReferralRead:
    """Coordinators: triaged -> matched, to a pairing in which the person is the recipient (not
    ended) or a group session they are on the list of (not cancelled or missed); else 422
    `match_not_for_person` or 409 `match_closed`."""
    return await _move(session, response, principal, referral_id, "match", body, if_match)


@router.post("/{referral_id}/decline", response_model=ReferralRead, responses=_MOVE)
async def decline_referral(referral_id: uuid.UUID, body: ReferralDecline, session: SessionDep,
                           response: Response, if_match: IfMatch = None,
                           principal: Principal = require("referrals:triage")) -> ReferralRead:
    """Coordinators: received or triaged -> declined, with a reason."""
    return await _move(session, response, principal, referral_id, "decline", body, if_match)


@router.post("/{referral_id}/withdraw", response_model=ReferralRead, responses=_MOVE)
async def withdraw_referral(referral_id: uuid.UUID, body: ReferralWithdraw,
                            session: SessionDep, response: Response, if_match: IfMatch = None,
                            principal: Principal = require("referrals:write")) -> ReferralRead:
    """The referrer or a coordinator: received or triaged -> withdrawn (403
    `not_the_referrer` for anyone else)."""
    return await _move(session, response, principal, referral_id, "withdraw", body, if_match)

"""/v1/escalations: raise (idempotent), acknowledge, resolve, reopen, change the tier;
the open dashboard sorted by deadline; the timeline. What each role sees is shaped by the
service (`escalations.views`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import IdempotencyKeyRequired, Principal, SessionDep, SettingsDep, require
from app.errors import NotFound
from app.models import Escalation
from app.models.common import Page
from app.models.escalation import (
    Acknowledge,
    Assign,
    EscalationCreate,
    EscalationStatus,
    EscalationView,
    ObservationCreate,
    ObservationRead,
    Reopen,
    Resolve,
    SubjectLink,
    TierChange,
    TimelineEntry,
    WatchLog,
)
from app.routemarks import CrisisWorkflow, rebuilt_by
from app.routers.common import (
    AUTHED,
    DEFAULT,
    Cursor,
    IfMatch,
    Limit,
    json_page,
    problems,
    set_etag,
)
from app.services import escalations as svc

# The crisis workflow: its writes are never rate limited for a signed-in caller.
router = APIRouter(prefix="/v1/escalations", tags=["escalations"], responses=AUTHED,
                   dependencies=[CrisisWorkflow])
_MOVE = problems(404, 409, 412)
View = EscalationView


def _one(principal: Principal, response: Response, e: Any) -> Any:
    version = svc.etag_version(principal, e)
    if version is not None:
        set_etag(response, version)
    return svc.view(principal, e)


def _raised(principal: Principal, response: Response, esc: Any) -> Any:
    """The raise's answer: the first one, and one rebuilt for a retry (`_raised_again`)."""
    response.headers["Location"] = f"/v1/escalations/{esc.id}"
    return _one(principal, response, esc)


async def _raised_again(session: AsyncSession, principal: Principal, escalation_id: str,
                        response: Response) -> Any:
    """A retried raise whose first attempt saved the escalation and died before answering
    (app/idempotency.py): the escalation that attempt raised, as the raiser may see it. Read by
    id, not through the dashboard's walls, as the raise itself answers: the key is the caller's
    and the claim names the escalation its own raise created."""
    esc = await session.get(Escalation, uuid.UUID(escalation_id))
    if esc is None or esc.raised_by != principal.actor:
        raise NotFound("No such escalation.")
    return _raised(principal, response, esc)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=View,
             responses=problems(404), dependencies=[rebuilt_by("escalation", _raised_again)])
async def raise_escalation(
    body: EscalationCreate, session: SessionDep, response: Response,
    principal: Annotated[Principal, require("escalations:raise")],
    idempotency_key: IdempotencyKeyRequired,
) -> View:
    """Never rate-limited. Give a `tier`, or the C-SSRS `screener` answers from which the tier
    is derived (answers and derivation are stored). The `Idempotency-Key` is required: a
    retried request (a lost answer, a flaky radio link) returns the escalation the first one
    raised instead of raising it twice.

    Anyone who sees a risk raises it. About a person you can see (`participant_id`, or
    `external_id` such as `{"source": "booking", "value": "..."}`): your view of the escalation,
    as always. About anyone else, or only a place (`facility_id`, `location_unit_id`,
    `location_text`; the facility may be left out when the unit implies it or you have one
    facility): a blind raise. It is recorded at that place against the person the server finds,
    or nobody yet (a coordinator or clinician links them later), and answers with an
    `EscalationReceipt` (no ETag) that is the same whatever was found: you learn nothing more
    than you gave, now or later. You may add observations to it; the people of the place work
    it. A place outside your facilities is refused (422 `unknown_facility`,
    `unknown_housing_unit`); a blind raise with no place you can name is 422 `place_required`.
    The network of an escalation about a place alone is yours when you hold one, else
    incarcerated."""
    esc = await svc.raise_(session=session, principal=principal, data=body)
    return _raised(principal, response, esc)


@router.get("", response_model=Page[View])
async def list_escalations(
    session: SessionDep, principal: Principal = require("escalations:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, status: EscalationStatus | None = None,
    sort: Annotated[str | None, Query(pattern="^deadline$",
                                      description="deadline: most urgent first")] = None,
) -> Response:
    rows, nxt = await svc.list_(session=session, principal=principal, status=status,
                                by_deadline=sort == "deadline", limit=limit, cursor=cursor)
    return json_page(rows, nxt)


@router.get("/{escalation_id}", response_model=View, responses=problems(404))
async def get_escalation(escalation_id: uuid.UUID, session: SessionDep, response: Response,
                         principal: Principal = require("escalations:read")) -> View:
    return _one(principal, response, await svc.get(session=session, principal=principal,
                                                   escalation_id=escalation_id))


@router.get("/{escalation_id}/timeline", response_model=list[TimelineEntry],
            responses=problems(404))
async def get_escalation_timeline(escalation_id: uuid.UUID, session: SessionDep,
                                  principal: Principal = require("escalations:write"),
                                  ) -> list[TimelineEntry]:
    """Every transition (with its note, outcome and plan, or reason), tier change (with its
    reason), assignment, breach and observation, in order; each actor by stable id and display
    name. Free text is clinical: its value is null for callers who are not clinicians."""
    rows = await svc.timeline(session=session, principal=principal, escalation_id=escalation_id)
    return [TimelineEntry.model_validate(r) for r in rows]


@router.post("/{escalation_id}/acknowledge", response_model=View, responses=_MOVE)
async def acknowledge_escalation(escalation_id: uuid.UUID, body: Acknowledge,
                                 session: SessionDep, response: Response,
                                 if_match: IfMatch = None,
                                 principal: Principal = require("escalations:write")) -> View:
    return _one(principal, response, await svc.transition(
        session=session, principal=principal, escalation_id=escalation_id, action="acknowledge",
        body=body, if_match=if_match))


@router.post("/{escalation_id}/resolve", response_model=View, responses=_MOVE)
async def resolve_escalation(escalation_id: uuid.UUID, body: Resolve, session: SessionDep,
                             response: Response, if_match: IfMatch = None,
                             principal: Principal = require("escalations:write")) -> View:
    """High and imminent: a clinician, an outcome, a follow-up plan and a review date."""
    return _one(principal, response, await svc.transition(
        session=session, principal=principal, escalation_id=escalation_id, action="resolve",
        body=body, if_match=if_match))


@router.post("/{escalation_id}/assign", response_model=View, responses=_MOVE)
async def assign_escalation(escalation_id: uuid.UUID, body: Assign, session: SessionDep,
                            response: Response, if_match: IfMatch = None,
                            principal: Principal = require("escalations:write")) -> View:
    """Names who is working on it: an active clinician or coordinator of the facility."""
    return _one(principal, response, await svc.assign(
        session=session, principal=principal, escalation_id=escalation_id, user_id=body.user_id,
        if_match=if_match))


@router.post("/{escalation_id}/reopen", response_model=View, responses=_MOVE)
async def reopen_escalation(escalation_id: uuid.UUID, body: Reopen, session: SessionDep,
                            response: Response, if_match: IfMatch = None,
                            principal: Principal = require("escalations:write")) -> View:
    return _one(principal, response, await svc.transition(
        session=session, principal=principal, escalation_id=escalation_id, action="reopen",
        body=body, if_match=if_match))


@router.post("/{escalation_id}/tier", response_model=View, responses=_MOVE)
async def change_escalation_tier(escalation_id: uuid.UUID, body: TierChange,
                                 session: SessionDep, response: Response,
                                 if_match: IfMatch = None,
                                 principal: Principal = require("escalations:write")) -> View:
    """Raised by anyone who may act on it; lowered only by a clinician. Recorded each time."""
    return _one(principal, response, await svc.change_tier(
        session=session, principal=principal, escalation_id=escalation_id, tier=body.tier,
        reason=body.reason, if_match=if_match))


@router.post("/{escalation_id}/subject", response_model=View, responses=_MOVE)
async def link_escalation_subject(escalation_id: uuid.UUID, body: SubjectLink,
                                  session: SessionDep, response: Response,
                                  if_match: IfMatch = None,
                                  principal: Principal = require("escalations:write")) -> View:
    """Names, or corrects, the person an escalation is about: a coordinator or clinician, with
    someone they can see (422 `unknown_participant` otherwise). The escalation's facility and
    network follow the person; the timeline keeps the change (`subject_linked`)."""
    return _one(principal, response, await svc.link_subject(
        session=session, principal=principal, escalation_id=escalation_id,
        participant_id=body.participant_id, if_match=if_match))


@router.post("/{escalation_id}/observations", status_code=status.HTTP_201_CREATED,
             response_model=ObservationRead, responses=problems(404, 409))
async def record_observation(escalation_id: uuid.UUID, body: ObservationCreate,
                             session: SessionDep, settings: SettingsDep,
                             principal: Principal = require("escalations:observe"),
                             ) -> ObservationRead:
    """Staff or peer (by the caller's role). Peer observations never count toward the staff
    cadence. `observed_at` may not be before the raise (422 `observed_before_raise`) nor ahead of
    the server's clock by more than the allowed skew (default 2 minutes; 422
    `observed_in_future`). The entry is stamped with when it was written (`recorded_at`) and by
    whom; written more than the late threshold (default 15 minutes) after `observed_at`, it is
    `late`: shown, never counted toward the cadence."""
    obs = await svc.observe(session=session, settings=settings, principal=principal,
                            escalation_id=escalation_id, observed_at=body.observed_at,
                            seen=body.seen)
    return ObservationRead.model_validate(obs)


@router.get("/{escalation_id}/watch", response_model=WatchLog, responses=problems(404))
async def get_escalation_watch(escalation_id: uuid.UUID, session: SessionDep,
                               principal: Principal = require("escalations:observe"),
                               ) -> WatchLog:
    """The watch log and every gap longer than the tier's cadence (imminent 5 min, high 15,
    moderate 30, low none) without a staff observation written on time; late entries dated
    inside a gap are listed on it."""
    return await svc.watch(session=session, principal=principal, escalation_id=escalation_id)

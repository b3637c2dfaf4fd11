"""/v1/support-sessions: one-to-one and group meetings, their notes and disclosures;
session topics; a participant's disclosure ledger; a pairing's outcomes."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from app.config import Settings
from app.deps import NoteCipherDep, Principal, SessionDep, SessionMakerDep, SettingsDep, require
from app.models.common import Page
from app.models.support_session import (
    AttendeeAdd,
    DisclosureCreate,
    DisclosureRead,
    NoteRead,
    PairingSummary,
    SessionClose,
    SessionComplete,
    SessionCreate,
    SessionKind,
    SessionRead,
    SessionStatus,
    TopicCreate,
    TopicRead,
)
from app.routemarks import CrisisWorkflow
from app.routers.common import (
    AUTHED,
    DEFAULT,
    Cursor,
    IfMatch,
    Instant,
    Limit,
    json_page,
    problems,
    set_etag,
)
from app.security.notes import NoteCipher
from app.services import support_sessions as svc

router = APIRouter(prefix="/v1/support-sessions", tags=["support sessions"], responses=AUTHED)
topics = APIRouter(prefix="/v1/session-topics", tags=["support sessions"], responses=AUTHED)
ledger = APIRouter(tags=["support sessions"], responses=AUTHED)
_MOVE = problems(404, 409, 412)


async def _one(session: Any, response: Response, s: Any) -> SessionRead:
    read = (await svc.to_reads(session, [s]))[0]
    set_etag(response, read.version)
    return read


@router.get("", response_model=Page[SessionRead])
async def list_support_sessions(
    session: SessionDep, principal: Principal = require("sessions:read"),
    limit: Limit = DEFAULT, cursor: Cursor = None, participant_id: uuid.UUID | None = None,
    pairing_id: uuid.UUID | None = None, facilitator_id: uuid.UUID | None = None,
    facility_id: uuid.UUID | None = None, kind: SessionKind | None = None,
    status: SessionStatus | None = None, scheduled_from: Instant | None = None,
    scheduled_to: Instant | None = None, updated_since: Instant | None = None,
) -> Response:
    """Never carries note text: `has_note` says whether one exists."""
    filters = {"participant_id": participant_id, "pairing_id": pairing_id,
               "facilitator_id": facilitator_id, "facility_id": facility_id, "kind": kind,
               "status": status, "scheduled_from": scheduled_from, "scheduled_to": scheduled_to,
               "updated_since": updated_since}
    rows, nxt = await svc.list_(session=session, principal=principal, filters=filters,
                                limit=limit, cursor=cursor)
    return json_page(rows, nxt)  # plain dicts in SessionRead's shape and field order


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SessionRead,
             responses=problems(404, 409))
async def schedule_support_session(body: SessionCreate, settings: SettingsDep, session: SessionDep,
                                   response: Response,
                                   principal: Principal = require("sessions:write"),
                                   ) -> SessionRead:
    """A one-to-one session needs an active pairing (422 `pairing_not_active`: proposed,
    paused or ended). A group's facilitator is a staff member (the caller, when `facilitator_id` is omitted)
    or a supporter who meets rule 2 as a pairing's supporter does: certified, `active`, in
    custody (or employed), at the group's facility, no open high or imminent escalation about
    them, record not archived (422 `facilitator_not_eligible`; the detail names the first
    rule broken, except to a peer, who is told only that they cannot lead a group now). The
    facilitator is checked again when the group is completed."""
    s = await svc.schedule(session=session, settings=settings,
                           principal=principal, data=body)
    response.headers["Location"] = f"/v1/support-sessions/{s.id}"
    return await _one(session, response, s)


@router.get("/{session_id}", response_model=SessionRead, responses=problems(404))
async def get_support_session(session_id: uuid.UUID, session: SessionDep, response: Response,
                              principal: Principal = require("sessions:read")) -> SessionRead:
    return await _one(session, response, await svc.get(session=session, principal=principal,
                                                       session_id=session_id))


@router.post("/{session_id}/attendees", response_model=SessionRead, responses=problems(404, 409))
async def add_session_attendee(session_id: uuid.UUID, body: AttendeeAdd, session: SessionDep,
                               response: Response,
                               principal: Principal = require("sessions:write")) -> SessionRead:
    """Checks the network rule and open keep-apart orders against everyone in the group.

    A coordinator adds anyone of the group's network and facility (else 404, or 422
    `network_mismatch` / `different_facility`; 422 `keep_apart`). A peer who leads the group
    adds the people they support in an active pairing, and the people a coordinator has put in
    one of the groups they lead, unless the peer has a paused or ended pairing with them (a
    coordinator can still add those). To a peer, anyone else, an unknown id, someone of another
    facility or network, and a keep-apart are all the same 422 `not_eligible`."""
    s = await svc.add_attendee(session=session, principal=principal, session_id=session_id,
                               participant_id=body.participant_id)
    return await _one(session, response, s)


async def _move(cipher: NoteCipher, settings: Settings, session: Any, response: Response,
                principal: Principal, session_id: uuid.UUID, action: str, if_match: str | None,
                **kw: Any) -> SessionRead:
    s = await svc.transition(session=session, settings=settings, cipher=cipher,
                             principal=principal, session_id=session_id, action=action,
                             if_match=if_match, **kw)
    return await _one(session, response, s)


@router.post("/{session_id}/complete", response_model=SessionRead, responses=_MOVE)
async def complete_support_session(session_id: uuid.UUID, body: SessionComplete,
                                   cipher: NoteCipherDep, settings: SettingsDep,
                                   session: SessionDep, response: Response,
                                   if_match: IfMatch = None,
                                   principal: Principal = require("sessions:write"),
                                   ) -> SessionRead:
    """Actual start, duration, location, topics, wellbeing (1-5 before/after), group
    attendance, and an optional confidential note (encrypted; never returned here).

    The people must still be able to meet: a one-to-one session's pairing is active (422
    `pairing_not_active`: a paused pairing's sessions stay scheduled and are completed once it
    resumes, or cancelled); a group's facilitator still meets rule 2 (422
    `facilitator_not_eligible`); no open keep-apart order stands between two of them (422
    `keep_apart`, or `not_eligible` to a peer)."""
    return await _move(cipher, settings, session, response, principal, session_id, "complete",
                       if_match, complete=body)


@router.post("/{session_id}/cancel", response_model=SessionRead, responses=_MOVE)
async def cancel_support_session(session_id: uuid.UUID, body: SessionClose, cipher: NoteCipherDep,
                                 settings: SettingsDep, session: SessionDep, response: Response,
                                 if_match: IfMatch = None,
                                 principal: Principal = require("sessions:write"),
                                 ) -> SessionRead:
    return await _move(cipher, settings, session, response, principal, session_id, "cancel",
                       if_match, reason=body.reason)


@router.post("/{session_id}/no-show", response_model=SessionRead, responses=_MOVE)
async def mark_support_session_no_show(session_id: uuid.UUID, body: SessionClose,
                                       cipher: NoteCipherDep, settings: SettingsDep,
                                       session: SessionDep, response: Response,
                                       if_match: IfMatch = None,
                                       principal: Principal = require("sessions:write"),
                                       ) -> SessionRead:
    return await _move(cipher, settings, session, response, principal, session_id, "no_show",
                       if_match, reason=body.reason)


@router.get("/{session_id}/note", response_model=NoteRead, responses=problems(404))
async def read_session_note(session_id: uuid.UUID, session: SessionDep, response: Response,
                            maker: SessionMakerDep, cipher: NoteCipherDep,
                            principal: Principal = require("notes:read")) -> NoteRead:
    """The note's text, for its author, or a clinician when the session is linked to a
    disclosure or escalation. Every read and every refused attempt is audited."""
    response.headers["Cache-Control"] = "no-store"
    return await svc.read_note(session=session, maker=maker, cipher=cipher, principal=principal,
                               session_id=session_id)


@router.post("/{session_id}/disclosures", status_code=status.HTTP_201_CREATED,
             dependencies=[CrisisWorkflow],  # can open an escalation
             response_model=DisclosureRead, responses=problems(404))
async def record_disclosure(session_id: uuid.UUID, body: DisclosureCreate, session: SessionDep,
                            principal: Principal = require("disclosures:write"),
                            ) -> DisclosureRead:
    """What was said in a session that must be reported, about someone in it (422
    `not_an_attendee`), to whom it was passed and when. Only from a session that was held: a
    scheduled, cancelled or no-show session is 409 `session_not_held` (complete it first; a
    risk seen now is raised at `POST /v1/escalations`, which needs no session). A suicide,
    self-harm or harm-to-others disclosure opens a high-tier crisis escalation."""
    d = await svc.record_disclosure(session=session, principal=principal, session_id=session_id,
                                    data=body)
    return DisclosureRead.model_validate(d)


@ledger.get("/v1/participants/{participant_id}/disclosures", response_model=list[DisclosureRead],
            responses=problems(404))
async def list_participant_disclosures(participant_id: uuid.UUID, session: SessionDep,
                                       principal: Principal = require("disclosures:read"),
                                       ) -> list[DisclosureRead]:
    """What left confidential sessions about this person, and to whom."""
    rows = await svc.disclosures_of(session=session, principal=principal,
                                    participant_id=participant_id)
    return [DisclosureRead.model_validate(d) for d in rows]


@ledger.get("/v1/pairings/{pairing_id}/summary", response_model=PairingSummary,
            responses=problems(404))
async def get_pairing_summary(pairing_id: uuid.UUID, session: SessionDep,
                              principal: Principal = require("pairings:read", "sessions:read"),
                              ) -> PairingSummary:
    """Sessions held and attended, average wellbeing change, days to the first session and
    since the last: computed by the database."""
    return await svc.summary(session=session, principal=principal, pairing_id=pairing_id)


@topics.get("", response_model=list[TopicRead])
async def list_session_topics(session: SessionDep,
                              principal: Principal = require("sessions:read"),
                              ) -> list[TopicRead]:
    return [TopicRead.model_validate(t) for t in await svc.list_topics(session=session)]


@topics.post("", status_code=status.HTTP_201_CREATED, response_model=TopicRead,
             responses=problems(409))
async def create_session_topic(body: TopicCreate, session: SessionDep,
                               principal: Principal = require("topics:write")) -> TopicRead:
    return TopicRead.model_validate(await svc.add_topic(session=session, principal=principal,
                                                        data=body))


"""/v1/courses, /v1/enrollments, code of conduct and certification of participants."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.config import Settings
from app.deps import Principal, SessionDep, SettingsDep, require
from app.models.common import Page
from app.models.training import (
    CertificationRead,
    ConductSign,
    ConductSignatureRead,
    CourseCreate,
    CourseRead,
    CourseUpdate,
    EnrollmentComplete,
    EnrollmentCreate,
    EnrollmentEnd,
    EnrollmentRead,
    EnrollmentStatus,
    ExpiringCertificate,
)
from app.routers.common import AUTHED, DEFAULT, Cursor, Flag, IfMatch, Limit, problems, set_etag
from app.services import certification
from app.services import training as svc

courses = APIRouter(prefix="/v1/courses", tags=["training"], responses=AUTHED)
enrollments = APIRouter(prefix="/v1/enrollments", tags=["training"], responses=AUTHED)
people = APIRouter(prefix="/v1/participants", tags=["training"], responses=AUTHED)
certs = APIRouter(prefix="/v1/certifications", tags=["training"], responses=AUTHED)


def _course(response: Response, course: object) -> CourseRead:
    read = CourseRead.model_validate(course)
    set_etag(response, read.version)
    return read


def _enrollment(response: Response, e: object) -> EnrollmentRead:
    read = EnrollmentRead.model_validate(e)
    set_etag(response, read.version)
    return read


@courses.get("", response_model=Page[CourseRead])
async def list_courses(session: SessionDep, principal: Principal = require("courses:read"),
                       limit: Limit = DEFAULT, cursor: Cursor = None,
                       active: Flag | None = None) -> Page[CourseRead]:
    rows, nxt = await svc.list_courses(session=session, principal=principal, active=active,
                                       limit=limit, cursor=cursor)
    return Page(items=[CourseRead.model_validate(r) for r in rows], next_cursor=nxt)


@courses.post("", status_code=status.HTTP_201_CREATED, response_model=CourseRead)
async def create_course(body: CourseCreate, session: SessionDep, response: Response,
                        principal: Principal = require("courses:write")) -> CourseRead:
    course = await svc.create_course(session=session, principal=principal, data=body)
    response.headers["Location"] = f"/v1/courses/{course.id}"
    return _course(response, course)


@courses.get("/{course_id}", response_model=CourseRead, responses=problems(404))
async def get_course(course_id: uuid.UUID, session: SessionDep, response: Response,
                     principal: Principal = require("courses:read")) -> CourseRead:
    return _course(response, await svc.get_course(session=session, principal=principal,
                                                  course_id=course_id))


@courses.patch("/{course_id}", response_model=CourseRead, responses=problems(404, 412))
async def update_course(course_id: uuid.UUID, body: CourseUpdate, session: SessionDep,
                        response: Response, if_match: IfMatch = None,
                        principal: Principal = require("courses:write")) -> CourseRead:
    return _course(response, await svc.update_course(
        session=session, principal=principal, course_id=course_id, data=body, if_match=if_match))


@courses.post("/{course_id}/retire", response_model=CourseRead, responses=problems(404, 412))
async def retire_course(course_id: uuid.UUID, session: SessionDep, response: Response,
                        if_match: IfMatch = None,
                        principal: Principal = require("courses:write")) -> CourseRead:
    """A retired course takes no new enrollments; its history stays."""
    return _course(response, await svc.retire_course(
        session=session, principal=principal, course_id=course_id, if_match=if_match))


@enrollments.get("", response_model=Page[EnrollmentRead])
async def list_enrollments(session: SessionDep, principal: Principal = require("training:read"),
                           limit: Limit = DEFAULT, cursor: Cursor = None,
                           participant_id: uuid.UUID | None = None,
                           course_id: uuid.UUID | None = None,
                           status: EnrollmentStatus | None = None) -> Page[EnrollmentRead]:
    rows, nxt = await svc.list_enrollments(
        session=session, principal=principal, participant_id=participant_id,
        course_id=course_id, status=status, limit=limit, cursor=cursor)
    return Page(items=[EnrollmentRead.model_validate(r) for r in rows], next_cursor=nxt)


@enrollments.post("", status_code=status.HTTP_201_CREATED, response_model=EnrollmentRead,
                  responses=problems(404, 409))
async def create_enrollment(body: EnrollmentCreate, session: SessionDep, response: Response,
                            principal: Principal = require("training:write")) -> EnrollmentRead:
    e = await svc.enroll(session=session, principal=principal, data=body)
    response.headers["Location"] = f"/v1/enrollments/{e.id}"
    return _enrollment(response, e)


@enrollments.get("/{enrollment_id}", response_model=EnrollmentRead, responses=problems(404))
async def get_enrollment(enrollment_id: uuid.UUID, session: SessionDep, response: Response,
                         principal: Principal = require("training:read")) -> EnrollmentRead:
    return _enrollment(response, await svc.get_enrollment(
        session=session, principal=principal, enrollment_id=enrollment_id))


async def _move(settings: Settings, session: SessionDep, response: Response, principal: Principal,
                enrollment_id: uuid.UUID, action: str, if_match: str | None,
                **kw: object) -> EnrollmentRead:
    e = await svc.transition(session=session, settings=settings,
                             principal=principal, enrollment_id=enrollment_id, action=action,
                             if_match=if_match, **kw)  # type: ignore[arg-type]
    return _enrollment(response, e)


_TRANSITION = problems(404, 409, 412)


@enrollments.post("/{enrollment_id}/start", response_model=EnrollmentRead, responses=_TRANSITION)
async def start_enrollment(enrollment_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                           response: Response, if_match: IfMatch = None,
                           principal: Principal = require("training:write")) -> EnrollmentRead:
    return await _move(settings, session, response, principal, enrollment_id, "start", if_match)


@enrollments.post("/{enrollment_id}/complete", response_model=EnrollmentRead,
                  responses=_TRANSITION)
async def complete_enrollment(enrollment_id: uuid.UUID, body: EnrollmentComplete,
                              settings: SettingsDep, session: SessionDep, response: Response,
                              if_match: IfMatch = None,
                              principal: Principal = require("training:write")) -> EnrollmentRead:
    return await _move(settings, session, response, principal, enrollment_id, "complete",
                       if_match, score=body.score)


@enrollments.post("/{enrollment_id}/withdraw", response_model=EnrollmentRead,
                  responses=_TRANSITION)
async def withdraw_enrollment(enrollment_id: uuid.UUID, body: EnrollmentEnd, settings: SettingsDep,
                              session: SessionDep, response: Response, if_match: IfMatch = None,
                              principal: Principal = require("training:write")) -> EnrollmentRead:
    return await _move(settings, session, response, principal, enrollment_id, "withdraw",
                       if_match, reason=body.reason)


@enrollments.post("/{enrollment_id}/fail", response_model=EnrollmentRead, responses=_TRANSITION)
async def fail_enrollment(enrollment_id: uuid.UUID, body: EnrollmentEnd, settings: SettingsDep,
                          session: SessionDep, response: Response, if_match: IfMatch = None,
                          principal: Principal = require("training:write")) -> EnrollmentRead:
    return await _move(settings, session, response, principal, enrollment_id, "fail", if_match,
                       reason=body.reason)


@people.post("/{participant_id}/code-of-conduct", status_code=status.HTTP_201_CREATED,
             response_model=ConductSignatureRead, responses=problems(404))
async def sign_code_of_conduct(participant_id: uuid.UUID, body: ConductSign, settings: SettingsDep,
                               session: SessionDep,
                               principal: Principal = require("training:write"),
                               ) -> ConductSignatureRead:
    """Records that the supporter signed this version, witnessed by the caller."""
    sig = await svc.sign_conduct(session=session, settings=settings,
                                 principal=principal, participant_id=participant_id, data=body)
    return ConductSignatureRead.model_validate(sig)


@people.get("/{participant_id}/certification", response_model=CertificationRead,
            responses=problems(404))
async def get_certification(participant_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                            principal: Principal = require("training:read"),
                            ) -> CertificationRead:
    """Derived from training: certified or not, since and until when, and what is missing."""
    return await certification.get(session=session, settings=settings,
                                   principal=principal, participant_id=participant_id)


@certs.get("/expiring", response_model=list[ExpiringCertificate])
async def list_expiring_certifications(
    settings: SettingsDep, session: SessionDep, principal: Principal = require("training:read"),
    within_days: Annotated[int, Query(ge=0, le=365)] = 30, facility_id: uuid.UUID | None = None,
) -> list[ExpiringCertificate]:
    """Supporters in scope whose certificate is valid today and ends within `within_days`."""
    return await certification.expiring(session=session, settings=settings,
                                        principal=principal, within_days=within_days,
                                        facility_id=facility_id)

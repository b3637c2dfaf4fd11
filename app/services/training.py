"""Courses (admins write), enrollments (a workflow run by the network's coordinators), and
code-of-conduct signatures. Completions and signatures that make someone certified emit
`certification.granted` in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import ConductSignature, Course, Enrollment, Participant
from app.models.training import (
    OPEN_ENROLLMENT,
    ConductSign,
    CourseCreate,
    CourseUpdate,
    EnrollmentCreate,
    EnrollmentStatus,
)
from app.security.principal import Principal
from app.security.scopes import COORDINATORS
from app.services import certification, scoping
from app.services.common import check_version, flush_unique
from app.services.pagination import keyset_page
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

_COORDINATORS = COORDINATORS
_S = EnrollmentStatus
ENROLLMENT_FLOW = table(
    Transition("start", frozenset({_S.enrolled.value}), _S.in_progress.value, _COORDINATORS),
    Transition("complete", frozenset({_S.in_progress.value}), _S.completed.value,
               _COORDINATORS),
    Transition("withdraw", frozenset({_S.enrolled.value, _S.in_progress.value}),
               _S.withdrawn.value, _COORDINATORS),
    Transition("fail", frozenset({_S.in_progress.value}), _S.failed.value, _COORDINATORS),
)

C = Course.__table__.c
E = Enrollment.__table__.c


# --- courses ---------------------------------------------------------------------------------

def _courses(principal: Principal) -> Any:
    stmt = select(Course)
    if principal.is_admin:
        return stmt  # admins manage the catalogue of both networks
    nets = [n.value for n in principal.networks]
    return stmt.where(C.network.is_(None) | C.network.in_(nets))


async def get_course(*, session: AsyncSession, principal: Principal,
                     course_id: uuid.UUID) -> Course:
    course = (await session.execute(_courses(principal).where(C.id == course_id))).scalar_one_or_none()
    if course is None:
        raise NotFound("No such course.")
    return course


async def list_courses(*, session: AsyncSession, principal: Principal, active: bool | None,
                       limit: int, cursor: str | None) -> tuple[list[Course], str | None]:
    stmt = _courses(principal)
    if active is not None:
        stmt = stmt.where(C.active.is_(active))
    return await keyset_page(session, stmt, C.id, kind="course", limit=limit, cursor=cursor)


async def create_course(*, session: AsyncSession, principal: Principal,
                        data: CourseCreate) -> Course:
    course = Course(**data.model_dump(exclude={"network"}),
                    network=data.network.value if data.network else None)
    session.add(course)
    w = Writer(session, principal)
    w.audit("course.create", "course", course.id)
    await w.commit()
    return course


async def update_course(*, session: AsyncSession, principal: Principal, course_id: uuid.UUID,
                        data: CourseUpdate, if_match: str | None) -> Course:
    course = await get_course(session=session, principal=principal, course_id=course_id)
    check_version(course.version, if_match)
    changed = {k: v for k, v in data.model_dump(exclude_unset=True).items()
               if v is not None and getattr(course, k) != v}
    if not changed:
        return course
    for k, v in changed.items():
        setattr(course, k, v)
    course.version += 1
    course.updated_at = utcnow()
    w = Writer(session, principal)
    w.audit("course.update", "course", course.id)
    await w.commit()
    return course


async def retire_course(*, session: AsyncSession, principal: Principal, course_id: uuid.UUID,
                        if_match: str | None) -> Course:
    """A retired course takes no new enrollments; its history stays."""
    course = await get_course(session=session, principal=principal, course_id=course_id)
    check_version(course.version, if_match)
    if not course.active:
        return course
    course.active = False
    course.version += 1
    course.updated_at = utcnow()
    w = Writer(session, principal)
    w.audit("course.retire", "course", course.id)
    await w.commit()
    return course


# --- enrollments -----------------------------------------------------------------------------

def _enrollments(principal: Principal) -> Any:
    """Enrollments are visible when their participant is."""
    return select(Enrollment).where(E.participant_id.in_(scoping.visible_participant_ids(principal)))


async def get_enrollment(*, session: AsyncSession, principal: Principal,
                         enrollment_id: uuid.UUID, for_update: bool = False) -> Enrollment:
    stmt = _enrollments(principal).where(E.id == enrollment_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such enrollment.")
    return found


async def list_enrollments(*, session: AsyncSession, principal: Principal,
                           participant_id: uuid.UUID | None, course_id: uuid.UUID | None,
                           status: EnrollmentStatus | None, limit: int,
                           cursor: str | None) -> tuple[list[Enrollment], str | None]:
    stmt = _enrollments(principal)
    if participant_id:
        stmt = stmt.where(E.participant_id == participant_id)
    if course_id:
        stmt = stmt.where(E.course_id == course_id)
    if status:
        stmt = stmt.where(E.status == status.value)
    return await keyset_page(session, stmt, E.id, kind="enrollment", limit=limit, cursor=cursor)


async def _participant(session: AsyncSession, principal: Principal,
                       participant_id: uuid.UUID) -> Participant:
    from app.services.participants import get

    return await get(session=session, principal=principal, participant_id=participant_id,
                     for_update=True)


async def enroll(*, session: AsyncSession, principal: Principal,
                 data: EnrollmentCreate) -> Enrollment:
    person = await _participant(session, principal, data.participant_id)
    course = await get_course(session=session, principal=principal, course_id=data.course_id)
    if not course.active:
        raise RuleViolation("This course is retired and takes no new enrollments.",
                            code="course_retired")
    if course.network is not None and course.network != person.network:
        raise RuleViolation("This course is for the other network.", code="network_mismatch")
    open_ = (await session.execute(select(func.count()).select_from(Enrollment.__table__).where(
        E.participant_id == person.id, E.course_id == course.id,
        E.status.in_(OPEN_ENROLLMENT)))).scalar_one()
    if open_:
        raise Conflict("An open enrollment in this course exists.", code="enrollment_open")
    enrollment = Enrollment(participant_id=person.id, course_id=course.id,
                            enrolled_by=principal.actor)
    session.add(enrollment)
    await flush_unique(session, "An open enrollment in this course exists.", code="enrollment_open")
    w = Writer(session, principal)
    w.audit("enrollment.create", "enrollment", enrollment.id, person.facility_id)
    await w.commit()
    return enrollment


async def transition(*, session: AsyncSession, settings: Settings, principal: Principal,
                     enrollment_id: uuid.UUID, action: str, score: float | None = None,
                     reason: str | None = None, if_match: str | None = None) -> Enrollment:
    enrollment = await get_enrollment(session=session, principal=principal,
                                      enrollment_id=enrollment_id, for_update=True)
    check_version(enrollment.version, if_match)
    target = step(ENROLLMENT_FLOW, action, enrollment.status, principal.role)
    person = await _participant(session, principal, enrollment.participant_id)
    before = await certification.state_of(session, settings, person) if action == "complete" \
        else None
    now = utcnow()
    w = Writer(session, principal)
    if target == _S.in_progress.value:
        enrollment.started_at, enrollment.started_by = now, principal.actor
    elif target == _S.completed.value:
        enrollment.completed_at, enrollment.completed_by = now, principal.actor
        enrollment.score = score
    else:
        enrollment.ended_at, enrollment.ended_by = now, principal.actor
        enrollment.end_reason = reason
    enrollment.status = target
    enrollment.version += 1
    enrollment.updated_at = now
    w.audit(f"enrollment.{action}", "enrollment", enrollment.id, person.facility_id)
    scope = {"facility_id": person.facility_id, "network": person.network}
    if target == _S.completed.value:
        w.emit("enrollment.completed", "enrollment", enrollment.id, **scope)  # type: ignore[arg-type]
        await session.flush()
        await _maybe_granted(session, settings, person, before, w)
    await w.commit()
    return enrollment


async def _maybe_granted(session: AsyncSession, settings: Settings, person: Participant,
                         before: certification.CertState | None, w: Writer) -> None:
    after = await certification.state_of(session, settings, person)
    if after.certified and (before is None or not before.certified or before.since != after.since):
        w.emit("certification.granted", "participant", person.id, facility_id=person.facility_id,
               network=person.network, data={"until": str(after.until)})


async def sign_conduct(*, session: AsyncSession, settings: Settings, principal: Principal,
                       participant_id: uuid.UUID, data: ConductSign) -> ConductSignature:
    person = await _participant(session, principal, participant_id)
    before = await certification.state_of(session, settings, person)
    signature = ConductSignature(participant_id=person.id, conduct_version=data.conduct_version,
                                 signed_on=data.signed_on or utcnow().date(),
                                 witnessed_by=principal.actor, witness_name=data.witness_name)
    session.add(signature)
    await session.flush()
    w = Writer(session, principal)
    w.audit("conduct.sign", "participant", person.id, person.facility_id)
    await _maybe_granted(session, settings, person, before, w)
    await w.commit()
    return signature

"""Candidates: the supporters a recipient could be paired with, ranked in the database.

One statement gathers every supporter's facts (certification, caseload, keep-apart, previous
supporter, crisis), decides eligibility and scores in SQL, and returns only the top `limit` of
each group with the group's size; Python shapes those rows. The eligibility expression is the
SQL form of `rules.refusals` (less the recipient's overridable one-pairing rule); the
ineligible rows' refusals are then given by `rules.refusals` itself, on the facts the
statement returned. tests/test_candidates_sql.py compares the two on varied data.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Date,
    Float,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import NotFound
from app.models import ConductSignature, Course, Enrollment
from app.models.escalation import UNRESOLVED
from app.models.keep_apart import KeepApartStatus
from app.models.pairing import HOLDING, CandidateList, PairingStatus
from app.models.training import EnrollmentStatus
from app.security.principal import Principal
from app.services import certification, scoping
from app.services.facilities import settings_of
from app.services.pairing_rules import (
    _AVAILABLE,
    _EMPLOYED,
    _IN_CUSTODY,
    _INCARCERATED,
    _STAFF,
    CRISIS_TIERS,
    ESCALATIONS,
    ORDERS,
    PAIRINGS,
    PEOPLE,
    SUPPORTER_COLUMNS,
    Facts,
    SupporterRow,
    _standing,
    refusals,
)

# The recipient's one-active-pairing rule is the same for every supporter, and a coordinator
# may override it: it leaves no supporter out.
_OVERRIDABLE = "recipient_already_paired"
_E, _C, _S = Enrollment.__table__.c, Course.__table__.c, ConductSignature.__table__.c


def cutoff(today: date, months: int) -> date:
    """The earliest start of a validity period still running today: `add_months(start,
    months) >= today` holds exactly for the starts on or after it (add_months only grows)."""
    d = certification.add_months(today, -months) - timedelta(days=4)
    while certification.add_months(d, months) < today:
        d += timedelta(days=1)
    return d


def _day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a timestamp, on both databases."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _shares_language(dialect: str) -> Any:
    """The supporter speaks one of the recipient's languages (`:langs`; a JSON list on both)."""
    if dialect == "postgresql":
        return PEOPLE.languages.op("?|")(bindparam("langs", type_=ARRAY(Text)))
    each = func.json_each(PEOPLE.languages).table_valued("value")
    return exists(select(1).select_from(each).where(
        each.c.value.in_(bindparam("langs", expanding=True))))


def ranking_statement(*, principal: Principal, recipient: Any, facility_cap: int,
                      policy: Any, today: date, limit: int, dialect: str,
                      ) -> tuple[Any, dict[str, Any]]:
    """The one statement and its parameters. The statement is built once per shape (the
    caller's wall, whether the recipient may be paired at all, has a housing unit, speaks a
    language) and cached; every value, the wall's included, is a parameter."""
    wall = scoping.participant_wall(principal)
    languages = list(recipient.languages or [])
    # The recipient's own standing is the same for every supporter.
    recipient_ok = bool(recipient.is_recipient) and not _standing("recipient", recipient)
    stmt = _ranking(dialect, wall.shape, recipient_ok, recipient.housing_unit_id is not None,
                    bool(languages))
    hours_needed = float(policy.refresher_hours)
    params: dict[str, Any] = {
        **wall.params, "r_facility": recipient.facility_id, "r_network": recipient.network,
        "rid": recipient.id, "cap": facility_cap, "hours_needed": hours_needed,
        "renewing": hours_needed > 0, "cutoff": cutoff(today, policy.validity_months),
        "lim": limit}
    if recipient.housing_unit_id is not None:
        params["unit"] = recipient.housing_unit_id
    if languages:
        params["langs"] = languages
    return stmt, params


@lru_cache(maxsize=128)
def _ranking(dialect: str, wall: frozenset[str], recipient_ok: bool, has_unit: bool,
             has_languages: bool) -> Any:
    """Every supporter of the pool with its facts, eligibility and score, the top `:lim` of
    the eligible (by total, then lighter caseload, then id) and of the ineligible (by id), each
    row with its group's size."""
    rid = bindparam("rid", type_=PEOPLE.id.type)
    network = bindparam("r_network", type_=PEOPLE.network.type)
    pool = (PEOPLE.facility_id == bindparam("r_facility", type_=PEOPLE.facility_id.type),
            PEOPLE.network == network, PEOPLE.is_supporter.is_(True),
            PEOPLE.archived_at.is_(None), PEOPLE.id != rid)
    walled = scoping.Wall("participant", wall).clauses(bound=False)
    # The pool's ids, read once (a CTE) for every fact gathered about them.
    pool_ids = select(PEOPLE.id).where(*walled, *pool).cte("pool")
    among = select(pool_ids.c.id)
    done = _E.status == EnrollmentStatus.completed.value
    required = select(_C.id).where(
        _C.required_for_certification.is_(True), _C.active.is_(True),
        _C.network.is_(None) | (_C.network == network))
    n_required = select(func.count()).select_from(required.subquery()).scalar_subquery()
    firsts = (select(_E.participant_id.label("pid"), _E.course_id,
                     func.min(_E.completed_at).label("first"))
              .where(done, _E.participant_id.in_(among), _E.course_id.in_(required))
              .group_by(_E.participant_id, _E.course_id).subquery())
    progress = (select(firsts.c.pid, func.count().label("n"),
                       func.max(firsts.c.first).label("last"))
                .group_by(firsts.c.pid).subquery())
    signed = (select(_S.participant_id.label("pid"), func.min(_S.signed_on).label("signed_on"))
              .where(_S.participant_id.in_(among)).group_by(_S.participant_id).subquery())
    # The first period's start: the later of the signature and the last first completion.
    last_day = cast(_day(progress.c.last, dialect), Date) if dialect == "postgresql" \
        else _day(progress.c.last, dialect)
    start0 = case((progress.c.last.is_(None), signed.c.signed_on),
                  (last_day > signed.c.signed_on, last_day), else_=signed.c.signed_on)
    base = (select(signed.c.pid, start0.label("start"))
            .select_from(signed.outerjoin(progress, progress.c.pid == signed.c.pid))
            .where(func.coalesce(progress.c.n, 0) >= n_required)).cte("cert_base")
    # Renewals: the refresher records in order, hours adding up within a period; reaching the
    # network's hours starts a new period on that day (`certification.period`, step by step).
    on = _day(_E.completed_at, dialect)
    on = cast(on, Date) if dialect == "postgresql" else on
    refs = (select(_E.participant_id.label("pid"), on.label("on"),
                   cast(_C.hours, Float).label("hours"),
                   cast(func.row_number().over(partition_by=_E.participant_id,
                                               order_by=(on, _C.hours)), Integer).label("n"))
            .join(Course.__table__, _C.id == _E.course_id)
            .where(done, _C.refresher.is_(True), _E.participant_id.in_(among))).cte("refs")
    hours_needed = bindparam("hours_needed", type_=Float)
    walk = select(base.c.pid, literal(0, Integer).label("n"), base.c.start.label("start"),
                  cast(literal(0.0), Float).label("hours")).cte("renewals", recursive=True)
    skip = refs.c.on <= walk.c.start
    renews = and_(bindparam("renewing", type_=Boolean), walk.c.hours + refs.c.hours >= hours_needed)
    walk = walk.union_all(
        select(walk.c.pid, refs.c.n,
               case((skip, walk.c.start), (renews, refs.c.on), else_=walk.c.start),
               case((skip, walk.c.hours), (renews, cast(literal(0.0), Float)),
                    else_=walk.c.hours + refs.c.hours))
        .select_from(walk.join(refs, and_(refs.c.pid == walk.c.pid,
                                          refs.c.n == walk.c.n + 1))))
    # A period's start only moves forward: the last start is the greatest.
    final = select(walk.c.pid, func.max(walk.c.start).label("start")) \
        .group_by(walk.c.pid).subquery()
    certified = and_(final.c.start.is_not(None),
                     final.c.start >= bindparam("cutoff", type_=Date))
    # Per supporter, by the (supporter_id, status) index: joined as a grouped set, PostgreSQL
    # misjudged its size and rescanned it per supporter.
    caseload = (select(func.count()).select_from(PAIRINGS.supporter_id.table)
                .where(PAIRINGS.supporter_id == PEOPLE.id, PAIRINGS.status.in_(HOLDING))
                .scalar_subquery())
    facility_cap = bindparam("cap", type_=Integer)
    cap = case((and_(PEOPLE.caseload_cap > 0, PEOPLE.caseload_cap < facility_cap),
                PEOPLE.caseload_cap), else_=facility_cap)
    # Each fact a set, read once and joined (not a subquery per supporter).
    apart = (select(case((ORDERS.participant_a_id == rid, ORDERS.participant_b_id),
                         else_=ORDERS.participant_a_id).label("pid"))
             .where(ORDERS.status == KeepApartStatus.open.value,
                    or_(ORDERS.participant_a_id == rid, ORDERS.participant_b_id == rid))
             .distinct().subquery("apart"))
    before = (select(PAIRINGS.supporter_id.label("pid"))
              .where(PAIRINGS.recipient_id == rid, PAIRINGS.status == PairingStatus.ended.value)
              .distinct().subquery("before"))
    crises = (select(ESCALATIONS.participant_id.label("pid"))
              .where(ESCALATIONS.participant_id.in_(among), ESCALATIONS.status.in_(UNRESOLVED),
                     ESCALATIONS.tier.in_(CRISIS_TIERS)).distinct().subquery("crises"))
    keep_apart = apart.c.pid.is_not(None)
    previous = before.c.pid.is_not(None)
    crisis = crises.c.pid.is_not(None)
    standing = and_(
        or_(PEOPLE.network != _INCARCERATED,
            func.coalesce(PEOPLE.custody_status, "") == _IN_CUSTODY),
        or_(PEOPLE.network != _STAFF,
            func.coalesce(PEOPLE.employment_status, "") == _EMPLOYED))
    eligible = and_(true() if recipient_ok else false(), standing,
                    func.coalesce(PEOPLE.supporter_availability, "") == _AVAILABLE,
                    certified, ~crisis, ~keep_apart, caseload < cap)
    shared = case((_shares_language(dialect), 3), else_=0) if has_languages else literal(0)
    same_unit = case((PEOPLE.housing_unit_id == bindparam(
        "unit", type_=PEOPLE.housing_unit_id.type), 2), else_=0) if has_unit else literal(0)
    prev = case((previous, 2), else_=0)
    facts = (select(*SUPPORTER_COLUMNS)
             .add_columns(case((eligible, 1), else_=0).label("eligible"),
                          certified.label("certified"), keep_apart.label("keep_apart"),
                          crisis.label("in_crisis"), caseload.label("caseload"),
                          cap.label("cap"), shared.label("shared_language"),
                          same_unit.label("same_housing_unit"),
                          prev.label("previous_supporter"))
             .outerjoin(final, final.c.pid == PEOPLE.id)
             .outerjoin(apart, apart.c.pid == PEOPLE.id)
             .outerjoin(before, before.c.pid == PEOPLE.id)
             .outerjoin(crises, crises.c.pid == PEOPLE.id)
             .where(*walled, *pool)).subquery("facts")
    f = facts.c
    total = f.shared_language + f.same_housing_unit + f.previous_supporter + f.cap - f.caseload
    score = case((f.eligible == 1, total), else_=0)
    load_key = case((f.eligible == 1, f.caseload), else_=0)
    ranked = select(
        facts, total.label("total"),
        func.count().over(partition_by=f.eligible).label("group_total"),
        func.row_number().over(partition_by=f.eligible,
                               order_by=(score.desc(), load_key, f.id)).label("rank"),
    ).subquery("ranked")
    return (select(ranked).where(ranked.c.rank <= bindparam("lim", type_=Integer))
            .order_by(ranked.c.eligible.desc(), ranked.c.rank))


async def candidates(*, session: AsyncSession, settings: Settings, principal: Principal,
                     recipient_id: uuid.UUID, limit: int = 25) -> CandidateList:
    """Eligible supporters for a recipient, ranked, with the score's parts; for coordinators
    also the ineligible ones and why. Three statements whatever the supporters: the
    recipient, the facility's cap, the ranking."""
    recipient = (await session.execute(scoping.participants(principal)
                                       .where(PEOPLE.id == recipient_id))).scalar_one_or_none()
    if recipient is None:
        raise NotFound("No such participant.")
    facility_cap = (await settings_of(session, recipient.facility_id))["caseload_cap"]
    dialect = session.bind.dialect.name
    stmt, params = ranking_statement(
        principal=principal, recipient=recipient, facility_cap=facility_cap,
        policy=certification._policy(settings, recipient.network), today=utcnow().date(),
        limit=limit, dialect=dialect)
    rows = (await session.execute(stmt, params)).all()
    coordinator = principal.is_coordinator
    eligible: list[dict[str, Any]] = []
    ineligible: list[dict[str, Any]] = []
    totals = {True: 0, False: 0}
    width = len(SUPPORTER_COLUMNS)
    for row in rows:
        ok = bool(row.eligible)
        totals[ok] = row.group_total
        supporter = SupporterRow(*row[:width])
        if ok:
            parts = {"shared_language": row.shared_language,
                     "same_housing_unit": row.same_housing_unit,
                     "previous_supporter": row.previous_supporter,
                     "caseload": row.cap - row.caseload, "total": row.total}
            eligible.append({"supporter_id": supporter.id,
                             "preferred_name": supporter.preferred_name, "eligible": True,
                             "caseload": row.caseload, "score": parts})
        elif coordinator:
            facts = Facts(supporter=supporter, recipient=recipient,
                          certified=bool(row.certified), keep_apart=bool(row.keep_apart),
                          caseload=row.caseload, cap=row.cap, recipient_holding=0,
                          in_crisis=bool(row.in_crisis))
            found = [r for r in refusals(facts, override=False) if r[0] != _OVERRIDABLE]
            ineligible.append({"supporter_id": supporter.id,
                               "preferred_name": supporter.preferred_name, "eligible": False,
                               "caseload": row.caseload,
                               "refusals": [{"code": c, "detail": d} for c, d, _ in found]})
    # One validation of the whole answer (much cheaper than a model per candidate).
    return CandidateList.model_validate({
        "recipient_id": recipient.id, "eligible": eligible, "eligible_total": totals[True],
        "ineligible": ineligible if coordinator else None,
        "ineligible_total": totals[False] if coordinator else None})

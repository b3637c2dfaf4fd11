"""Demo data for frontend teams (development mode only): two facilities with housing units,
one user per role with documented passwords, participants in both networks, a keep-apart order."""

from __future__ import annotations

import random
from datetime import date, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.models import (
    ConductSignature,
    Course,
    Enrollment,
    Facility,
    HousingUnit,
    KeepApartOrder,
    OnCallShift,
    Pairing,
    Participant,
    ParticipantExternalId,
    User,
)
from app.models.account import ClientCreate
from app.models.common import Role
from app.models.facility import FacilitySettings
from app.models.keep_apart import ordered_pair
from app.models.roster import Weekday
from app.security.passwords import hash_password
from app.services.accounts import create_client
from app.services.rosters.rules import is_clinical
from app.services.writer import Writer

# Development passwords, documented in the README. Never used outside development mode.
DEMO_PASSWORD = "{role}-demo-pass"

_FIRST = ["Alex", "Jordan", "Sam", "Chris", "Pat", "Robin", "Taylor", "Morgan", "Jamie", "Casey",
          "Drew", "Jesse", "Lee", "Rene", "Toni", "Kim"]
_LAST = ["Garcia", "Smith", "Johnson", "Nguyen", "Brown", "Okafor", "Miller", "Davis", "Lopez",
         "Wilson", "Khan", "Moore"]


async def load_demo(session: AsyncSession) -> str:
    if (await session.execute(select(Facility.id).where(Facility.code == "CCJ"))).first():
        return "demo data already loaded"
    rng = random.Random(7)  # noqa: S311 (demo names, not secrets)
    ccj = Facility(code="CCJ", name="County Correctional Jail", timezone="America/Chicago",
                   settings=FacilitySettings().model_dump())
    nsp = Facility(code="NSP", name="Northern State Prison", timezone="America/New_York",
                   settings=FacilitySettings(caseload_cap=4).model_dump())
    session.add_all([ccj, nsp])
    await session.flush()
    units: dict[Any, list[HousingUnit]] = {}
    for fac, codes in ((ccj, ["A1", "A2", "B1", "MED"]), (nsp, ["E", "F", "G"])):
        units[fac.id] = [HousingUnit(facility_id=fac.id, code=c, name=f"Unit {c}") for c in codes]
        session.add_all(units[fac.id])
    await session.flush()

    people: list[Participant] = []
    for i in range(36):
        fac = ccj if i % 3 else nsp
        staff = i % 6 == 5
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        supporter = i % 4 == 0
        p = Participant(
            network="staff" if staff else "incarcerated", legal_name=f"{first} {last}",
            preferred_name=first, date_of_birth=date(1970 + i % 30, 1 + i % 12, 1 + i % 27),
            languages=["en"] + (["es"] if i % 5 == 0 else []), facility_id=fac.id,
            housing_unit_id=None if staff else rng.choice(units[fac.id]).id,
            custody_status=None if staff else "in_custody",
            employment_status="employed" if staff else None,
            is_supporter=supporter, is_recipient=not supporter,
            supporter_availability="active" if supporter else None,
            external_ids=[{"source": "jms", "value": f"DEMO-{i:04d}"}],
        )
        people.append(p)
    session.add_all(people)
    await session.flush()
    session.add_all([ParticipantExternalId(participant_id=p.id, source="jms",
                                           value=p.external_ids[0]["value"]) for p in people])
    inc = [p for p in people if p.network == "incarcerated" and p.facility_id == ccj.id]
    a, b = ordered_pair(inc[1].id, inc[2].id)
    session.add(KeepApartOrder(participant_a_id=a, participant_b_id=b, reason="threat",
                               scope="facility", authorised_by="Lt. Demo", opened_by="demo",
                               status_changed_by="demo"))
    peer = next(p for p in inc if p.is_supporter)
    courses = [Course(title=t, hours=h, required_for_certification=r, refresher=not r)
               for t, h, r in (("Peer supporter foundations", 16, True),
                               ("Suicide prevention and crisis response", 12, True),
                               ("Confidentiality and boundaries", 6, True),
                               ("Annual refresher", 8, False))]
    session.add_all(courses)
    await session.flush()
    now = utcnow()
    for p in people:
        if p.is_supporter:
            for c in courses[:3]:
                session.add(Enrollment(participant_id=p.id, course_id=c.id, status="completed",
                                       enrolled_by="demo", completed_at=now, completed_by="demo"))
            session.add(ConductSignature(participant_id=p.id, conduct_version="2026-01",
                                         signed_on=now.date(), witnessed_by="demo"))
    recipients = [p for p in inc if p.is_recipient and p.facility_id == peer.facility_id]
    session.add(Pairing(supporter_id=peer.id, recipient_id=recipients[-1].id,
                        facility_id=peer.facility_id, network=peer.network, status="active",
                        proposed_by="demo", activated_at=now, activated_by="demo"))
    lines = []
    accounts: dict[Role, User] = {}
    for role in Role:
        if role == Role.integration:
            continue
        password = DEMO_PASSWORD.format(role=role.value)
        accounts[role] = User(username=role.value, password_hash=hash_password(password),
                              role=role.value, all_facilities=True, facility_ids=[],
                              participant_id=peer.id if role == Role.peer_supporter else None)
        session.add(accounts[role])
        lines.append(f"  {role.value:<18} password {password}")
    await session.flush()
    # From yesterday: the UTC date may be ahead of a facility's local one.
    session.add_all(_demo_roster(accounts, [ccj, nsp], now.date() - timedelta(days=1)))
    w = Writer(session, None)
    w.audit("demo.load", "facility", ccj.id)
    await w.commit()
    client, secret = await create_client(session=session, principal=None, data=ClientCreate(
        name="Demo JMS", scopes=["facilities:read", "participants:read", "participants:write",
                                 "keep_apart:read", "keep_apart:write"]))
    return ("demo data loaded: facilities CCJ and NSP, 36 participants (supporters certified),\n"
            "4 courses, 1 keep-apart order, 1 active pairing, an on-call roster for every level\n"
            "users (development only):\n" + "\n".join(lines) +
            f"\nintegration client: {client.client_id} secret {secret} (shown once)")


def _demo_roster(accounts: dict[Role, User], facilities: list[Facility],
                 today: date) -> list[OnCallShift]:
    """Someone on call at every level of each facility's chain, in both networks: the
    clinician holds clinician levels; the officer (incarcerated) or the staff coordinator (staff)
    the others; every day, all day (wall clock)."""
    shifts = []
    for facility in facilities:
        for network, other in (("incarcerated", Role.officer), ("staff", Role.staff_coordinator)):
            for level in FacilitySettings.model_validate(facility.settings).escalation_chain:
                holder = accounts[Role.clinician if is_clinical(level) else other]
                shifts.append(OnCallShift(
                    facility_id=facility.id, network=network, level=level, user_id=holder.id,
                    weekdays=[d.value for d in Weekday], start_time=time(0, 0),
                    duration_minutes=24 * 60, valid_from=today, created_by="demo"))
    return shifts

"""Candidates ranked in the database agree with the rules function (`pairing_rules.refusals`
on each pair's own facts, gathered one pair at a time by `gather_facts`, and the score's
parts computed in Python) on varied data: certification complete, missing, lapsed, renewed
by refresher hours or not; caseloads under, at and over personal caps; keep-aparts in either
order; previous supporters; availability, custody and crises."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.models import Participant
from app.models.common import Role
from app.models.pairing import HOLDING
from app.services.pairing_rules import gather_facts, refusals


def _expected(app, recipient_id, facility_id):
    """The ranking the rules function gives, one pair at a time."""
    async def run():
        async with app.state.sessionmaker() as session:
            rec = await session.get(Participant, recipient_id)
            people = (await session.execute(select(Participant).where(
                Participant.facility_id == facility_id, Participant.network == rec.network,
                Participant.is_supporter.is_(True), Participant.archived_at.is_(None),
                Participant.id != rec.id))).scalars().all()
            from app.models import Pairing

            previous = set((await session.execute(select(Pairing.supporter_id).where(
                Pairing.recipient_id == rec.id, Pairing.status == "ended"))).scalars())
            eligible, ineligible = [], {}
            for s in people:
                facts = await gather_facts(session, app.state.settings, s, rec, None)
                found = [c for c, _, _ in refusals(facts, override=False)
                         if c != "recipient_already_paired"]
                if found:
                    ineligible[str(s.id)] = (found, facts.caseload)
                    continue
                parts = {"shared_language": 3 if set(rec.languages) & set(s.languages) else 0,
                         "same_housing_unit": 2 if s.housing_unit_id and
                         s.housing_unit_id == rec.housing_unit_id else 0,
                         "previous_supporter": 2 if s.id in previous else 0,
                         "caseload": facts.cap - facts.caseload}
                parts["total"] = sum(parts.values())
                eligible.append((-parts["total"], facts.caseload, str(s.id), parts))
            eligible.sort(key=lambda t: t[:3])
            return eligible, ineligible
    return asyncio.run(run())


def _seed(factory, f, rng):
    units = [factory.unit(f, f"U{i}") for i in range(3)]
    required = [factory.course(title="Required A"), factory.course(title="Required B")]
    refresher = factory.course(title="Refresher", required=False, refresher=True, hours=4)
    rec = factory.recipient(f, languages=["es", "fr"], housing_unit_id=units[0].id)
    now = datetime.now(UTC)
    people = []
    for _ in range(60):
        kind = rng.choice(["ok", "ok", "ok", "missing", "unsigned", "lapsed", "renewed",
                           "half_renewed", "late_first"])
        s = factory.participant(
            f, is_supporter=True,
            supporter_availability=rng.choice(["active", "active", "active", "paused", None]),
            languages=rng.choice([[], ["es"], ["en"], ["fr", "en"], ["de"]]),
            housing_unit_id=rng.choice([None, units[0].id, units[1].id, units[2].id]),
            caseload_cap=rng.choice([None, None, 1, 2, 9]),
            custody_status=rng.choice(["in_custody"] * 8 + ["released"]))
        old = now - timedelta(days=800)
        when = old if kind in ("lapsed", "renewed", "half_renewed") else now - timedelta(days=3)
        for n, course in enumerate(required):
            if kind == "missing" and n == 1:
                continue
            at = when + timedelta(days=5) if kind == "late_first" and n == 1 else when
            factory.enrollment(s, course, status="completed", completed_at=at)
        if kind != "unsigned":
            factory.signature(s, when.date())
        if kind == "renewed":  # 4 + 4 hours after the period ran out: renewed on the second
            factory.enrollment(s, refresher, status="completed", completed_at=now - timedelta(days=40))
            factory.enrollment(s, refresher, status="completed", completed_at=now - timedelta(days=20))
        if kind == "half_renewed":  # 4 hours only: still lapsed
            factory.enrollment(s, refresher, status="completed", completed_at=now - timedelta(days=20))
        for _n in range(rng.choice([0, 0, 1, 2, 3])):
            factory.pairing(s, factory.recipient(f), status=rng.choice(HOLDING))
        if rng.random() < 0.15:
            factory.pairing(s, rec, status="ended")
        if rng.random() < 0.1:
            factory.keep_apart(*rng.sample([s, rec], 2))
        if rng.random() < 0.08:
            factory.escalation(s, tier=rng.choice(["high", "imminent", "low"]))
        people.append(s)
    return rec


def test_ranking_in_the_database_matches_the_rules_function(app, client, factory):
    rng = random.Random(16)
    f = factory.facility("CMP", settings={"caseload_cap": 3, "ack_minutes": {}})
    rec = _seed(factory, f, rng)
    h = factory.headers(factory.user(Role.coordinator, [f]))
    eligible, ineligible = _expected(app, rec.id, f.id)
    assert len(eligible) >= 5 and len(ineligible) >= 20  # the data is varied enough
    r = client.get("/v1/pairings/candidates", headers=h,
                   params={"recipient_id": str(rec.id), "limit": 200})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["supporter_id"], c["score"], c["caseload"]) for c in body["eligible"]] == [
        (sid, parts, load) for _, load, sid, parts in eligible]
    assert body["eligible_total"] == len(eligible)
    assert body["ineligible_total"] == len(ineligible)
    got = {c["supporter_id"]: ([x["code"] for x in c["refusals"]], c["caseload"])
           for c in body["ineligible"]}
    assert got == ineligible
    # Only the top N of each list, the totals still counting all.
    r = client.get("/v1/pairings/candidates", headers=h,
                   params={"recipient_id": str(rec.id), "limit": 5})
    top = r.json()
    assert [c["supporter_id"] for c in top["eligible"]] == [t[2] for t in eligible[:5]]
    assert len(top["ineligible"]) == 5 and top["ineligible_total"] == len(ineligible)


def test_renewal_by_refresher_hours_counts_in_the_database(app, client, factory):
    """Lapsed 800 days ago, renewed by refresher hours adding up after the lapse."""
    f = factory.facility("RNW")
    course = factory.course(title="Required")
    refresher = factory.course(title="Refresher", required=False, refresher=True, hours=4)
    rec = factory.recipient(f)
    long_ago = datetime.now(UTC) - timedelta(days=800)
    s = factory.participant(f, is_supporter=True, supporter_availability="active")
    factory.enrollment(s, course, status="completed", completed_at=long_ago)
    factory.signature(s, long_ago.date())
    h = factory.headers(factory.user(Role.coordinator, [f]))

    def codes():
        body = client.get("/v1/pairings/candidates", headers=h,
                          params={"recipient_id": str(rec.id)}).json()
        return [[x["code"] for x in c.get("refusals") or []] for c in
                body["eligible"] + body["ineligible"]]

    assert codes() == [["supporter_not_certified"]]
    factory.enrollment(s, refresher, status="completed",
                       completed_at=datetime.now(UTC) - timedelta(days=9))
    assert codes() == [["supporter_not_certified"]]  # 4 of 8 hours
    factory.enrollment(s, refresher, status="completed",
                       completed_at=datetime.now(UTC) - timedelta(days=2))
    assert codes() == [[]]

"""Crisis escalations: triage from the screener (every branch), the transition table, tier
changes, deadlines per tier and facility, breaches up the chain on a controllable clock,
exactly-once handling by racing workers, what each role sees, idempotent raising, and the
links to disclosures and pairings."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.models import Escalation
from app.models.common import Role
from app.models.escalation import Screener, Tier
from app.services.escalations import ESCALATION_FLOW, breach_sweep, triage

NO = dict(wish_to_be_dead=False, suicidal_thoughts=False, thoughts_with_method=False,
          intent=False, plan=False, behavior=False, behavior_within_3_months=False)


@pytest.mark.parametrize("answers,tier", [
    ({}, Tier.low),
    ({"wish_to_be_dead": True}, Tier.low),
    ({"suicidal_thoughts": True}, Tier.low),
    ({"suicidal_thoughts": True, "thoughts_with_method": True}, Tier.moderate),
    ({"behavior": True}, Tier.moderate),
    ({"behavior": True, "behavior_within_3_months": True}, Tier.high),
    ({"intent": True}, Tier.high),
    ({"plan": True}, Tier.high),
])
def test_triage_every_branch(answers, tier):
    assert triage(Screener(**(NO | answers)))[0] == tier


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ", settings={"caseload_cap": 5, "ack_minutes": {
        "imminent": 3, "high": 10, "moderate": 60, "low": 1440},
        "escalation_chain": ["on_call_clinician", "duty_supervisor"]})
    person = factory.recipient(f)
    return {"f": f, "person": person,
            "officer": factory.headers(factory.user(Role.officer, [f])),
            "clin": factory.headers(factory.user(Role.clinician, [f])),
            "coord": factory.headers(factory.user(Role.coordinator, [f]))}


def _raise(client, h, person, **kw):
    body = {"participant_id": str(person.id), "category": "suicide_risk",
            "description": "Found with a ligature, distressed", "tier": "high"} | kw
    return client.post("/v1/escalations", json=body,
                       headers={"Idempotency-Key": str(uuid.uuid4())} | h)


def test_raise_with_screener_stores_answers_and_deadline_per_facility(client, factory, ctx):
    r = _raise(client, ctx["officer"], ctx["person"], tier=None,
               screener=NO | {"plan": True})
    assert r.status_code == 201, r.text
    esc = factory.get(Escalation, __import__("uuid").UUID(r.json()["id"]))
    assert esc.tier == "high" and esc.screener["derived_tier"] == "high"
    assert esc.screener["rule"].startswith("Q5")
    minutes = (esc.ack_deadline - esc.raised_at).total_seconds() / 60
    assert 9.9 < minutes < 10.1  # this facility's high-tier setting
    # A high raise pages the first level at once; nobody is on call here: an alert per level.
    assert [e.type for e in factory.events()] == ["escalation.created"] + [
        "escalation.unstaffed"] * 2


def test_what_each_role_sees(client, factory, ctx):
    eid = _raise(client, ctx["officer"], ctx["person"]).json()["id"]
    full = client.get(f"/v1/escalations/{eid}", headers=ctx["clin"]).json()
    assert full["description"] == "Found with a ligature, distressed"
    officer = client.get(f"/v1/escalations/{eid}", headers=ctx["officer"]).json()
    assert officer["description"] is None and officer["tier"] == "high"
    assert officer["seconds_remaining"] > 0
    sup = factory.certified_supporter(ctx["f"])
    factory.pairing(sup, ctx["person"])
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=sup))
    mine = _raise(client, peer, ctx["person"], tier="moderate")
    assert mine.status_code == 201, mine.text
    assert set(mine.json()) == {"view", "id", "status", "raised_at"}
    assert client.get(f"/v1/escalations/{eid}", headers=peer).status_code == 404
    assert len(client.get("/v1/escalations", headers=peer).json()["items"]) == 1
    staff = factory.participant(ctx["f"], "staff")
    staff_esc = _raise(client, ctx["clin"], staff, category="mental_health_crisis")
    assert staff_esc.status_code == 201
    sid = staff_esc.json()["id"]
    assert client.get(f"/v1/escalations/{sid}", headers=ctx["officer"]).status_code == 404
    assert client.get(f"/v1/escalations/{sid}", headers=ctx["coord"]).status_code == 404
    staff_coord = factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))
    assert client.get(f"/v1/escalations/{sid}", headers=staff_coord).status_code == 200
    other = factory.headers(factory.user(Role.clinician, [factory.facility()]))
    assert client.get(f"/v1/escalations/{eid}", headers=other).status_code == 404


@pytest.mark.parametrize("state", ["open", "acknowledged", "resolved", "reopened"])
@pytest.mark.parametrize("action", ["acknowledge", "resolve", "reopen"])
def test_transition_table_in_full(client, factory, ctx, state, action):
    eid = _raise(client, ctx["officer"], ctx["person"], tier="low").json()["id"]
    path = {"open": [], "acknowledged": ["acknowledge"],
            "resolved": ["acknowledge", "resolve"],
            "reopened": ["acknowledge", "resolve", "reopen"]}[state]
    bodies = {"acknowledge": {}, "resolve": {"outcome": "Seen, settled"},
              "reopen": {"reason": "Distressed again"}}
    for step_ in path:
        assert client.post(f"/v1/escalations/{eid}/{step_}", headers=ctx["clin"],
                           json=bodies[step_]).status_code == 200
    r = client.post(f"/v1/escalations/{eid}/{action}", headers=ctx["clin"], json=bodies[action])
    t = ESCALATION_FLOW[action]
    if state in t.sources:
        assert r.status_code == 200 and r.json()["status"] == t.target
    else:
        assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["officer"],
                       json={}).status_code == 403


def test_high_needs_a_clinician_with_a_plan_and_stamps_once(client, factory, ctx):
    eid = _raise(client, ctx["officer"], ctx["person"]).json()["id"]
    first = client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["coord"], json={}).json()
    r = client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["coord"],
                    json={"outcome": "Calmer"})
    assert r.status_code == 403 and r.json()["code"] == "clinician_required"
    r = client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"],
                    json={"outcome": "Calmer"})
    assert r.status_code == 422 and r.json()["code"] == "follow_up_required"
    r = client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"], json={
        "outcome": "Calmer", "follow_up_plan": "Daily check-ins for a week",
        "review_date": "2030-01-08"})
    assert r.status_code == 200
    client.post(f"/v1/escalations/{eid}/reopen", headers=ctx["clin"], json={"reason": "again"})
    again = client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={}).json()
    assert again["acknowledged_at"] == first["acknowledged_at"]  # stamped once
    kinds = [e["kind"] for e in client.get(f"/v1/escalations/{eid}/timeline",
                                           headers=ctx["clin"]).json()]
    assert kinds == ["created", "unstaffed", "unstaffed",  # nobody on call (tests/test_paging)
                     "acknowledged", "resolved", "reopened", "acknowledged"]


def test_tier_up_by_anyone_down_only_by_clinician(client, factory, ctx):
    eid = _raise(client, ctx["officer"], ctx["person"], tier="moderate").json()["id"]
    r = client.post(f"/v1/escalations/{eid}/tier", headers=ctx["coord"],
                    json={"tier": "imminent", "reason": "Now on the ledge"})
    assert r.status_code == 200 and r.json()["tier"] == "imminent"
    assert r.json()["seconds_remaining"] <= 3 * 60
    r = client.post(f"/v1/escalations/{eid}/tier", headers=ctx["coord"],
                    json={"tier": "low", "reason": "Calmer"})
    assert r.status_code == 403 and r.json()["code"] == "clinician_required"
    r = client.post(f"/v1/escalations/{eid}/tier", headers=ctx["clin"],
                    json={"tier": "low", "reason": "Assessed"})
    assert r.status_code == 200
    changed = factory.events("escalation.tier_changed")
    assert len(changed) == 2 and all(e.data == {} for e in changed)  # thin: no tier in events


def _sweep(app, now):
    async def go():
        async with app.state.sessionmaker() as s:
            return await breach_sweep(s, app.state.settings, now)
    return asyncio.run(go())


def _roster(factory, ctx):
    """Someone on call at both levels of ctx's chain (paging itself: tests/test_paging.py)."""
    factory.shift(ctx["f"], factory.user(Role.clinician, [ctx["f"]]))
    factory.shift(ctx["f"], factory.user(Role.officer, [ctx["f"]]), "duty_supervisor")


def test_breach_climbs_the_chain_on_a_controllable_clock(app, client, factory, ctx):
    _roster(factory, ctx)  # moderate: not paged at raise, so the first breach is level 1
    eid = _raise(client, ctx["officer"], ctx["person"], tier="moderate").json()["id"]
    t0 = datetime.now(UTC)
    assert _sweep(app, t0 + timedelta(minutes=59)) == {"breached": 0}
    assert _sweep(app, t0 + timedelta(minutes=61)) == {"breached": 1}
    assert _sweep(app, t0 + timedelta(minutes=62)) == {"breached": 0}  # next deadline: +60
    assert _sweep(app, t0 + timedelta(minutes=122)) == {"breached": 1}
    esc = client.get(f"/v1/escalations/{eid}", headers=ctx["clin"]).json()
    # two breaches behind it; the next level's deadline has not passed (yet)
    assert esc["chain_level"] == 2 and not esc["breached"] and esc["seconds_remaining"] > 0
    breaches = factory.events("escalation.breached")
    assert [b.data["notify"] for b in breaches] == ["on_call_clinician", "duty_supervisor"]
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    assert _sweep(app, t0 + timedelta(hours=1)) == {"breached": 0}


def test_two_workers_racing_handle_each_breach_once(app, client, factory, ctx, is_pg):
    _roster(factory, ctx)
    ids = [_raise(client, ctx["officer"], factory.recipient(ctx["f"]), tier="moderate").json()["id"]
           for _ in range(6)]
    later = datetime.now(UTC) + timedelta(minutes=61)

    async def race():
        async def one():
            async with app.state.sessionmaker() as s:
                return (await breach_sweep(s, app.state.settings, later))["breached"]
        async with app.router.lifespan_context(app):
            return await asyncio.gather(one(), one())

    counts = asyncio.run(race())
    assert sum(counts) == 6, counts
    levels = [client.get(f"/v1/escalations/{i}", headers=ctx["clin"]).json()["chain_level"]
              for i in ids]
    assert levels == [1] * 6
    assert len(factory.events("escalation.breached")) == 6
    assert len(factory.events("escalation.paged")) == 6  # one page per breach


def test_idempotent_raise(client, factory, ctx):
    h = ctx["officer"] | {"Idempotency-Key": "cell-7-2030-01-01T10:00"}
    first = _raise(client, h, ctx["person"])
    again = _raise(client, h, ctx["person"])
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = _raise(client, h, ctx["person"], tier="low")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert factory.count(Escalation) == 1
    assert len(factory.events("escalation.created")) == 1


def test_raising_requires_an_idempotency_key(client, factory, ctx):
    body = {"participant_id": str(ctx["person"].id), "category": "suicide_risk",
            "description": "seen", "tier": "high"}
    r = client.post("/v1/escalations", headers=ctx["officer"], json=body)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_missing"
    assert factory.count(Escalation) == 0


def test_risk_disclosure_opens_escalation_and_blocks_supporter(client, factory, ctx):
    sup = factory.certified_supporter(ctx["f"])
    rec = ctx["person"]
    pairing = factory.pairing(sup, rec)
    session = factory.support_session(pairing, status="completed")
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=sup))
    r = client.post(f"/v1/support-sessions/{session.id}/disclosures", headers=peer, json={
        "participant_id": str(rec.id), "category": "self_harm", "passed_to": "Officer on duty",
        "passed_at": "2030-01-01T10:00:00Z"})
    assert r.status_code == 201, r.text
    assert r.json()["escalation_id"]
    assert factory.count(Escalation) == 1
    # An open high escalation about a supporter blocks new pairings for them.
    _raise(client, ctx["clin"], sup, category="mental_health_crisis")
    r = client.post("/v1/pairings", headers=ctx["coord"], json={
        "supporter_id": str(sup.id), "recipient_id": str(factory.recipient(ctx["f"]).id)})
    assert r.status_code == 422 and r.json()["code"] == "supporter_escalation"


def test_gaps_pure():
    from app.services.escalations import gaps

    t0 = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    at = [t0 + timedelta(minutes=m) for m in (4, 8, 20)]
    found = gaps(t0, t0 + timedelta(minutes=24), at, 5)
    assert found == [(t0 + timedelta(minutes=8), t0 + timedelta(minutes=20))]
    assert gaps(t0, t0 + timedelta(hours=5), [], None) == []


def test_peer_observations_never_close_a_staff_gap(client, factory, ctx):
    sup = factory.certified_supporter(ctx["f"])
    factory.pairing(sup, ctx["person"])
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=sup))
    from sqlalchemy import update

    # The peer raised it (they may add to the watch log of escalations they raised).
    eid = _raise(client, peer, ctx["person"], tier="imminent").json()["id"]
    # raised a quarter of an hour ago (each entry below is written on time: none is late)
    t0 = datetime.now(UTC) - timedelta(minutes=14, seconds=30)
    with factory.engine.begin() as conn:
        conn.execute(update(Escalation).values(raised_at=t0))
    for minutes, h in ((3, ctx["officer"]), (7, peer), (11, peer), (14, ctx["officer"])):
        r = client.post(f"/v1/escalations/{eid}/observations", headers=h, json={
            "observed_at": (t0 + timedelta(minutes=minutes)).isoformat(),
            "seen": "Sitting on bunk, responsive"})
        assert r.status_code == 201, r.text
    watch = client.get(f"/v1/escalations/{eid}/watch", headers=ctx["clin"]).json()
    assert [o["observer_kind"] for o in watch["observations"]] == ["staff", "peer", "peer",
                                                                    "staff"]
    first = watch["gaps"][0]
    assert first["start"].startswith((t0 + timedelta(minutes=3)).isoformat()[:16])
    assert first["minutes"] == 11  # 3 -> 14: the peer checks at 7 and 11 do not count
    assert client.get(f"/v1/escalations/{eid}/watch", headers=peer).status_code == 404


def test_missed_observation_detected_once_per_lapse(app, client, factory, ctx):
    from app.services.escalations import watch_sweep

    eid = _raise(client, ctx["officer"], ctx["person"], tier="high").json()["id"]

    def sweep(now):
        async def go():
            async with app.state.sessionmaker() as s:
                return await watch_sweep(s, app.state.settings, now)
        return asyncio.run(go())

    t0 = datetime.now(UTC)
    assert sweep(t0 + timedelta(minutes=10)) == {"missed": 0}
    assert sweep(t0 + timedelta(minutes=16)) == {"missed": 1}
    assert sweep(t0 + timedelta(minutes=17)) == {"missed": 0}
    missed = factory.events("observation.missed")
    assert len(missed) == 1 and str(missed[0].entity_id) == eid


def test_assign_to_a_clinician_of_the_facility(client, factory, ctx):
    eid = _raise(client, ctx["officer"], ctx["person"]).json()["id"]
    clinician = factory.user(Role.clinician, [ctx["f"]])
    r = client.post(f"/v1/escalations/{eid}/assign", headers=ctx["coord"],
                    json={"user_id": str(clinician.id)})
    assert r.status_code == 200 and r.json()["assigned_to"] == str(clinician.id)
    elsewhere = factory.user(Role.clinician, [factory.facility()])
    officer = factory.user(Role.officer, [ctx["f"]])
    for u in (elsewhere, officer):
        r = client.post(f"/v1/escalations/{eid}/assign", headers=ctx["coord"],
                        json={"user_id": str(u.id)})
        assert r.status_code == 422 and r.json()["code"] == "assignee_not_eligible"
    assert [e.type for e in factory.events()][-1] == "escalation.assigned"


def _catches(pid: int, signum: int) -> bool:
    """Whether a Linux process has a handler for the signal (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


def test_worker_process_stops_cleanly_on_sigterm(db_url):
    """A deploy stops the worker with SIGTERM: the round in progress commits, the process
    exits 0, and the clock's state stays in the database for the next one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Wait until the worker catches SIGTERM (its handler is the first thing it installs;
        # imports take a while on a busy host): the process's caught-signal mask says so.
        deadline = time.monotonic() + 60
        while not _catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the worker never installed its handler"
            time.sleep(0.05)
        time.sleep(0.5)  # let the first rounds start
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # its rounds finish first (slow on a loaded host)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dashboard_list_shows_each_role_its_view(client, factory, ctx):
    """The dashboard builds each role's view from plain rows and writes it without the read
    model: the same answer as a single read (which goes through the model), clinical detail
    for clinicians only, the status alone for peers and machines."""
    sup = factory.certified_supporter(ctx["f"])
    factory.pairing(sup, ctx["person"])
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=sup))
    mine = _raise(client, peer, ctx["person"], tier="moderate").json()["id"]
    urgent = _raise(client, ctx["officer"], factory.recipient(ctx["f"]), tier="imminent")
    screened = _raise(client, ctx["clin"], factory.recipient(ctx["f"]), tier=None,
                      screener=NO | {"plan": True}).json()["id"]  # high, stored answers
    done = _raise(client, ctx["officer"], factory.recipient(ctx["f"]), tier="low").json()["id"]
    client.post(f"/v1/escalations/{done}/acknowledge", headers=ctx["clin"], json={})
    client.post(f"/v1/escalations/{done}/resolve", headers=ctx["clin"], json={"outcome": "ok"})
    machine = factory.api_client(["escalations:read"], [ctx["f"]])
    url = "/v1/escalations?status=open&sort=deadline"
    for h in (ctx["clin"], ctx["officer"], ctx["coord"], peer, factory.headers(machine)):
        page = client.get(url, headers=h).json()
        assert page["next_cursor"] is None
        for item in page["items"]:
            single = client.get(f"/v1/escalations/{item['id']}", headers=h).json()
            for x in (item, single):  # the clock moves between the two reads
                x.pop("seconds_remaining", None)
            assert json.dumps(item) == json.dumps(single)  # keys, order, values
    clin = client.get(url, headers=ctx["clin"]).json()["items"]
    assert [x["id"] for x in clin] == [urgent.json()["id"], screened, mine]  # most urgent first
    assert clin[0]["description"] and clin[0]["seconds_remaining"] > 0
    assert clin[1]["screener"]["derived_tier"] == "high"
    officer = client.get(url, headers=ctx["officer"]).json()["items"]
    assert len(officer) == 3
    assert all(x["description"] is None and x["screener"] is None for x in officer)
    assert [set(x) for x in client.get(url, headers=peer).json()["items"]] == [
        {"view", "id", "status", "raised_at"}]
    every = client.get("/v1/escalations?limit=2", headers=ctx["clin"]).json()
    more = client.get(f"/v1/escalations?limit=2&cursor={every['next_cursor']}",
                      headers=ctx["clin"]).json()
    assert len(every["items"] + more["items"]) == 4 and more["next_cursor"] is None
    officer_all = client.get("/v1/escalations", headers=ctx["officer"]).json()["items"]
    assert done not in {x["id"] for x in officer_all} and len(officer_all) == 3

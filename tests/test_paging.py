"""A crisis reaches a person: a breach (and the raise of a high or imminent escalation) pages
the people on call at its level; a level with nobody on call is an alert and the escalation
moves on at once; an unacknowledged page is paged again every few minutes until the person (or
anyone at the level) acknowledges it, or the escalation is acknowledged. Real tokens, a real
migrated database, the sweeps driven by their `now`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import EscalationNotification, User
from app.models.common import Role
from app.services.escalations import breach_sweep
from app.services.escalations.paging import NOTIFICATION_FLOW, repage_sweep
from app.services.workflow import step

CHAIN = ["on_call_clinician", "duty_supervisor", "facility_commander"]


@pytest.fixture()
def ctx(factory):
    f = factory.facility(settings={"caseload_cap": 5, "escalation_chain": CHAIN, "ack_minutes": {
        "imminent": 5, "high": 15, "moderate": 60, "low": 1440}})
    clin = factory.user(Role.clinician, [f])
    clin2 = factory.user(Role.clinician, [f])
    sup = factory.user(Role.officer, [f])
    coord = factory.user(Role.coordinator, [f])
    return {"f": f, "person": factory.recipient(f), "clin": clin, "clin2": clin2, "sup": sup,
            "coord": coord, "h": {u.id: factory.headers(u) for u in (clin, clin2, sup, coord)},
            "officer": factory.headers(factory.user(Role.officer, [f]))}


def _raise(client, h, person, tier="moderate"):
    r = client.post("/v1/escalations", headers=h | {"Idempotency-Key": str(uuid.uuid4())},
                    json={"participant_id": str(person.id), "category": "suicide_risk",
                          "description": "Found with a ligature", "tier": tier})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run(app, job, now):
    async def go():
        async with app.state.sessionmaker() as s:
            return await job(s, app.state.settings, now)
    return asyncio.run(go())


def _pages(factory, eid=None):
    with Session(factory.engine) as s:
        stmt = select(EscalationNotification).order_by(EscalationNotification.notified_at,
                                                       EscalationNotification.id)
        if eid:
            stmt = stmt.where(EscalationNotification.escalation_id == uuid.UUID(eid))
        return list(s.scalars(stmt))


def _timeline(client, ctx, eid):
    r = client.get(f"/v1/escalations/{eid}/timeline", headers=ctx["h"][ctx["coord"].id])
    assert r.status_code == 200, r.text
    return r.json()


def test_a_breach_pages_the_people_on_call_at_its_level(app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["sup"], "duty_supervisor")
    eid = _raise(client, ctx["officer"], ctx["person"])
    assert _pages(factory) == []  # moderate: the deadline first
    t0 = datetime.now(UTC)
    assert _run(app, breach_sweep, t0 + timedelta(minutes=61)) == {"breached": 1}
    [page] = _pages(factory)
    assert (page.user_id, page.level, page.level_name, page.status, page.attempts,
            page.reason, page.channel) == (ctx["clin"].id, 1, "on_call_clinician", "paging", 1,
                                           "breached", "page")
    [paged] = factory.events("escalation.paged")
    assert (paged.entity_type, paged.entity_id, paged.facility_id) == (
        "escalation_notification", page.id, ctx["f"].id)
    assert paged.data == {"escalation_id": eid, "level": 1, "user_id": str(ctx["clin"].id),
                          "attempt": 1}
    assert factory.events("escalation.unstaffed") == []
    kinds = [(e["kind"], e["detail"].get("user_id")) for e in _timeline(client, ctx, eid)]
    assert kinds == [("created", None), ("breached", None), ("paged", str(ctx["clin"].id))]
    # the next breach goes to the supervisor; the clinician keeps being paged until they answer
    assert _run(app, breach_sweep, t0 + timedelta(minutes=122)) == {"breached": 1}
    assert [(p.user_id, p.level, p.status) for p in _pages(factory)] == [
        (ctx["clin"].id, 1, "paging"), (ctx["sup"].id, 2, "paging")]
    assert client.get(f"/v1/escalations/{eid}",
                      headers=ctx["h"][ctx["clin"].id]).json()["chain_level"] == 2


def test_an_unstaffed_level_is_an_alert_and_the_escalation_moves_on_at_once(
        app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["sup"], "duty_supervisor")
    eid = _raise(client, ctx["officer"], ctx["person"])
    _run(app, breach_sweep, datetime.now(UTC) + timedelta(minutes=61))
    [alert] = factory.events("escalation.unstaffed")
    assert alert.data == {"level": 1, "notify": "on_call_clinician"}
    assert [(p.user_id, p.level) for p in _pages(factory)] == [(ctx["sup"].id, 2)]
    timeline = _timeline(client, ctx, eid)
    assert [e["kind"] for e in timeline] == ["created", "breached", "unstaffed", "paged"]
    assert timeline[2]["detail"] == {"level": 1, "level_name": "on_call_clinician",
                                     "moved_to": 2}
    esc = client.get(f"/v1/escalations/{eid}", headers=ctx["h"][ctx["clin"].id]).json()
    assert esc["chain_level"] == 2
    board = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id)},
                       headers=ctx["officer"]).json()
    assert board["unstaffed"] == ["on_call_clinician", "facility_commander"]


def test_a_chain_with_nobody_on_call_alerts_at_every_level_and_stands_at_the_top(
        app, client, factory, ctx):
    eid = _raise(client, ctx["officer"], ctx["person"])
    t0 = datetime.now(UTC)
    _run(app, breach_sweep, t0 + timedelta(minutes=61))
    assert [e.data["level"] for e in factory.events("escalation.unstaffed")] == [1, 2, 3]
    assert _pages(factory) == []
    assert client.get(f"/v1/escalations/{eid}",
                      headers=ctx["h"][ctx["clin"].id]).json()["chain_level"] == 3
    # the next breach stays at the top level, and alerts there again
    _run(app, breach_sweep, t0 + timedelta(minutes=122))
    assert [e.data["level"] for e in factory.events("escalation.unstaffed")] == [1, 2, 3, 3]
    assert [e.data for e in factory.events("escalation.breached")] == [
        {"level": 1, "notify": "on_call_clinician"}, {"level": 3, "notify": "facility_commander"}]
    timeline = _timeline(client, ctx, eid)
    assert timeline[-1]["detail"]["moved_to"] is None


@pytest.mark.parametrize("tier,paged", [("imminent", True), ("high", True),
                                        ("moderate", False), ("low", False)])
def test_a_high_or_imminent_raise_pages_the_first_level_at_once(client, factory, ctx, tier,
                                                                  paged):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["clin2"])
    eid = _raise(client, ctx["officer"], ctx["person"], tier)
    pages = _pages(factory, eid)
    esc = client.get(f"/v1/escalations/{eid}", headers=ctx["h"][ctx["clin"].id]).json()
    if paged:
        assert sorted((p.user_id, p.reason) for p in pages) == sorted(
            [(ctx["clin"].id, "raised"), (ctx["clin2"].id, "raised")])
        assert esc["chain_level"] == 1 and not esc["breached"]
        assert len(factory.events("escalation.paged")) == 2
    else:
        assert pages == [] and esc["chain_level"] == 0


def test_an_imminent_raise_breaches_to_the_second_level(app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["sup"], "duty_supervisor")
    eid = _raise(client, ctx["officer"], ctx["person"], "imminent")
    _run(app, breach_sweep, datetime.now(UTC) + timedelta(minutes=6))
    assert [(p.user_id, p.level, p.reason) for p in _pages(factory, eid)] == [
        (ctx["clin"].id, 1, "raised"), (ctx["sup"].id, 2, "breached")]


def test_an_unacknowledged_page_is_paged_again_until_its_person_acknowledges(
        app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    eid = _raise(client, ctx["officer"], ctx["person"], "imminent")
    [page] = _pages(factory)
    t0 = page.last_paged_at
    assert _run(app, repage_sweep, t0 + timedelta(minutes=1)) == {"repaged": 0}
    assert _run(app, repage_sweep, t0 + timedelta(minutes=2)) == {"repaged": 1}
    assert _run(app, repage_sweep, t0 + timedelta(minutes=3)) == {"repaged": 0}
    assert _run(app, repage_sweep, t0 + timedelta(minutes=4)) == {"repaged": 1}
    assert [e.data["attempt"] for e in factory.events("escalation.paged")] == [1, 2, 3]
    assert {e.entity_id for e in factory.events("escalation.paged")} == {page.id}
    r = client.post(f"/v1/escalation-notifications/{page.id}/acknowledge",
                    headers=ctx["h"][ctx["clin"].id])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "acknowledged" and body["attempts"] == 3
    assert body["acknowledged_by"] == f"user:{ctx['clin'].id}" and r.headers["ETag"]
    assert _run(app, repage_sweep, t0 + timedelta(minutes=30)) == {"repaged": 0}
    [ack] = factory.events("escalation.page_acknowledged")
    assert ack.entity_id == page.id
    kinds = [e["kind"] for e in _timeline(client, ctx, eid)]
    assert kinds == ["created", "paged", "paged", "paged", "page_acknowledged"]
    # the escalation itself still waits: its clock runs on
    esc = client.get(f"/v1/escalations/{eid}", headers=ctx["h"][ctx["clin"].id]).json()
    assert esc["status"] == "open"
    again = client.post(f"/v1/escalation-notifications/{page.id}/acknowledge",
                        headers=ctx["h"][ctx["clin"].id])
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"


def test_one_acknowledgement_stops_the_pages_of_its_level(app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["clin2"])
    eid = _raise(client, ctx["officer"], ctx["person"], "high")
    pages = {p.user_id: p for p in _pages(factory)}
    r = client.post(f"/v1/escalation-notifications/{pages[ctx['clin2'].id].id}/acknowledge",
                    headers=ctx["h"][ctx["clin2"].id])
    assert r.status_code == 200, r.text
    states = {p.user_id: p.status for p in _pages(factory)}
    assert states == {ctx["clin"].id: "stood_down", ctx["clin2"].id: "acknowledged"}
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert _run(app, repage_sweep, later) == {"repaged": 0}
    # a breach back at this level (a one-level chain) does not page it again
    stood = client.get(f"/v1/escalation-notifications/{pages[ctx['clin'].id].id}",
                       headers=ctx["h"][ctx["clin"].id]).json()
    assert stood["status"] == "stood_down" and stood["stood_down_at"]
    # the stood-down person may still say they have it
    late = client.post(f"/v1/escalation-notifications/{pages[ctx['clin'].id].id}/acknowledge",
                       headers=ctx["h"][ctx["clin"].id])
    assert late.status_code == 200 and late.json()["status"] == "acknowledged"
    assert _timeline(client, ctx, eid)[-2]["detail"]["stood_down"] == 1


def test_a_level_that_answered_is_not_paged_again_by_a_breach(app, client, factory):
    f = factory.facility(settings={"escalation_chain": ["on_call_clinician"]})
    clin = factory.user(Role.clinician, [f])
    factory.shift(f, clin)
    h = factory.headers(clin)
    eid = _raise(client, h, factory.recipient(f), "imminent")
    [page] = _pages(factory)
    client.post(f"/v1/escalation-notifications/{page.id}/acknowledge", headers=h)
    _run(app, breach_sweep, datetime.now(UTC) + timedelta(minutes=6))
    assert len(_pages(factory, eid)) == 1
    assert len(factory.events("escalation.breached")) == 1


def test_acknowledging_the_escalation_closes_its_pages(app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["clin2"])
    eid = _raise(client, ctx["officer"], ctx["person"], "imminent")
    first, second = _pages(factory)
    client.post(f"/v1/escalation-notifications/{first.id}/acknowledge",
                headers=ctx["h"][first.user_id])
    r = client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["h"][ctx["coord"].id],
                    json={})
    assert r.status_code == 200, r.text
    closed = {p.id: p for p in _pages(factory)}
    assert {p.status for p in closed.values()} == {"closed"}
    # the one that answered keeps its own acknowledgement; the stood-down one has none
    assert closed[first.id].acknowledged_by == f"user:{first.user_id}"
    assert closed[second.id].acknowledged_at is None and closed[second.id].stood_down_at
    assert _run(app, repage_sweep, datetime.now(UTC) + timedelta(minutes=30)) == {"repaged": 0}
    late = client.post(f"/v1/escalation-notifications/{second.id}/acknowledge",
                       headers=ctx["h"][second.user_id])
    assert late.status_code == 409 and late.json()["code"] == "invalid_transition"


def test_acknowledging_the_escalation_acknowledges_pages_still_paging(client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    eid = _raise(client, ctx["officer"], ctx["person"], "imminent")
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["h"][ctx["coord"].id], json={})
    [page] = _pages(factory)
    assert page.status == "closed" and page.acknowledged_by == f"user:{ctx['coord'].id}"
    assert page.acknowledged_at == page.closed_at


def test_only_the_paged_person_acknowledges_and_walls_hold(client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    _raise(client, ctx["officer"], ctx["person"], "imminent")
    [page] = _pages(factory)
    url = f"/v1/escalation-notifications/{page.id}"
    other = client.post(f"{url}/acknowledge", headers=ctx["h"][ctx["clin2"].id])
    assert other.status_code == 403 and other.json()["code"] == "not_your_page"
    elsewhere = factory.headers(factory.user(Role.clinician, [factory.facility()]))
    staff_side = factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))
    for h in (elsewhere, staff_side):
        assert client.get(url, headers=h).status_code == 404
        assert client.post(f"{url}/acknowledge", headers=h).status_code == 404
    missing = client.get(f"/v1/escalation-notifications/{uuid.uuid4()}",
                         headers=ctx["h"][ctx["clin"].id])
    assert missing.status_code == 404
    stale = client.post(f"{url}/acknowledge", headers=ctx["h"][ctx["clin"].id] | {"If-Match": '"9"'})
    assert stale.status_code == 412
    assert factory.get(EscalationNotification, page.id).status == "paging"  # nothing changed


def test_the_gateway_reads_whom_to_page_and_nothing_clinical(client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    gateway = factory.api_client(["escalations:read", "events:read", "notifications:read"],
                                 [ctx["f"]])
    eid = _raise(client, ctx["officer"], ctx["person"], "imminent")
    h = factory.headers(gateway)
    feed = client.get("/v1/events", headers=h).json()["items"]
    paged = [e for e in feed if e["type"] == "escalation.paged"]
    assert len(paged) == 1
    event = paged[0]
    assert event["url"] == f"/v1/escalation-notifications/{event['data']['id']}"
    assert set(event["data"]) == {"id", "entity_type", "facility_id", "network",
                                  "escalation_id", "level", "user_id", "attempt"}
    r = client.get(event["url"], headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["display_name"] == ctx["clin"].username
    assert (page["user_id"], page["escalation_id"], page["level"], page["level_name"],
            page["facility_code"], page["status"]) == (str(ctx["clin"].id), eid, 1,
                                                       "on_call_clinician", ctx["f"].code,
                                                       "paging")
    text = r.text.lower()
    assert "ligature" not in text and "description" not in text
    # a client of another facility sees neither the event nor the page
    other = factory.headers(factory.api_client(
        ["escalations:read", "events:read", "notifications:read"], [factory.facility()]))
    assert not [e for e in client.get("/v1/events", headers=other).json()["items"]
                if e["type"].startswith("escalation.")]
    assert client.get(event["url"], headers=other).status_code == 404
    # without notifications:read: the event, not whom to page
    plain = factory.headers(factory.api_client(["escalations:read", "events:read"],
                                               [ctx["f"]]))
    assert client.get(event["url"], headers=plain).status_code == 403


def test_holders_are_rechecked_when_paged_and_an_override_replaces(app, client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["clin2"])
    now = datetime.now(UTC)
    factory.override(ctx["f"], ctx["sup"], now - timedelta(hours=1), now + timedelta(hours=1),
                     level="duty_supervisor")
    # clin2 leaves (deactivated after being rostered): not paged
    with factory.engine.begin() as conn:
        conn.execute(update(User).where(User.id == ctx["clin2"].id).values(active=False))
    _raise(client, ctx["officer"], ctx["person"], "imminent")
    assert [p.user_id for p in _pages(factory)] == [ctx["clin"].id]
    cover = factory.user(Role.clinician, [ctx["f"]])
    factory.override(ctx["f"], cover, now - timedelta(minutes=5), now + timedelta(hours=1))
    _raise(client, ctx["officer"], factory.recipient(ctx["f"]), "imminent")
    assert [p.user_id for p in _pages(factory)][1:] == [cover.id]


def test_the_paging_table(ctx):
    """The state machine as data: who may acknowledge from where; the system's moves."""
    f = NOTIFICATION_FLOW
    assert step(f, "acknowledge", "paging", Role.officer) == "acknowledged"
    assert step(f, "acknowledge", "stood_down", Role.clinician) == "acknowledged"
    for state in ("acknowledged", "closed"):
        with pytest.raises(Exception, match=f"from {state}"):
            step(f, "acknowledge", state, Role.clinician)
    with pytest.raises(Exception, match="role"):
        step(f, "acknowledge", "paging", Role.peer_supporter)
    assert f["stand_down"].sources == {"paging"}
    assert f["close"].sources == {"paging", "acknowledged", "stood_down"}


def test_two_workers_racing_repage_each_page_once(app, client, factory, ctx, is_pg):
    factory.shift(ctx["f"], ctx["clin"])
    for _ in range(4):
        _raise(client, ctx["officer"], factory.recipient(ctx["f"]), "imminent")
    later = datetime.now(UTC) + timedelta(minutes=3)

    async def race():
        async def one():
            async with app.state.sessionmaker() as s:
                return (await repage_sweep(s, app.state.settings, later))["repaged"]
        async with app.router.lifespan_context(app):
            return await asyncio.gather(one(), one())

    counts = asyncio.run(race())
    assert sum(counts) == 4, counts
    assert sorted(p.attempts for p in _pages(factory)) == [2, 2, 2, 2]


def test_a_round_that_dies_loses_nothing(app, client, factory, ctx):
    """The round's changes and events commit together or not at all: a round whose transaction
    ends without commit (the process killed) leaves every page due for the next round."""
    factory.shift(ctx["f"], ctx["clin"])
    _raise(client, ctx["officer"], ctx["person"], "imminent")
    later = datetime.now(UTC) + timedelta(minutes=3)

    async def dies():
        async with app.state.sessionmaker() as s:
            from app.services.writer import Writer

            async def no_commit(self):  # the process dies before COMMIT
                raise SystemExit
            real = Writer.commit
            Writer.commit = no_commit  # type: ignore[method-assign]
            try:
                with pytest.raises(SystemExit):
                    await repage_sweep(s, app.state.settings, later)
            finally:
                Writer.commit = real  # type: ignore[method-assign]
    asyncio.run(dies())
    assert [p.attempts for p in _pages(factory)] == [1]
    assert _run(app, repage_sweep, later) == {"repaged": 1}
    assert [e.data["attempt"] for e in factory.events("escalation.paged")] == [1, 2]

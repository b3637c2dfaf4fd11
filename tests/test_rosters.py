"""On-call rosters through the API: coordinators and admins manage shifts and overrides for
their facilities and networks; the holder rules refuse (with nothing written) an account whose
state, role, network or facilities do not fit the level; a clinician reads their own shifts;
the board (`GET /v1/on-call`) shows who holds each level now, with display names, and the
levels with nobody, resolved in the facility's timezone across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.models import OnCallOverride, OnCallShift
from app.models.common import Role

CHAIN = ["on_call_clinician", "duty_supervisor", "facility_commander"]


@pytest.fixture()
def ctx(factory):
    f = factory.facility(settings={"escalation_chain": CHAIN})
    other = factory.facility()
    coord = factory.user(Role.coordinator, [f])
    clin = factory.user(Role.clinician, [f])
    return {"f": f, "other": other, "coord": coord, "clin": clin,
            "sup": factory.user(Role.officer, [f]),
            "hc": factory.headers(coord), "hclin": factory.headers(clin)}


def _shift(ctx, **kw):
    return {"facility_id": str(ctx["f"].id), "network": "incarcerated",
            "level": "on_call_clinician", "user_id": str(ctx["clin"].id),
            "weekdays": ["mon", "tue", "wed", "thu", "fri"], "start_time": "07:00",
            "duration_minutes": 720, "valid_from": "2026-01-01"} | kw


def test_a_coordinator_rosters_a_clinician_who_reads_their_own_shifts(client, factory, ctx):
    r = client.post("/v1/on-call-shifts", json=_shift(ctx), headers=ctx["hc"])
    assert r.status_code == 201, r.text
    shift = r.json()
    assert r.headers["Location"] == f"/v1/on-call-shifts/{shift['id']}"
    assert r.headers["ETag"] == '"1"' and shift["start_time"] == "07:00:00"
    assert shift["created_by"] == f"user:{ctx['coord'].id}"
    assert factory.audits("on_call_shift.create")
    other = client.post("/v1/on-call-shifts", headers=ctx["hc"], json=_shift(
        ctx, user_id=str(ctx["sup"].id), level="duty_supervisor"))
    assert other.status_code == 201, other.text
    mine = client.get("/v1/on-call-shifts", headers=ctx["hclin"]).json()["items"]
    assert [s["id"] for s in mine] == [shift["id"]]
    assert client.get(f"/v1/on-call-shifts/{other.json()['id']}",
                      headers=ctx["hclin"]).status_code == 404
    every = client.get("/v1/on-call-shifts", headers=ctx["hc"],
                       params={"level": "duty_supervisor"}).json()["items"]
    assert [s["id"] for s in every] == [other.json()["id"]]
    # coordinators of another facility, and the staff network's, see none of them
    for h in (factory.headers(factory.user(Role.coordinator, [ctx["other"]])),
              factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))):
        assert client.get("/v1/on-call-shifts", headers=h).json()["items"] == []
        assert client.get(f"/v1/on-call-shifts/{shift['id']}", headers=h).status_code == 404


@pytest.mark.parametrize("change,code", [
    ({"level": "duty_governor"}, "unknown_level"),
    ({"user": "inactive"}, "holder_inactive"),
    ({"user": "officer"}, "holder_role"),  # a clinician level needs a clinician
    ({"user": "peer"}, "holder_role"),
    ({"user": "elsewhere"}, "holder_facility"),
    ({"user": "officer", "level": "duty_supervisor", "network": "staff",
      "as": "staff_coordinator"}, "holder_network"),  # officers never hold staff-network levels
    ({"user": "missing"}, "unknown_user"),
    ({"facility": "other"}, "unknown_facility"),  # outside the caller's facilities
    ({"network": "staff"}, "network_out_of_scope"),
])
def test_the_holder_rules_refuse_and_nothing_is_written(client, factory, ctx, change, code):
    f = ctx["f"]
    users = {
        "inactive": lambda: factory.user(Role.clinician, [f], active=False),
        "officer": lambda: ctx["sup"],
        "peer": lambda: factory.user(Role.peer_supporter, [f]),
        "elsewhere": lambda: factory.user(Role.clinician, [ctx["other"]]),
        "missing": lambda: type("Missing", (), {"id": "00000000-0000-0000-0000-000000000000"}),
    }
    body = _shift(ctx)
    if "user" in change:
        body["user_id"] = str(users[change["user"]]().id)
    if "level" in change:
        body["level"] = change["level"]
    if "network" in change:
        body["network"] = change["network"]
    if "facility" in change:
        body["facility_id"] = str(ctx["other"].id)
    headers = ctx["hc"]
    if change.get("as"):
        headers = factory.headers(factory.user(Role(change["as"]), [f]))
    for path in ("/v1/on-call-shifts", "/v1/on-call-overrides"):
        if path.endswith("overrides"):
            now = datetime.now(UTC)
            body = {k: v for k, v in body.items() if k in (
                "facility_id", "network", "level", "user_id")} | {
                "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=8)).isoformat()}
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code
    assert factory.count(OnCallShift) == 0 and factory.count(OnCallOverride) == 0


@pytest.mark.parametrize("change", [
    {"weekdays": ["mon", "mon"]}, {"weekdays": []}, {"weekdays": ["monday"]},
    {"start_time": "07:00:30"}, {"start_time": "07:00+02:00"}, {"duration_minutes": 0},
    {"duration_minutes": 7 * 1440 + 1}, {"valid_until": "2025-12-31"},
    {"level": "Duty Supervisor"}, {"extra": 1},
])
def test_bad_shifts_are_refused(client, factory, ctx, change):
    r = client.post("/v1/on-call-shifts", json=_shift(ctx, **change), headers=ctx["hc"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert factory.count(OnCallShift) == 0


def test_a_shift_is_changed_and_ended_with_if_match(client, factory, ctx):
    shift = client.post("/v1/on-call-shifts", json=_shift(ctx, weekdays=[
        "mon", "tue", "wed", "thu", "fri", "sat", "sun"], start_time="00:00",
        duration_minutes=1440), headers=ctx["hc"]).json()
    url = f"/v1/on-call-shifts/{shift['id']}"
    board = {"facility_id": str(ctx["f"].id)}
    assert client.get("/v1/on-call", params=board,
                      headers=ctx["hc"]).json()["levels"][0]["staffed"]
    stale = client.patch(url, json={"valid_until": "2026-01-01"},
                         headers=ctx["hc"] | {"If-Match": '"7"'})
    assert stale.status_code == 412
    backwards = client.patch(url, json={"valid_until": "2025-01-01"},
                             headers=ctx["hc"] | {"If-Match": '"1"'})
    assert backwards.status_code == 422 and backwards.json()["code"] == "invalid_change"
    officer = client.patch(url, json={"user_id": str(ctx["sup"].id)}, headers=ctx["hc"])
    assert officer.status_code == 422 and officer.json()["code"] == "holder_role"
    ended = client.patch(url, json={"valid_until": "2026-01-01"},
                         headers=ctx["hc"] | {"If-Match": '"1"'})
    assert ended.status_code == 200, ended.text
    assert ended.json()["version"] == 2 and ended.headers["ETag"] == '"2"'
    now = client.get("/v1/on-call", params=board, headers=ctx["hc"]).json()
    assert not now["levels"][0]["staffed"] and "on_call_clinician" in now["unstaffed"]
    assert client.patch(url, json={"valid_until": "2026-02-01"},
                        headers=ctx["hclin"]).status_code == 403


def test_an_override_replaces_the_shift_on_the_board_until_cancelled(client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    cover = factory.user(Role.clinician, [ctx["f"]])
    now = datetime.now(UTC)
    r = client.post("/v1/on-call-overrides", headers=ctx["hc"], json={
        "facility_id": str(ctx["f"].id), "network": "incarcerated",
        "level": "on_call_clinician", "user_id": str(cover.id), "reason": "swap",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=2)).isoformat()})
    assert r.status_code == 201, r.text
    override = r.json()

    def holders():
        board = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id)},
                           headers=ctx["hc"]).json()
        return [(p["user_id"], p["source"]) for p in board["levels"][0]["people"]]

    assert holders() == [(str(cover.id), "override")]
    url = f"/v1/on-call-overrides/{override['id']}/cancel"
    assert client.post(url, headers=ctx["hc"]).status_code == 200
    again = client.post(url, headers=ctx["hc"])
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    assert holders() == [(str(ctx["clin"].id), "shift")]
    listed = client.get("/v1/on-call-overrides", headers=ctx["hc"],
                        params={"ends_after": now.isoformat()}).json()["items"]
    assert [(o["id"], o["status"]) for o in listed] == [(override["id"], "cancelled")]
    for bad in ({"ends_at": (now - timedelta(hours=1)).isoformat()},
                {"starts_at": "2026-06-01T10:00:00"},
                {"ends_at": (now + timedelta(days=40)).isoformat()}):
        body = {"facility_id": str(ctx["f"].id), "network": "incarcerated",
                "level": "on_call_clinician", "user_id": str(cover.id),
                "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat()}
        r = client.post("/v1/on-call-overrides", headers=ctx["hc"], json=body | bad)
        assert r.status_code == 422, (bad, r.text)
    assert factory.count(OnCallOverride) == 1


def test_the_board_shows_each_level_with_display_names_and_the_gaps(client, factory, ctx):
    factory.shift(ctx["f"], ctx["clin"])
    factory.shift(ctx["f"], ctx["sup"], "duty_supervisor")
    officer = factory.headers(factory.user(Role.officer, [ctx["f"]]))
    r = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id)}, headers=officer)
    assert r.status_code == 200, r.text
    board = r.json()
    assert board["timezone"] == "America/Chicago" and board["network"] == "incarcerated"
    assert [(lv["level"], lv["name"], [p["display_name"] for p in lv["people"]])
            for lv in board["levels"]] == [(1, "on_call_clinician", [ctx["clin"].username]),
                                           (2, "duty_supervisor", [ctx["sup"].username]),
                                           (3, "facility_commander", [])]
    assert board["unstaffed"] == ["facility_commander"]
    # a clinician works both networks: they say which
    r = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id)},
                   headers=ctx["hclin"])
    assert r.status_code == 422 and r.json()["code"] == "network_required"
    r = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id),
                                          "network": "staff"}, headers=ctx["hclin"])
    assert r.status_code == 200 and r.json()["unstaffed"] == CHAIN
    # walls: another facility, the other network, a naive instant
    assert client.get("/v1/on-call", params={"facility_id": str(ctx["other"].id)},
                      headers=officer).status_code == 404
    assert client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id),
                                             "network": "staff"},
                      headers=officer).status_code == 404
    naive = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id),
                                              "at": "2026-06-01T10:00:00"}, headers=officer)
    assert naive.status_code == 422 and naive.json()["code"] == "invalid_time"
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]]))
    assert client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id)},
                      headers=peer).status_code == 403


@pytest.mark.parametrize("tz,night_start,night_end", [
    ("America/Chicago", "2026-10-31T23:59:00Z", "2026-11-01T13:00:00Z"),  # fall back: 13 h
    ("America/Chicago", "2026-03-08T00:59:00Z", "2026-03-08T12:00:00Z"),  # spring: 11 h
    ("Europe/London", "2026-10-24T17:59:00Z", "2026-10-25T07:00:00Z"),
    ("Europe/London", "2026-03-28T18:59:00Z", "2026-03-29T06:00:00Z"),
])
def test_the_board_across_dst_nights(client, factory, tz, night_start, night_end):
    """Day 07:00 and night 19:00, 12 h each (wall clock): the night holder is on call until
    07:00 local, and someone is on call at every instant of the night."""
    f = factory.facility(timezone=tz, settings={"escalation_chain": ["on_call_clinician"]})
    day, night = factory.user(Role.clinician, [f]), factory.user(Role.clinician, [f])
    factory.shift(f, day, start="07:00", minutes=720)
    factory.shift(f, night, start="19:00", minutes=720)
    h = factory.headers(factory.user(Role.coordinator, [f]))

    def who(at: datetime) -> list[str]:
        r = client.get("/v1/on-call", params={"facility_id": str(f.id), "at": at.isoformat()},
                       headers=h)
        assert r.status_code == 200, r.text
        return [p["user_id"] for p in r.json()["levels"][0]["people"]]

    start = datetime.fromisoformat(night_start)
    end = datetime.fromisoformat(night_end)
    assert who(start) == [str(day.id)]
    t = start + timedelta(minutes=1)
    while t < end:
        assert who(t) == [str(night.id)], t
        t += timedelta(minutes=30)
    assert who(end - timedelta(seconds=1)) == [str(night.id)]
    assert who(end) == [str(day.id)]


def test_admins_manage_rosters_in_every_network(client, factory, ctx):
    admin = factory.headers(factory.user(Role.admin))
    staff_lead = factory.user(Role.staff_coordinator, [ctx["f"]])
    r = client.post("/v1/on-call-shifts", headers=admin, json=_shift(
        ctx, network="staff", level="duty_supervisor", user_id=str(staff_lead.id)))
    assert r.status_code == 201, r.text
    board = client.get("/v1/on-call", params={"facility_id": str(ctx["f"].id),
                                              "network": "staff"}, headers=admin)
    assert board.status_code == 200

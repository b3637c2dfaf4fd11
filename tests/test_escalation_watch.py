"""The watch log's integrity: an observation is dated within the escalation's life (not before
the raise, not in the future beyond the clock skew); each entry shows when it was written and
by whom; one written long after the fact is late, shown as late in the log and in the gap
report, and never closes a gap in the required staff cadence (nor resets the worker's missed
check clock). Resolution stamps are written once; a reopen keeps the history."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.models import Escalation, Observation
from app.models.common import Role
from app.services.escalations import watch_sweep


@pytest.fixture()
def ctx(factory: Any) -> dict[str, Any]:
    f = factory.facility()
    officer = factory.user(Role.officer, [f])
    return {"f": f, "person": factory.recipient(f), "officer_user": officer,
            "officer": factory.headers(officer),
            "clin": factory.headers(factory.user(Role.clinician, [f]))}


def _raise(client: Any, ctx: dict[str, Any], tier: str = "imminent") -> str:
    r = client.post("/v1/escalations", headers=ctx["officer"] | {
        "Idempotency-Key": str(uuid.uuid4())}, json={
        "participant_id": str(ctx["person"].id), "category": "suicide_risk",
        "description": "seen", "tier": tier})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _raised_ago(factory: Any, eid: str, minutes: int) -> datetime:
    t0 = datetime.now(UTC) - timedelta(minutes=minutes)
    with factory.engine.begin() as conn:
        conn.execute(update(Escalation).where(Escalation.id == uuid.UUID(eid))
                     .values(raised_at=t0))
    return t0


def _observe(client: Any, h: dict[str, str], eid: str, at: datetime) -> Any:
    return client.post(f"/v1/escalations/{eid}/observations", headers=h,
                       json={"observed_at": at.isoformat(), "seen": "Awake, responsive"})


def test_an_observation_is_dated_within_the_escalations_life(client, factory, ctx):
    eid = _raise(client, ctx)
    t0 = _raised_ago(factory, eid, 10)
    before = _observe(client, ctx["officer"], eid, t0 - timedelta(seconds=1))
    assert before.status_code == 422 and before.json()["code"] == "observed_before_raise"
    ahead = _observe(client, ctx["officer"], eid, datetime.now(UTC) + timedelta(minutes=5))
    assert ahead.status_code == 422 and ahead.json()["code"] == "observed_in_future"
    assert factory.count(Observation) == 0  # nothing changed
    # within the clock skew (default 2 minutes): a handheld's clock a little ahead is fine
    assert _observe(client, ctx["officer"], eid,
                    datetime.now(UTC) + timedelta(seconds=60)).status_code == 201
    assert _observe(client, ctx["officer"], eid, t0).status_code == 201  # the raise itself


def test_the_clock_skew_is_a_setting(app, client, factory, ctx):
    app.state.settings.observation_clock_skew_seconds = 10
    eid = _raise(client, ctx)
    r = _observe(client, ctx["officer"], eid, datetime.now(UTC) + timedelta(seconds=60))
    assert r.status_code == 422 and r.json()["code"] == "observed_in_future"


def test_each_entry_shows_when_it_was_written_and_by_whom(client, factory, ctx):
    eid = _raise(client, ctx)
    t0 = _raised_ago(factory, eid, 40)
    written = _observe(client, ctx["officer"], eid, t0 + timedelta(minutes=1)).json()
    assert written["recorded_by"] == f"user:{ctx['officer_user'].id}"
    recorded = datetime.fromisoformat(written["recorded_at"])
    assert abs((recorded - datetime.now(UTC)).total_seconds()) < 30  # server time, not claimed
    assert written["late"] is True  # 39 minutes after the fact
    on_time = _observe(client, ctx["officer"], eid, datetime.now(UTC) - timedelta(minutes=14))
    assert on_time.json()["late"] is False
    log = client.get(f"/v1/escalations/{eid}/watch", headers=ctx["clin"]).json()
    assert [(o["late"], o["recorded_by"]) for o in log["observations"]] == [
        (True, written["recorded_by"]), (False, written["recorded_by"])]
    assert all(o["recorded_at"] for o in log["observations"])


def test_a_late_entry_never_fills_a_gap_as_if_on_time(client, factory, ctx):
    eid = _raise(client, ctx)  # imminent: a staff check at least every 5 minutes
    t0 = _raised_ago(factory, eid, 30)
    # written now, about checks 26 and 28 minutes ago: late backfill
    late = [_observe(client, ctx["officer"], eid, t0 + timedelta(minutes=m)).json()
            for m in (4, 2)]
    assert all(o["late"] for o in late)
    log = client.get(f"/v1/escalations/{eid}/watch", headers=ctx["clin"]).json()
    assert len(log["gaps"]) == 1  # the whole half hour is one gap: late entries do not count
    gap = log["gaps"][0]
    assert gap["minutes"] >= 29
    assert gap["late_observations"] == [late[1]["id"], late[0]["id"]]  # in the order observed


def test_the_late_threshold_is_a_setting(app, client, factory, ctx):
    app.state.settings.observation_late_minutes = 60
    eid = _raise(client, ctx)
    t0 = _raised_ago(factory, eid, 30)
    assert _observe(client, ctx["officer"], eid, t0 + timedelta(minutes=1)).json()["late"] is False


def test_a_late_entry_does_not_reset_the_missed_check_clock(app, client, factory, ctx):
    eid = _raise(client, ctx)
    t0 = _raised_ago(factory, eid, 30)
    _observe(client, ctx["officer"], eid, t0 + timedelta(minutes=28))  # late? no: 2 min ago

    async def sweep(now: datetime) -> dict[str, int]:
        async with app.state.sessionmaker() as s:
            return await watch_sweep(s, app.state.settings, now)

    # on time at t0+28: the clock counts from there
    assert asyncio.run(sweep(t0 + timedelta(minutes=31))) == {"missed": 0}
    other = _raise(client, ctx)
    t1 = _raised_ago(factory, other, 30)
    _observe(client, ctx["officer"], other, t1 + timedelta(minutes=10))  # 20 minutes late
    # the late entry is not a check on time: at t1+12 the lapse since the raise shows (had the
    # entry counted, the next check would only be due at t1+15)
    assert asyncio.run(sweep(t1 + timedelta(minutes=12))) == {"missed": 1}


def test_resolution_stamps_are_written_once_and_the_timeline_keeps_each(client, factory, ctx):
    eid = _raise(client, ctx, tier="low")
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    first = client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"],
                        json={"outcome": "Settled"}).json()
    client.post(f"/v1/escalations/{eid}/reopen", headers=ctx["clin"], json={"reason": "Again"})
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    second = client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"],
                         json={"outcome": "Moved to health care"}).json()
    assert second["resolved_at"] == first["resolved_at"]  # stamped once
    assert second["resolved_by"] == first["resolved_by"]
    assert second["outcome"] == "Moved to health care"  # the current outcome
    timeline = client.get(f"/v1/escalations/{eid}/timeline", headers=ctx["clin"]).json()
    resolutions = [e for e in timeline if e["kind"] == "resolved"]
    assert [e["detail"]["outcome"] for e in resolutions] == ["Settled", "Moved to health care"]


def test_the_watch_window_runs_to_the_last_resolution(client, factory, ctx):
    eid = _raise(client, ctx, tier="high")
    t0 = _raised_ago(factory, eid, 60)
    # resolved (first) 40 minutes ago, reopened, resolved again now
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    body = {"outcome": "ok", "follow_up_plan": "checks", "review_date": "2030-01-01"}
    client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"], json=body)
    with factory.engine.begin() as conn:
        conn.execute(update(Escalation).where(Escalation.id == uuid.UUID(eid))
                     .values(resolved_at=t0 + timedelta(minutes=20)))
    client.post(f"/v1/escalations/{eid}/reopen", headers=ctx["clin"], json={"reason": "again"})
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    client.post(f"/v1/escalations/{eid}/resolve", headers=ctx["clin"], json=body)
    log = client.get(f"/v1/escalations/{eid}/watch", headers=ctx["clin"]).json()
    end = datetime.fromisoformat(log["gaps"][-1]["end"])
    assert abs((end - datetime.now(UTC)).total_seconds()) < 60  # not the first resolution

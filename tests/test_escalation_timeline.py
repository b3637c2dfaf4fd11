"""A readable timeline, and a clock that cannot contradict itself.

- Every entry names its actor twice: the stable id (`by`) and a display name (`by_name`: the
  username, an API client's name, "system" for the worker).
- The acknowledgement note, each resolution's outcome and follow-up plan, the reopen reason and
  the tier change reason are recorded; their text reaches clinicians only (as the escalation
  views decide for clinical detail), the others see that they exist.
- `breached` is "the current deadline has passed unacknowledged", so it always agrees with
  `seconds_remaining`; past breaches are counted by `chain_level`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.models import Escalation, EscalationEvent
from app.models.common import Role
from app.services.escalations import breach_sweep


@pytest.fixture()
def ctx(factory: Any) -> dict[str, Any]:
    f = factory.facility(settings={"ack_minutes": {"imminent": 3},
                                   "escalation_chain": ["on_call_clinician", "duty_supervisor"]})
    users = {role: factory.user(role, [f]) for role in (Role.officer, Role.clinician,
                                                         Role.coordinator)}
    # Someone on call at each level, so a breach climbs one level (paging: test_paging.py).
    factory.shift(f, users[Role.clinician])
    factory.shift(f, users[Role.officer], "duty_supervisor")
    return {"f": f, "person": factory.recipient(f), "users": users,
            "officer": factory.headers(users[Role.officer]),
            "clin": factory.headers(users[Role.clinician]),
            "coord": factory.headers(users[Role.coordinator])}


def _raise(client: Any, ctx: dict[str, Any], tier: str = "high") -> str:
    r = client.post("/v1/escalations", headers=ctx["officer"] | {
        "Idempotency-Key": str(uuid.uuid4())}, json={
        "participant_id": str(ctx["person"].id), "category": "self_harm",
        "description": "Cutting, distressed", "tier": tier})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _sweep(app: Any, now: datetime) -> dict[str, int]:
    async def go() -> dict[str, int]:
        async with app.state.sessionmaker() as s:
            return await breach_sweep(s, app.state.settings, now)
    return asyncio.run(go())


def _work_it_through(client: Any, ctx: dict[str, Any], eid: str) -> None:
    def ok(path: str, h: dict[str, str], body: dict[str, Any]) -> None:
        r = client.post(f"/v1/escalations/{eid}/{path}", headers=h, json=body)
        assert r.status_code == 200, r.text

    ok("tier", ctx["coord"], {"tier": "imminent", "reason": "Found a blade under the mattress"})
    ok("acknowledge", ctx["clin"], {"note": "On my way, 2 minutes"})
    ok("resolve", ctx["clin"], {"outcome": "Wounds dressed, calmer", "follow_up_plan":
                                "Daily review for 7 days", "review_date": "2030-01-08"})
    ok("reopen", ctx["coord"], {"reason": "Distressed again after a phone call"})


def test_actors_show_their_display_names(app, client, factory, ctx):
    eid = _raise(client, ctx)  # high: 15 minutes
    assert _sweep(app, datetime.now(UTC) + timedelta(minutes=16)) == {"breached": 1}
    _work_it_through(client, ctx, eid)
    machine = factory.api_client(["escalations:read"], [ctx["f"]])
    factory._save(EscalationEvent(escalation_id=uuid.UUID(eid), kind="imported", by=(
        f"client:{machine.id}"), at=datetime.now(UTC) + timedelta(seconds=5), detail={}))
    timeline = client.get(f"/v1/escalations/{eid}/timeline", headers=ctx["coord"]).json()
    users = ctx["users"]
    paging = {"paged", "unstaffed", "page_acknowledged"}  # the pages' own entries
    assert [(e["kind"], e["by"], e["by_name"]) for e in timeline
            if e["kind"] not in paging] == [
        ("created", f"user:{users[Role.officer].id}", users[Role.officer].username),
        ("breached", "system", "system"),
        ("tier_changed", f"user:{users[Role.coordinator].id}", users[Role.coordinator].username),
        ("acknowledged", f"user:{users[Role.clinician].id}", users[Role.clinician].username),
        ("resolved", f"user:{users[Role.clinician].id}", users[Role.clinician].username),
        ("reopened", f"user:{users[Role.coordinator].id}", users[Role.coordinator].username),
        ("imported", f"client:{machine.id}", machine.name),
    ]


def test_notes_outcomes_and_reasons_are_recorded_for_those_who_may_read_them(client, ctx):
    eid = _raise(client, ctx)
    _work_it_through(client, ctx, eid)
    clin = {e["kind"]: e["detail"] for e in client.get(
        f"/v1/escalations/{eid}/timeline", headers=ctx["clin"]).json()}
    assert clin["tier_changed"] == {"from": "high", "to": "imminent",
                                    "reason": "Found a blade under the mattress"}
    assert clin["acknowledged"] == {"note": "On my way, 2 minutes"}
    assert clin["resolved"] == {"outcome": "Wounds dressed, calmer",
                                "follow_up_plan": "Daily review for 7 days",
                                "review_date": "2030-01-08"}
    assert clin["reopened"] == {"reason": "Distressed again after a phone call"}
    # a coordinator reads the timeline, not its clinical text (as the escalation's own view)
    coord = {e["kind"]: e["detail"] for e in client.get(
        f"/v1/escalations/{eid}/timeline", headers=ctx["coord"]).json()}
    assert coord["tier_changed"] == {"from": "high", "to": "imminent", "reason": None}
    assert coord["acknowledged"] == {"note": None}
    assert coord["resolved"] == {"outcome": None, "follow_up_plan": None, "review_date": None}
    assert coord["reopened"] == {"reason": None}
    assert client.get(f"/v1/escalations/{eid}", headers=ctx["coord"]).json()["outcome"] is None


def test_an_acknowledgement_without_a_note_records_none(client, ctx):
    eid = _raise(client, ctx)
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    timeline = client.get(f"/v1/escalations/{eid}/timeline", headers=ctx["clin"]).json()
    assert timeline[-1]["detail"] == {"note": None}


def _both_reads(client: Any, h: dict[str, str], eid: str) -> list[dict[str, Any]]:
    single = client.get(f"/v1/escalations/{eid}", headers=h).json()
    listed = [x for x in client.get("/v1/escalations", headers=h).json()["items"]
              if x["id"] == eid]
    return [single, *listed]


def test_breached_and_seconds_remaining_always_agree(app, client, factory, ctx):
    eid = _raise(client, ctx, tier="moderate")  # 60 minutes; a moderate raise pages nobody
    for read in _both_reads(client, ctx["clin"], eid):
        assert read["breached"] is False and 0 < read["seconds_remaining"] <= 3600
        assert read["chain_level"] == 0
    # the deadline passes before the worker's next round: breached, and no time left
    with factory.engine.begin() as conn:
        conn.execute(update(Escalation).where(Escalation.id == uuid.UUID(eid)).values(
            ack_deadline=datetime.now(UTC) - timedelta(seconds=30)))
    for read in _both_reads(client, ctx["clin"], eid):
        assert read["breached"] is True and read["seconds_remaining"] <= -30
        assert read["chain_level"] == 0
    # the worker moves it up the chain with the next level's deadline: not breached (yet), one
    # breach behind it
    assert _sweep(app, datetime.now(UTC)) == {"breached": 1}
    for read in _both_reads(client, ctx["officer"], eid):
        assert read["breached"] is False and read["seconds_remaining"] > 0
        assert read["chain_level"] == 1
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=ctx["clin"], json={})
    for read in _both_reads(client, ctx["clin"], eid):
        assert read["breached"] is False and read["seconds_remaining"] is None
        assert read["chain_level"] == 1  # the breach stays counted


def test_the_fields_say_what_they_mean(app):
    schema = app.openapi()["components"]["schemas"]["EscalationRead"]["properties"]
    assert "current acknowledgement deadline" in schema["breached"]["description"]
    assert "seconds_remaining" in schema["breached"]["description"]
    assert "breach" in schema["chain_level"]["description"]

"""Reading a participant by a source system's id: a GET that never creates anything, behind the
participant wall (an id held outside it reads exactly as an unknown one)."""

import pytest

from app.models import OutboxEvent, Participant, ParticipantExternalId
from app.models.common import Role


@pytest.fixture()
def ctx(factory):
    f, g = factory.facility("CCJ"), factory.facility("NCF")
    jms = factory.api_client(["participants:read", "participants:write"], [f])
    return {"f": f, "g": g, "jms": factory.headers(jms),
            "coord": factory.headers(factory.user(Role.coordinator, [f]))}


def _get(client, headers, source, value):
    return client.get(f"/v1/participants/by-external-id/{source}/{value}", headers=headers)


def test_reads_the_person_an_external_id_names(client, factory, ctx):
    p = factory.participant(ctx["f"], external=("jms", "J-77"), preferred_name="Sam")
    for headers in (ctx["jms"], ctx["coord"]):
        r = _get(client, headers, "jms", "J-77")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == str(p.id) and body["preferred_name"] == "Sam"
        assert {"source": "jms", "value": "J-77"} in body["external_ids"]
        assert r.headers["ETag"] == f'"{body["version"]}"'
    # Same answer as the read by id.
    assert client.get(f"/v1/participants/{p.id}", headers=ctx["coord"]).json() == r.json()


def test_never_creates_anything(client, factory, ctx):
    # (A miss is audited as any denied read is; nothing else is written.)
    before = [factory.count(m) for m in (Participant, ParticipantExternalId, OutboxEvent)]
    r = _get(client, ctx["jms"], "jms", "J-404")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert [factory.count(m) for m in (Participant, ParticipantExternalId,
                                       OutboxEvent)] == before


def _same(problem):
    return {k: v for k, v in problem.items() if k not in ("request_id", "instance")}


def test_outside_the_wall_reads_as_unknown(client, factory, ctx):
    factory.participant(ctx["g"], external=("jms", "J-elsewhere"))
    factory.participant(ctx["f"], "staff", external=("hr", "S-1"))
    unknown = _get(client, ctx["jms"], "jms", "J-never")
    assert unknown.status_code == 404
    for source, value in (("jms", "J-elsewhere"), ("hr", "S-1")):
        for headers in (ctx["jms"], ctx["coord"]):
            r = _get(client, headers, source, value)
            assert r.status_code == 404
            assert _same(r.json()) == _same(unknown.json())


def test_the_read_scope_is_required(client, factory, ctx):
    factory.participant(ctx["f"], external=("jms", "J-1"))
    writer_only = factory.api_client(["participants:write"], [ctx["f"]])
    assert _get(client, factory.headers(writer_only), "jms", "J-1").status_code == 403
    assert _get(client, {}, "jms", "J-1").status_code == 401

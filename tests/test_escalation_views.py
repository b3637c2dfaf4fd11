"""Role-shaped escalation answers say which shape they are (`view`), and the contract maps each
value to its schema (an OpenAPI discriminator), so a generated client decodes them without
guessing from which fields happen to be present."""

from __future__ import annotations

import uuid
from typing import Any

from app.models.common import Role

SCHEMAS = {"full": "EscalationRead", "status": "EscalationStatusView",
           "receipt": "EscalationReceipt"}


def _raise(client: Any, h: dict[str, str], **body: Any) -> Any:
    body = {"category": "violence_threat", "description": "Said he would stab him",
            "tier": "high"} | body
    return client.post("/v1/escalations", json=body,
                       headers=h | {"Idempotency-Key": str(uuid.uuid4())})


def test_each_answer_names_its_shape_and_has_exactly_that_shapes_fields(client, factory):
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    a = factory.facility()
    sup, mine, stranger = factory.certified_supporter(a), factory.recipient(a), factory.recipient(a)
    factory.pairing(sup, mine)
    peer = factory.headers(factory.user(Role.peer_supporter, [a], participant=sup))
    officer = factory.headers(factory.user(Role.officer, [a]))
    clin = factory.headers(factory.user(Role.clinician, [a]))
    machine = factory.headers(factory.api_client(["escalations:read"], [a]))

    def shape(r: Any, view: str) -> None:
        assert r.status_code in (200, 201), r.text
        body = r.json()
        assert body["view"] == view
        assert list(body) == list(spec[SCHEMAS[view]]["properties"])  # keys, in order

    seen = _raise(client, officer, participant_id=str(mine.id))
    shape(seen, "full")
    eid = seen.json()["id"]
    shape(client.get(f"/v1/escalations/{eid}", headers=clin), "full")
    shape(client.get(f"/v1/escalations/{eid}", headers=machine), "status")
    shape(_raise(client, peer, participant_id=str(mine.id)), "status")
    blind = _raise(client, peer, participant_id=str(stranger.id))
    shape(blind, "receipt")
    shape(client.get(f"/v1/escalations/{blind.json()['id']}", headers=peer), "receipt")
    moved = client.post(f"/v1/escalations/{eid}/acknowledge", headers=clin, json={})
    shape(moved, "full")
    items = client.get("/v1/escalations", headers=peer).json()["items"]
    assert sorted(i["view"] for i in items) == ["receipt", "status"]
    assert {i["view"] for i in client.get("/v1/escalations", headers=clin).json()["items"]} \
        == {"full"}


def test_the_contract_carries_the_discriminator_on_every_escalation_answer(client):
    spec = client.get("/openapi.json").json()
    union = spec["components"]["schemas"]["EscalationView"]
    assert union["discriminator"] == {
        "propertyName": "view",
        "mapping": {v: f"#/components/schemas/{s}" for v, s in SCHEMAS.items()}}
    assert "anyOf" not in union
    assert [o["$ref"] for o in union["oneOf"]] == [f"#/components/schemas/{s}"
                                                   for s in SCHEMAS.values()]
    for view, name in SCHEMAS.items():
        schema = spec["components"]["schemas"][name]
        assert schema["properties"]["view"]["const"] == view and "view" in schema["required"]
    answers = 0
    for item in spec["paths"].values():
        for op in item.values():
            for resp in op["responses"].values():
                text = str(resp.get("content", {}))
                assert not any(f"schemas/{name}'" in text for name in SCHEMAS.values()), op
                answers += "schemas/EscalationView'" in text or "Page_EscalationView_" in text
    assert answers >= 9

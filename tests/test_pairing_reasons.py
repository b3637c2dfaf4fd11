"""Pause and end reasons are enums in the contract: a person's words go to `pause_note`, the
system's reasons are values of PauseReason, and a keep-apart reads `not_possible` to a peer."""

from app.models import Pairing
from app.models.common import Role
from app.models.pairing import EndReason, PauseReason


def test_pause_and_end_reasons_are_enums_in_the_contract(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    read = schemas["PairingRead"]["properties"]
    assert read["pause_reason"]["anyOf"][0] == {"$ref": "#/components/schemas/PauseReason"}
    assert read["end_reason"]["anyOf"][0] == {"$ref": "#/components/schemas/EndReason"}
    assert schemas["PauseReason"]["enum"] == [r.value for r in PauseReason]
    assert schemas["EndReason"]["enum"] == [r.value for r in EndReason]


def test_a_persons_words_are_a_note_and_the_system_reasons_are_values(client, factory):
    f = factory.facility()
    coord = factory.headers(factory.user(Role.coordinator, [f]))
    sup = factory.certified_supporter(f)
    worded = factory.pairing(sup, factory.recipient(f))
    r = client.post(f"/v1/pairings/{worded.id}/pause", headers=coord,
                    json={"reason": "On leave for two weeks"})
    assert r.status_code == 200, r.text
    assert r.json()["pause_reason"] == "requested"
    assert r.json()["pause_note"] == "On leave for two weeks"
    silent = factory.pairing(factory.certified_supporter(f), factory.recipient(f))
    r = client.post(f"/v1/pairings/{silent.id}/pause", headers=coord, json={})
    assert r.json()["pause_reason"] == "requested" and r.json()["pause_note"] is None
    resumed = client.post(f"/v1/pairings/{silent.id}/resume", headers=coord, json={}).json()
    assert resumed["pause_reason"] is None and resumed["pause_note"] is None

    kept = factory.pairing(factory.certified_supporter(f), factory.recipient(f))
    kept.status, kept.pause_reason = "paused", PauseReason.keep_apart.value
    factory._save(kept)
    assert factory.get(Pairing, kept.id).pause_reason == "keep_apart"
    seen = client.get(f"/v1/pairings/{kept.id}", headers=coord).json()
    assert seen["pause_reason"] == "keep_apart" and seen["pause_note"] is None
    peer = factory.headers(factory.user(Role.peer_supporter, [f], participant=kept_supporter(
        factory, kept)))
    told = client.get(f"/v1/pairings/{kept.id}", headers=peer).json()
    assert told["pause_reason"] == "not_possible" and "keep_apart" not in str(told)


def kept_supporter(factory, pairing):
    from app.models import Participant

    return factory.get(Participant, pairing.supporter_id)

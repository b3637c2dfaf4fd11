"""Idempotency-Key on every POST (API-CONVENTIONS; IETF httpapi idempotency-key draft):
same key + same body replays the stored response, another body is a 422, in flight is a 409,
keys are per caller and kept 24 h, a failed request releases its key, and what is stored is
encrypted at rest."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from app.db import make_async_engine, make_sessionmaker
from app.models import IdempotencyKey, Participant
from app.models.common import Role
from app.routemarks import api_routes, marked, no_idempotency_key
from app.services import idempotency


@pytest.fixture()
def world(factory):
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    coord = factory.user(Role.coordinator, [f])
    other = factory.user(Role.coordinator, [f])
    return {"f": f, "coord": coord, "h": factory.headers(coord), "other": factory.headers(other)}


def _body(**kw):
    return {"network": "incarcerated", "legal_name": "Sam Roe", "facility_code": "CCJ",
            "housing_unit_code": "A1", "program_roles": ["recipient"]} | kw


def _post(client, h, key, body):
    return client.post("/v1/participants", headers=h | {"Idempotency-Key": key}, json=body)


def _row(factory, key):
    with Session(factory.engine) as s:
        return s.execute(select(IdempotencyKey).where(IdempotencyKey.key == key)).scalar_one()


def _set(factory, key, **values):
    with Session(factory.engine) as s:
        s.execute(update(IdempotencyKey).where(IdempotencyKey.key == key).values(**values))
        s.commit()


def test_same_key_same_body_replays_the_stored_response(client, factory, world):
    first = _post(client, world["h"], "k-1", _body())
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    expires = datetime.fromisoformat(first.headers["Idempotency-Key-Expires"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    # The same document, serialised in another key order, is the same request.
    again = _post(client, world["h"], "k-1", dict(reversed(list(_body().items()))))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    assert factory.count(Participant) == 1
    assert len(factory.events("participant.created")) == 1
    assert len(factory.audits("participant.create")) == 1


def test_same_key_other_body_is_422_and_changes_nothing(client, factory, world):
    assert _post(client, world["h"], "k-2", _body()).status_code == 201
    r = _post(client, world["h"], "k-2", _body(legal_name="Someone Else"))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "idempotency_key_reused"
    assert "Someone" not in r.text  # never echoes the body
    assert factory.count(Participant) == 1


def test_the_same_key_on_another_path_is_another_body(client, factory, world):
    assert _post(client, world["h"], "k-3", _body()).status_code == 201
    r = client.post("/v1/session-topics", headers=world["h"] | {"Idempotency-Key": "k-3"},
                    json={"code": "x", "label": "X"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"


def test_keys_belong_to_their_caller(client, factory, world):
    assert _post(client, world["h"], "shared", _body()).status_code == 201
    r = _post(client, world["other"], "shared", _body())
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert factory.count(Participant) == 2


def test_in_flight_is_409_with_retry_after(client, factory, world, settings, app):
    async def hold() -> object:
        engine = make_async_engine(settings)
        try:
            return await idempotency.claim(make_sessionmaker(engine), settings,
                                           caller=f"user:{world['coord'].id}",
                               key="k-4", fingerprint=_fingerprint_of(_body()),
                               cipher=app.state.note_cipher)
        finally:
            await engine.dispose()

    held = asyncio.run(hold())
    assert isinstance(held, idempotency.Claim)
    r = _post(client, world["h"], "k-4", _body())
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"
    assert 1 <= int(r.headers["Retry-After"]) <= 5
    assert factory.count(Participant) == 0
    # The holder died without writing anything: once its lease is over, a retry takes over.
    _set(factory, "k-4", locked_until=datetime.now(UTC) - timedelta(seconds=1))
    r = _post(client, world["h"], "k-4", _body())
    assert r.status_code == 201 and factory.count(Participant) == 1


def _fingerprint_of(body):
    import json

    from app.idempotency import fingerprint
    raw = json.dumps(body).encode()
    return fingerprint({"method": "POST", "path": "/v1/participants", "query_string": b""},
                       raw, "application/json")


DEAD = "12345.gone"  # a holder no live process is: PostgreSQL: nobody holds its lock


def _answer_lost(factory, key, **values):
    """The state a process leaves when it dies between its business commit and storing its
    answer (tests/test_api_killed_mid_raise.py kills a real one there)."""
    _set(factory, key, state="committed", response_status=None, response_headers=[],
         response_body=None, response_key=None, response_key_id=None, **values)


def test_applied_but_answer_lost_is_answered_from_the_saved_record(client, factory, world):
    first = _post(client, world["h"], "k-5", _body())
    assert first.status_code == 201
    _answer_lost(factory, "k-5")  # between its commit and storing its answer...
    row = _row(factory, "k-5")
    assert (row.result_type, row.result_id) == ("participant", first.json()["id"])
    r = _post(client, world["h"], "k-5", _body())  # ...in this (live) process: still running
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"
    assert 1 <= int(r.headers["Retry-After"]) <= 5
    # Its process died: the retry is answered at once from the record it saved.
    _set(factory, "k-5", holder=DEAD)
    again = _post(client, world["h"], "k-5", _body())
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    for name in ("Location", "ETag", "Idempotency-Key-Expires"):
        assert again.headers[name] == first.headers[name], name
    assert factory.count(Participant) == 1
    assert len(factory.events("participant.created")) == 1
    assert len(factory.audits("participant.create")) == 1
    # The rebuilt answer is stored (encrypted) like any other and replayed from then on.
    row = _row(factory, "k-5")
    assert row.state == "completed" and row.response_status == 201
    assert first.json()["id"].encode() not in (row.response_body or b"")
    third = _post(client, world["h"], "k-5", _body())
    assert third.status_code == 201 and third.json() == first.json()


def test_a_lease_run_out_also_answers_from_the_saved_record(client, factory, world):
    first = _post(client, world["h"], "k-5b", _body())
    _answer_lost(factory, "k-5b", holder=None,
                 locked_until=datetime.now(UTC) - timedelta(seconds=1))
    again = _post(client, world["h"], "k-5b", _body())
    assert again.status_code == 201 and again.json() == first.json()
    assert factory.count(Participant) == 1


def test_applied_but_answer_lost_without_a_rebuild_is_409_not_a_second_write(
        client, factory, world):
    """A route that declares no rebuilt answer (routemarks.rebuilt_by): the retry learns the
    change was applied, and nothing runs twice."""
    admin = factory.headers(factory.user(Role.admin))
    body = {"code": "after_a_crash", "label": "After a crash"}
    post = lambda: client.post("/v1/session-topics", json=body,  # noqa: E731
                               headers=admin | {"Idempotency-Key": "k-5c"})
    assert post().status_code == 201
    _answer_lost(factory, "k-5c", holder=DEAD)
    r = post()
    assert r.status_code == 409 and r.json()["code"] == "idempotency_outcome_unknown"
    assert len(factory.audits("session_topic.create")) == 1


def test_a_saved_record_out_of_the_callers_sight_is_409_outcome_unknown(
        client, factory, world):
    first = _post(client, world["h"], "k-5d", _body())
    _answer_lost(factory, "k-5d", holder=DEAD)
    elsewhere = factory.facility("FAR")
    with Session(factory.engine) as s:
        s.execute(update(Participant).where(Participant.id == uuid.UUID(first.json()["id"]))
                  .values(facility_id=elsewhere.id, housing_unit_id=None))
        s.commit()
    r = _post(client, world["h"], "k-5d", _body())
    assert r.status_code == 409 and r.json()["code"] == "idempotency_outcome_unknown"
    assert factory.count(Participant) == 1
    row = _row(factory, "k-5d")  # given back: the next retry tries again
    assert row.state == "committed" and row.holder is None


def test_a_dead_holders_claim_is_taken_over_at_once(client, factory, world, app):
    """A claim whose process died before its business commit: the retry runs the request at
    once, without waiting out the lease. A live holder still answers 409 in flight."""
    _set_claim = _hold_claim(world, app, "k-13")
    assert isinstance(_set_claim, idempotency.Claim)
    _set(factory, "k-13", holder=app.state.liveness.holder)  # this live process holds it
    r = _post(client, world["h"], "k-13", _body())
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"
    assert _row(factory, "k-13").locked_until > datetime.now(UTC) + timedelta(seconds=30)
    _set(factory, "k-13", holder=DEAD)  # its process is gone; the lease has ~60 s to run
    r = _post(client, world["h"], "k-13", _body())
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert factory.count(Participant) == 1
    assert _row(factory, "k-13").holder == app.state.liveness.holder


def _hold_claim(world, app, key):
    settings = app.state.settings

    async def hold() -> object:
        engine = make_async_engine(settings)
        try:
            return await idempotency.claim(make_sessionmaker(engine), settings,
                                           caller=f"user:{world['coord'].id}", key=key,
                                           fingerprint=_fingerprint_of(_body()),
                                           cipher=app.state.note_cipher)
        finally:
            await engine.dispose()

    return asyncio.run(hold())


def test_a_failed_request_releases_its_key(client, factory, world):
    bad = _post(client, world["h"], "k-6", _body(housing_unit_code="ZZ"))
    assert bad.status_code == 422
    assert factory.count(IdempotencyKey) == 0
    good = _post(client, world["h"], "k-6", _body())
    assert good.status_code == 201 and "Idempotent-Replayed" not in good.headers


def test_an_expired_key_is_a_new_request(client, factory, world):
    assert _post(client, world["h"], "k-7", _body()).status_code == 201
    _set(factory, "k-7", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    r = _post(client, world["h"], "k-7", _body(legal_name="Sam Roe Two"))
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert factory.count(Participant) == 2


def test_purge_drops_expired_keys(client, factory, world, settings):
    for key in ("old", "new"):
        assert _post(client, world["h"], key, _body(legal_name=f"P {key}")).status_code == 201
    _set(factory, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1))

    async def run() -> dict[str, int]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await idempotency.purge(session, settings)
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == {"expired_keys": 1}
    assert [r.key for r in _all(factory)] == ["new"]


def _all(factory):
    with Session(factory.engine) as s:
        return list(s.execute(select(IdempotencyKey)).scalars())


def test_stored_responses_are_encrypted_at_rest(client, factory, world):
    r = _post(client, world["h"], "k-8", _body(legal_name="Quincy Marlowe"))
    assert r.status_code == 201
    row = _row(factory, "k-8")
    assert row.state == "completed" and row.response_status == 201
    assert b"Quincy" not in (row.response_body or b"")
    assert r.json()["id"].encode() not in (row.response_body or b"")


def test_token_requests_are_never_stored(client, factory, world):
    r = client.post("/v1/auth/token", headers={"Idempotency-Key": "k-9"},
                    data={"grant_type": "password", "username": "nobody", "password": "x"})
    assert r.status_code in (400, 401)
    assert factory.count(IdempotencyKey) == 0


def test_without_a_valid_token_the_route_answers(client, factory, world):
    r = client.post("/v1/participants", headers={"Idempotency-Key": "k-10",
                                                 "Authorization": "Bearer nope"}, json=_body())
    assert r.status_code == 401
    assert factory.count(IdempotencyKey) == 0


def test_the_contract_documents_the_header_on_every_post(app):
    schema = app.openapi()
    # Routes marked NoIdempotencyKey (tokens, stream tickets: credentials are never stored).
    unkept = {p for m, p in marked(api_routes(app.routes), no_idempotency_key).templates
              if m == "POST"}
    assert "/v1/stream/tickets" in unkept
    for path, item in schema["paths"].items():
        op = item.get("post")
        if op is None or path.startswith("/v1/auth/") or path in unkept:
            continue
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert "Idempotency-Key" in names, path
        assert {"409", "422"} <= set(op["responses"]), path
    raise_ = schema["paths"]["/v1/escalations"]["post"]
    header = next(p for p in raise_["parameters"] if p["name"] == "Idempotency-Key")
    assert header["required"] is True


def test_concurrent_retries_with_one_key_create_once(live_server, factory, world):
    """Eight copies of one request at once (a client's retries racing its first attempt):
    one creates, the others get its stored answer or 409 in flight; never a second record."""
    import threading

    import httpx

    answers: list[httpx.Response] = []
    lock = threading.Lock()
    go = threading.Event()

    def send() -> None:
        go.wait()
        r = httpx.post(f"{live_server}/v1/participants", json=_body(),
                       headers=world["h"] | {"Idempotency-Key": "race-1"}, timeout=30)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 8
    created = [r for r in answers if r.status_code == 201]
    originals = [r for r in created if "Idempotent-Replayed" not in r.headers]
    assert len(originals) == 1
    assert all(r.json()["id"] == originals[0].json()["id"] for r in created)
    odd = [(r.status_code, r.text[:200]) for r in answers if not (
        r.status_code == 201 or (r.status_code == 409
                                 and r.json()["code"] == "idempotency_key_in_flight"))]
    assert not odd, odd
    assert factory.count(Participant) == 1
    assert len(factory.events("participant.created")) == 1


def test_no_replay_for_a_revoked_token(client, factory, world):
    assert _post(client, world["h"], "k-11", _body()).status_code == 201
    token = world["h"]["Authorization"].removeprefix("Bearer ")
    assert client.post("/v1/auth/revoke", data={"token": token,
                                               "token_type_hint": "access_token"}).status_code == 200
    r = _post(client, world["h"], "k-11", _body())
    assert r.status_code == 401 and "Idempotent-Replayed" not in r.headers


def test_an_answer_holding_a_secret_is_not_kept(client, factory, world):
    admin = factory.headers(factory.user(Role.admin))
    body = {"name": "JMS", "scopes": ["participants:read"]}
    first = client.post("/v1/clients", headers=admin | {"Idempotency-Key": "k-12"}, json=body)
    assert first.status_code == 201, first.text
    secret = first.json()["client_secret"]
    row = _row(factory, "k-12")
    assert row.state == "completed" and row.response_body is None
    again = client.post("/v1/clients", headers=admin | {"Idempotency-Key": "k-12"}, json=body)
    assert again.status_code == 409 and again.json()["code"] == "idempotency_response_not_kept"
    assert secret not in again.text
    assert client.get("/v1/clients", headers=admin).json()["items"].__len__() == 1


@pytest.mark.parametrize("role", ["clinician", "peer_supporter"])
def test_a_raise_whose_answer_was_lost_answers_the_saved_escalation_as_the_raiser_sees_it(
        client, factory, world, role):
    """The raise's rebuilt answer is the first answer: a clinician's full view, a peer
    supporter's status only (a peer raises about the people they support, whom the dashboard's
    walls would not show them)."""
    f = world["f"]
    person = factory.recipient(f)
    if role == "peer_supporter":
        supporter = factory.certified_supporter(f)
        factory.pairing(supporter, person)
        raiser = factory.user(Role.peer_supporter, [f], participant=supporter)
    else:
        raiser = factory.user(Role.clinician, [f])
    h = factory.headers(raiser) | {"Idempotency-Key": f"raise-{role}"}
    body = {"participant_id": str(person.id), "category": "suicide_risk",
            "description": "Said goodbye to his cellmate", "tier": "imminent"}
    first = client.post("/v1/escalations", json=body, headers=h)
    assert first.status_code == 201, first.text
    _answer_lost(factory, f"raise-{role}", holder=DEAD)
    again = client.post("/v1/escalations", json=body, headers=h)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    mine, seen = first.json(), again.json()
    assert set(seen) == set(mine)
    assert abs((seen.pop("seconds_remaining", 0) or 0)
               - (mine.pop("seconds_remaining", 0) or 0)) <= 5
    assert seen == mine
    if role == "peer_supporter":
        assert set(seen) == {"view", "id", "status", "raised_at"}
    else:
        assert seen["description"] == "Said goodbye to his cellmate"
    assert len(factory.events("escalation.created")) == 1
    assert len(factory.audits("escalation.create")) == 1


def test_only_the_raiser_is_answered_from_the_saved_escalation(client, factory, world):
    """Keys are per caller; and the rebuilt answer reads only an escalation the caller raised."""
    person = factory.recipient(world["f"])
    other = factory.escalation(person, raised_by="user:someone-else")
    body = {"participant_id": str(person.id), "category": "suicide_risk",
            "description": "x", "tier": "high"}
    h = world["h"] | {"Idempotency-Key": "raise-other"}
    assert client.post("/v1/escalations", json=body, headers=h).status_code == 201
    _answer_lost(factory, "raise-other", holder=DEAD, result_id=str(other.id))
    r = client.post("/v1/escalations", json=body, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "idempotency_outcome_unknown"
    assert str(other.id) not in r.text

"""Keep-apart orders: one open order per pair, close and reopen with who and why, events,
and never a word about them to a peer supporter."""

import pytest

from app.models import KeepApartOrder
from app.models.common import Role


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ")
    a, b = factory.participant(f), factory.participant(f)
    coord = factory.user(Role.coordinator, [f])
    return {"f": f, "a": a, "b": b, "coord": coord, "h": factory.headers(coord)}


def _open(client, ctx, a, b):
    return client.post("/v1/keep-apart-orders", headers=ctx["h"], json={
        "participant_ids": [str(a.id), str(b.id)], "reason": "threat", "scope": "facility",
        "authorised_by": "Lt. Diaz", "external_source": None, "external_id": None})


def test_open_close_reopen_cycle(client, factory, ctx):
    r = _open(client, ctx, ctx["a"], ctx["b"])
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "open" and order["opened_by"] == f"user:{ctx['coord'].id}"
    url = f"/v1/keep-apart-orders/{order['id']}"
    r = client.post(f"{url}/close", headers=ctx["h"] | {"If-Match": '"1"'},
                    json={"reason": "released from custody"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    assert r.json()["status_reason"] == "released from custody"
    assert client.post(f"{url}/close", headers=ctx["h"], json={"reason": "again"}).status_code == 409
    r = client.post(f"{url}/reopen", headers=ctx["h"], json={"reason": "re-booked"})
    assert r.status_code == 200 and r.json()["status"] == "open" and r.json()["version"] == 3
    assert [e.type for e in factory.events()] == ["keep_apart.opened", "keep_apart.closed",
                                                  "keep_apart.opened"]
    assert all("Diaz" not in str(e.data) for e in factory.events())
    actions = [a.action for a in factory.audits() if a.entity_type == "keep_apart_order"]
    assert actions == ["keep_apart.open", "keep_apart.close", "keep_apart.reopen"]


def test_one_open_order_per_pair_in_either_direction(client, factory, ctx):
    assert _open(client, ctx, ctx["a"], ctx["b"]).status_code == 201
    r = _open(client, ctx, ctx["b"], ctx["a"])
    assert r.status_code == 409 and r.json()["code"] == "keep_apart_exists"
    assert factory.count(KeepApartOrder) == 1


def test_reopen_refused_while_another_is_open(client, factory, ctx):
    old = factory.keep_apart(ctx["a"], ctx["b"], status="closed")
    assert _open(client, ctx, ctx["a"], ctx["b"]).status_code == 201
    r = client.post(f"/v1/keep-apart-orders/{old.id}/reopen", headers=ctx["h"],
                    json={"reason": "x"})
    assert r.status_code == 409
    assert factory.get(KeepApartOrder, old.id).status == "closed"


def test_self_order_and_unknown_people_refused(client, factory, ctx):
    r = _open(client, ctx, ctx["a"], ctx["a"])
    assert r.status_code == 422
    stranger = factory.participant(factory.facility("FAR"))
    r = _open(client, ctx, ctx["a"], stranger)
    assert r.status_code == 422 and r.json()["code"] == "unknown_participant"
    assert factory.count(KeepApartOrder) == 0


def test_peer_supporter_never_sees_orders(client, factory, ctx):
    me = factory.participant(ctx["f"], is_supporter=True, supporter_availability="active")
    order = factory.keep_apart(me, ctx["a"])
    peer = factory.user(Role.peer_supporter, [ctx["f"]], participant=me)
    h = factory.headers(peer)
    for path in ("/v1/keep-apart-orders", f"/v1/keep-apart-orders/{order.id}"):
        r = client.get(path, headers=h)
        assert r.status_code == 403 and "keep" not in r.json()["detail"].lower()
    me_read = client.get(f"/v1/participants/{me.id}", headers=h).json()
    assert "keep" not in str(me_read).lower()


def test_list_filters(client, factory, ctx):
    c = factory.participant(ctx["f"])
    factory.keep_apart(ctx["a"], ctx["b"])
    factory.keep_apart(ctx["a"], c, status="closed")
    factory.keep_apart(ctx["b"], c)

    def count(**params):
        r = client.get("/v1/keep-apart-orders", headers=ctx["h"], params=params)
        assert r.status_code == 200
        return len(r.json()["items"])

    assert count() == 3
    assert count(participant_id=str(ctx["a"].id)) == 2
    assert count(participant_id=str(ctx["a"].id), status="open") == 1


def test_cross_network_order_refused(client, factory, ctx):
    staff = factory.participant(ctx["f"], network="staff")
    both = factory.api_client(["keep_apart:write", "keep_apart:read"], [ctx["f"]],
                              networks=["incarcerated", "staff"])
    r = client.post("/v1/keep-apart-orders", headers=factory.headers(both), json={
        "participant_ids": [str(ctx["a"].id), str(staff.id)], "reason": "threat",
        "scope": "facility", "authorised_by": "Lt. Diaz"})
    assert r.status_code == 422 and r.json()["code"] == "network_mismatch"
    assert factory.count(KeepApartOrder) == 0

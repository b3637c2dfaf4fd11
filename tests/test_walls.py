"""The walls hold the same way on every read path, for every role.

1. For each walled aggregate and each role, the records a caller can read one by one are
   exactly the records its list shows (and the escalation dashboard's): a list built on the
   prebuilt statement and a single read built on the ORM query cannot disagree, because both
   take their clauses from the one definition in `app.services.scoping`.
2. Every resource under /v1 is walled: either by a wall of `scoping.WALLS`, or by a rule named
   here with the reason. A new resource with neither fails this test.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.services import scoping
from tests.test_access import _api_routes

# --- 2. every resource has a wall -------------------------------------------------------------

# resource (first path segment under /v1) -> the wall in scoping.WALLS its records sit behind
RESOURCE_WALLS = {
    "participants": "participant",
    "pairings": "pairing",
    "support-sessions": "support_session",
    "escalations": "escalation",
    "facilities": "facility",
    "audit-events": "audit_event",
    "on-call": "on_call",
    "on-call-shifts": "on_call_shift",
    "on-call-overrides": "on_call_override",
    "escalation-notifications": "escalation_notification",
    "referrals": "referral",
}
# resources walled another way, and how
WALLED_OTHERWISE = {
    "auth": "the caller's own account and tokens only",
    "reports": "scoping.report_scope (facilities and networks); aggregates only, suppressed",
    "certifications": "people through scoping.visible_participant_ids (the participant wall)",
    "enrollments": "people through scoping.visible_participant_ids (the participant wall)",
    "keep-apart-orders": "scoping.keep_apart_orders, derived from the participant wall",
    "courses": "a catalogue per network (courses:read)",
    "session-topics": "a shared vocabulary, no personal data",
    "events": "services.events.event_clauses: the one event visibility rule",
    "stream": "services.events.event_clauses too (the replay and the hub's query per group); "
              "tickets: the caller's own",
    "imports": "the caller's own import jobs",
    "users": "account administration: admins of all facilities only",
    "clients": "account administration: admins of all facilities only",
    "webhook-endpoints": "their owner (and admins)",
    "webhook-deliveries": "their endpoint's owner (and admins)",
}


def test_every_resource_is_walled(app: Any) -> None:
    resources = {path.split("/")[2] for path, _ in _routes(app) if path.startswith("/v1/")}
    unwalled = resources - set(RESOURCE_WALLS) - set(WALLED_OTHERWISE)
    assert not unwalled, f"resources with no wall: {sorted(unwalled)}"
    assert set(RESOURCE_WALLS.values()) <= set(scoping.WALLS)
    assert not set(RESOURCE_WALLS) & set(WALLED_OTHERWISE)


def _routes(app: Any) -> list[tuple[str, Any]]:
    return [(route.path, route) for route in _api_routes(app)]


def test_a_wall_prebuilt_and_bound_are_one_text() -> None:
    """The placeholders of a prebuilt statement and the values of an ad-hoc query come from
    the same clauses: both compile to the same SQL."""
    from sqlalchemy import select

    from app.models import Escalation
    from app.models.common import Network, Role
    from app.security.principal import Principal

    officer = Principal(kind="user", id=uuid.uuid4(), name="o", role=Role.officer,
                        scopes=frozenset(), all_facilities=False,
                        facility_ids=frozenset({uuid.uuid4()}),
                        networks=frozenset({Network.incarcerated}), participant_id=None)
    wall = scoping.escalation_wall(officer)
    bound = select(Escalation.id).where(*wall.clauses())
    unbound = select(Escalation.id).where(*wall.clauses(bound=False))
    assert str(bound.compile()) == str(unbound.compile())
    assert wall.shape == frozenset({"nets", "facs", "unresolved", "my_blind_raises"})
    work = scoping.escalation_wall(officer, to_work=True)
    assert work.shape == frozenset({"nets", "facs", "unresolved", "not_my_blind_raises"})
    assert str(select(Escalation.id).where(*work.clauses()).compile()) == str(
        select(Escalation.id).where(*work.clauses(bound=False)).compile())


# --- 1. list and single read agree ------------------------------------------------------------

ROLES = ("admin", "coordinator", "coordinator_all", "staff_coordinator", "clinician", "officer",
         "peer_supporter", "auditor", "integration")


@pytest.fixture()
def world(factory: Any) -> dict[str, Any]:
    """Two facilities, both networks, a certified peer with a login, and records of every
    walled aggregate on each side of each wall."""
    a, b = factory.facility(), factory.facility()
    sup = factory.certified_supporter(a)
    staff_sup = factory.certified_supporter(a, "staff")
    people = {
        "inc_a": factory.recipient(a), "inc_a2": factory.recipient(a),
        "inc_b": factory.recipient(b), "staff_a": factory.recipient(a, "staff"),
        "staff_b": factory.recipient(b, "staff"),
    }
    sup_b = factory.certified_supporter(b)
    pairings = [factory.pairing(sup, people["inc_a"]),
                factory.pairing(sup, people["inc_a2"], status="ended"),
                factory.pairing(staff_sup, people["staff_a"]),
                factory.pairing(sup_b, people["inc_b"])]
    sessions = [factory.support_session(p) for p in pairings]
    sessions += [factory.support_session(facility=a, facilitator=sup),
                 factory.support_session(facility=a, network="staff"),
                 factory.support_session(facility=b)]
    accounts: dict[str, Any] = {
        "admin": factory.user("admin"),
        "coordinator": factory.user("coordinator", [a]),
        "coordinator_all": factory.user("coordinator"),
        "staff_coordinator": factory.user("staff_coordinator", [a]),
        "clinician": factory.user("clinician", [a]),
        "officer": factory.user("officer", [a]),
        "peer_supporter": factory.user("peer_supporter", [a], participant=sup),
        "auditor": factory.user("auditor", [a]),
        "integration": factory.api_client(
            ["participants:read", "pairings:read", "escalations:read", "referrals:read"], [a],
            ["incarcerated", "staff"]),
    }
    peer_actor = f"user:{accounts['peer_supporter'].id}"
    officer_actor = f"user:{accounts['officer'].id}"
    escalations = [factory.escalation(people["inc_a"]),
                   factory.escalation(people["inc_a2"], status="resolved"),
                   factory.escalation(people["staff_a"], tier="high"),
                   factory.escalation(people["inc_b"]),
                   factory.escalation(people["staff_a"], raised_by=peer_actor),
                   factory.escalation(people["inc_a2"], raised_by=peer_actor),
                   factory.escalation(people["staff_b"], raised_by=peer_actor),
                   # subjects can be missing, and raisers blind to them (7-10):
                   factory.escalation(None, facility=a, network="incarcerated",
                                      raised_by=officer_actor, raised_blind=True),
                   factory.escalation(people["inc_b"], raised_by=peer_actor, raised_blind=True),
                   factory.escalation(people["staff_a"], raised_by=officer_actor,
                                      raised_blind=True),
                   factory.escalation(None, facility=b, network="staff")]
    client_actor = f"client:{accounts['integration'].id}"
    referrals = [factory.referral(people["inc_a"]),
                 factory.referral(people["staff_a"], status="triaged"),
                 factory.referral(people["inc_b"]),
                 factory.referral(people["inc_a"], referred_by=peer_actor, source="peer"),
                 factory.referral(people["inc_a2"], referred_by=officer_actor, source="officer"),
                 factory.referral(people["staff_a"], referred_by=client_actor,
                                  source="integration"),
                 factory.referral(people["inc_b"], referred_by=officer_actor, source="officer")]
    everyone = [sup, staff_sup, sup_b, *people.values()]
    return {
        "accounts": accounts,
        "records": {
            "/v1/participants": [p.id for p in everyone],
            "/v1/pairings": [p.id for p in pairings],
            "/v1/support-sessions": [s.id for s in sessions],
            "/v1/escalations": [e.id for e in escalations],
            "/v1/referrals": [r.id for r in referrals],
        },
    }


def _listed(client: Any, path: str, headers: dict[str, str],
            extra: str = "") -> tuple[int, set[str]]:
    seen: set[str] = set()
    cursor = None
    while True:
        url = f"{path}?limit=200{extra}" + (f"&cursor={cursor}" if cursor else "")
        r = client.get(url, headers=headers)
        if r.status_code != 200:
            return r.status_code, seen
        body = r.json()
        seen |= {item["id"] for item in body["items"]}
        cursor = body.get("next_cursor")
        if not cursor:
            return 200, seen


@pytest.mark.parametrize("role", ROLES)
def test_list_and_single_reads_agree(client: Any, factory: Any, world: dict[str, Any],
                                     role: str) -> None:
    headers = factory.headers(world["accounts"][role])
    saw_any = False
    for path, ids in world["records"].items():
        status, listed = _listed(client, path, headers)
        singles = {str(i): client.get(f"{path}/{i}", headers=headers).status_code for i in ids}
        if status == 403:
            assert set(singles.values()) == {403}, (role, path, singles)
            continue
        assert status == 200, (role, path, status)
        readable = {i for i, code in singles.items() if code == 200}
        assert set(singles.values()) <= {200, 404}, (role, path, singles)
        assert readable == listed & set(singles), (role, path)
        if path == "/v1/escalations":  # the dashboard is another prebuilt statement
            _, board = _listed(client, path, headers, "&status=open&sort=deadline")
            open_readable = {i for i in readable if client.get(
                f"{path}/{i}", headers=headers).json()["status"] == "open"}
            assert board == open_readable, role
        saw_any = saw_any or bool(readable)
    if role not in ("admin", "auditor"):
        assert saw_any, f"{role} can read nothing: the fixture proves nothing for it"


def test_the_walls_cut_where_the_domain_says(client: Any, factory: Any,
                                             world: dict[str, Any]) -> None:
    """A few fixed points, so the agreement above is not agreement on nothing."""
    ids = world["records"]
    acc = world["accounts"]

    def listed(role: str, path: str) -> set[str]:
        return _listed(client, path, factory.headers(acc[role]))[1]

    # the peer: their own pairings (active and ended) and those pairings' sessions and their
    # group, the escalations they raised at their facility (even of the other network)
    assert listed("peer_supporter", "/v1/pairings") == {str(i) for i in ids["/v1/pairings"][:2]}
    assert listed("peer_supporter", "/v1/support-sessions") == {
        str(ids["/v1/support-sessions"][i]) for i in (0, 1, 4)}
    # and those they raised blind wherever they are now (8: about someone at B)
    assert listed("peer_supporter", "/v1/escalations") == {
        str(ids["/v1/escalations"][i]) for i in (4, 5, 8)}
    # the officer: open incarcerated escalations of their facility, and their blind raises,
    # even one about a staff member (9)
    assert listed("officer", "/v1/escalations") == {
        str(ids["/v1/escalations"][i]) for i in (0, 5, 7, 9)}
    # that one is the staff network's to see and work, not the custody side's
    assert str(ids["/v1/escalations"][9]) in listed("staff_coordinator", "/v1/escalations")
    assert str(ids["/v1/escalations"][9]) not in listed("coordinator", "/v1/escalations")
    # a place alone sits behind the facility and network walls like any other
    assert str(ids["/v1/escalations"][10]) not in listed("staff_coordinator", "/v1/escalations")
    assert str(ids["/v1/escalations"][7]) in listed("coordinator", "/v1/escalations")
    # referrals: coordinators and clinicians their walls; a peer, an officer, an integration
    # the ones they made inside their facilities (not the officer's at B, 6)
    refs = [str(i) for i in ids["/v1/referrals"]]
    assert listed("peer_supporter", "/v1/referrals") == {refs[3]}
    assert listed("officer", "/v1/referrals") == {refs[4]}
    assert listed("integration", "/v1/referrals") == {refs[5]}
    assert listed("coordinator", "/v1/referrals") == {refs[0], refs[3], refs[4]}
    assert listed("staff_coordinator", "/v1/referrals") == {refs[1], refs[5]}
    assert listed("clinician", "/v1/referrals") == {refs[0], refs[1], refs[3], refs[4], refs[5]}
    # the staff coordinator never sees the incarcerated network, the coordinator never staff
    staff = listed("staff_coordinator", "/v1/pairings")
    assert staff == {str(ids["/v1/pairings"][2])}
    assert str(ids["/v1/pairings"][2]) not in listed("coordinator", "/v1/pairings")
    # a coordinator of all facilities sees facility B's incarcerated pairing, one of A does not
    assert str(ids["/v1/pairings"][3]) in listed("coordinator_all", "/v1/pairings")
    assert str(ids["/v1/pairings"][3]) not in listed("coordinator", "/v1/pairings")
    assert uuid.UUID(next(iter(staff)))  # ids are uuids

"""The service answers as its contract says, walked operation by operation from the contract
itself (so a new operation is checked without anyone remembering to): header bounds, the
`Allow` of a 405, query parameters as strict as their schema, and every status documented."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from app.codes import PROBLEM_CODES
from app.models.common import Role
from app.security.scopes import ROLE_SCOPES, scopes_for

PROBLEM = "application/problem+json"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture()
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


class Callers:
    """For each operation, a caller of all facilities holding every scope it declares:
    whatever a check answers, it is not 401 or 403."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.made: dict[Role, dict[str, str]] = {}

    def __call__(self, op: dict[str, Any]) -> dict[str, str]:
        needed = {s for req in op.get("security", []) for ss in req.values() for s in ss}
        role = next(r for r in (Role.admin, Role.coordinator, Role.staff_coordinator,
                                Role.clinician, Role.officer, Role.peer_supporter,
                                Role.integration, Role.auditor)
                    if needed <= scopes_for(r, True))
        if role not in self.made:
            account = (self.factory.api_client(sorted(ROLE_SCOPES[role]),
                                               networks=["incarcerated", "staff"])
                       if role is Role.integration else self.factory.user(role))
            self.made[role] = self.factory.headers(account)
        return self.made[role]


@pytest.fixture()
def auth(factory) -> Callers:
    return Callers(factory)


def _url(path: str) -> str:
    """The path with a fresh id in each parameter: a record that does not exist, so the
    route's own 404 is there to answer first."""
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS]


def _documented(op: dict[str, Any], status: int) -> bool:
    return str(status) in op["responses"] or f"{str(status)[0]}XX" in op["responses"]


def _assert_problem(r: Any, status: int, op: dict[str, Any]) -> dict[str, Any]:
    assert r.status_code == status, (op["operationId"], r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM), op["operationId"]
    assert r.json()["code"] in PROBLEM_CODES, (op["operationId"], r.json()["code"])
    assert _documented(op, status), (op["operationId"], status, "answered but not documented")
    return r.json()  # type: ignore[no-any-return]


def test_every_post_refuses_an_idempotency_key_the_contract_refuses(client, spec, auth):
    """Over 200 characters, or empty: 422 before any other check answers (the record in the
    path does not exist, the body is empty), and nothing is claimed or run."""
    checked = 0
    for path, method, op in _operations(spec):
        key = next((p for p in op.get("parameters", [])
                    if p["in"] == "header" and p["name"] == "Idempotency-Key"), None)
        if key is None:
            continue
        assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}, path
        media = next(iter(op.get("requestBody", {}).get("content", {})), "application/json")
        for bad in ("k" * 201, ""):
            headers = auth(op) | {"Idempotency-Key": bad, "Content-Type": media}
            r = client.request(method, _url(path), headers=headers,
                               content=b"{}" if "json" in media else b"x")
            body = _assert_problem(r, 422, op)
            assert body["code"] == "validation_error"
            assert body["errors"][0]["field"] == "header.Idempotency-Key", op["operationId"]
        checked += 1
    assert checked > 30


def test_a_valid_idempotency_key_still_reaches_the_route(client, factory):
    f = factory.facility("CCJ")
    auth = factory.headers(factory.user(Role.coordinator, [f]))
    body = {"network": "incarcerated", "legal_name": "Jo Poe", "facility_id": str(f.id)}
    for key in ("k", "k" * 200):
        r = client.post("/v1/participants", headers=auth | {"Idempotency-Key": key}, json=body)
        assert r.status_code == 201, r.text
        again = client.post("/v1/participants", headers=auth | {"Idempotency-Key": key},
                            json=body)
        assert again.headers.get("Idempotent-Replayed") == "true"


def test_an_anonymous_caller_with_a_bad_key_is_told_to_authenticate_first(client, spec):
    r = client.post("/v1/participants", headers={"Idempotency-Key": "k" * 201}, json={})
    assert r.status_code == 401


def test_a_405_lists_every_method_of_its_path(client, spec, auth):
    def methods(url: str) -> set[str]:  # of every template that takes this URL
        return {m.upper() for other, item in spec["paths"].items() for m in item
                if m in METHODS and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", other), url)}

    checked = 0
    for path in spec["paths"]:
        url = _url(path)
        allowed = methods(url)
        for method in METHODS:
            if method.upper() in allowed:
                continue
            r = client.request(method, url, headers=auth({}))
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert set(r.headers["Allow"].split(", ")) == allowed, (method, path)
            checked += 1
    assert checked > 100


def _query_params(spec: dict[str, Any], want: str) -> list[tuple[str, str, dict[str, Any], str]]:
    found = []
    for path, method, op in _operations(spec):
        for p in op.get("parameters", []):
            schema = p.get("schema", {})
            kinds = [schema, *schema.get("anyOf", [])]
            if p["in"] == "query" and any(
                    k.get("format") == want or (want == "boolean" and k.get("type") == "boolean")
                    for k in kinds):
                found.append((path, method, op, p["name"]))
    return found


@pytest.mark.parametrize("value", ["0.5", "0", "1700000000", "2024-01-01", "today",
                                   "2024-01-01T00:00"])
def test_date_time_query_parameters_take_only_rfc_3339(client, spec, auth, value):
    found = _query_params(spec, "date-time")
    assert len(found) >= 10
    for path, method, op, name in found:
        r = client.request(method, _url(path), headers=auth(op), params={name: value})
        body = _assert_problem(r, 422, op)
        assert body["code"] == "validation_error" and value not in str(body["errors"])
        assert f"query.{name}" in {e["field"] for e in body["errors"]}, op["operationId"]


@pytest.mark.parametrize("value", ["0", "1", "yes", "off", "True", ""])
def test_boolean_query_parameters_take_only_true_or_false(client, spec, auth, value):
    found = _query_params(spec, "boolean")
    assert len(found) >= 3
    for path, method, op, name in found:
        r = client.request(method, _url(path), headers=auth(op), params={name: value})
        body = _assert_problem(r, 422, op)
        assert f"query.{name}" in {e["field"] for e in body["errors"]}, op["operationId"]


def test_valid_date_times_and_booleans_are_accepted(client, factory):
    f = factory.facility("CCJ")
    auth = factory.headers(factory.user(Role.coordinator))
    factory.participant(f)
    for since in ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00.123+05:30",
                  "2000-01-01t00:00:00-08:00"):
        for flag in ("true", "false"):
            r = client.get("/v1/participants", headers=auth,
                           params={"updated_since": since, "include_archived": flag})
            assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    auditor = factory.headers(factory.user(Role.auditor))
    assert client.get("/v1/audit-events", headers=auditor,
                      params={"until": "2999-01-01T00:00:00Z"}).status_code == 200


def test_every_status_the_probes_get_is_documented(client, spec, auth):
    """Anonymous, then signed in with the record missing and a required Idempotency-Key left
    out: whatever each operation answers is among its documented responses (a 400 too)."""
    for path, method, op in _operations(spec):
        if "text/event-stream" in op["responses"].get("200", {}).get("content", {}):
            continue  # the stream answers 200 and stays open (tests/test_stream.py)
        for headers in ({}, auth(op)):
            r = client.request(method, _url(path), headers=headers, json={})
            assert r.status_code < 500, (op["operationId"], r.status_code)
            assert _documented(op, r.status_code), (op["operationId"], r.status_code, r.text)
        if any(p["name"] == "Idempotency-Key" and p["required"]
               for p in op.get("parameters", [])):
            media = next(iter(op["requestBody"]["content"]))
            r = client.request(method, _url(path), headers=auth(op) | {"Content-Type": media},
                               content=b"{}")
            assert r.status_code in (400, 422), (op["operationId"], r.status_code)
            assert _documented(op, 400), op["operationId"]

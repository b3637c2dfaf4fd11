"""Hostile input sent to every operation of the contract: a NUL character (in the path, the
query or the body) and JSON nested thousands of levels deep are a 422 problem+json that stores
nothing, never a 500 or a dropped connection (PostgreSQL text cannot hold a NUL); and
authentication comes first: an anonymous request is a 401 whatever its body, content type or
size (public operations excepted)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.db import metadata
from app.inputguard import MAX_JSON_DEPTH, json_errors
from app.models.common import Role

PROBLEM = "application/problem+json"
NUL = "A\x00B"
DEEP = ("[" * 5000 + "]" * 5000).encode()
METHODS = ("get", "post", "put", "patch", "delete")


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) for every operation in the app's contract."""
    ops = [(method.upper(), path, op) for path, item in app.openapi()["paths"].items()
           for method, op in item.items() if method in METHODS]
    assert len(ops) >= 60, "the contract walk found too few operations to mean anything"
    return ops


def _is_public(op: dict[str, Any]) -> bool:
    return op.get("security") == []


def _url(template: str, *, nul_in: str | None = None) -> str:
    """The path with every parameter filled (`source`: a real system name; ids random), or the
    parameter `nul_in` carrying a NUL (percent-encoded, as a client sends it)."""
    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == nul_in:
            return "A%00B"
        return "jms" if name == "source" else "X-1" if name == "value" else str(uuid.uuid4())
    return re.sub(r"\{([^}]+)\}", fill, template)


def _content_type(op: dict[str, Any]) -> str | None:
    content = op.get("requestBody", {}).get("content", {})
    return next(iter(content), None)


def _nul_body(ctype: str) -> tuple[dict[str, str], bytes]:
    if ctype == "application/x-www-form-urlencoded":
        return {"Content-Type": ctype}, b"grant_type=password&username=A%00B&password=x"
    if ctype == "text/csv":
        return {"Content-Type": ctype}, b"network,legal_name,facility_code\nincarcerated,A\x00B,X\n"
    if ctype == "application/x-ndjson":
        return {"Content-Type": ctype}, b'{"legal_name": "A\\u0000B"}\n'
    return {"Content-Type": "application/json"}, b'{"legal_name": "A\\u0000B", "x": ["\\u0000"]}'


def _snapshot(factory: Any) -> dict[str, int]:
    with Session(factory.engine) as s:
        return {t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def _check(r: Any, where: str, failures: list[str], status: int | None = None) -> None:
    ok = 400 <= r.status_code < 500 and r.headers.get("content-type", "").startswith(PROBLEM) \
        and isinstance(r.json().get("code"), str)
    if ok and status is not None:
        ok = r.status_code == status
    if not ok:
        failures.append(f"{where}: {r.status_code} {r.text[:160]}")


@pytest.fixture()
def admin(factory) -> dict[str, str]:
    factory.facility("CCJ")
    return factory.headers(factory.user(Role.admin)) | {"Idempotency-Key": str(uuid.uuid4())}


def test_a_nul_anywhere_is_a_422_that_stores_nothing_on_every_operation(client, app, factory,
                                                                          admin):
    before = _snapshot(factory)
    failures: list[str] = []
    sent = 0
    for method, path, op in _operations(app):
        where = f"{method} {path}"
        params = op.get("parameters", [])
        for p in (p for p in params if p["in"] == "path"):
            r = client.request(method, _url(path, nul_in=p["name"]), headers=admin)
            _check(r, f"{where} path {p['name']}", failures)
            sent += 1
        for p in (p for p in params if p["in"] == "query"):
            r = client.request(method, _url(path), headers=admin, params={p["name"]: NUL})
            _check(r, f"{where} query {p['name']}", failures, 422)
            sent += 1
        ctype = _content_type(op)
        if ctype is not None:
            headers, body = _nul_body(ctype)
            r = client.request(method, _url(path), headers=admin | headers, content=body)
            _check(r, f"{where} body", failures, 422)
            sent += 1
    assert not failures, "\n".join(failures)
    assert sent >= 100
    assert _snapshot(factory) == before


def test_json_nested_thousands_deep_is_a_422_on_every_operation_with_a_body(client, app,
                                                                            factory, admin):
    before = _snapshot(factory)
    failures: list[str] = []
    for method, path, op in _operations(app):
        if _content_type(op) is None:
            continue
        r = client.request(method, _url(path), content=DEEP,
                           headers=admin | {"Content-Type": "application/json"})
        # A form or file operation refuses a JSON body as such (415); JSON ones, as too deep.
        _check(r, f"{method} {path}", failures)
        if _content_type(op) == "application/json" and r.status_code == 422:
            assert r.json()["errors"][0]["type"] == "too_deep", f"{method} {path}"
    assert not failures, "\n".join(failures)
    assert _snapshot(factory) == before


def test_nul_in_an_audit_filter_and_an_external_id_on_postgresql_too(client, factory, admin):
    """The three places the defect was found: each a 422 naming where, no 500."""
    f = factory.facility("CCJ2")
    coord = factory.headers(factory.user(Role.coordinator, [f]))
    r = client.get("/v1/audit-events", headers=admin, params={"action": NUL})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query"
    r = client.put("/v1/participants/by-external-id/jms/A%00B", headers=coord,
                   json={"network": "incarcerated", "legal_name": "Jo", "facility_code": "CCJ2"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "path"
    p = factory.participant(f)
    officer = factory.headers(factory.user(Role.officer, [f]))
    r = client.post("/v1/escalations", headers=officer | {"Idempotency-Key": "k1"},
                    json={"participant_id": str(p.id), "category": "suicide_risk",
                          "description": NUL})
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "nul_character"
    assert NUL not in r.text
    with Session(factory.engine) as s:
        assert s.execute(text("SELECT count(*) FROM escalation")).scalar_one() == 0


def test_a_nul_split_across_chunks_of_an_import_file_is_found(client, factory):
    f = factory.facility("CCJ3")
    coord = factory.headers(factory.user(Role.coordinator, [f]))

    def chunks():
        yield b'{"network": "incarcerated", "legal_name": "A\\u0'
        yield b'000B", "facility_code": "CCJ3"}\n'

    before = _snapshot(factory)
    r = client.post("/v1/imports/participants", content=chunks(),
                    headers=coord | {"Content-Type": "application/x-ndjson",
                                     "Idempotency-Key": "k2"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert _snapshot(factory) == before


def _nested(depth: int) -> bytes:
    """Objects and arrays alternating, `depth` levels."""
    opened = b"".join(b'{"a":' if i % 2 else b"[" for i in range(depth))
    return opened + b"1" + b"".join(b"}" if i % 2 else b"]" for i in reversed(range(depth)))


def test_the_guard_counts_levels_outside_strings():
    assert json_errors(b'{"a": [1, {"b": "\\\\u0000 is text"}]}') is None
    for depth in (MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1):
        for doc in (b"[" * depth + b"]" * depth, _nested(depth)):
            assert (json_errors(doc) is None) == (depth == MAX_JSON_DEPTH), doc[:40]
    wide = b"[" + b",".join([b'{"a": [1, {"b": "x"}]}'] * 500) + b"]"
    assert json_errors(wide) is None  # many brackets, shallow
    # Brackets inside strings, also after escaped quotes and backslashes, are text.
    assert json_errors(b'["' + b"[" * 100 + b'"]') is None
    assert json_errors(b'["\\"' + b"[" * 100 + b'", "\\\\"]') is None
    assert json_errors(b'["\\\\", ' + _nested(MAX_JSON_DEPTH + 1) + b"]") is not None


# ---------------------------------------------------------------------------------------------
# Authentication first
# ---------------------------------------------------------------------------------------------

ANONYMOUS_BODIES = {
    "wrong content type": ({"Content-Type": "text/plain"}, b"hello"),
    "a NUL": ({"Content-Type": "application/json"}, b'{"a": "\\u0000"}'),
    "too deep": ({"Content-Type": "application/json"}, DEEP),
    "too large": ({"Content-Type": "application/json"}, b"[" + b"1," * 550_000 + b"1]"),
}


@pytest.mark.parametrize("case", list(ANONYMOUS_BODIES))
def test_an_anonymous_request_is_401_before_its_body_is_judged(client, app, case):
    headers, body = ANONYMOUS_BODIES[case]
    failures = []
    for method, path, op in _operations(app):
        if _is_public(op):
            continue
        # No token, or one that does not verify (once is enough for the second).
        for token in (None, "not-a-token") if case == "wrong content type" else (None,):
            h = headers | ({"Authorization": f"Bearer {token}"} if token else {})
            r = client.request(method, _url(path), headers=h, content=body)
            if r.status_code != 401 or r.headers["content-type"] != PROBLEM or \
                    r.json().get("code") != "unauthorized":
                failures.append(f"{method} {path} ({token}): {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)


def test_a_signed_in_caller_still_gets_415_and_413(client, factory):
    h = factory.headers(factory.user(Role.admin))
    r = client.post("/v1/imports/participants", headers=h | {"Content-Type": "text/plain"},
                    content=b"x")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = client.post("/v1/facilities", headers=h | {"Content-Type": "application/json"},
                    content=b"[" + b"1," * 600_000 + b"1]")
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

"""Access control as a caller notices it, against real tokens and a real database.

1. Every non-public route declares its scopes (and the OpenAPI document shows them).
2. Each role gets exactly what ROLE_SCOPES grants: a role x operation matrix kept as data.
3. BOLA: a record outside the caller's facilities or network does not exist for that caller
   (404 for single records, absent from lists) and nothing changes when they try to touch it.
4. That 404 cannot be told apart from the 404 for an id that was never issued.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.main import create_app
from app.models import (
    ApiClient,
    AuditEvent,
    Facility,
    HousingUnit,
    KeepApartOrder,
    OutboxEvent,
    Participant,
    ParticipantExternalId,
    User,
)
from app.models.common import Network, Role
from app.routers.stream import stream_caller
from app.security.principal import get_principal
from app.security.scopes import ROLE_SCOPES, SCOPES
from app.security.tokens import generate_private_key_pem

PROBLEM = "application/problem+json"
INC, STAFF = Network.incarcerated.value, Network.staff.value


def _uid() -> str:
    return uuid.uuid4().hex[:10].upper()


# =============================================================================================
# 1. The route table: every non-public route declares scopes
# =============================================================================================

PUBLIC_PATHS = {"/livez", "/readyz", "/.well-known/jwks.json", "/v1/auth/token", "/v1/auth/revoke",
                "/openapi.json", "/metrics"}
AUTH_ONLY = {("GET", "/v1/auth/me")}  # needs a valid token, but no scope


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/docs") or path == "/redoc"


# What authenticates a caller: the bearer token (every route), or, for the live stream only,
# a browser's single-use ticket or the bearer token.
AUTHENTICATORS = (get_principal, stream_caller)


def _principal_scopes(dependant: Any) -> list[set[str]]:
    """For each authenticator node of a dependant tree: the scopes FastAPI hands it
    (SecurityScopes = the parents' scopes plus its own, as FastAPI 0.165 models them)."""
    found: list[set[str]] = []
    for dep in dependant.dependencies:
        if dep.call in AUTHENTICATORS:
            own = getattr(dep, "own_oauth_scopes", None)
            if own is None:  # older FastAPI spelling
                own = getattr(dep, "security_scopes", None) or []
            parent = getattr(dep, "parent_oauth_scopes", None) or []
            found.append(set(own) | set(parent))
        found.extend(_principal_scopes(dep))
    return found


def _api_routes(app: Any) -> list[Any]:
    """Every APIRoute as served. FastAPI 0.165 keeps included routers as lazy
    `_IncludedRouter` entries in `app.routes`; `iter_route_contexts` yields each route with its
    full path and its effective dependant (router-level dependencies included)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were lazy
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def _protected_routes(app: Any) -> list[tuple[str, Any]]:
    out = []
    for route in _api_routes(app):
        if not _is_public(route.path):
            out.extend((m, route) for m in sorted(route.methods))
    return out


@pytest.fixture(scope="module")
def routes_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real app, for what it declares (routes, dependencies, OpenAPI): no database needed."""
    url = f"sqlite:///{tmp_path_factory.mktemp('routes') / 'unused.db'}"
    return create_app(Settings(database_url=url, mode="development", log_level="WARNING",
                               jwt_private_key=generate_private_key_pem()))


def test_every_non_public_route_declares_scopes(routes_app):
    routes = _protected_routes(routes_app)
    assert len(routes) >= 30, "the route walk found too few routes to mean anything"
    all_granted = set().union(*ROLE_SCOPES.values())
    problems = []
    for method, route in routes:
        nodes = _principal_scopes(route.dependant)
        where = f"{method} {route.path}"
        if not nodes:
            problems.append(f"{where}: no Security(get_principal) dependency (unauthenticated)")
            continue
        declared = set().union(*nodes)
        if (method, route.path) in AUTH_ONLY:
            continue
        if not declared:
            problems.append(f"{where}: authenticated but declares no scope")
        if declared - set(SCOPES):
            problems.append(f"{where}: unknown scope(s) {sorted(declared - set(SCOPES))}")
        if declared - all_granted:
            problems.append(f"{where}: scope(s) no role can hold {sorted(declared - all_granted)}")
    assert not problems, "\n".join(problems)


def _concrete(path: str) -> str:
    path = path.replace("{source}", "jms")
    return re.sub(r"\{[^}]+\}", lambda _m: str(uuid.uuid4()), path)


def test_every_non_public_route_answers_401_without_a_token(client, app):
    failures = []
    for method, route in _protected_routes(app):
        r = client.request(method, _concrete(route.path))
        if r.status_code != 401 or r.headers["content-type"] != PROBLEM or \
                r.json().get("code") != "unauthorized":
            failures.append(f"{method} {route.path}: {r.status_code} {r.text[:120]}")
        elif not r.headers.get("www-authenticate", "").startswith("Bearer"):
            failures.append(f"{method} {route.path}: 401 without a Bearer WWW-Authenticate")
    assert not failures, "\n".join(failures)
    # /v1/auth/me needs no scope, but it needs a token, and one that verifies.
    assert ("GET", "/v1/auth/me") in {(m, r.path) for m, r in _protected_routes(app)}
    assert client.get("/v1/auth/me").status_code == 401
    r = client.get("/v1/auth/me", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401


def test_openapi_shows_oauth2_scopes_on_every_protected_operation(routes_app):
    app = routes_app
    schema = app.openapi()
    scheme = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert set(scheme["flows"]["password"]["scopes"]) == set(SCOPES)
    problems = []
    for method, route in _protected_routes(app):
        if not route.include_in_schema:
            continue
        where = f"{method} {route.path}"
        op = schema["paths"].get(route.path, {}).get(method.lower())
        if op is None:
            problems.append(f"{where}: missing from the OpenAPI document")
            continue
        declared = set().union(*_principal_scopes(route.dependant))
        security = op.get("security") or []
        shown = {s for req in security for s in req.get("OAuth2PasswordBearer", [])}
        if not any("OAuth2PasswordBearer" in req for req in security):
            problems.append(f"{where}: no OAuth2 security requirement in the OpenAPI")
        elif shown != declared:
            problems.append(f"{where}: OpenAPI shows {sorted(shown)}, route needs {sorted(declared)}")
        if (method, route.path) not in AUTH_ONLY and not shown:
            problems.append(f"{where}: OpenAPI shows no scope")
        for status in ("401", "403") if (method, route.path) not in AUTH_ONLY else ("401",):
            if status not in op.get("responses", {}):
                problems.append(f"{where}: {status} not documented")
    assert not problems, "\n".join(problems)


# =============================================================================================
# 2. Role x operation matrix (data)
# =============================================================================================

ROLES = ("admin", "coordinator", "staff_coordinator", "clinician", "officer", "peer_supporter",
         "auditor", "integration")

# (method, path template, expected status per role in ROLES order)
_OPS: list[tuple[str, str, tuple[int, ...]]] = [
    #                                                              adm  crd  scd  cln  off  peer aud  int
    ("GET", "/v1/auth/me",                                        (200, 200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/facilities",                                     (200, 200, 200, 200, 200, 200, 200, 200)),
    ("GET", "/v1/facilities/{facility_id}",                       (200, 200, 200, 200, 200, 200, 200, 200)),
    ("POST", "/v1/facilities",                                    (201, 403, 403, 403, 403, 403, 403, 403)),
    ("PATCH", "/v1/facilities/{facility_id}",                     (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/facilities/{facility_id}/housing-units",         (200, 200, 200, 200, 200, 200, 200, 200)),
    ("POST", "/v1/facilities/{facility_id}/housing-units",        (201, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/participants",                                   (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/participants/{participant_id}",                  (403, 200, 200, 200, 200, 200, 403, 200)),
    ("POST", "/v1/participants",                                  (403, 201, 201, 403, 403, 403, 403, 201)),
    ("PATCH", "/v1/participants/{participant_id}",                (403, 200, 200, 403, 403, 403, 403, 200)),
    ("PUT", "/v1/participants/by-external-id/{source}/{value}",   (403, 201, 201, 403, 403, 403, 403, 201)),
    ("POST", "/v1/participants/{participant_id}/archive",         (403, 200, 200, 403, 403, 403, 403, 200)),
    ("POST", "/v1/participants/{participant_id}/merge",           (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/keep-apart-orders",                              (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/keep-apart-orders/{order_id}",                   (403, 200, 200, 403, 403, 403, 403, 200)),
    ("POST", "/v1/keep-apart-orders",                             (403, 201, 201, 403, 403, 403, 403, 201)),
    ("POST", "/v1/keep-apart-orders/{order_id}/close",            (403, 200, 200, 403, 403, 403, 403, 200)),
    ("POST", "/v1/keep-apart-orders/{order_id}/reopen",           (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/users",                                          (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/users/{user_id}",                                (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/users",                                         (201, 403, 403, 403, 403, 403, 403, 403)),
    ("PATCH", "/v1/users/{user_id}",                              (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/users/{user_id}/deactivate",                    (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/users/{user_id}/reactivate",                    (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/clients",                                        (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/clients/{client_id}",                            (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/clients",                                       (201, 403, 403, 403, 403, 403, 403, 403)),
    ("PATCH", "/v1/clients/{client_id}",                          (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/clients/{client_id}/rotate-secret",             (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/audit-events",                                   (200, 403, 403, 403, 403, 403, 200, 403)),
    ("GET", "/v1/courses",                                        (200, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/courses/{course_id}",                            (200, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/courses",                                       (201, 403, 403, 403, 403, 403, 403, 403)),
    ("PATCH", "/v1/courses/{course_id}",                          (200, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/courses/{course_id}/retire",                    (200, 403, 403, 403, 403, 403, 403, 403)),
    ("GET", "/v1/enrollments",                                    (403, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/enrollments/{enrollment_id}",                    (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/enrollments",                                   (403, 201, 201, 403, 403, 403, 403, 403)),
    ("POST", "/v1/enrollments/{enrollment_id}/start",             (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/enrollments/{enrollment_id}/complete",          (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/enrollments/{enrollment_id}/withdraw",          (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/enrollments/{enrollment_id}/fail",              (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/participants/{participant_id}/code-of-conduct", (403, 201, 201, 403, 403, 403, 403, 403)),
    ("GET", "/v1/participants/{participant_id}/certification",    (403, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/certifications/expiring",                        (403, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/pairings",                                       (403, 200, 200, 403, 403, 200, 403, 200)),
    ("GET", "/v1/pairings/candidates",                            (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/pairings",                                      (403, 201, 201, 403, 403, 403, 403, 403)),
    ("GET", "/v1/pairings/{pairing_id}",                          (403, 200, 200, 403, 403, 200, 403, 200)),
    ("POST", "/v1/pairings/{pairing_id}/activate",                (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/pairings/{pairing_id}/pause",                   (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/pairings/{pairing_id}/resume",                  (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/pairings/{pairing_id}/end",                     (403, 200, 200, 403, 403, 403, 403, 403)),
    ("GET", "/v1/pairings/{pairing_id}/summary",                  (403, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/support-sessions",                               (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/support-sessions",                              (403, 201, 201, 403, 403, 201, 403, 403)),
    ("GET", "/v1/support-sessions/{session_id}",                  (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/support-sessions/{session_id}/attendees",       (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/support-sessions/{session_id}/complete",        (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/support-sessions/{session_id}/cancel",          (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/support-sessions/{session_id}/no-show",         (403, 200, 200, 403, 403, 200, 403, 403)),
    ("GET", "/v1/support-sessions/{session_id}/note",             (403, 404, 404, 404, 403, 404, 403, 403)),
    ("POST", "/v1/support-sessions/{session_id}/disclosures",     (403, 201, 201, 403, 403, 201, 403, 403)),
    ("GET", "/v1/participants/{participant_id}/disclosures",      (403, 200, 200, 200, 403, 404, 403, 403)),
    ("GET", "/v1/session-topics",                                 (403, 200, 200, 403, 403, 200, 403, 403)),
    ("POST", "/v1/session-topics",                                (201, 403, 403, 403, 403, 403, 403, 403)),
    ("POST", "/v1/escalations",                                   (403, 201, 201, 201, 201, 201, 403, 403)),
    ("GET", "/v1/escalations",                                    (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/escalations/{escalation_id}",                    (403, 200, 200, 200, 200, 404, 403, 200)),
    ("GET", "/v1/escalations/{escalation_id}/timeline",           (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/acknowledge",       (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/resolve",           (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/reopen",            (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/tier",              (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/assign",            (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/subject",           (403, 200, 200, 200, 403, 403, 403, 403)),
    ("POST", "/v1/escalations/{escalation_id}/observations",      (403, 201, 201, 201, 201, 404, 403, 403)),
    ("GET", "/v1/escalations/{escalation_id}/watch",              (403, 200, 200, 200, 200, 404, 403, 403)),
    ("GET", "/v1/webhook-endpoints",                              (200, 403, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/webhook-endpoints",                             (201, 403, 403, 403, 403, 403, 403, 201)),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}",                (200, 403, 403, 403, 403, 403, 403, 200)),
    ("PATCH", "/v1/webhook-endpoints/{endpoint_id}",              (200, 403, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", (200, 403, 403, 403, 403, 403, 403, 200)),
    ("GET", "/v1/webhook-deliveries",                             (200, 403, 403, 403, 403, 403, 403, 200)),
    ("GET", "/v1/webhook-deliveries/{delivery_id}",               (200, 403, 403, 403, 403, 403, 403, 200)),
    ("POST", "/v1/webhook-deliveries/{delivery_id}/redeliver",    (202, 403, 403, 403, 403, 403, 403, 202)),
    ("GET", "/v1/events",                                         (200, 403, 403, 403, 403, 403, 403, 200)),
    # A stream never ends: the matrix asks with a cursor it refuses (422 after the scope
    # check); tests/test_stream.py holds real ones.
    ("GET", "/v1/stream",                                         (403, 422, 422, 422, 422, 422, 403, 422)),
    ("POST", "/v1/stream/tickets",                                (403, 201, 201, 201, 201, 201, 403, 201)),
    ("POST", "/v1/imports/participants",                          (403, 200, 200, 403, 403, 403, 403, 200)),
    ("POST", "/v1/imports/keep-apart-orders",                     (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/imports/participants/template",                  (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/imports/keep-apart-orders/template",             (403, 200, 200, 403, 403, 403, 403, 200)),
    ("GET", "/v1/imports",                                        (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/imports/{import_id}",                            (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/on-call",                                        (200, 200, 200, 200, 200, 403, 403, 403)),
    ("GET", "/v1/on-call-shifts",                                 (200, 200, 200, 200, 200, 403, 403, 403)),
    ("POST", "/v1/on-call-shifts",                                (201, 201, 201, 403, 403, 403, 403, 403)),
    ("GET", "/v1/on-call-shifts/{shift_id}",                      (200, 200, 200, 200, 404, 403, 403, 403)),
    ("PATCH", "/v1/on-call-shifts/{shift_id}",                    (200, 200, 200, 403, 403, 403, 403, 403)),
    ("GET", "/v1/on-call-overrides",                              (200, 200, 200, 200, 200, 403, 403, 403)),
    ("POST", "/v1/on-call-overrides",                             (201, 201, 201, 403, 403, 403, 403, 403)),
    ("GET", "/v1/on-call-overrides/{override_id}",                (200, 200, 200, 200, 404, 403, 403, 403)),
    ("POST", "/v1/on-call-overrides/{override_id}/cancel",        (200, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/referrals",                                     (403, 201, 201, 201, 201, 201, 403, 201)),
    ("GET", "/v1/referrals",                                      (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/referrals/{referral_id}",                        (403, 200, 200, 200, 200, 200, 403, 200)),
    ("POST", "/v1/referrals/{referral_id}/triage",                (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/referrals/{referral_id}/match",                 (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/referrals/{referral_id}/decline",               (403, 200, 200, 403, 403, 403, 403, 403)),
    ("POST", "/v1/referrals/{referral_id}/withdraw",              (403, 200, 200, 200, 200, 200, 403, 200)),
    ("GET", "/v1/escalation-notifications/{notification_id}",    (403, 200, 200, 200, 200, 403, 403, 200)),
    ("POST", "/v1/escalation-notifications/{notification_id}/acknowledge",
                                                                  (403, 200, 200, 200, 200, 403, 403, 403)),
    ("GET", "/v1/reports/program",                                (403, 200, 200, 403, 403, 403, 200, 403)),
    ("GET", "/v1/reports/program.csv",                            (403, 200, 200, 403, 403, 403, 200, 403)),
    ("GET", "/v1/reports/program.html",                           (403, 200, 200, 403, 403, 403, 200, 403)),
]

MATRIX: list[tuple[str, str, str, int]] = [
    (role, method, path, status)
    for method, path, statuses in _OPS
    for role, status in zip(ROLES, statuses, strict=True)
]


def test_matrix_covers_every_protected_route(routes_app):
    """A new route must get a row here (and so a decision for every role)."""
    in_app = {(m, r.path) for m, r in _protected_routes(routes_app)}
    in_matrix = {(m, p) for _role, m, p, _s in MATRIX}
    assert in_app - in_matrix == set(), "routes with no row in the access matrix"
    assert in_matrix - in_app == set(), "matrix rows for routes that do not exist"


@dataclass
class Ctx:
    """Fresh, in-scope targets for one matrix row, so every allowed call can succeed."""

    factory: Any
    facility: Facility
    network: str
    own: Participant | None = None
    session: Any = None
    account: Any = None
    referral_person: Any = None

    def ext(self, p: Participant) -> str:
        return str(p.external_ids[0]["value"])

    def person(self) -> Participant:
        return self.factory.participant(self.facility, self.network, external=("jms", _uid()))


@dataclass
class Raw:
    """A body that is a file (bulk imports), not JSON."""

    content: bytes
    headers: dict[str, str]

    @classmethod
    def csv(cls, *lines: str) -> Raw:
        return cls("\r\n".join(lines).encode(), {"Content-Type": "text/csv",
                                                  "Idempotency-Key": _uid()})



def _resolve(ctx: Ctx, method: str, template: str) -> tuple[str, dict[str, Any] | None]:
    f, a = ctx.factory, ctx.facility
    subs: dict[str, Any] = {"source": "jms", "value": _uid()}
    if "{facility_id}" in template:
        subs["facility_id"] = a.id
    if "{participant_id}" in template:
        subs["participant_id"] = (ctx.own or ctx.person()).id
    if "{order_id}" in template:
        status = "closed" if template.endswith("/reopen") else "open"
        subs["order_id"] = f.keep_apart(ctx.person(), ctx.person(), status=status).id
    if "{user_id}" in template:
        subs["user_id"] = f.user(Role.officer, [a], active=not template.endswith("/reactivate")).id
    if "{client_id}" in template:
        subs["client_id"] = f.api_client(["participants:read"], [a]).id
    if "{course_id}" in template:
        subs["course_id"] = f.course(required=False).id
    if "{enrollment_id}" in template:
        owner = ctx.own or ctx.person()
        status = "in_progress" if template.endswith(("/fail", "/complete")) else "enrolled"
        subs["enrollment_id"] = f.enrollment(owner, f.course(required=False), status=status).id
    if "{pairing_id}" in template:
        status = {"activate": "proposed", "resume": "paused"}.get(template.rsplit("/", 1)[-1],
                                                                  "active")
        supporter = ctx.own or f.certified_supporter(a, ctx.network)
        subs["pairing_id"] = f.pairing(supporter, f.recipient(a, ctx.network), status=status).id
    if "{session_id}" in template:
        supporter = ctx.own or f.certified_supporter(a, ctx.network)
        if template.endswith("/attendees"):
            ss = f.support_session(facility=a, network=ctx.network, facilitator=supporter)
        else:  # a disclosure comes from a session that was held
            ss = f.support_session(f.pairing(supporter, f.recipient(a, ctx.network)),
                                   status="completed" if template.endswith("/disclosures")
                                   else "scheduled")
        subs["session_id"] = ss.id
        ctx.session = ss
    if "{escalation_id}" in template:
        subs["escalation_id"] = f.escalation(ctx.own or ctx.person(),
                                             status="resolved" if template.endswith("/reopen")
                                             else ("acknowledged" if template.endswith("/resolve")
                                                   else "open")).id
    if "{endpoint_id}" in template or "{delivery_id}" in template:
        endpoint, _secret = f.webhook_endpoint(ctx.account)
        subs["endpoint_id"] = endpoint.id
        event = f.outbox_event("webhook_endpoint.disabled", network=None,
                               entity_type="webhook_endpoint", entity_id=endpoint.id)
        subs["delivery_id"] = f.webhook_delivery(endpoint, event).id
    if "{import_id}" in template:
        subs["import_id"] = f.import_job(ctx.account).id
    # A roster entry or page held by the caller when their role can hold one, else by another.
    holder = (ctx.account if isinstance(ctx.account, User) and ctx.account.role in (
        "clinician", "officer", "coordinator", "staff_coordinator") else f.user(Role.clinician, [a]))
    clinician = holder if holder.role == "clinician" else f.user(Role.clinician, [a])
    if "{shift_id}" in template:
        subs["shift_id"] = f.shift(a, clinician, network=ctx.network).id
    if "{override_id}" in template:
        now = datetime.now(UTC)
        subs["override_id"] = f.override(a, clinician, now, now + timedelta(hours=1),
                                         network=ctx.network).id
    if "{referral_id}" in template:
        # the caller's own referral (a referrer reads and withdraws those), of a person they
        # may refer; a match needs it triaged
        person = ctx.person() if ctx.own is None else f.recipient(a, ctx.network)
        if ctx.own is not None:
            f.pairing(ctx.own, person)
        actor = (f"client:{ctx.account.id}" if isinstance(ctx.account, ApiClient)
                 else f"user:{ctx.account.id}")
        ref = f.referral(person, referred_by=actor,
                         status="triaged" if template.endswith("/match") else "received")
        subs["referral_id"] = ref.id
        ctx.referral_person = person
    if "{notification_id}" in template:
        subs["notification_id"] = f.notification(f.escalation(ctx.person()), holder).id
    query = ""
    if template == "/v1/stream":
        query = "?after=refused"
    if template == "/v1/pairings/candidates":
        query = f"?recipient_id={f.recipient(a, ctx.network).id}"
    if template == "/v1/on-call":
        query = f"?facility_id={a.id}&network={ctx.network}"
    if template.startswith("/v1/reports/program"):
        query = (f"?facility={a.code}&month=2026-03" if template.endswith(".html")
                 else f"?from=2026-01&to=2026-03&facility={a.code}")
    path = template.format(**subs) + query
    person = {"network": ctx.network, "legal_name": "New Person", "facility_code": a.code}
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/facilities"): lambda: {"code": f"N{_uid()}", "name": "New",
                                             "timezone": "America/Chicago"},
        ("PATCH", "/v1/facilities/{facility_id}"): lambda: {"name": "Renamed"},
        ("POST", "/v1/facilities/{facility_id}/housing-units"): lambda: {"code": _uid(),
                                                                         "name": "Unit"},
        ("POST", "/v1/participants"): lambda: person,
        ("PATCH", "/v1/participants/{participant_id}"): lambda: {"preferred_name": "Renamed"},
        ("PUT", "/v1/participants/by-external-id/{source}/{value}"): lambda: person,
        ("POST", "/v1/participants/{participant_id}/merge"):
            lambda: {"duplicate_id": str(ctx.person().id)},
        ("POST", "/v1/keep-apart-orders"): lambda: {
            "participant_ids": [str(ctx.person().id), str(ctx.person().id)],
            "reason": "threat", "scope": "facility", "authorised_by": "Lt. Test"},
        ("POST", "/v1/keep-apart-orders/{order_id}/close"): lambda: {"reason": "resolved"},
        ("POST", "/v1/keep-apart-orders/{order_id}/reopen"): lambda: {"reason": "again"},
        ("POST", "/v1/users"): lambda: {"username": f"u{_uid().lower()}",
                                        "password": "a-long-enough-password", "role": "officer",
                                        "facility_codes": [a.code]},
        ("PATCH", "/v1/users/{user_id}"): lambda: {"facility_codes": [a.code]},
        ("POST", "/v1/clients"): lambda: {"name": "EHR", "scopes": ["participants:read"],
                                          "facility_codes": [a.code]},
        ("PATCH", "/v1/clients/{client_id}"): lambda: {"name": "Renamed"},
        ("POST", "/v1/courses"): lambda: {"title": "Boundaries", "hours": 4},
        ("PATCH", "/v1/courses/{course_id}"): lambda: {"hours": 6},
        ("POST", "/v1/enrollments"): lambda: {"participant_id": str(ctx.person().id),
                                              "course_id": str(f.course(required=False).id)},
        ("POST", "/v1/enrollments/{enrollment_id}/complete"): lambda: {"score": 90},
        ("POST", "/v1/enrollments/{enrollment_id}/withdraw"): lambda: {"reason": "moved"},
        ("POST", "/v1/enrollments/{enrollment_id}/fail"): lambda: {},
        ("POST", "/v1/participants/{participant_id}/code-of-conduct"):
            lambda: {"conduct_version": "2026-01"},
        ("POST", "/v1/pairings"): lambda: {
            "supporter_id": str(f.certified_supporter(a, ctx.network).id),
            "recipient_id": str(f.recipient(a, ctx.network).id)},
        ("POST", "/v1/pairings/{pairing_id}/activate"): lambda: {},
        ("POST", "/v1/pairings/{pairing_id}/pause"): lambda: {"reason": "supporter on leave"},
        ("POST", "/v1/pairings/{pairing_id}/resume"): lambda: {},
        ("POST", "/v1/pairings/{pairing_id}/end"): lambda: {"reason": "completed"},
        ("POST", "/v1/support-sessions"): lambda: {
            "kind": "one_to_one", "scheduled_at": "2030-01-01T10:00:00Z",
            "pairing_id": str(f.pairing(ctx.own or f.certified_supporter(a, ctx.network),
                                        f.recipient(a, ctx.network)).id)},
        # A peer facilitator adds someone they support (an active pairing).
        ("POST", "/v1/support-sessions/{session_id}/attendees"): lambda: {
            "participant_id": str(f.pairing(ctx.own, f.recipient(a, ctx.network)).recipient_id
                                  if ctx.own else f.recipient(a, ctx.network).id)},
        ("POST", "/v1/support-sessions/{session_id}/complete"): lambda: {
            "actual_start": "2030-01-01T10:00:00Z", "duration_minutes": 30},
        ("POST", "/v1/support-sessions/{session_id}/cancel"): lambda: {},
        ("POST", "/v1/support-sessions/{session_id}/no-show"): lambda: {},
        ("POST", "/v1/support-sessions/{session_id}/disclosures"): lambda: {
            "participant_id": str(ctx.session.facilitator_id), "category": "other_mandated",
            "passed_to": "Supervisor", "passed_at": "2030-01-01T10:00:00Z"},
        ("POST", "/v1/session-topics"): lambda: {"code": f"t{_uid().lower()}", "label": "T"},
        ("POST", "/v1/escalations"): lambda: {
            "participant_id": str((ctx.own or ctx.person()).id), "category": "self_harm",
            "description": "seen", "tier": "low"},
        ("POST", "/v1/escalations/{escalation_id}/acknowledge"): lambda: {},
        ("POST", "/v1/escalations/{escalation_id}/resolve"): lambda: {"outcome": "settled"},
        ("POST", "/v1/escalations/{escalation_id}/reopen"): lambda: {"reason": "again"},
        ("POST", "/v1/escalations/{escalation_id}/tier"): lambda: {"tier": "moderate",
                                                                  "reason": "worse"},
        ("POST", "/v1/escalations/{escalation_id}/assign"): lambda: {
            "user_id": str(f.user(Role.clinician, [a]).id)},
        ("POST", "/v1/escalations/{escalation_id}/subject"): lambda: {
            "participant_id": str(ctx.person().id)},
        ("POST", "/v1/escalations/{escalation_id}/observations"): lambda: {
            "observed_at": datetime.now(UTC).isoformat(), "seen": "resting"},  # as it happens
        ("POST", "/v1/webhook-endpoints"): lambda: {
            "url": "http://127.0.0.1:9/hook", "event_types": ["webhook_endpoint.disabled"]},
        ("PATCH", "/v1/webhook-endpoints/{endpoint_id}"): lambda: {"description": "Renamed"},
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): lambda: {},
        ("POST", "/v1/on-call-shifts"): lambda: {
            "facility_id": str(a.id), "network": ctx.network, "level": "on_call_clinician",
            "user_id": str(f.user(Role.clinician, [a]).id), "weekdays": ["mon"],
            "start_time": "07:00", "duration_minutes": 720, "valid_from": "2026-01-01"},
        ("PATCH", "/v1/on-call-shifts/{shift_id}"): lambda: {"valid_until": "2030-01-01"},
        ("POST", "/v1/on-call-overrides"): lambda: {
            "facility_id": str(a.id), "network": ctx.network, "level": "on_call_clinician",
            "user_id": str(f.user(Role.clinician, [a]).id),
            "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T18:00:00Z"},
        ("POST", "/v1/referrals"): lambda: {
            "participant_id": str(f.pairing(ctx.own, f.recipient(a, ctx.network)).recipient_id
                                  if ctx.own else ctx.person().id),
            "reason_category": "isolation"},
        ("POST", "/v1/referrals/{referral_id}/triage"): lambda: {},
        ("POST", "/v1/referrals/{referral_id}/match"): lambda: {
            "pairing_id": str(f.pairing(f.certified_supporter(a, ctx.network),
                                        ctx.referral_person).id)},
        ("POST", "/v1/referrals/{referral_id}/decline"): lambda: {"reason": "no_capacity"},
        ("POST", "/v1/referrals/{referral_id}/withdraw"): lambda: {},
        ("POST", "/v1/escalation-notifications/{notification_id}/acknowledge"): lambda: None,
        ("POST", "/v1/on-call-overrides/{override_id}/cancel"): lambda: None,
        ("POST", "/v1/imports/participants"): lambda: Raw.csv(
            "external_source,external_id,network,legal_name,facility_code",
            f"jms,{_uid()},{ctx.network},New Person,{a.code}"),
        ("POST", "/v1/imports/keep-apart-orders"): lambda: Raw.csv(
            "external_source,external_id,person_a,person_b,reason,scope,authorised_by",
            f"jms,{_uid()},{ctx.ext(ctx.person())},{ctx.ext(ctx.person())},threat,unit,Lt. T"),
    }
    make = bodies.get((method, template))
    return path, make() if make else None


def _matrix_actor(factory: Any, role: str, a: Facility) -> tuple[dict[str, str], Ctx]:
    network = STAFF if role == "staff_coordinator" else INC
    ctx = Ctx(factory, a, network)
    if role == "integration":
        account: Any = factory.api_client(sorted(ROLE_SCOPES[Role.integration]), [a], [INC])
    elif role == "admin":
        account = factory.user(Role.admin, None)
    elif role == "peer_supporter":
        ctx.own = factory.participant(a, INC, is_supporter=True)
        account = factory.user(Role.peer_supporter, [a], participant=ctx.own)
    else:
        account = factory.user(Role(role), [a])
    ctx.account = account
    return factory.headers(account), ctx


@pytest.mark.parametrize("role", ROLES)
def test_role_operation_matrix(role, client, factory):
    a = factory.facility()
    factory.facility()  # another facility, so "all facilities" and "one facility" differ
    headers, ctx = _matrix_actor(factory, role, a)
    rows = [(m, p, s) for r, m, p, s in MATRIX if r == role]
    assert len(rows) == len(_OPS)
    failures = []
    for method, template, expected in rows:
        path, body = _resolve(ctx, method, template)
        events_before = factory.count(OutboxEvent)
        keyed = headers | ({"Idempotency-Key": str(uuid.uuid4())} if method == "POST" else {})
        if isinstance(body, Raw):
            r = client.request(method, path, headers=keyed | body.headers, content=body.content)
        else:
            r = client.request(method, path, headers=keyed, json=body)
        where = f"{role} {method} {template}"
        if r.status_code != expected:
            failures.append(f"{where}: expected {expected}, got {r.status_code} {r.text[:300]}")
            continue
        if expected == 403:
            if r.headers["content-type"] != PROBLEM or r.json().get("code") != "insufficient_scope":
                failures.append(f"{where}: 403 is not insufficient_scope: {r.text[:200]}")
            if factory.count(OutboxEvent) != events_before:
                failures.append(f"{where}: a refused call emitted events")
    assert not failures, "\n".join(failures)


def test_matrix_agrees_with_role_scopes(routes_app):
    """The matrix's 403s are exactly the operations whose scopes the role lacks."""
    route_scopes = {(m, r.path): set().union(*_principal_scopes(r.dependant))
                    for m, r in _protected_routes(routes_app)}
    wrong = []
    for role, method, path, status in MATRIX:
        needed = route_scopes.get((method, path))
        if needed is None:
            continue  # reported by test_matrix_covers_every_protected_route
        allowed = needed <= ROLE_SCOPES[Role(role)]
        if allowed != (status != 403):
            wrong.append(f"{role} {method} {path}: matrix says {status}, ROLE_SCOPES "
                         f"{'grants' if allowed else 'lacks'} {sorted(needed)}")
    assert not wrong, "\n".join(wrong)


# =============================================================================================
# 3. BOLA: two facilities, two networks, and callers who must not see across the walls
# =============================================================================================

PEOPLE = {  # name: (facility, network)
    "pA1": ("A", INC), "pA2": ("A", INC), "peer": ("A", INC),
    "pB1": ("B", INC), "pB2": ("B", INC),
    "sA1": ("A", STAFF), "sA2": ("A", STAFF),
    "sB1": ("B", STAFF), "sB2": ("B", STAFF),
}
ORDERS = {"kA": ("pA1", "pA2"), "kB": ("pB1", "pB2"), "kSA": ("sA1", "sA2"), "kSB": ("sB1", "sB2")}


@dataclass(frozen=True)
class Actor:
    role: Role
    facility: str  # "A" or "B": the one facility the actor works in
    network: str  # the network the actor writes in
    sees: frozenset[str]  # participants the actor may see: everyone else must not exist

    def can(self, scope: str) -> bool:
        return scope in ROLE_SCOPES[self.role]

    @property
    def sees_orders(self) -> set[str]:
        return {k for k, pair in ORDERS.items() if set(pair) & self.sees}


ACTORS = {
    "coordinator_A": Actor(Role.coordinator, "A", INC, frozenset({"pA1", "pA2", "peer"})),
    "coordinator_B": Actor(Role.coordinator, "B", INC, frozenset({"pB1", "pB2"})),
    "staff_coordinator_A": Actor(Role.staff_coordinator, "A", STAFF, frozenset({"sA1", "sA2"})),
    "clinician_A": Actor(Role.clinician, "A", INC,
                         frozenset({"pA1", "pA2", "peer", "sA1", "sA2"})),
    "officer_A": Actor(Role.officer, "A", INC, frozenset({"pA1", "pA2", "peer"})),
    "peer_supporter_A": Actor(Role.peer_supporter, "A", INC, frozenset({"peer"})),
    "integration_A": Actor(Role.integration, "A", INC, frozenset({"pA1", "pA2", "peer"})),
}


@dataclass
class World:
    factory: Any
    facilities: dict[str, Facility]
    people: dict[str, Participant]
    ext: dict[str, str]  # participant name -> its jms external id
    orders: dict[str, KeepApartOrder]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


def build_world(factory: Any) -> World:
    facilities = {"A": factory.facility(f"A{_uid()}"), "B": factory.facility(f"B{_uid()}")}
    for f in facilities.values():
        factory.unit(f, "U1")
    people, ext = {}, {}
    for name, (fac, net) in PEOPLE.items():
        ext[name] = f"{name}-{_uid()}"
        people[name] = factory.participant(facilities[fac], net, external=("jms", ext[name]),
                                           legal_name=f"Person {name}",
                                           is_supporter=name == "peer")
    orders = {k: factory.keep_apart(people[x], people[y]) for k, (x, y) in ORDERS.items()}
    w = World(factory, facilities, people, ext, orders)
    for name, actor in ACTORS.items():
        fac = [facilities[actor.facility]]
        if actor.role == Role.integration:
            account: Any = factory.api_client(sorted(ROLE_SCOPES[Role.integration]), fac, [INC])
        elif actor.role == Role.peer_supporter:
            account = factory.user(actor.role, fac, participant=people["peer"])
        else:
            account = factory.user(actor.role, fac)
        w.headers[name] = factory.headers(account)
    return w


@pytest.fixture()
def world(factory) -> World:
    return build_world(factory)


def _snapshot(factory: Any) -> dict[str, Any]:
    """Everything a refused call must leave as it was."""
    with Session(factory.engine) as s:
        people = {p.id: (p.version, p.archived_at, p.merged_into_id, p.facility_id,
                         p.housing_unit_id, p.preferred_name, p.legal_name,
                         sorted((e["source"], e["value"]) for e in p.external_ids or []))
                  for p in s.scalars(select(Participant))}
        orders = {o.id: (o.version, o.status, o.participant_a_id, o.participant_b_id)
                  for o in s.scalars(select(KeepApartOrder))}
        facilities = {f.id: (f.version, f.name) for f in s.scalars(select(Facility))}
        ext = sorted((e.participant_id, e.source, e.value)
                     for e in s.scalars(select(ParticipantExternalId)))
        counts = {m.__name__: s.execute(select(func.count()).select_from(m)).scalar_one()
                  for m in (HousingUnit, OutboxEvent, User, ApiClient)}
        successes = s.execute(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.outcome == "success")).scalar_one()
    return {"participants": people, "orders": orders, "facilities": facilities,
            "external_ids": ext, "counts": counts, "audit_successes": successes}


def _is_not_found(r: Any) -> bool:
    return (r.status_code == 404 and r.headers["content-type"] == PROBLEM
            and r.json().get("code") == "not_found")


def _is_insufficient_scope(r: Any) -> bool:
    return r.status_code == 403 and r.json().get("code") == "insufficient_scope"


class Probe:
    """Sends calls for one actor and collects every deviation, so one run reports them all."""

    def __init__(self, client: Any, world: World, name: str) -> None:
        self.client, self.world, self.name = client, world, name
        self.actor = ACTORS[name]
        self.headers = world.headers[name]
        self.failures: list[str] = []

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items()} or None
        keyed = self.headers | ({"Idempotency-Key": str(uuid.uuid4())} if method == "POST" else {})
        return self.client.request(method, path, headers=keyed, json=body, params=query)

    def absent(self, scope: str, method: str, path: str, body: Any = None) -> None:
        """A call on a record the actor must not see: 404 not_found (403 if the role lacks
        the scope altogether, which says nothing about the record)."""
        r = self.call(method, path, body)
        ok = _is_not_found(r) if self.actor.can(scope) else _is_insufficient_scope(r)
        if not ok:
            self.failures.append(f"{self.name} {method} {path} {body or ''}: "
                                 f"{r.status_code} {r.text[:200]}")

    def listed(self, scope: str, path: str, expected: set[str], ids: dict[str, Any],
               **params: Any) -> None:
        r = self.call("GET", path, limit=200, **params)
        if not self.actor.can(scope):
            if not _is_insufficient_scope(r):
                self.failures.append(f"{self.name} GET {path}: {r.status_code}, expected 403")
            return
        if r.status_code != 200:
            self.failures.append(f"{self.name} GET {path}: {r.status_code} {r.text[:200]}")
            return
        by_id = {str(v.id): k for k, v in ids.items()}
        got = {by_id.get(item["id"], item["id"]) for item in r.json()["items"]}
        if got != expected:
            self.failures.append(f"{self.name} GET {path} {params}: listed {sorted(got)}, "
                                 f"expected exactly {sorted(expected)}")


def _other(fac: str) -> str:
    return "B" if fac == "A" else "A"


def _representatives(hidden: list[str]) -> list[str]:
    """One hidden person per wall crossed: (other facility | same facility) x (network)."""
    reps: dict[tuple[str, str], str] = {}
    for n in hidden:
        reps.setdefault(PEOPLE[n], n)
    return sorted(reps.values())


@dataclass(frozen=True)
class Scene:
    own_fac: Facility
    other_fac: Facility
    hidden: list[str]  # every participant the actor must not see
    reps: list[str]  # one of them per wall
    hidden_orders: list[str]
    mine: list[str]  # visible participants of the actor's own network (merge partners)


def _scene(w: World, actor: Actor) -> Scene:
    hidden = sorted(set(PEOPLE) - actor.sees)
    return Scene(own_fac=w.facilities[actor.facility], other_fac=w.facilities[_other(actor.facility)],
                 hidden=hidden, reps=_representatives(hidden),
                 hidden_orders=sorted(set(ORDERS) - actor.sees_orders),
                 mine=sorted(n for n in actor.sees if PEOPLE[n][1] == actor.network and n != "peer"))


def _participant_attempts(w: World, actor: Actor, sc: Scene, n: str) -> list[tuple[str, str, str, Any]]:
    """(scope, method, path, body) of every single-record call on hidden participant n."""
    pid = w.people[n].id
    # No PUT by the hidden person's external id: that id is unused for this caller (unique per
    # facility and network), the upsert creates a record of the caller's own, the hidden one
    # unchanged (tests/test_external_id_scope.py).
    out = [("participants:read", "GET", f"/v1/participants/{pid}", None),
           ("participants:write", "PATCH", f"/v1/participants/{pid}", {"preferred_name": "Hijack"}),
           ("participants:write", "POST", f"/v1/participants/{pid}/archive", None)]
    if sc.mine:
        keep = w.people[sc.mine[0]].id
        out += [("participants:write", "POST", f"/v1/participants/{pid}/merge",
                 {"duplicate_id": str(keep)}),
                ("participants:write", "POST", f"/v1/participants/{keep}/merge",
                 {"duplicate_id": str(pid)})]
    return out


def _order_attempts(w: World, k: str) -> list[tuple[str, str, str, Any]]:
    oid = w.orders[k].id
    return [("keep_apart:read", "GET", f"/v1/keep-apart-orders/{oid}", None),
            ("keep_apart:write", "POST", f"/v1/keep-apart-orders/{oid}/close", {"reason": "hijack"})]


def _facility_attempts(sc: Scene) -> list[tuple[str, str, str, Any]]:
    fid = sc.other_fac.id
    return [("facilities:read", "GET", f"/v1/facilities/{fid}", None),
            ("facilities:read", "GET", f"/v1/facilities/{fid}/housing-units", None)]


def _probe(client: Any, w: World, name: str) -> list[str]:
    """Everything one actor tries against what they must not see; returns the deviations."""
    p = Probe(client, w, name)
    actor = p.actor
    sc = _scene(w, actor)
    before = _snapshot(w.factory)

    # Lists: exactly what the actor may see, whatever the filters ask for.
    p.listed("participants:read", "/v1/participants", set(actor.sees), w.people,
             include_archived="true")
    for net in (INC, STAFF):
        p.listed("participants:read", "/v1/participants",
                 {n for n in actor.sees if PEOPLE[n][1] == net}, w.people, network=net)
    p.listed("participants:read", "/v1/participants", set(), w.people, facility_id=sc.other_fac.id)
    p.listed("keep_apart:read", "/v1/keep-apart-orders", actor.sees_orders, w.orders)
    p.listed("keep_apart:read", "/v1/keep-apart-orders", set(), w.orders,
             participant_id=w.people[sc.hidden[0]].id)
    p.listed("facilities:read", "/v1/facilities", {actor.facility}, w.facilities)

    # Every hidden participant is unreadable; every kind of write is tried across every wall
    # (one person per wall: other facility, other network, both). A role without the scope at
    # all gets 403 whatever the target, which says nothing about the record.
    attempts = [a for n in sc.hidden for a in _participant_attempts(w, actor, sc, n)
                if a[1] == "GET" or n in sc.reps]
    attempts += [a for k in sc.hidden_orders for a in _order_attempts(w, k)]
    attempts += _facility_attempts(sc)
    refused_kinds: set[tuple[str, str, str]] = set()
    for scope, method, path, body in attempts:
        if not actor.can(scope):  # once per kind of call is enough to see the 403
            kind = (scope, method, re.sub(r"[0-9a-f-]{36}|jms/.*", "*", path))
            if kind in refused_kinds:
                continue
            refused_kinds.add(kind)
        p.absent(scope, method, path, body)

    # Writes that would reach across the walls through a body are refused the same way as
    # an unknown reference (422), never carried out.
    if actor.can("participants:write"):
        other_net = STAFF if actor.network == INC else INC
        for fac, net in ((sc.other_fac, actor.network), (sc.own_fac, other_net)):
            r = p.call("POST", "/v1/participants", {"network": net, "legal_name": "Pushed",
                                                    "facility_code": fac.code})
            if r.status_code != 422:
                p.failures.append(f"{name} create participant in {fac.code}/{net}: "
                                  f"{r.status_code} {r.text[:200]}")
        if sc.mine:
            r = p.call("PATCH", f"/v1/participants/{w.people[sc.mine[0]].id}",
                       {"facility_code": sc.other_fac.code})
            if r.status_code != 422 or r.json().get("code") != "unknown_facility":
                p.failures.append(f"{name} move {sc.mine[0]} to the other facility: "
                                  f"{r.status_code} {r.text[:200]}")
    if actor.can("keep_apart:write") and sc.mine:
        for n in sc.reps:
            r = p.call("POST", "/v1/keep-apart-orders", {
                "participant_ids": [str(w.people[sc.mine[0]].id), str(w.people[n].id)],
                "reason": "threat", "scope": "facility", "authorised_by": "Lt. Test"})
            if r.status_code != 422 or r.json().get("code") != "unknown_participant":
                p.failures.append(f"{name} open an order with {n}: {r.status_code} {r.text[:200]}")

    after = _snapshot(w.factory)
    for key in before:
        if before[key] != after[key]:
            p.failures.append(f"{name}: {key} changed by refused calls")
    return p.failures


def test_records_outside_scope_do_not_exist_and_do_not_change(client, world):
    """Each actor in turn (one world: nothing may change, so they can share it)."""
    failures = [f for name in ACTORS for f in _probe(client, world, name)]
    assert not failures, "\n".join(failures)


def test_peer_supporter_sees_only_their_own_record(client, world):
    h = world.headers["peer_supporter_A"]
    own = world.people["peer"]
    r = client.get("/v1/participants", headers=h, params={"include_archived": "true"})
    assert r.status_code == 200
    assert [i["id"] for i in r.json()["items"]] == [str(own.id)]
    assert client.get(f"/v1/participants/{own.id}", headers=h).status_code == 200
    r = client.get(f"/v1/participants/{world.people['pA1'].id}", headers=h)  # same facility
    assert _is_not_found(r)
    r = client.get("/v1/auth/me", headers=h)
    assert r.json()["participant_id"] == str(own.id)
    # Keep-apart orders are security information: never readable by a peer, even their own.
    order = world.factory.keep_apart(own, world.people["pA1"])
    for path in ("/v1/keep-apart-orders", f"/v1/keep-apart-orders/{order.id}"):
        assert _is_insufficient_scope(client.get(path, headers=h))


def test_network_walls(client, world):
    """Officers and coordinators never see staff records; the staff coordinator never sees
    incarcerated ones, even in the facility they all work in."""
    fac = str(world.facilities["A"].id)
    for name, network, foreign in (("officer_A", STAFF, "sA1"), ("coordinator_A", STAFF, "sA1"),
                                   ("integration_A", STAFF, "sA1"),
                                   ("staff_coordinator_A", INC, "pA1")):
        h = world.headers[name]
        r = client.get("/v1/participants", headers=h, params={"network": network})
        assert r.status_code == 200 and r.json()["items"] == [], name
        r = client.get("/v1/participants", headers=h, params={"facility_id": fac})
        assert r.json()["items"] and all(i["network"] != network for i in r.json()["items"]), name
        assert _is_not_found(client.get(f"/v1/participants/{world.people[foreign].id}",
                                        headers=h)), name


# =============================================================================================
# 4. The 404 for an out-of-scope record is the 404 for a record that never existed
# =============================================================================================

def _shape(r: Any) -> tuple[Any, ...]:
    body = r.json() if r.headers.get("content-type") in (PROBLEM, "application/json") else r.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "request_id"}
    headers = {k: v for k, v in r.headers.items()
               if k.lower() in ("content-type", "www-authenticate", "etag", "location")}
    return r.status_code, headers, body


def _swap_id(path: str, body: Any, real: str) -> tuple[str, Any]:
    """The same call with the out-of-scope id replaced by one that was never issued."""
    fake = str(uuid.uuid4())
    if real in path:
        return path.replace(real, fake), body

    def swap(v: Any) -> Any:
        return [swap(x) for x in v] if isinstance(v, list) else fake if v == real else v

    return path, {k: swap(v) for k, v in body.items()}


def _compare(client: Any, w: World, name: str) -> tuple[list[str], int]:
    """Each out-of-scope call next to the same call on an id never issued; (differences, 404s)."""
    actor = ACTORS[name]
    h = w.headers[name]
    sc = _scene(w, actor)
    calls: list[tuple[str, str, Any, str]] = []  # (method, path, body, the out-of-scope id)
    for n in sc.reps:
        pid = str(w.people[n].id)
        for scope, method, path, body in _participant_attempts(w, actor, sc, n):
            if actor.can(scope) and method != "PUT":  # an unknown external id creates
                calls.append((method, path, body, pid))
    for k in sc.hidden_orders:
        calls += [(m, path, body, str(w.orders[k].id)) for scope, m, path, body in _order_attempts(w, k)
                  if actor.can(scope)]
    calls += [(m, path, body, str(sc.other_fac.id)) for _s, m, path, body in _facility_attempts(sc)]
    if actor.can("keep_apart:write") and sc.mine:
        for n in sc.reps:
            calls.append(("POST", "/v1/keep-apart-orders", {
                "participant_ids": [str(w.people[sc.mine[0]].id), str(w.people[n].id)],
                "reason": "threat", "scope": "facility", "authorised_by": "Lt. T"},
                str(w.people[n].id)))
    differences, seen_404 = [], 0
    for method, path, body, real in calls:
        out_of_scope = client.request(method, path, headers=h, json=body)
        fake_path, fake_body = _swap_id(path, body, real)
        missing = client.request(method, fake_path, headers=h, json=fake_body)
        seen_404 += out_of_scope.status_code == 404
        if _shape(out_of_scope) != _shape(missing):
            differences.append(f"{name} {method} {path}: out of scope {_shape(out_of_scope)} "
                               f"vs never issued {_shape(missing)}")
    return differences, seen_404


def test_out_of_scope_404_is_indistinguishable_from_a_missing_record(client, world):
    differences, seen_404 = [], 0
    for name in ACTORS:
        diffs, n = _compare(client, world, name)
        assert n >= 3, f"{name}: too few calls answered 404: the comparison proved little"
        differences += diffs
        seen_404 += n
    assert not differences, "\n".join(differences)


def test_account_administration_is_for_all_facility_admins(client, factory):
    a = factory.facility("ADM-A")
    admin = factory.headers(factory.user(Role.admin))
    body = {"password": "long-enough-password", "username": "adm-a"}
    r = client.post("/v1/users", headers=admin,
                    json=body | {"role": "admin", "facility_codes": ["ADM-A"]})
    assert r.status_code == 422 and r.json()["code"] == "admin_needs_all_facilities"
    r = client.post("/v1/users", headers=admin, json=body | {"role": "integration"})
    assert r.status_code == 422 and r.json()["code"] == "role_not_for_users"
    # A facility-limited admin row (made behind the API) gets no account scopes at all.
    limited = factory.headers(factory.user(Role.admin, [a]))
    top = factory.user(Role.admin)
    assert client.patch(f"/v1/users/{top.id}", headers=limited,
                        json={"password": "hijacked-password-1"}).status_code == 403
    assert client.get("/v1/clients", headers=limited).status_code == 403
    assert client.get(f"/v1/facilities/{a.id}", headers=limited).status_code == 200

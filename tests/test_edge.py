"""The edge stays thin (STYLE.md, house rules): routers get what the app factory built through
typed dependencies, never from `app.state`; the Idempotency-Key claim reaches the Writer
through the request's session."""

import ast
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from app.models import IdempotencyKey, Participant
from app.models.common import Role
from app.routers import participants as participants_router
from app.services import idempotency
from app.services.writer import Writer

ROUTERS = Path(__file__).resolve().parent.parent / "app" / "routers"


def _reads_app_state(node: ast.AST) -> bool:
    """`app.state`, `request.app.state`, `getattr(app, "state")`..."""
    def is_app(value: ast.AST) -> bool:
        return (isinstance(value, ast.Name) and value.id == "app") or \
            (isinstance(value, ast.Attribute) and value.attr == "app")

    if isinstance(node, ast.Attribute) and node.attr == "state":
        return is_app(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
        name = node.args[1]
        return is_app(node.args[0]) and isinstance(name, ast.Constant) and name.value == "state"
    return False


def test_no_router_reads_app_state():
    modules = sorted(ROUTERS.glob("*.py"))
    assert len(modules) > 10
    found = [f"{path.name}:{node.lineno}" for path in modules
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if _reads_app_state(node)]
    assert found == [], "routers take SettingsDep, NoteCipherDep... (app/deps.py): " + \
        ", ".join(found)


def test_the_check_sees_each_way_of_reading_app_state():
    for source in ("request.app.state.settings", "app.state.keyring", "x = request.app.state",
                   "getattr(request.app, 'state')"):
        assert any(_reads_app_state(n) for n in ast.walk(ast.parse(source))), source
    for source in ("request.state.db", "settings.state", "app.routes"):
        assert not any(_reads_app_state(n) for n in ast.walk(ast.parse(source))), source


def test_the_writer_marks_the_requests_idempotency_claim(client, factory, monkeypatch):
    """The claim goes middleware -> request -> the request's session (SessionDep) -> Writer:
    a request that committed and then failed leaves its key `committed`, so a retry is refused
    instead of creating the participant twice."""
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    h = factory.headers(factory.user(Role.coordinator, [f])) | {"Idempotency-Key": "edge-1"}
    body = {"network": "incarcerated", "legal_name": "Sam Roe", "facility_code": "CCJ",
            "housing_unit_code": "A1", "program_roles": ["recipient"]}

    def lost(*_: object) -> None:
        raise RuntimeError("the answer is lost after the commit")

    monkeypatch.setattr(participants_router, "_out", lost)
    assert client.post("/v1/participants", headers=h, json=body).status_code == 500
    with Session(factory.engine) as s:
        row = s.execute(select(IdempotencyKey).where(IdempotencyKey.key == "edge-1")).scalar_one()
    assert row.state == "committed"
    monkeypatch.undo()
    again = client.post("/v1/participants", headers=h, json=body)
    assert again.status_code == 409 and again.json()["code"] == "idempotency_key_in_flight"
    assert factory.count(Participant) == 1


def test_a_session_of_its_own_carries_no_claim(app):
    claim = idempotency.Claim(uuid.uuid4(), "owner", datetime.now(UTC))
    request_session = app.state.sessionmaker()
    idempotency.bind(request_session, claim)
    assert Writer(request_session, None).claim is claim
    assert Writer(app.state.sessionmaker(), None).claim is None  # an import job, the worker

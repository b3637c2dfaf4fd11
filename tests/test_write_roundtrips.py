"""An upsert that changes something (a housing-unit move) needs at most 6 database round trips
on PostgreSQL, counted as bench/roundtrips.py counts them: every statement the client sends and
waits for, BEGIN included (the COMMIT travels with the audit chain's statement there). On both
databases the record is read once: locked as it is found, not read again to be written."""

from __future__ import annotations

from sqlalchemy import event

from app.models.common import Role

URL = "/v1/participants/by-external-id/jms/J-501"


def _body(unit: str) -> dict:
    return {"network": "incarcerated", "legal_name": "Ann Example", "facility_code": "RTF",
            "housing_unit_code": unit, "custody_status": "in_custody",
            "program_roles": ["supporter", "recipient"]}


def test_upsert_that_moves_someone_takes_at_most_six_round_trips(app, client, factory, is_pg):
    f = factory.facility("RTF")
    factory.unit(f, "A1")
    b2 = factory.unit(f, "B2")
    h = factory.headers(factory.user(Role.coordinator, [f]))
    assert client.put(URL, headers=h, json=_body("A1")).status_code == 201
    assert client.put(URL, headers=h, json=_body("A1")).status_code == 200  # caches warm

    sent: list[str] = []
    engine = app.state.engine.sync_engine

    def on_statement(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        sent.append(" ".join(statement.split())[:60])

    def on_begin(_conn):  # type: ignore[no-untyped-def]
        sent.append("BEGIN")

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "begin", on_begin)
    try:
        r = client.put(URL, headers=h, json=_body("B2"))
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "begin", on_begin)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["housing_unit_id"] == str(b2.id)
    reads = [s for s in sent if s.startswith("SELECT participant.")]
    assert len(reads) == 1, sent  # found and locked in one read, not read again
    if is_pg:
        assert len(sent) <= 6, sent

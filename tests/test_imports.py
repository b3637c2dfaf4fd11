"""Bulk imports as a JMS integrator sees them: per-row results with line numbers and stable
codes, valid rows landing and invalid ones changing nothing, the same file twice changing
nothing, cascades as for single updates, 413/415 refusals, large files as resumable jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import make_async_engine, make_sessionmaker
from app.main import create_app
from app.models import (
    AuditEvent,
    ImportJob,
    KeepApartOrder,
    OutboxEvent,
    Pairing,
    Participant,
    ParticipantExternalId,
)
from app.models.common import Role
from app.models.import_job import ImportFormat, ImportKind
from app.services import imports

PROBLEM = "application/problem+json"
HEADER = ("external_source,external_id,network,legal_name,date_of_birth,languages,"
          "facility_code,housing_unit_code,custody_status,program_roles")


@pytest.fixture()
def world(factory):
    f = factory.facility("CCJ")
    a1, b2 = factory.unit(f, "A1"), factory.unit(f, "B2")
    out = factory.facility("OUT")  # exists, but outside the callers' scope
    factory.unit(out, "Z9")
    coord = factory.user(Role.coordinator, [f])
    jms = factory.api_client(["participants:read", "participants:write", "keep_apart:read",
                              "keep_apart:write"], [f])
    return {"f": f, "out": out, "a1": a1, "b2": b2, "coord": coord, "jms": jms,
            "h": factory.headers(coord), "jms_h": factory.headers(jms)}


def _post(client, headers, body, *, kind="participants", ctype="text/csv", key=None):
    h = headers | {"Content-Type": ctype, "Idempotency-Key": key or str(uuid.uuid4())}
    return client.post(f"/v1/imports/{kind}", headers=h,
                       content=body if isinstance(body, bytes) else body.encode())


def _csv(*rows: str) -> str:
    return "\r\n".join([HEADER, *rows]) + "\r\n"


def _errors_by_line(body):
    out: dict[int, list[tuple[str | None, str]]] = {}
    for e in body["errors"]:
        out.setdefault(e["line"], []).append((e["field"], e["code"]))
    return out


def test_mixed_valid_and_invalid_rows(client, factory, world):
    secret = "1234-SECRET-99"
    body = _csv(
        "jms,P-1,incarcerated,Ann Lee,1990-04-01,en;es,CCJ,A1,in_custody,recipient",   # line 2
        f"jms,P-2,incarcerated,Bo Kim,{secret},en,CCJ,A1,in_custody,recipient",       # 3: date
        "jms,P-3,incarcerated,Cy Dee,1991-01-01,en,CCJ,A1,asleep,recipient",          # 4: enum
        "jms,P-4,incarcerated,Di Fox,1992-02-02,en,OUT,Z9,in_custody,recipient",      # 5: scope
        "jms,P-5,incarcerated,Ed Gee,1993-03-03,en,NOPE,,in_custody,recipient",       # 6: unknown
        "jms,P-6,incarcerated,Flo Ho,1994-04-04,en,CCJ,Q7,in_custody,recipient",      # 7: unit
        "jms,P-7,incarcerated,,1995-05-05,en,CCJ,A1,in_custody,recipient",            # 8: missing
        "jms,P-1,incarcerated,Ann Lee,1990-04-01,en,CCJ,A1,in_custody,recipient",     # 9: dup
        "jms,P-8,staff,Gus Ivy,1996-06-06,en,CCJ,,,",                                 # 10: network
        "jms,P-9,incarcerated,Hal Jo,1997-07-07,,CCJ,B2,released,supporter",          # 11
        "jms,P-10,incarcerated,Ida Ko",                                               # 12: cells
    )
    r = _post(client, world["h"], body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert r.headers["location"] == f"/v1/imports/{got['id']}"
    assert (got["status"], got["rows_total"], got["rows_done"]) == ("completed", 11, 11)
    assert (got["created"], got["updated"], got["unchanged"], got["failed"]) == (2, 0, 0, 9)
    assert _errors_by_line(got) == {
        3: [("date_of_birth", "invalid_date")],
        4: [("custody_status", "invalid_choice")],
        5: [("facility_code", "unknown_facility")],
        6: [("facility_code", "unknown_facility")],
        7: [("housing_unit_code", "unknown_housing_unit")],
        8: [("legal_name", "missing")],
        9: [("external_id", "duplicate_row")],
        10: [("network", "network_not_allowed")],
        12: [(None, "malformed_row")],
    }
    # A facility outside the caller's scope reads exactly like one that does not exist.
    msgs = {e["line"]: e["message"] for e in got["errors"]}
    assert msgs[5] == msgs[6]
    assert secret not in r.text and "asleep" not in r.text and "Q7" not in r.text
    # Valid rows landed, with their housing and custody; invalid ones changed nothing.
    people = {p.legal_name: p for p in _all(factory, Participant)}
    assert set(people) == {"Ann Lee", "Hal Jo"}
    assert people["Ann Lee"].housing_unit_id == world["a1"].id
    assert people["Ann Lee"].languages == ["en", "es"]
    assert people["Hal Jo"].custody_status == "released" and people["Hal Jo"].is_supporter
    assert factory.count(ParticipantExternalId) == 2
    assert [e.type for e in factory.events()] == ["participant.created"] * 2
    assert len(factory.audits("participant.create")) == 2
    assert len(factory.audits("import.participants")) == 1
    # Rows reaching outside the caller's scope are audited as refused, as on the routes.
    refused = factory.audits("import.participants.row")
    assert [a.outcome for a in refused] == ["refused"] * 3
    # The result stays readable by its creator.
    again = client.get(f"/v1/imports/{got['id']}", headers=world["h"])
    assert again.status_code == 200 and again.json() == got


def _all(factory, model):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(factory.engine) as s:
        return list(s.scalars(select(model)))


def test_the_same_file_twice_changes_nothing_the_second_time(client, factory, world):
    p = factory.participant(world["f"], external=("jms", "P-1"), legal_name="Ann Lee",
                            housing_unit_id=world["a1"].id, is_recipient=True, languages=["en"],
                            date_of_birth=datetime(1990, 4, 1).date())
    body = _csv("jms,P-1,incarcerated,Ann Lee,1990-04-01,en,CCJ,B2,in_custody,recipient",
                "jms,P-2,incarcerated,Bo Kim,1991-01-01,en,CCJ,A1,in_custody,recipient")
    first = _post(client, world["jms_h"], body).json()
    assert (first["created"], first["updated"], first["unchanged"], first["failed"]) == (1, 1, 0, 0)
    moved = factory.get(Participant, p.id)
    assert moved.housing_unit_id == world["b2"].id and moved.version == 2
    events, audits = factory.count(OutboxEvent), factory.count(AuditEvent)
    second = _post(client, world["jms_h"], body).json()
    assert (second["created"], second["updated"], second["unchanged"], second["failed"]) == (0, 0, 2, 0)
    assert factory.count(OutboxEvent) == events  # no events
    assert factory.count(AuditEvent) == audits + 1  # only the import itself
    assert factory.get(Participant, p.id).version == 2
    assert factory.count(Participant) == 2


def test_two_rows_for_one_person_apply_in_file_order(client, factory, world):
    """Two rows of one chunk naming the same person by two of their ids: the second is decided
    on what the first made of the record, not on the record as it was read (no second event
    for the move the first row already made)."""
    p = factory.participant(world["f"], external=("jms", "P-1"), legal_name="Ann Lee",
                            housing_unit_id=world["a1"].id)
    p.external_ids = [*p.external_ids, {"source": "crm", "value": "C-1"}]
    factory._save(p, ParticipantExternalId(participant_id=p.id, source="crm", value="C-1"))
    body = _csv("jms,P-1,incarcerated,Ann Lee,,,CCJ,B2,,",
                "crm,C-1,incarcerated,Ann Lee,,,CCJ,B2,released,")
    got = _post(client, world["jms_h"], body).json()
    assert (got["updated"], got["failed"]) == (2, 0), got
    record = factory.get(Participant, p.id)
    assert (record.housing_unit_id, record.custody_status, record.version) == (
        world["b2"].id, "released", 3)
    changed = [e.data["changed"] for e in factory.events("participant.updated")
               if str(e.entity_id) == str(p.id)]
    assert changed == [["housing_unit_id"], ["custody_status"]]
    assert len(factory.events("participant.released")) == 1


def test_a_record_written_between_reading_and_locking_is_decided_again(settings, factory, world,
                                                                      is_pg):
    """A chunk's rows are decided on records read without a lock; one written meanwhile (its
    version moved on) is read again once locked and decided on what is there now: here the
    move was made already, so the import writes nothing and emits nothing for it."""
    if not is_pg:
        pytest.skip("SQLite has one writer at a time: the other write waits for the chunk")
    from app.security.principal import load_principal
    from app.services import participants
    from app.services.writer import Writer

    p = factory.participant(world["f"], external=("jms", "P-1"), legal_name="Ann Lee",
                            housing_unit_id=world["a1"].id)
    row = imports.ParticipantImportRow.model_validate(
        {"external_source": "jms", "external_id": "P-1", "network": "incarcerated",
         "legal_name": "Ann Lee", "facility_code": "CCJ", "housing_unit_code": "B2"})
    claims = {"sub": str(world["jms"].id), "sub_kind": "client", "jti": "t-1",
              "scope": "participants:read participants:write"}

    async def chunk() -> str:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                w = Writer(session, await load_principal(session, claims))
                changes = participants.ImportChanges(session, w.principal, w)
                await changes.load([("jms", "P-1")], [row])
                outcome = changes.upsert("jms", "P-1", row)[1]
                p.housing_unit_id, p.version = world["b2"].id, 2  # someone else, meanwhile
                factory._save(p)
                await changes.flush()
                await w.commit()
                return outcome
        finally:
            await engine.dispose()

    assert asyncio.run(chunk()) == "updated"  # as decided on the record first read
    record = factory.get(Participant, p.id)
    assert (record.housing_unit_id, record.version) == (world["b2"].id, 2)
    assert not [e for e in factory.events("participant.updated") if str(e.entity_id) == str(p.id)]


def test_release_in_an_import_ends_pairings_as_a_single_update_does(client, factory, world):
    supporter = factory.certified_supporter(world["f"], external=("jms", "S-1"),
                                            legal_name="Sue Port")
    recipient = factory.recipient(world["f"], external=("jms", "R-1"), legal_name="Rae Sip")
    pairing = factory.pairing(supporter, recipient)
    body = _csv("jms,R-1,incarcerated,Rae Sip,,,CCJ,,released,")
    r = _post(client, world["jms_h"], body)
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    ended = factory.get(Pairing, pairing.id)
    assert (ended.status, ended.end_reason) == ("ended", "released")
    types = [e.type for e in factory.events()]
    assert types.count("participant.released") == 1 and types.count("pairing.ended") == 1
    assert factory.audits("pairing.end")[0].entity_id == str(pairing.id)


def test_wrong_field_types_get_clear_per_row_errors(client, factory, world):
    rows = [
        {"external_source": "jms", "external_id": "J-1", "network": "incarcerated",
         "legal_name": "Ann Lee", "facility_code": "CCJ"},                          # 1: ok
        {"external_source": "jms", "external_id": "J-2", "network": "incarcerated",
         "legal_name": "Bo Kim", "facility_code": "CCJ", "date_of_birth": 12345,
         "languages": "en", "caseload_cap": "many"},                                 # 2
        {"external_source": "jms", "external_id": "J-3", "network": "incarcerated",
         "legal_name": "Cy Dee", "facility_code": "CCJ", "is_admin": True},          # 3
    ]
    lines = [orjson.dumps(r).decode() for r in rows]
    lines.insert(2, "")  # a blank line: skipped, but it still counts for line numbers
    lines.append("{not json")                                                        # 5
    lines.append("[1, 2]")                                                           # 6
    r = _post(client, world["jms_h"], "\n".join(lines) + "\n", ctype="application/x-ndjson")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["created"], got["failed"]) == (1, 4)
    assert _errors_by_line(got) == {
        2: [("date_of_birth", "invalid_date"), ("languages", "invalid_type"),
            ("caseload_cap", "invalid_number")],
        4: [("is_admin", "unknown_field")],
        5: [(None, "invalid_json")],
        6: [(None, "invalid_json")],
    }
    assert "12345" not in r.text and "many" not in r.text
    assert factory.count(Participant) == 1


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "multipart/form-data",
                                   "application/xml"])
def test_unsupported_content_type_is_415(client, factory, world, ctype):
    r = _post(client, world["h"], _csv("jms,P-1,incarcerated,Ann Lee,,,CCJ,,,"), ctype=ctype)
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    assert r.json()["code"] == "unsupported_media_type"
    assert factory.count(Participant) == 0 and factory.count(ImportJob) == 0


def test_idempotency_key_is_required(client, factory, world):
    h = world["h"] | {"Content-Type": "text/csv"}
    r = client.post("/v1/imports/participants", headers=h,
                    content=_csv("jms,P-1,incarcerated,Ann Lee,,,CCJ,,,").encode())
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_missing"
    assert factory.count(Participant) == 0


def test_oversized_file_is_413(settings, factory, world):
    small = settings.model_copy(update={"import_max_bytes": 2_000})
    with TestClient(create_app(small), raise_server_exceptions=False) as c:
        body = _csv(*[f"jms,P-{i},incarcerated,Person {i},,,CCJ,,," for i in range(100)])
        r = _post(c, world["h"], body)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        # The import cap is the imports' own: ordinary JSON bodies keep theirs.
        assert small.max_body_bytes == 1_000_000
    assert factory.count(Participant) == 0 and factory.count(ImportJob) == 0


def test_more_than_200000_rows_is_413(client, factory, world):
    body = "\n".join(["{}"] * (imports.MAX_ROWS + 1))
    r = _post(client, world["h"], body, ctype="application/x-ndjson")
    assert r.status_code == 413 and r.json()["code"] == "too_many_rows"
    assert factory.count(ImportJob) == 0


def test_a_header_that_does_not_match_the_template_is_422(client, factory, world):
    r = _post(client, world["h"], "external_source,external_id,network,legal_name,ssn\r\n"
                                  "jms,P-1,incarcerated,Ann,SSN-secret-value\r\n")
    assert r.status_code == 422 and r.json()["code"] == "invalid_header"
    assert r.json()["errors"] == [{"field": "column 5", "message": "unknown column",
                                   "type": "unknown_column"}]
    assert "SSN-secret" not in r.text and factory.count(ImportJob) == 0
    # A file without its header row: the first person's details are never echoed back.
    r = _post(client, world["h"], "jms,P-1,incarcerated,Ann Secret,1990-04-01\r\n")
    assert r.status_code == 422 and r.json()["code"] == "invalid_header"
    assert "Secret" not in r.text and "1990-04-01" not in r.text
    assert {e["field"] for e in r.json()["errors"]} >= {"column 1", "external_source"}


def test_an_external_id_held_outside_the_callers_scope_is_not_taken_over(client, factory, world):
    """Unused for this caller (external ids are unique per facility and network): the row
    creates a record of the caller's own, as for an id nobody holds; the hidden one is untouched."""
    hidden = factory.participant(world["out"], external=("jms", "P-1"))
    r = _post(client, world["h"], _csv("jms,P-1,incarcerated,Hijack,,,CCJ,,,"))
    assert r.json()["created"] == 1 and r.json()["errors"] == [], r.text
    assert factory.get(Participant, hidden.id).version == 1
    assert factory.get(Participant, hidden.id).legal_name != "Hijack"
    assert factory.count(Participant) == 2


def test_templates_download_as_csv(client, world):
    for kind, first in (("participants", "external_source,external_id,network"),
                        ("keep-apart-orders", "external_source,external_id,person_source")):
        r = client.get(f"/v1/imports/{kind}/template", headers=world["h"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        assert r.text.startswith(first)


def _wait(client, headers, location, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(location, headers=headers).json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"import not finished: {body}")


def test_a_large_file_becomes_a_job_with_progress(settings, factory, world):
    small = settings.model_copy(update={"import_sync_max_rows": 3, "import_chunk_rows": 2})
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,A1,in_custody," for i in range(7)]
    rows[4] = "jms,P-4,incarcerated,Person 4,,,CCJ,NOPE,in_custody,"
    with TestClient(create_app(small), raise_server_exceptions=False) as c:
        r = _post(c, world["h"], _csv(*rows))
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("queued", "running")
        done = _wait(c, world["h"], r.headers["location"])
        assert (done["status"], done["rows_done"], done["created"], done["failed"]) == (
            "completed", 7, 6, 1)
        assert done["errors"] == [{"line": 6, "field": "housing_unit_code",
                                   "code": "unknown_housing_unit",
                                   "message": "The housing unit is not one of this facility's."}]
        # Another caller (even with the same role and facilities) does not see it.
        other = factory.headers(factory.user(Role.coordinator, [world["f"]]))
        assert c.get(r.headers["location"], headers=other).status_code == 404
        assert c.get("/v1/imports", headers=other).json()["items"] == []
        listed = c.get("/v1/imports", headers=world["h"]).json()["items"]
        assert [i["id"] for i in listed] == [done["id"]] and "errors" not in listed[0]
    assert factory.count(Participant) == 6
    assert factory.get(ImportJob, uuid.UUID(done["id"])).content is None  # not kept


def test_a_stalled_job_resumes_after_its_last_committed_chunk(settings, factory, world):
    """A runner that died after committing the first chunk: the worker's import_resume takes
    the job over once its lease ran out and finishes the rest."""
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,,," for i in range(5)]
    coord = world["coord"]
    job = factory.import_job(
        coord, status="running", content=_csv(*rows).encode(), rows_total=5, rows_done=2,
        created=2, lease_until=datetime.now(UTC) - timedelta(seconds=1),
        claims={"sub": str(coord.id), "sub_kind": "user", "jti": "t-1",
                "scope": "participants:read participants:write"})
    quick = settings.model_copy(update={"import_chunk_rows": 2})

    async def resume() -> dict[str, int]:
        engine = make_async_engine(quick)
        try:
            async with make_sessionmaker(engine)() as session:
                return await imports.resume_stalled(session, quick)
        finally:
            await engine.dispose()

    assert asyncio.run(resume()) == {"imports_resumed": 1}
    done = factory.get(ImportJob, job.id)
    assert (done.status, done.rows_done, done.created, done.content) == ("completed", 5, 5, None)
    # Rows 1-2 were the dead runner's chunk: only the rest ran here.
    names = {p.legal_name for p in _all(factory, Participant)}
    assert names == {"Person 2", "Person 3", "Person 4"}
    assert asyncio.run(resume()) == {"imports_resumed": 0}


def test_a_job_reads_its_file_a_chunk_at_a_time_and_still_sees_duplicates(settings, factory,
                                                                         world):
    """The file is read chunk by chunk (issue 13, item 12: a 150,000-row roster is never held
    as rows): an external id given twice is still refused on its later line, when the two
    lines fall in different chunks and when the first was committed before a crash."""
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,,," for i in range(5)]
    rows.append("jms,P-0,incarcerated,Someone Else,,,CCJ,,,")  # line 7: P-0 again
    coord = world["coord"]
    job = factory.import_job(
        coord, status="running", content=_csv(*rows).encode(), rows_total=6, rows_done=2,
        created=2, lease_until=datetime.now(UTC) - timedelta(seconds=1),
        claims={"sub": str(coord.id), "sub_kind": "user", "jti": "t-2",
                "scope": "participants:read participants:write"})
    quick = settings.model_copy(update={"import_chunk_rows": 2})

    async def resume() -> dict[str, int]:
        engine = make_async_engine(quick)
        try:
            async with make_sessionmaker(engine)() as session:
                return await imports.resume_stalled(session, quick)
        finally:
            await engine.dispose()

    assert asyncio.run(resume()) == {"imports_resumed": 1}
    done = factory.get(ImportJob, job.id)
    assert (done.status, done.rows_done, done.created, done.failed) == ("completed", 6, 5, 1)
    assert [(e["line"], e["code"]) for e in done.errors] == [(7, "duplicate_row")]
    assert "Someone Else" not in {p.legal_name for p in _all(factory, Participant)}
    # The same file in the request path, chunks of 2: the same answer.
    small = settings.model_copy(update={"import_sync_max_rows": 3, "import_chunk_rows": 2})
    rows[-1] = "jms,Q-0,incarcerated,Other,,,CCJ,,,"
    rows.append("jms,Q-0,incarcerated,Other Again,,,CCJ,,,")
    with TestClient(create_app(small), raise_server_exceptions=False) as c:
        r = _post(c, world["h"], _csv(*[row.replace("P-", "R-") for row in rows]))
        assert r.status_code == 202, r.text
        done = _wait(c, world["h"], r.headers["location"])
    assert (done["status"], done["created"], done["failed"]) == ("completed", 6, 1)
    assert [(e["line"], e["code"]) for e in done["errors"]] == [(8, "duplicate_row")]


def test_a_roster_of_150000_rows_is_within_the_cap():
    """A state department's nightly roster (about 150,000 rows) is accepted; the cap stays."""
    assert imports.MAX_ROWS >= 150_000
    kind = imports.KINDS[ImportKind.participants]
    header = "external_source,external_id,network,legal_name\r\n"
    body = header + "".join(f"jms,J{i},incarcerated,P\r\n" for i in range(150_000))
    assert imports.check(body.encode(), ImportFormat.csv, kind) == 150_000
    over = body + "".join(f"jms,K{i},incarcerated,P\r\n" for i in range(imports.MAX_ROWS))
    with pytest.raises(imports.TooManyRows):
        imports.check(over.encode(), ImportFormat.csv, kind)


def test_keep_apart_orders_open_and_close_by_the_jms_order_id(client, factory, world):
    f = world["f"]
    a = factory.certified_supporter(f, external=("jms", "A"))
    b = factory.recipient(f, external=("jms", "B"))
    c = factory.participant(f, external=("jms", "C"))
    d = factory.participant(f, external=("jms", "D"))
    pairing = factory.pairing(a, b)
    existing = factory.keep_apart(c, d, external_source="jms", external_id="KA-2")
    header = "external_source,external_id,person_a,person_b,reason,scope,authorised_by,status"
    body = "\r\n".join([header,
                        "jms,KA-1,A,B,threat,facility,Lt. Ray,open",      # 2: new: ends pairing
                        "jms,KA-2,C,D,threat,facility,Lt. Test,closed",   # 3: closes
                        "jms,KA-3,A,NOBODY,gang,unit,Lt. Ray,open",       # 4: unknown person
                        "jms,KA-4,A,B,violence,cell,Lt. Ray,open"]) + "\r\n"  # 5: pair has one
    r = _post(client, world["jms_h"], body, kind="keep-apart-orders")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["created"], got["updated"], got["failed"]) == (1, 1, 2)
    assert _errors_by_line(got) == {4: [("participant_ids", "unknown_participant")],
                                    5: [(None, "keep_apart_exists")]}
    assert factory.get(Pairing, pairing.id).end_reason == "keep_apart"
    assert factory.get(KeepApartOrder, existing.id).status == "closed"
    assert factory.count(KeepApartOrder, KeepApartOrder.external_id == "KA-1") == 1
    events = factory.count(OutboxEvent)
    again = _post(client, world["jms_h"], body, kind="keep-apart-orders").json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert factory.count(OutboxEvent) == events


def test_keep_apart_import_needs_keep_apart_write(client, factory, world):
    only_people = factory.headers(factory.api_client(["participants:write"], [world["f"]]))
    r = _post(client, only_people, "external_source\r\n", kind="keep-apart-orders")
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


def test_the_cli_runs_the_same_import_as_a_named_client(factory, world, settings, tmp_path,
                                                         monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.config import get_settings

    file = tmp_path / "nightly.csv"
    file.write_text(_csv("jms,P-1,incarcerated,Ann Lee,1990-04-01,en,CCJ,A1,in_custody,",
                         "jms,P-2,incarcerated,Bo Kim,1990-04-01,en,OUT,Z9,in_custody,"))
    monkeypatch.setenv("PEERLINK_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(cli, ["import", "participants", str(file),
                                     "--client", world["jms"].client_id])
        unknown = CliRunner().invoke(cli, ["import", "participants", str(file),
                                           "--client", "plc_nobody"])
    finally:
        get_settings.cache_clear()
    assert r.exit_code == 1, r.output  # a row failed
    out = orjson.loads(r.stdout[r.stdout.index("{"):])
    assert (out["created"], out["failed"]) == (1, 1)
    assert out["errors"][0]["code"] == "unknown_facility"
    assert [p.legal_name for p in _all(factory, Participant)] == ["Ann Lee"]
    created = factory.audits("participant.create")[0]
    assert (created.actor_type, created.client_id) == ("client", world["jms"].client_id)
    assert unknown.exit_code == 2 and factory.count(ImportJob) == 1


def test_a_job_whose_creator_was_deactivated_stops_and_forgets_the_file(settings, factory, world):
    gone = factory.user(Role.coordinator, [world["f"]], active=False)
    job = factory.import_job(
        gone, status="queued", content=_csv("jms,P-1,incarcerated,Ann Lee,,,CCJ,,,").encode(),
        rows_total=1, claims={"sub": str(gone.id), "sub_kind": "user", "jti": "t-2",
                              "scope": "participants:read participants:write"})

    async def resume() -> dict[str, int]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await imports.resume_stalled(session, settings)
        finally:
            await engine.dispose()

    asyncio.run(resume())
    done = factory.get(ImportJob, job.id)
    assert (done.status, done.failure, done.content) == ("failed", "principal_inactive", None)
    assert factory.count(Participant) == 0


def test_jsonl_extra_ids_of_someone_else_are_refused_per_row(client, factory, world):
    factory.participant(world["f"], external=("booking", "B-9"))
    rows = [{"external_source": "jms", "external_id": "J-1", "network": "incarcerated",
             "legal_name": "Ann Lee", "facility_code": "CCJ",
             "external_ids": [{"source": "booking", "value": "B-9"}]},
            {"external_source": "jms", "external_id": "J-2", "network": "incarcerated",
             "legal_name": "Bo Kim", "facility_code": "CCJ",
             "external_ids": [{"source": "booking", "value": "B-10"}]}]
    body = "\n".join(orjson.dumps(r).decode() for r in rows)
    got = _post(client, world["jms_h"], body, ctype="application/x-ndjson").json()
    assert _errors_by_line(got) == {1: [(None, "external_id_taken")]}
    assert got["created"] == 1
    assert factory.count(ParticipantExternalId) == 3  # B-9, J-2, B-10


def test_transfer_in_an_import_ends_pairings_as_a_single_update_does(client, factory, world):
    supporter = factory.certified_supporter(world["f"], external=("jms", "S-2"))
    recipient = factory.recipient(world["f"], external=("jms", "R-2"), legal_name="Tia Moss")
    pairing = factory.pairing(supporter, recipient)
    r = _post(client, world["jms_h"], _csv("jms,R-2,incarcerated,Tia Moss,,,CCJ,,transferred,"))
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    ended = factory.get(Pairing, pairing.id)
    assert (ended.status, ended.end_reason) == ("ended", "transferred")
    assert len(factory.events("participant.transferred")) == 1


def test_an_import_retried_with_its_key_is_replayed_not_run_again(client, factory, world):
    body = _csv("jms,K-1,incarcerated,Kai Rowe,,,CCJ,A1,in_custody,")
    first = _post(client, world["jms_h"], body, key="file-1")
    again = _post(client, world["jms_h"], body, key="file-1")
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert factory.count(ImportJob) == 1
    other = _post(client, world["jms_h"], _csv("jms,K-2,incarcerated,Lee Ash,,,CCJ,A1,,"),
                  key="file-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert factory.count(Participant) == 1


@contextlib.contextmanager
def _worker_process(db_url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`peerlink worker`, as deployed beside the API on PostgreSQL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env={**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
             **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pg_only(is_pg: bool) -> None:
    if not is_pg:
        pytest.skip("SQLite: the API process is the worker and runs its imports itself")


def _request_ids(factory, entity_type: str) -> set[str | None]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(factory.engine) as s:
        return set(s.scalars(select(AuditEvent.request_id)
                             .where(AuditEvent.entity_type == entity_type)))


def test_a_worker_process_takes_a_large_import_as_it_is_sent(settings, factory, world, db_url,
                                                             is_pg):
    """Issue 13, item 12: on PostgreSQL a large import runs in a `peerlink worker`, not in the
    API process serving requests (the two would share one interpreter lock). The API process
    stops right after answering 202, and the worker's periodic resume comes only every 100 s:
    only the worker taking the job as it is sent finishes it in time. Its rows' audit records
    carry the id of the request that sent the file."""
    _pg_only(is_pg)
    api = settings.model_copy(update={"import_sync_max_rows": 3, "import_chunk_rows": 2})
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,A1,in_custody," for i in range(200)]
    with _worker_process(db_url, PEERLINK_IMPORT_CHUNK_ROWS="2",
                         PEERLINK_IMPORT_LEASE_SECONDS="400") as proc:
        with TestClient(create_app(api), raise_server_exceptions=False) as c:
            r = _post(c, world["h"], _csv(*rows))
            assert r.status_code == 202, r.text
        job_id = uuid.UUID(r.json()["id"])
        deadline = time.monotonic() + 45
        while (job := factory.get(ImportJob, job_id)).status != "completed":
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"still {job.status}: {job.rows_done} rows"
            time.sleep(0.1)
    assert (job.rows_done, job.created) == (200, 200)
    assert _request_ids(factory, "participant") == {r.headers["x-request-id"]}


def test_a_worker_runs_what_was_sent_before_it_listened(settings, factory, world, db_url, is_pg):
    """A job sent while no worker listened (all of them restarting) waits for one, which runs
    it as soon as it listens; a stray message on the channel does not stop it listening."""
    _pg_only(is_pg)
    api = settings.model_copy(update={"import_sync_max_rows": 3, "import_chunk_rows": 2,
                                      "import_worker_handoff_seconds": 60})
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,,," for i in range(5)]
    with TestClient(create_app(api), raise_server_exceptions=False) as c:
        first = _post(c, world["h"], _csv(*rows))
        assert first.status_code == 202, first.text
        time.sleep(1.0)
        assert c.get(first.headers["location"], headers=world["h"]).json()["status"] == "queued"
        with _worker_process(db_url, PEERLINK_IMPORT_LEASE_SECONDS="400"):
            assert _wait(c, world["h"], first.headers["location"], timeout=45)["created"] == 5
            with factory.engine.begin() as conn:
                conn.execute(text("SELECT pg_notify('peerlink_imports', 'not-a-job')"))
            second = _post(c, world["h"], _csv(*[row.replace("P-", "Q-") for row in rows]))
            done = _wait(c, world["h"], second.headers["location"], timeout=45)
    assert (done["status"], done["created"]) == ("completed", 5)


def test_without_a_worker_the_api_process_runs_the_import_itself(settings, factory, world,
                                                                  is_pg):
    """No worker took the job within the handoff: the API process that received it runs it."""
    api = settings.model_copy(update={"import_sync_max_rows": 3, "import_chunk_rows": 2,
                                      "import_worker_handoff_seconds": 0.2})
    rows = [f"jms,P-{i},incarcerated,Person {i},,,CCJ,,," for i in range(5)]
    with TestClient(create_app(api), raise_server_exceptions=False) as c:
        r = _post(c, world["h"], _csv(*rows))
        assert r.status_code == 202, r.text
        done = _wait(c, world["h"], r.headers["location"])
    assert (done["status"], done["created"]) == ("completed", 5)
    assert _request_ids(factory, "participant") == {r.headers["x-request-id"]}

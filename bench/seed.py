"""Fresh benchmark database: drop/create, migrate, and seed 100,000 participants with COPY."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

import psycopg
from psycopg import sql

from app.db import utcnow, uuid7

FACILITY_CODE = "BENCH"
UNIT_CODES = ["A", "B", "C", "D"]
USERNAME = "bench.coordinator"
PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway local account)


@dataclass
class Seeded:
    facility_id: uuid.UUID
    unit_ids: list[uuid.UUID]
    ids: list[uuid.UUID]  # participant ids, ascending (keyset order)
    names: list[str] = field(default_factory=list)

    def ext(self, i: int) -> str:
        return f"J{i:07d}"

    def unit_of(self, i: int) -> int:
        return i % len(self.unit_ids)

    def is_supporter(self, i: int) -> bool:
        return i % 10 == 0


def _conninfo(url: str, dbname: str | None = None) -> str:
    """postgresql[+psycopg]://... -> a libpq URL, optionally for another database."""
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    if dbname is not None:
        u = u.set(database=dbname)
    return u.render_as_string(hide_password=False)


def recreate_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name:
        raise SystemExit("BENCH_DATABASE_URL needs a database name")
    with psycopg.connect(_conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(url: str, n: int) -> Seeded:
    from app.models.facility import FacilitySettings
    from app.security.passwords import hash_password

    now = utcnow()
    facility_id = uuid7()
    unit_ids = [uuid7() for _ in UNIT_CODES]
    ids = sorted(uuid7() for _ in range(n))
    s = Seeded(facility_id=facility_id, unit_ids=unit_ids, ids=ids)
    dob0 = date(1960, 1, 1)
    t0 = time.perf_counter()
    with psycopg.connect(_conninfo(url)) as conn:
        conn.execute(
            "INSERT INTO facility (id, code, name, timezone, settings, version, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s::jsonb, 1, %s, %s)",
            (facility_id, FACILITY_CODE, "Benchmark County Jail", "America/Chicago",
             json.dumps(FacilitySettings().model_dump()), now, now))
        conn.cursor().executemany(
            "INSERT INTO housing_unit (id, facility_id, code, name, active, created_at) "
            "VALUES (%s, %s, %s, %s, true, %s)",
            [(uid, facility_id, code, f"Unit {code}", now)
             for uid, code in zip(unit_ids, UNIT_CODES, strict=True)])
        cols = ("id, network, legal_name, preferred_name, date_of_birth, languages, facility_id, "
                "housing_unit_id, custody_status, employment_status, is_supporter, is_recipient, "
                "supporter_availability, unavailable_until, external_ids, archived_at, "
                "merged_into_id, version, created_at, updated_at")
        with conn.cursor().copy(f"COPY participant ({cols}) FROM STDIN") as cp:
            for i, pid in enumerate(ids):
                name = f"Person {i:06d} Benchmark"
                s.names.append(name)
                sup = s.is_supporter(i)
                cp.write_row((
                    pid, "incarcerated", name, None, dob0 + timedelta(days=i % 15000), '["en"]',
                    facility_id, unit_ids[s.unit_of(i)], "in_custody", None, sup, True,
                    "active" if sup else None, None,
                    json.dumps([{"source": "jms", "value": s.ext(i)}]), None, None, 1, now, now))
        with conn.cursor().copy(
                "COPY participant_external_id (id, participant_id, source, value, created_at) "
                "FROM STDIN") as cp:
            for i, pid in enumerate(ids):
                cp.write_row((uuid7(), pid, "jms", s.ext(i), now))
        conn.execute(
            "INSERT INTO app_user (id, username, password_hash, role, all_facilities, facility_ids,"
            " participant_id, active, version, created_at, updated_at) "
            "VALUES (%s, %s, %s, 'coordinator', true, %s::jsonb, NULL, true, 1, %s, %s)",
            (uuid7(), USERNAME, hash_password(PASSWORD), json.dumps([str(facility_id)]), now, now))
        conn.commit()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"  seeded {n:,} participants (+ external ids, 1 facility, {len(unit_ids)} units, "
          f"1 coordinator) in {time.perf_counter() - t0:.1f}s", flush=True)
    return s

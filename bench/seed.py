"""Fresh benchmark database: drop/create, migrate, and seed 100,000 participants with COPY,
plus a second facility of 2,000 certified supporters for the pairing candidates scenario, and
(BENCH_SESSIONS) 1,000,000 support sessions over 50,000 pairings of the first facility."""

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
CAND_FACILITY_CODE = "BENCH2"
CAND_UNIT_CODES = ["N1", "N2", "N3", "N4", "N5", "N6"]
CAND_SUPPORTERS = 2000
CAND_RECIPIENTS = 1500  # recipient-only people: the query's recipient + the others' pairings
CAND_LANGUAGES = ['["en"]', '["es"]', '["en", "es"]']
USERNAME = "bench.coordinator"
PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway local account)


@dataclass
class CandidatesSeed:
    """The second facility: who is there and what the candidates answer should be."""

    facility_id: uuid.UUID
    recipient_id: uuid.UUID  # the one the scenario asks about
    supporter_ids: list[uuid.UUID]
    pairings: int  # active pairings seeded (caseloads)
    full: list[uuid.UUID]  # supporters at the facility's caseload cap (caseload_full)
    keep_apart: list[uuid.UUID]  # supporters with an open keep-apart order with the recipient
    previous: list[uuid.UUID]  # supporters of the recipient's ended pairings

    @property
    def expected_eligible(self) -> int:
        return len(self.supporter_ids) - len(set(self.full) | set(self.keep_apart))


@dataclass
class EscalationsSeed:
    """The first facility's escalations and what the open dashboard should answer."""

    total: int
    open: int
    dashboard: list[uuid.UUID]  # the first 50 open ones by (ack_deadline, id): the expected page


@dataclass
class Seeded:
    facility_id: uuid.UUID
    unit_ids: list[uuid.UUID]
    ids: list[uuid.UUID]  # participant ids, ascending (keyset order); the first facility only
    names: list[str] = field(default_factory=list)
    candidates: CandidatesSeed | None = None
    sessions: SessionsSeed | None = None  # BENCH_SESSIONS > 0 only
    escalations: EscalationsSeed | None = None

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


def seed(url: str, n: int, sessions: int = 0) -> Seeded:
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
        s.candidates = seed_candidates(conn, max(ids))
        s.escalations = seed_escalations(conn, s)
        conn.commit()
        if sessions:
            t1 = time.perf_counter()
            s.sessions = seed_sessions(conn, s, sessions)
            conn.commit()
            t1 = time.perf_counter() - t1
    t2 = time.perf_counter()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    t2 = time.perf_counter() - t2
    c = s.candidates
    print(f"  seeded {n:,} participants (+ external ids, 1 facility, {len(unit_ids)} units, "
          f"1 coordinator); facility {CAND_FACILITY_CODE}: {len(c.supporter_ids):,} certified "
          f"supporters, {CAND_RECIPIENTS:,} recipients, {c.pairings:,} active pairings, "
          f"{len(c.keep_apart)} keep-apart orders; in {time.perf_counter() - t0:.1f}s", flush=True)
    e = s.escalations
    print(f"  of which escalations: {e.total:,} in {FACILITY_CODE} ({e.open} open, deadlines "
          f"over the next {ESC_OPEN_HOURS} hours; the rest resolved)", flush=True)
    if s.sessions:
        ss = s.sessions
        print(f"  of which support sessions: {ss.sessions:,} sessions ({2 * ss.sessions:,} "
              f"attendees) over {ss.pairings:,} active pairings in {FACILITY_CODE} in {t1:.1f}s; "
              f"VACUUM ANALYZE {t2:.1f}s", flush=True)
    return s


def seed_candidates(conn: psycopg.Connection, after: uuid.UUID) -> CandidatesSeed:
    """Facility BENCH2 (incarcerated network): 2,000 supporters, all certified (one required
    course completed, the code of conduct signed), caseloads 0-5 from active pairings with
    1,500 recipient-only people, and one recipient to ask about with 5 keep-apart orders and 3
    ended pairings. Its ids sort after `after` so the first facility's pages are unchanged.

    Expected candidates for the recipient: 2,000 - 20 at the cap (caseload_full) - 5 keep-apart
    = 1,975 eligible, 25 ineligible (shown to coordinators with the rule that excludes each).
    """
    from app.models.facility import FacilitySettings

    now = utcnow()
    today = now.date()
    facility_id = uuid7()
    unit_ids = [uuid7() for _ in CAND_UNIT_CODES]
    nu = len(unit_ids)
    sup = sorted(uuid7() for _ in range(CAND_SUPPORTERS))
    rec = sorted(uuid7() for _ in range(CAND_RECIPIENTS))
    if min(sup[0], rec[0]) <= after:
        raise RuntimeError("the second facility's ids must sort after the first's")
    cap = FacilitySettings().caseload_cap  # 5
    conn.execute(
        "INSERT INTO facility (id, code, name, timezone, settings, version, created_at, "
        "updated_at) VALUES (%s, %s, %s, %s, %s::jsonb, 1, %s, %s)",
        (facility_id, CAND_FACILITY_CODE, "Benchmark State Prison", "America/Chicago",
         json.dumps(FacilitySettings().model_dump()), now, now))
    conn.cursor().executemany(
        "INSERT INTO housing_unit (id, facility_id, code, name, active, created_at) "
        "VALUES (%s, %s, %s, %s, true, %s)",
        [(uid, facility_id, code, f"Unit {code}", now)
         for uid, code in zip(unit_ids, CAND_UNIT_CODES, strict=True)])
    cols = ("id, network, legal_name, preferred_name, date_of_birth, languages, facility_id, "
            "housing_unit_id, custody_status, employment_status, is_supporter, is_recipient, "
            "supporter_availability, unavailable_until, caseload_cap, external_ids, archived_at, "
            "merged_into_id, version, created_at, updated_at")
    dob0 = date(1970, 1, 1)
    with conn.cursor().copy(f"COPY participant ({cols}) FROM STDIN") as cp:
        for i, pid in enumerate(sup):
            cp.write_row((
                pid, "incarcerated", f"Supporter {i:04d} Benchmark", f"Sup {i:04d}",
                dob0 + timedelta(days=i * 7), CAND_LANGUAGES[i % 3], facility_id,
                unit_ids[i % nu], "in_custody", None, True, False, "active", None, None, "[]",
                None, None, 1, now, now))
        for i, pid in enumerate(rec):
            cp.write_row((
                pid, "incarcerated", f"Recipient {i:04d} Benchmark", f"Rec {i:04d}",
                dob0 + timedelta(days=i * 5), CAND_LANGUAGES[i % 2], facility_id,
                unit_ids[i % nu], "in_custody", None, False, True, None, None, None, "[]",
                None, None, 1, now, now))
    course_id = uuid7()
    conn.execute(
        "INSERT INTO course (id, title, description, hours, network, required_for_certification,"
        " refresher, active, version, created_at, updated_at) "
        "VALUES (%s, 'Peer support foundations', 'Benchmark course', 16, 'incarcerated', true, "
        "false, true, 1, %s, %s)", (course_id, now, now))
    with conn.cursor().copy(
            "COPY enrollment (id, participant_id, course_id, status, score, enrolled_at, "
            "enrolled_by, started_at, started_by, completed_at, completed_by, version, "
            "updated_at) FROM STDIN") as cp:
        for i, pid in enumerate(sup):
            done = now - timedelta(days=1 + i % 300)
            cp.write_row((uuid7(), pid, course_id, "completed", 80 + i % 20,
                          done - timedelta(days=30), "bench", done - timedelta(days=29), "bench",
                          done, "bench", 3, done))
    with conn.cursor().copy(
            "COPY conduct_signature (id, participant_id, conduct_version, signed_on, "
            "witnessed_by, witness_name, recorded_at) FROM STDIN") as cp:
        for i, pid in enumerate(sup):
            cp.write_row((uuid7(), pid, "2026.1", today - timedelta(days=1 + i % 300), "bench",
                          None, now))
    # Caseloads: supporters 0-599 hold i % 5 (0-4) active pairings, 600-619 the cap (full);
    # each pairing with its own recipient (recipients 1..; recipient 0 is the one asked about).
    loads = [(j, j % 5) for j in range(600)] + [(j, cap) for j in range(600, 620)]
    recipient = rec[0]
    others = iter(rec[1:])
    keep_apart = sup[1000:1005]
    previous = sup[10:13]
    pcols = ("id, supporter_id, recipient_id, facility_id, network, status, proposed_at, "
             "proposed_by, activated_at, activated_by, ended_at, ended_by, end_reason, version, "
             "updated_at")
    n_active = 0
    with conn.cursor().copy(f"COPY pairing ({pcols}) FROM STDIN") as cp:
        for j, k in loads:
            for _ in range(k):
                start = now - timedelta(days=10 + j % 50)
                cp.write_row((uuid7(), sup[j], next(others), facility_id, "incarcerated",
                              "active", start, "bench", start, "bench", None, None, None, 2,
                              start))
                n_active += 1
        for j, s in enumerate(previous):  # the recipient's ended pairings (previous supporters)
            start = now - timedelta(days=400 + 30 * j)
            end = start + timedelta(days=90)
            cp.write_row((uuid7(), s, recipient, facility_id, "incarcerated", "ended", start,
                          "bench", start, "bench", end, "bench", "completed", 3, end))
    conn.cursor().executemany(
        "INSERT INTO keep_apart_order (id, participant_a_id, participant_b_id, reason, scope, "
        "authorised_by, status, opened_at, opened_by, status_changed_at, status_changed_by, "
        "version, created_at, updated_at) "
        "VALUES (%s, %s, %s, 'threat', 'unit', 'Bench Captain', 'open', %s, 'bench', %s, "
        "'bench', 1, %s, %s)",
        [(uuid7(), *sorted((recipient, s)), now, now, now, now) for s in keep_apart])
    return CandidatesSeed(facility_id=facility_id, recipient_id=recipient, supporter_ids=sup,
                          pairings=n_active, full=sup[600:620], keep_apart=keep_apart,
                          previous=previous)


# --- escalations ------------------------------------------------------------------------------

ESCALATIONS = 50_000  # the issue: "with 50,000 escalations (500 open)"
ESC_OPEN = 500
ESC_OPEN_HOURS = 8  # the open ones' acknowledgement deadlines: spread over the next 8 hours
ESC_CATEGORIES = ("suicide_risk", "self_harm", "violence_threat", "mental_health_crisis",
                  "victimization", "medical")
ESC_TIERS = ("low", "moderate", "high", "imminent")


def seed_escalations(conn: psycopg.Connection, s: Seeded) -> EscalationsSeed:
    """ESCALATIONS escalations in the first facility about its participants, raised one every
    ~10 minutes over the past year (ids UUIDv7, written in id order): ESC_OPEN open ones (every
    100th), deadlines spread over the next ESC_OPEN_HOURS hours, so the worker breaches none
    during the run; the rest resolved (deadlines in the past, not breached)."""
    import random

    rng = random.Random(13)  # noqa: S311
    now = utcnow()
    step = ESCALATIONS // ESC_OPEN
    ids = sorted(uuid7() for _ in range(ESCALATIONS))
    span = timedelta(days=365)
    cols = ("id, participant_id, facility_id, network, category, description, tier, screener, "
            "status, ack_deadline, breached, chain_level, raised_by, raised_at, acknowledged_at, "
            "acknowledged_by, resolved_at, resolved_by, outcome, version, updated_at")
    opened: list[tuple[object, uuid.UUID]] = []
    with conn.cursor().copy(f"COPY escalation ({cols}) FROM STDIN") as cp:
        for i, eid in enumerate(ids):
            raised = now - span + span * i / ESCALATIONS
            who = s.ids[(i * 7919) % len(s.ids)]
            cat, tier = ESC_CATEGORIES[i % len(ESC_CATEGORIES)], ESC_TIERS[i % len(ESC_TIERS)]
            desc = f"Benchmark escalation {i:05d}: staff report, details on file."
            if i % step == step - 1:
                deadline = now + timedelta(seconds=rng.randint(600, ESC_OPEN_HOURS * 3600))
                opened.append((deadline, eid))
                cp.write_row((eid, who, s.facility_id, "incarcerated", cat, desc, tier, None,
                              "open", deadline, False, 0, "bench", raised, None, None, None,
                              None, None, 1, raised))
            else:
                ack = raised + timedelta(minutes=rng.randint(1, 14))
                done = ack + timedelta(hours=rng.randint(1, 48))
                cp.write_row((eid, who, s.facility_id, "incarcerated", cat, desc, tier, None,
                              "resolved", raised + timedelta(minutes=15), False, 0, "bench",
                              raised, ack, "bench", done, "bench", "Resolved (benchmark).", 3,
                              done))
    opened.sort()
    return EscalationsSeed(total=ESCALATIONS, open=len(opened),
                           dashboard=[eid for _, eid in opened[:50]])


# --- support sessions (opt-in: BENCH_SESSIONS) -----------------------------------------------

SESSION_PAIRINGS = 50_000  # active pairings in the first facility, between its own people
SESSION_DAYS = 400  # sessions are spread evenly over the last 400 days, one per ~35 s


@dataclass
class SessionsSeed:
    """The first facility's support sessions, and what the two scenarios should answer."""

    sessions: int
    pairings: int
    pairing_id: uuid.UUID  # a typical pairing (the mean number of sessions): the checked one
    recipient_id: uuid.UUID  # its recipient (their only pairing): the list scenario's person
    session_ids: list[uuid.UUID]  # the recipient's sessions, ascending (the expected page)
    held: int  # completed sessions of the pairing
    attended: int  # ... with the recipient attended
    change: float | None  # the recipient's average wellbeing change over those
    # More typical pairings and their recipients for the load (as auth_read rotates ids).
    load_pairings: list[uuid.UUID] = field(default_factory=list)
    load_recipients: list[uuid.UUID] = field(default_factory=list)


def _hex7(ms: int, rand_a: int, rand_b: int) -> str:
    """A UUIDv7 at `ms` (32 hex digits, which PostgreSQL reads as a uuid)."""
    return f"{ms:012x}7{rand_a:03x}{(0b10 << 62) | rand_b:016x}"


def _ts(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+00"


def seed_sessions(conn: psycopg.Connection, s: Seeded, total: int) -> SessionsSeed:
    """`total` one-to-one support sessions over SESSION_PAIRINGS (at most total / 20) active
    pairings of the first facility (each supporter, i % 10 == 0, holds 5; each recipient one),
    10-30 sessions each (20 on average), with 2 attendees each (supporter and recipient). Ids
    are UUIDv7 of their created_at, so the primary keys grow in the order the rows are written
    (COPY, text format)."""
    import random

    rng = random.Random(11)  # noqa: S311
    # The rows are consistent by construction: skip the per-row foreign key triggers (7
    # million lookups, most of the load time). Superuser only; this transaction only.
    conn.execute("SET LOCAL session_replication_role = replica")
    # And the secondary indexes (those not behind a constraint) are built after the load
    # rather than row by row, from their own definitions (the schema stays as migrated).
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    later = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname IN ('support_session', "
        "'session_attendee') AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = "
        "i.indexrelid)").fetchall()
    for name, _ in later:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    n = len(s.ids)
    supporters = [i for i in range(n) if s.is_supporter(i)]
    recipients = [i for i in range(n) if not s.is_supporter(i)]
    npair = min(SESSION_PAIRINGS, max(1, total // 20), len(recipients), 5 * len(supporters))
    if npair == 0:
        raise RuntimeError("too few participants or sessions for the sessions seed")
    step = len(recipients) / npair  # spread the recipients over the whole facility
    pair_sup = [s.ids[supporters[p % len(supporters)]] for p in range(npair)]
    pair_rec = [s.ids[recipients[int(p * step)]] for p in range(npair)]
    # Sessions per pairing: the mean (20 at 1,000,000 over 50,000) -10..+10 (two dice), then
    # nudged to the exact total without touching the typical ones.
    typical_n = max(1, round(total / npair))
    counts = [max(1, typical_n - 10 + rng.randint(0, 10) + rng.randint(0, 10))
              for _ in range(npair)]
    diff = total - sum(counts)
    p = 0
    while diff:
        if counts[p] != typical_n and counts[p] + (1 if diff > 0 else -1) >= 1:
            counts[p] += 1 if diff > 0 else -1
            diff += -1 if diff > 0 else 1
        p = (p + 1) % npair
    order = [p for p, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(order)

    now_ms = time.time_ns() // 1_000_000
    end_ms = now_ms - 86_400_000  # the last session yesterday
    span = SESSION_DAYS * 86_400_000
    start_ms = end_ms - span
    gap = span // total
    # Pairings: activated 1-30 days before the first session of the whole set, proposed 2 days
    # before that; ids UUIDv7 of now (created after the candidates' facility: ids sort after).
    pair_ids = sorted(uuid7() for _ in range(npair))
    act_ms = [start_ms - rng.randint(1, 30) * 86_400_000 for _ in range(npair)]
    pcols = ("id, supporter_id, recipient_id, facility_id, network, status, proposed_at, "
             "proposed_by, activated_at, activated_by, version, updated_at")
    with conn.cursor().copy(f"COPY pairing ({pcols}) FROM STDIN") as cp:
        for p in range(npair):
            cp.write_row((pair_ids[p], pair_sup[p], pair_rec[p], s.facility_id, "incarcerated",
                          "active", _ts(act_ms[p] - 2 * 86_400_000), "bench", _ts(act_ms[p]),
                          "bench", 2, _ts(act_ms[p])))
    pair_hex = [x.hex for x in pair_ids]
    sup_hex = [x.hex for x in pair_sup]
    rec_hex = [x.hex for x in pair_rec]
    fac = s.facility_id.hex

    typical = [p for p in range(npair) if counts[p] == typical_n]
    chosen = typical[len(typical) // 2]
    mine: list[str] = []
    held = attended = 0
    changes: list[int] = []
    scols = ("id, kind, pairing_id, facilitator_id, facility_id, network, status, scheduled_at, "
             "scheduled_by, actual_start, duration_minutes, topics, closed_at, closed_by, "
             "close_reason, version, created_at, updated_at")
    # Each attendance row carries its session's facility, network and scheduled time
    # (SessionAttendee.of), as the API writes them.
    acols = ("id, session_id, participant_id, status, reason, wellbeing_before, wellbeing_after, "
             "session_facility_id, session_network, session_scheduled_at")
    N = "\\N"
    sess_rows: list[str] = []
    att_rows: list[str] = []
    batch = 20_000
    with conn.cursor() as cur:
        with cur.copy(f"COPY support_session ({scols}) FROM STDIN") as cs:
            for j, p in enumerate(order):
                at = start_ms + j * gap  # scheduled for then, scheduled a week before
                created = at - 7 * 86_400_000
                sid = _hex7(created, rng.getrandbits(12), rng.getrandbits(62))
                r = rng.random()
                if r < 0.88:
                    status, wb = "completed", rng.random() < 0.67
                    begin = at + rng.randint(0, 10) * 60_000
                    dur = rng.choice((30, 45, 60, 60, 90))
                    closed = begin + dur * 60_000
                    sess_rows.append(
                        f"{sid}\tone_to_one\t{pair_hex[p]}\t{sup_hex[p]}\t{fac}\tincarcerated\t"
                        f"completed\t{_ts(at)}\tbench\t{_ts(begin)}\t{dur}\t[]\t{_ts(closed)}\t"
                        f"bench\t{N}\t2\t{_ts(created)}\t{_ts(closed)}\n")
                else:
                    status, wb = ("cancelled" if r < 0.94 else "no_show"), False
                    closed = at - 3_600_000 if status == "cancelled" else at + 3_600_000
                    reason = "Unit lockdown" if status == "cancelled" else N
                    sess_rows.append(
                        f"{sid}\tone_to_one\t{pair_hex[p]}\t{sup_hex[p]}\t{fac}\tincarcerated\t"
                        f"{status}\t{_ts(at)}\tbench\t{N}\t{N}\t[]\t{_ts(closed)}\tbench\t"
                        f"{reason}\t2\t{_ts(created)}\t{_ts(closed)}\n")
                rec_status = {"completed": "attended", "cancelled": "invited",
                              "no_show": "absent"}[status]
                before = after = N
                if wb:
                    b = rng.randint(1, 5)
                    a = min(5, max(1, b + rng.choice((-1, 0, 0, 1, 1, 2))))
                    before, after = str(b), str(a)
                where = f"{fac}\tincarcerated\t{_ts(at)}"
                att_rows.append(
                    f"{_hex7(created, rng.getrandbits(12), rng.getrandbits(62))}\t{sid}\t"
                    f"{sup_hex[p]}\t{'invited' if status == 'cancelled' else 'attended'}\t{N}\t"
                    f"{N}\t{N}\t{where}\n"
                    f"{_hex7(created, rng.getrandbits(12), rng.getrandbits(62))}\t{sid}\t"
                    f"{rec_hex[p]}\t{rec_status}\t{N}\t{before}\t{after}\t{where}\n")
                if p == chosen:
                    mine.append(sid)
                    if status == "completed":
                        held += 1
                        attended += 1
                        if wb:
                            changes.append(int(after) - int(before))
                if len(sess_rows) >= batch:
                    cs.write("".join(sess_rows))
                    sess_rows.clear()
            cs.write("".join(sess_rows))
        with cur.copy(f"COPY session_attendee ({acols}) FROM STDIN") as ca:
            for k in range(0, len(att_rows), batch):
                ca.write("".join(att_rows[k:k + batch]))
    for _, definition in later:
        conn.execute(definition)
    load = rng.sample(typical, min(2000, len(typical)))
    return SessionsSeed(
        sessions=total, pairings=npair, pairing_id=pair_ids[chosen],
        recipient_id=pair_rec[chosen], session_ids=sorted(uuid.UUID(x) for x in mine),
        held=held, attended=attended,
        change=round(sum(changes) / len(changes), 2) if changes else None,
        load_pairings=[pair_ids[p] for p in load], load_recipients=[pair_rec[p] for p in load])

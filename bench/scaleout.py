"""Scale-out proof (`python -m bench.scaleout`, run by `make bench`; tests/test_scale_out.py
runs the same with a shorter load): the production topology as plain processes on a fresh
PostgreSQL database, migrate once, then 2 API processes and 2 workers, rate-limit counters in
Redis (when one answers), under a bounded mixed load. Halfway through, one worker is
SIGKILLed and, a few seconds later, restarted.

The load (SCALE_CLIENTS threads, each paced to SCALE_RATE operations a second, alternating
between the two API processes): list reads; edits of a participant it created (each a
`participant.updated` event); creations of participants and raises of escalations, each POST
sent with an Idempotency-Key to one API process and the same request again to the other;
each raised escalation gets an acknowledgement deadline a few seconds ahead (written to the
database: the facility settings count in whole minutes).

Then, once everything has settled, the run's checks:
- every escalation past its deadline was breached exactly once (one `escalation.breached`
  event), within 10 s of its deadline;
- every event the webhook endpoint subscribed to was delivered at least once, and in event
  order per record (the first arrival of each);
- every idempotent POST took effect exactly once (one row per key; the replay answered the
  same resource);
- `peerlink audit verify` passes.

Environment (optional): BENCH_DATABASE_URL (its server; the database is
`peerlink_scaleout`, dropped and recreated), SCALE_DURATION (60 s), SCALE_CLIENTS (4),
SCALE_RATE (10 operations/s per client), TEST_REDIS_URL (redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Escalation, OutboxEvent, Participant, WebhookAttempt
from app.models.common import Role
from app.security.tokens import KeyRing, generate_private_key_pem

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BREACH_WITHIN = 10.0  # seconds after its deadline
WEBHOOK_TYPES = ["participant.created", "participant.updated", "escalation.created",
                 "escalation.breached"]
START_SECONDS = 240  # 4 Python processes starting on a busy 2-core machine


# --- the webhook receiver ---------------------------------------------------------------------

class Receiver:
    """Loopback HTTP server: records (arrival, webhook-id, body) of every POST, answers 204."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.got.append((time.time(), self.headers.get("webhook-id", ""),
                                         json.loads(body)))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the processes ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_reachable(url: str) -> bool:
    target = httpx.URL(url.replace("redis://", "http://", 1))
    try:
        with socket.create_connection((target.host, target.port or 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Processes:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "app.cli", *args], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen([PY, "-m", "app.cli", *args], cwd=self.workdir,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=15)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text()[-2500:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()


def _wait_ready(urls: list[str], procs: Processes) -> None:
    deadline = time.monotonic() + START_SECONDS
    pending = set(urls)
    while pending:
        for url in sorted(pending):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    pending.discard(url)
            except httpx.HTTPError:
                pass
        if procs.dead():
            raise RuntimeError(f"{procs.dead()} exited while starting\n{procs.logs()}")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {START_SECONDS} s: {sorted(pending)}\n"
                               f"{procs.logs()}")
        time.sleep(0.3)


# --- the load ---------------------------------------------------------------------------------

@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    # Idempotency-Key -> (kind, first answer's id, replay's id)
    posts: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    deadlines: dict[str, datetime] = field(default_factory=dict)  # escalation id -> deadline
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client_loop(n: int, apis: list[str], bearer: dict[str, str], facility_id: str,
                 until: float, rate: float, tally: Tally, engine: Any) -> None:
    rnd = random.Random(n)
    mine: list[str] = []
    clients = [httpx.Client(base_url=api, headers=bearer, timeout=30) for api in apis]
    step = 1.0 / rate
    nxt = time.monotonic()
    i = 0
    try:
        while time.monotonic() < until:
            nxt += step
            i += 1
            first, other = clients[i % 2], clients[(i + 1) % 2]
            roll = rnd.random()
            try:
                if roll < 0.40 or (roll < 0.65 and not mine):
                    _timed(tally, "read", first.get, "/v1/participants", params={"limit": 20})
                elif roll < 0.65:
                    pid = rnd.choice(mine)
                    _timed(tally, "edit", first.patch, f"/v1/participants/{pid}",
                           json={"preferred_name": f"P{i}"})
                else:
                    created = _idempotent(tally, "participant", first, other,
                                          "/v1/participants", {
                                              "network": "incarcerated",
                                              "legal_name": f"Load {n}-{i}",
                                              "facility_id": facility_id})
                    if created is None:
                        continue
                    mine.append(created)
                    if roll >= 0.85:
                        eid = _idempotent(tally, "escalation", first, other, "/v1/escalations", {
                            "participant_id": created, "category": "self_harm",
                            "description": f"seen {n}-{i}", "tier": "high"})
                        if eid is not None:
                            deadline = datetime.now(UTC) + timedelta(seconds=rnd.uniform(1, 4))
                            with Session(engine) as s, s.begin():
                                s.execute(update(Escalation)
                                          .where(Escalation.id == uuid.UUID(eid))
                                          .values(ack_deadline=deadline))
                            with tally.lock:
                                tally.deadlines[eid] = deadline
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(max(0.0, nxt - time.monotonic()))
    finally:
        for c in clients:
            c.close()


def _timed(tally: Tally, kind: str, call: Any, *args: Any, **kw: Any) -> httpx.Response:
    t = time.perf_counter()
    r = call(*args, **kw)
    with tally.lock:
        tally.latencies[kind].append(time.perf_counter() - t)
        tally.statuses[(kind, r.status_code)] += 1
    return r  # type: ignore[no-any-return]


def _idempotent(tally: Tally, kind: str, first: httpx.Client, other: httpx.Client, path: str,
                body: dict[str, Any]) -> str | None:
    """The POST to one process, then the same (same key) to the other: one effect, one id."""
    key = str(uuid.uuid4())
    r = _timed(tally, kind, first.post, path, json=body, headers={"Idempotency-Key": key})
    if r.status_code != 201:
        with tally.lock:
            tally.errors.append(f"{kind} POST answered {r.status_code}: {r.text[:200]}")
        return None
    again = _timed(tally, f"{kind}_replay", other.post, path, json=body,
                   headers={"Idempotency-Key": key})
    got = str(r.json()["id"])
    with tally.lock:
        tally.posts[key] = (kind, got, str(again.json().get("id")) if again.status_code == 201
                            else f"status {again.status_code}")
    return got


# --- the run ----------------------------------------------------------------------------------

@dataclass
class Report:
    figures: dict[str, Any]
    failures: list[str]
    logs: str = ""

    def print(self) -> None:
        f = self.figures
        print(f"scale-out: 2 API processes + 2 workers, {f['duration_s']:.0f} s of load "
              f"({f['clients']} clients x {f['rate']:.0f} op/s), worker0 SIGKILLed at "
              f"{f['killed_at_s']:.0f} s, restarted {f['restart_after_s']:.0f} s later; "
              f"counters: {f['counters']}")
        print(f"  requests            {f['requests']:>7}  ({f['rps']:.1f}/s), non-2xx: "
              f"{f['non_2xx']}, transport errors: {f['transport_errors']}")
        for kind, (p50, p99, n) in sorted(f["latency_ms"].items()):
            print(f"  {kind:<20}{n:>6}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
        print(f"  idempotent POSTs    {f['idempotent_posts']:>7}  each took effect once: "
              f"{f['idempotent_once']}")
        print(f"  breaches            {f['breaches']:>7}  of {f['escalations_due']} due; lag "
              f"after deadline p50 {f['breach_lag_p50_s']:.2f} s, max "
              f"{f['breach_lag_max_s']:.2f} s (bound {BREACH_WITHIN:.0f} s)")
        print(f"  webhooks            {f['webhook_events']:>7}  events, {f['webhook_requests']} "
              f"requests ({f['webhook_duplicates']} sent again), lag p50 "
              f"{f['webhook_lag_p50_s']:.2f} s, max {f['webhook_lag_max_s']:.2f} s; in order "
              f"per record: {f['webhook_in_order']}")
        print("  slowest webhooks    " + "; ".join(
            f"{lag:.1f} s ({kind} at {at:.0f} s)" for lag, kind, at in f["webhook_slowest"]))
        print("  failed attempts     " + ("; ".join(
            f"{n} x {err or status} (first at {at:.0f} s)"
            for err, status, at, n in f["webhook_failed_attempts"]) or "none"))
        print(f"  settled after load  {f['settle_s']:>7.1f} s")
        print(f"  audit verify        {f['audit']}")
        print("  checks: " + ("all passed" if not self.failures else
                              "FAILED\n    " + "\n    ".join(self.failures)))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(db_url: str, workdir: Path, *, duration: float = 60.0, clients: int = 4,
        rate: float = 10.0, redis_url: str | None = None, restart_after: float = 3.0) -> Report:
    """The whole scenario against `db_url` (a fresh, empty PostgreSQL database)."""
    from tests.factories import Factory  # the seed writes rows as an admin's CLI would

    key_file = workdir / "signing-key.pem"
    key_pem = generate_private_key_pem()
    key_file.write_text(key_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEERLINK_", "PROMETHEUS_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        # Development mode only so the webhook receiver may be plain http on loopback.
        "PEERLINK_MODE": "development",
        "PEERLINK_EMBEDDED_WORKER": "false",
        "PEERLINK_DATABASE_URL": db_url,
        "PEERLINK_JWT_PRIVATE_KEY_FILE": str(key_file),
        "PEERLINK_NOTE_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        "PEERLINK_NOTE_KEY_ID": "k1",
        "PEERLINK_RATE_LIMIT_STORAGE": redis_url or "memory://",
        "PEERLINK_RATE_LIMIT_PREFIX": f"scaleout-{os.urandom(4).hex()}",
        "PEERLINK_RATE_LIMIT_PER_CALLER": "100000/minute",
        "PEERLINK_ESCALATION_SWEEP_SECONDS": "1",
        "PEERLINK_WEBHOOK_POLL_SECONDS": "1",
        "PEERLINK_LOG_LEVEL": "WARNING",
    })
    procs = Processes(workdir, env)
    receiver = Receiver()
    failures: list[str] = []
    figures: dict[str, Any] = {"duration_s": duration, "clients": clients, "rate": rate,
                               "counters": "redis" if redis_url else "memory (no Redis)",
                               "restart_after_s": restart_after}
    seed = Settings(_env_file=None, database_url=db_url, jwt_private_key=key_pem,
                    note_keys=json.loads(env["PEERLINK_NOTE_KEYS"]), note_key_id="k1")
    engine = create_engine(seed.sync_database_url)
    factory: Any = None
    try:
        migrated = procs.run("db", "upgrade")
        if migrated.returncode != 0:
            raise RuntimeError(migrated.stderr)
        ports = [_free_port(), _free_port()]
        for n, port in enumerate(ports):
            procs.start(f"api{n}", "serve", "--no-migrate", "--port", str(port))
        for n in range(2):
            procs.start(f"worker{n}", "worker")
        apis = [f"http://127.0.0.1:{port}" for port in ports]
        _wait_ready(apis, procs)

        factory = Factory(seed, KeyRing.from_settings(seed))
        f = factory.facility("SCALE")
        for level, role in (("on_call_clinician", Role.clinician),
                            ("duty_supervisor", Role.officer),
                            ("facility_commander", Role.coordinator)):
            factory.shift(f, factory.user(role, [f]), level)
        coordinator = factory.user(Role.coordinator, [f])
        owner = factory.api_client(["participants:read", "escalations:read", "webhooks:read",
                                    "webhooks:write", "events:read"], [f], ["incarcerated"])
        r = httpx.post(f"{apis[0]}/v1/webhook-endpoints", headers=factory.headers(owner),
                       json={"url": receiver.url, "event_types": WEBHOOK_TYPES}, timeout=30)
        if r.status_code != 201:
            raise RuntimeError(f"webhook registration: {r.status_code} {r.text}")
        with Session(engine) as s:
            after_event = s.execute(select(func.max(OutboxEvent.id))).scalar() or 0
        bearer = factory.headers(coordinator)

        # The load, with a worker killed halfway and restarted.
        tally = Tally()
        started = time.monotonic()
        started_wall = time.time()
        until = started + duration
        threads = [threading.Thread(target=_client_loop, args=(
            n, apis, bearer, str(f.id), until, rate, tally, engine)) for n in range(clients)]
        for t in threads:
            t.start()
        figures["killed_at_s"] = duration / 2
        time.sleep(max(0.0, started + duration / 2 - time.monotonic()))
        procs.kill("worker0")
        time.sleep(restart_after)
        procs.start("worker0", "worker")
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started

        # Settling: every deadline passed and the webhook backlog drained (or a minute).
        load_end = time.monotonic()
        with Session(engine) as s:
            expected = {row.event_id: row for row in s.execute(
                select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.entity_id,
                       OutboxEvent.occurred_at, OutboxEvent.type)
                .where(OutboxEvent.id > after_event, OutboxEvent.type.in_(WEBHOOK_TYPES)))}
        while True:
            with receiver.lock:
                seen = {wid for _t, wid, _b in receiver.got}
            breached = _breached(engine, list(tally.deadlines))
            expected_ids = {str(e) for e in expected}
            if expected_ids <= seen and set(breached) >= set(tally.deadlines) \
                    and _all_breach_events_delivered(engine, after_event, seen):
                break
            if time.monotonic() - load_end > 60:
                break
            time.sleep(0.5)
            with Session(engine) as s:
                expected = {row.event_id: row for row in s.execute(
                    select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.entity_id,
                           OutboxEvent.occurred_at, OutboxEvent.type)
                    .where(OutboxEvent.id > after_event, OutboxEvent.type.in_(WEBHOOK_TYPES)))}
        figures["settle_s"] = time.monotonic() - load_end

        # Figures and checks.
        requests = sum(tally.statuses.values())
        figures.update(requests=requests, rps=requests / elapsed,
                       non_2xx=sum(c for (_k, st), c in tally.statuses.items() if st >= 300),
                       transport_errors=len([e for e in tally.errors if ":" in e
                                             and "answered" not in e]),
                       latency_ms={k: (_percentile(v, 0.5) * 1000, _percentile(v, 0.99) * 1000,
                                       len(v)) for k, v in tally.latencies.items()})
        failures += [f"load: {e}" for e in tally.errors[:10]]
        if tally.statuses.get(("read", 429)) or any(st == 429 for _k, st in tally.statuses):
            failures.append("rate limited during a bounded load")

        # Idempotent POSTs: one effect each.
        once = True
        with Session(engine) as s:
            for key, (kind, got, replay) in tally.posts.items():
                if replay != got:
                    once = False
                    failures.append(f"{kind} {key}: first {got}, replay {replay}")
            names = Counter(s.execute(select(Participant.legal_name)
                                      .where(Participant.legal_name.like("Load %"))).scalars())
            descriptions = Counter(s.execute(select(Escalation.description)
                                             .where(Escalation.description.like("seen %")))
                                   .scalars())
        doubled = [n for n, c in (names + descriptions).items() if c != 1]
        if doubled:
            once = False
            failures.append(f"created more than once: {doubled[:5]}")
        n_part = sum(1 for k, _g, _r in tally.posts.values() if k == "participant")
        n_esc = sum(1 for k, _g, _r in tally.posts.values() if k == "escalation")
        if sum(names.values()) != n_part or sum(descriptions.values()) != n_esc:
            once = False
            failures.append(f"rows {sum(names.values())}/{sum(descriptions.values())} for "
                            f"{n_part}/{n_esc} keys")
        figures.update(idempotent_posts=len(tally.posts), idempotent_once=once)

        # Breaches: exactly once each, within BREACH_WITHIN of the deadline.
        breached = _breached(engine, list(tally.deadlines))
        lags = []
        for eid, deadline in tally.deadlines.items():
            at = breached.get(eid, [])
            if len(at) != 1:
                failures.append(f"escalation {eid}: breached {len(at)} times")
                continue
            lags.append((at[0] - deadline).total_seconds())
        late = [lag for lag in lags if lag > BREACH_WITHIN]
        if late:
            failures.append(f"{len(late)} breaches later than {BREACH_WITHIN:.0f} s "
                            f"(max {max(late):.1f} s)")
        figures.update(escalations_due=len(tally.deadlines),
                       breaches=sum(len(v) for v in breached.values()),
                       breach_lag_p50_s=statistics.median(lags) if lags else 0.0,
                       breach_lag_max_s=max(lags) if lags else 0.0)

        # Webhooks: at least once, in order per record.
        with receiver.lock:
            arrivals = list(receiver.got)
        first_arrival: dict[str, float] = {}
        for arrived_at, wid, _b in arrivals:
            first_arrival.setdefault(wid, arrived_at)
        missing = [str(e) for e in expected if str(e) not in first_arrival]
        if missing:
            failures.append(f"{len(missing)} of {len(expected)} webhook events never arrived")
        in_order = True
        per_record: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for row in expected.values():
            per_record[row.entity_id].append(row)
        for entity, rows in per_record.items():
            arrived = [r for r in sorted(rows, key=lambda r: first_arrival.get(str(r.event_id),
                                                                               float("inf")))
                       if str(r.event_id) in first_arrival]
            if [r.id for r in arrived] != sorted(r.id for r in arrived):
                in_order = False
                failures.append(f"record {entity}: webhooks out of event order")
        wl = [first_arrival[str(e)] - row.occurred_at.timestamp()
              for e, row in expected.items() if str(e) in first_arrival]
        # The slowest arrivals: which events, when (seconds into the load; the kill is at
        # killed_at_s), how late.
        figures["webhook_slowest"] = sorted(
            ((round(first_arrival[str(e)] - row.occurred_at.timestamp(), 2), row.type,
              round(row.occurred_at.timestamp() - started_wall, 1))
             for e, row in expected.items() if str(e) in first_arrival), reverse=True)[:5]
        figures.update(webhook_events=len(expected), webhook_requests=len(arrivals),
                       webhook_duplicates=len(arrivals) - len(first_arrival),
                       webhook_lag_p50_s=statistics.median(wl) if wl else 0.0,
                       webhook_lag_max_s=max(wl) if wl else 0.0, webhook_in_order=in_order)

        # Attempts that did not get a 2xx (an endpoint with failures is paced by its backoff).
        with Session(engine) as s:
            failed = s.execute(
                select(WebhookAttempt.error, WebhookAttempt.status_code,
                       func.min(WebhookAttempt.attempted_at), func.count())
                .where(or_(WebhookAttempt.status_code.is_(None),
                           WebhookAttempt.status_code >= 300))
                .group_by(WebhookAttempt.error, WebhookAttempt.status_code)).all()
        figures["webhook_failed_attempts"] = [
            (row[0], row[1], round(row[2].timestamp() - started_wall, 1), row[3])
            for row in failed]

        audit = procs.run("audit", "verify", timeout=300)
        figures["audit"] = (audit.stdout or audit.stderr).strip()
        if audit.returncode != 0:
            failures.append(f"audit verify: {audit.stderr.strip()}")
        if procs.dead():
            failures.append(f"processes died: {procs.dead()}")
    finally:
        logs = procs.logs()
        procs.stop()
        receiver.close()
        if factory is not None:
            factory.close()
        engine.dispose()
    return Report(figures, failures, logs)


def _breached(engine: Any, escalation_ids: list[str]) -> dict[str, list[datetime]]:
    if not escalation_ids:
        return {}
    with Session(engine) as s:
        rows = s.execute(select(OutboxEvent.entity_id, OutboxEvent.occurred_at).where(
            OutboxEvent.type == "escalation.breached",
            OutboxEvent.entity_id.in_([uuid.UUID(e) for e in escalation_ids]))).all()
    out: dict[str, list[datetime]] = defaultdict(list)
    for row in rows:
        out[str(row[0])].append(row[1])
    return out


def _all_breach_events_delivered(engine: Any, after: int, seen: set[str]) -> bool:
    with Session(engine) as s:
        ids = s.execute(select(OutboxEvent.event_id).where(
            OutboxEvent.id > after, OutboxEvent.type.in_(WEBHOOK_TYPES))).scalars()
        return all(str(i) in seen for i in ids)


# --- `python -m bench.scaleout` -----------------------------------------------------------

def main() -> None:
    import tempfile

    server = make_url(os.environ.get("BENCH_DATABASE_URL",
                                     "postgresql://postgres@127.0.0.1:5432/peerlink_bench"))
    if not server.drivername.startswith("postgresql"):
        sys.exit("the scale-out scenario needs PostgreSQL (BENCH_DATABASE_URL)")
    db_url = server.set(database="peerlink_scaleout").render_as_string(hide_password=False)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "peerlink_scaleout" WITH (FORCE)'))
        conn.execute(text('CREATE DATABASE "peerlink_scaleout"'))
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    with tempfile.TemporaryDirectory() as tmp:
        report = run(db_url, Path(tmp), duration=float(os.environ.get("SCALE_DURATION", 60)),
                     clients=int(os.environ.get("SCALE_CLIENTS", 4)),
                     rate=float(os.environ.get("SCALE_RATE", 10)),
                     redis_url=redis_url if redis_reachable(redis_url) else None)
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "peerlink_scaleout" WITH (FORCE)'))
    admin.dispose()
    report.print()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaleout.json").write_text(json.dumps(
        {"figures": report.figures, "failures": report.failures}, indent=2, default=str))
    if report.failures:
        print(report.logs[-6000:])
        sys.exit(1)


if __name__ == "__main__":
    main()

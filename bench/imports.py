"""Bulk import benchmark: a participants CSV through the API, end to end, on PostgreSQL, the
way a user runs it, then the same file again (`.venv/bin/python -m bench.imports`).

The user's path (issue 13, item 12): the service started as `make run` starts it (`peerlink
serve`: one uvicorn worker, the default settings and log level) beside `peerlink worker` (on
PostgreSQL the background jobs are a process of their own), with data already there
(BENCH_EXISTING participants, default 50,000, one `jms` external id each; 2 facilities with 8
housing units each; 500 active pairings) and other traffic while the import runs
(BENCH_TRAFFIC keep-alive connections reading participants by id, default 8, from
bench/loadgen.py; the per-caller rate limit is lifted so they are real reads, not 429s). The
JMS API client (participants:read/write) takes a client_credentials token and POSTs the file
with an Idempotency-Key; a file above the synchronous limit answers 202, and the clock runs
until `GET /v1/imports/{id}` (polled every 100 ms, as a client would) says completed. The
file: existing people (every 10th released, which ends the pairings of 250 of them; half moved
to another housing unit; the rest unchanged) and as many new ones. Validation, upsert,
cascades, audit rows and events included. The server's peak memory (VmHWM) is reported.

Environment: BENCH_DATABASE_URL (default .../peerlink_bench_imports; dropped and recreated),
BENCH_IMPORT_ROWS (10000; 150000 for a state roster), BENCH_EXISTING (50000), BENCH_TRAFFIC
(8; 0 for none), BENCH_AGAIN=0 (no re-import), BENCH_TARGET_S (4, or 60 above 50,000 rows),
BENCH_PROFILE=1 (cProfile of the server).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from app.db import utcnow, uuid7
from bench.run import Server
from bench.seed import _conninfo, recreate_database

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/peerlink_bench_imports"
CLK = os.sysconf("SC_CLK_TCK")
FACILITIES = ("BIA", "BIB")
UNITS = [f"U{i}" for i in range(8)]
CLIENT_ID, CLIENT_SECRET = "plc_bench_jms", "bench-jms-secret-123456"


def seed(url: str, existing: int) -> dict[str, Any]:
    from app.models.facility import FacilitySettings
    from app.security.passwords import hash_password

    now = utcnow()
    t0 = time.perf_counter()
    fac = {code: uuid7() for code in FACILITIES}
    units = {(code, u): uuid7() for code in FACILITIES for u in UNITS}
    ids = [uuid7() for _ in range(existing)]
    with psycopg.connect(_conninfo(url)) as conn:
        for code, fid in fac.items():
            conn.execute(
                "INSERT INTO facility (id, code, name, timezone, settings, version, created_at,"
                " updated_at) VALUES (%s, %s, %s, 'America/Chicago', %s::jsonb, 1, %s, %s)",
                (fid, code, f"Bench {code}", json.dumps(FacilitySettings().model_dump()), now, now))
        conn.cursor().executemany(
            "INSERT INTO housing_unit (id, facility_id, code, name, active, created_at) "
            "VALUES (%s, %s, %s, %s, true, %s)",
            [(uid, fac[code], u, f"Unit {u}", now) for (code, u), uid in units.items()])
        cols = ("id, network, legal_name, preferred_name, date_of_birth, languages, facility_id, "
                "housing_unit_id, custody_status, employment_status, is_supporter, is_recipient, "
                "supporter_availability, unavailable_until, external_ids, archived_at, "
                "merged_into_id, version, created_at, updated_at")
        with conn.cursor().copy(f"COPY participant ({cols}) FROM STDIN") as cp:
            for i, pid in enumerate(ids):
                code = FACILITIES[i % 2]
                sup = i % 20 == 2
                cp.write_row((pid, "incarcerated", f"Person {i:06d}", None, _dob(i), '["en"]',
                              fac[code], units[(code, UNITS[i % 8])], "in_custody", None, sup,
                              True, "active" if sup else None, None,
                              json.dumps([{"source": "jms", "value": _ext(i)}]), None, None, 1,
                              now, now))
        with conn.cursor().copy("COPY participant_external_id (id, participant_id, source, value,"
                                " created_at) FROM STDIN") as cp:
            for i, pid in enumerate(ids):
                cp.write_row((uuid7(), pid, "jms", _ext(i), now))
        # 500 active pairings: recipient i (i % 20 == 0: released by the file) with supporter
        # i + 2 (same facility, unchanged by the file).
        with conn.cursor().copy("COPY pairing (id, supporter_id, recipient_id, facility_id, "
                                "network, status, proposed_at, proposed_by, version, updated_at)"
                                " FROM STDIN") as cp:
            for i in range(0, min(existing, 10_000), 20)[:500]:
                cp.write_row((uuid7(), ids[i + 2], ids[i], fac[FACILITIES[i % 2]], "incarcerated",
                              "active", now, "bench", 1, now))
        conn.execute(
            "INSERT INTO api_client (id, client_id, name, secret_hash, scopes, all_facilities, "
            "facility_ids, networks, active, version, secret_rotated_at, created_at, updated_at) "
            "VALUES (%s, %s, 'Bench JMS', %s, %s::jsonb, true, '[]'::jsonb, "
            "'[\"incarcerated\"]'::jsonb, true, 1, %s, %s, %s)",
            (uuid7(), CLIENT_ID, hash_password(CLIENT_SECRET),
             json.dumps(["participants:read", "participants:write"]), now, now, now))
        conn.commit()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"  seeded {existing:,} participants, 2 facilities x 8 units, 500 active pairings, "
          f"1 JMS client in {time.perf_counter() - t0:.1f}s", flush=True)
    return {"ids": ids}


def _ext(i: int) -> str:
    return f"J{i:07d}"


def _dob(i: int) -> Any:
    from datetime import date, timedelta

    return date(1960, 1, 1) + timedelta(days=i % 15000)


def build_csv(rows: int, existing: int) -> tuple[bytes, dict[str, int]]:
    """Half existing people (every 10th released, half moved, the rest as stored; at most
    every existing one), the rest new."""
    header = ("external_source,external_id,network,legal_name,date_of_birth,languages,"
              "facility_code,housing_unit_code,custody_status,program_roles")
    lines = [header]
    expect = {"created": 0, "updated": 0, "unchanged": 0}
    half = min(rows // 2, existing)
    for i in range(half):
        code = FACILITIES[i % 2]
        unit, status = UNITS[i % 8], "in_custody"
        roles = "supporter;recipient" if i % 20 == 2 else "recipient"
        if i % 10 == 0:
            status = "released"
            expect["updated"] += 1
        elif i % 2 == 1:
            unit = UNITS[(i + 1) % 8]
            expect["updated"] += 1
        else:
            expect["unchanged"] += 1
        lines.append(f"jms,{_ext(i)},incarcerated,Person {i:06d},{_dob(i)},en,{code},{unit},"
                     f"{status},{roles}")
    for j in range(rows - half):
        code = FACILITIES[j % 2]
        lines.append(f"jms,N{j:07d},incarcerated,Newcomer {j:06d},{_dob(j)},en;es,{code},"
                     f"{UNITS[j % 8]},in_custody,recipient")
        expect["created"] += 1
    return ("\r\n".join(lines) + "\r\n").encode(), expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def start_traffic(port: int, token: str, ids: list[Any], concurrency: int) -> Any:
    """Other traffic while the import runs, as a user's service has: `concurrency` keep-alive
    connections reading participants by id (bench/loadgen.py, its own process)."""
    from bench.run import raw_request

    if concurrency <= 0:
        return None
    spec = {"host": "127.0.0.1", "port": port, "concurrency": concurrency, "warmup": 0.5,
            "duration": 600, "requests": [raw_request("GET", f"/v1/participants/{ids[i]}", token)
                                          for i in range(0, min(len(ids), 2000))]}
    proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    time.sleep(1.0)
    return proc


def run_import(port: int, token: str, content: bytes) -> tuple[float, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    status, headers, body = _request(port, "POST", "/v1/imports/participants", content, auth | {
        "Content-Type": "text/csv", "Idempotency-Key": str(uuid.uuid4())})
    if status not in (200, 202):
        raise RuntimeError(f"import refused: {status} {body[:400]!r}")
    job = json.loads(body)
    while job["status"] not in ("completed", "failed"):
        time.sleep(0.1)
        status, _, body = _request(port, "GET", headers["location"], headers=auth)
        job = json.loads(body)
    return time.perf_counter() - t0, job


def main() -> int:
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    rows = int(os.environ.get("BENCH_IMPORT_ROWS", "10000"))
    existing = int(os.environ.get("BENCH_EXISTING", "50000"))
    traffic = int(os.environ.get("BENCH_TRAFFIC", "8"))
    again_too = os.environ.get("BENCH_AGAIN", "1") not in ("", "0")
    profile = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
    OUT.mkdir(parents=True, exist_ok=True)
    from app.migrations import upgrade

    print(f"peerlink import bench: {url.rsplit('@', 1)[-1]}", flush=True)
    recreate_database(url)
    upgrade(url)
    seeded = seed(url, existing)
    content, expect = build_csv(rows, existing)
    target = float(os.environ.get("BENCH_TARGET_S", "4" if rows <= 50_000 else "60"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLINK_")}
    if chunk := os.environ.get("BENCH_IMPORT_CHUNK_ROWS"):  # the setting, for a comparison
        env["PEERLINK_IMPORT_CHUNK_ROWS"] = chunk
    env.update(PEERLINK_RATE_LIMIT_PER_CALLER="1000000000/minute",
               PEERLINK_DATABASE_URL=url, PYTHONDONTWRITEBYTECODE="1")
    port = _free_port()
    # As `make run` starts it (peerlink serve), and the worker beside it.
    prof = OUT / "imports.prof"
    server = Server.peerlink(port, env, prof if profile else None, name="imports")
    proc, log = server.proc, server.log
    wprof = OUT / "imports-worker.prof"
    wargs = ["-m", "bench.profiled_worker", str(wprof)] if profile else ["-m", "app.cli"]
    worker = subprocess.Popen([sys.executable, *wargs, "worker"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    results: dict[str, Any] = {"rows": rows, "bytes": len(content), "existing": existing,
                               "traffic_connections": traffic}
    load = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(port, "GET", "/livez")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log.name}")
            time.sleep(0.2)
        # Data already present, as a user's import finds it: the worker's first rounds (the
        # certification sweep pauses the seed's 500 pairings, whose supporters hold no
        # certificate) are over before the clock starts, not racing the import.
        _worker_settled(url, worker)
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        status, _, body = _request(port, "POST", "/v1/auth/token", b"grant_type=client_credentials",
                                   {"Authorization": f"Basic {basic}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise RuntimeError(f"token request failed: {status} {body[:300]!r}")
        token = json.loads(body)["access_token"]
        dbname = url.rsplit("/", 1)[1].split("?")[0]
        load = start_traffic(port, token, seeded["ids"], traffic)
        with psycopg.connect(_conninfo(url), autocommit=True) as watch:
            runs = [("first", expect),
                    ("again", {"created": 0, "updated": 0, "unchanged": rows})][:1 + again_too]
            for name, want in runs:
                busy0, cpu0, db0 = _machine_busy(), _cpu(proc.pid), _db_cpu(watch, dbname)
                wcpu0 = _cpu(worker.pid)
                rss0 = _memory(proc.pid)["VmRSS"]
                elapsed, job = run_import(port, token, content)
                mem = _memory(proc.pid)
                busy, cpu = _machine_busy() - busy0, _cpu(proc.pid) - cpu0
                wcpu = _cpu(worker.pid) - wcpu0
                db1 = _db_cpu(watch, dbname)
                db = sum(v - db0.get(pid, 0.0) for pid, v in db1.items())
                got = {k: job[k] for k in ("created", "updated", "unchanged")}
                if job["status"] != "completed" or job["failed"] or got != want:
                    raise RuntimeError(f"{name} import: expected {want}, got {job}")
                others = max(busy - cpu - wcpu - db, 0.0)
                results[name] = {"seconds": elapsed, "rows_per_s": rows / elapsed,
                                 "server_cpu_s": cpu, "worker_cpu_s": wcpu, "db_cpu_s": db,
                                 "other_cpu_s": others, "machine_cores_busy": busy / elapsed,
                                 "server_rss_mb_before": rss0, "server_peak_rss_mb": mem["VmHWM"],
                                 **got}
                print(f"  {name:<6} {elapsed:6.2f} s  {rows / elapsed:8,.0f} rows/s  CPU: server "
                      f"{cpu:5.2f} s (with the traffic), worker {wcpu:5.2f} s, database "
                      f"{db:5.2f} s, everything else "
                      f"on the machine {others:5.2f} s (2 cores)  server memory {rss0:.0f} MB "
                      f"before, peak {mem['VmHWM']:.0f} MB  {got}", flush=True)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.stop()
    first = results["first"]["seconds"]
    again = results["again"]["seconds"] if again_too else 0.0
    print(f"\n  first import {first:.2f} s (target < {target:.0f} s): "
          f"{'PASS' if first < target else 'FAIL'}; re-import {again:.2f} s, faster than the "
          f"first: {'PASS' if again < first else 'FAIL'}")
    if profile:
        import pstats

        for name, path in (("the server", prof), ("the worker's import thread", wprof),
                           ("the worker's jobs", wprof.with_suffix(".prof.loop"))):
            if path.exists():
                print(f"\n  profile of {name}:")
                pstats.Stats(str(path)).sort_stats("cumulative").print_stats(40)
    (OUT / "imports.json").write_text(json.dumps(results, indent=2))
    return 0 if first < target and again < first else 1


def _worker_settled(url: str, worker: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Waits for the worker's first round of the jobs that run at start and take a while."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        while True:
            done = conn.execute("SELECT count(*) FROM worker_job WHERE last_success_at IS NOT "
                                "NULL AND name IN ('certification_sweep', 'import_resume')"
                                ).fetchone()
            if done and done[0] == 2:
                return
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not finish its first rounds")
            time.sleep(0.2)


def _db_cpu(conn: psycopg.Connection, dbname: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving the bench database (same host)."""
    pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                        "pid <> pg_backend_pid()", (dbname,)).fetchall()
    out = {}
    for (pid,) in pids:
        try:
            out[pid] = _cpu(pid)
        except (OSError, IndexError, ValueError):
            pass
    return out


def _memory(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _machine_busy() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[7]) / CLK


if __name__ == "__main__":
    sys.exit(main())

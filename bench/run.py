"""`make bench`: peerlink on PostgreSQL with 100,000 participants, driven over loopback by a
load generator in a second process, beside a bare and a naive FastAPI endpoint in the same run.

Environment (all optional):
  BENCH_DATABASE_URL   postgresql://postgres@127.0.0.1:5432/peerlink_bench (dropped and recreated)
  BENCH_PARTICIPANTS   100000
  BENCH_CONCURRENCY    32 keep-alive connections
  BENCH_WARMUP         2 (seconds, per scenario, not measured)
  BENCH_DURATION       10 (seconds, per scenario, measured)
  BENCH_ROUNDS         1: run every scenario this many times (interleaved), report the best
  BENCH_WORKERS        1: uvicorn worker processes of the app server (2 is the production
                       setting: the Dockerfile's `peerlink serve --workers 2`)
  BENCH_ONLY           comma-separated scenario names to run (default: all)
  BENCH_SESSIONS       support sessions to seed (default 1000000 when sessions_by_participant
                       or pairing_summary runs, else 0; about a minute of COPY per million)
  BENCH_BREACH         1: after the load, start `peerlink worker` and time how long after its
                       deadline an escalation is marked breached (default: when
                       escalation_dashboard runs; 0 skips it)
  BENCH_PROFILE        1: run the peerlink server under cProfile; prints its top functions and
                       writes bench/out/app.prof (the numbers are then not comparable)
Results: the printed table, and bench/out/results.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.breach import breach_check
from bench.scenarios import SCENARIOS, Ratio, Request, Scenario

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/peerlink_bench"
CLK = os.sysconf("SC_CLK_TCK")


# --- small helpers ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_request(method: str, path: str, token: str | None = None, body: Any = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    payload = ""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":"))
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload.encode())}"]
    return "\r\n".join(lines) + "\r\n\r\n" + payload


def one(port: int, raw: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (checks before the load, not the load itself)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw.encode("latin-1"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        need = int(headers.get("content-length", "0"))
        while len(body) < need:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (f[0] + f[1] + f[2] + f[7]) / CLK  # user, nice, system, steal
    except (OSError, ValueError, IndexError):
        return 0.0


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live descendants (uvicorn --workers N: the workers
    are children of the supervisor)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(_cpu_seconds(p) for p in tree)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


class DbCpu:
    """CPU seconds spent by the PostgreSQL backends serving the bench database (same host)."""

    def __init__(self, url: str) -> None:
        import psycopg

        from bench.seed import _conninfo

        self.dbname = url.rsplit("/", 1)[1].split("?")[0]
        self.conn = psycopg.connect(_conninfo(url), autocommit=True)

    def sample(self) -> dict[int, float]:
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                                 "pid <> pg_backend_pid()", (self.dbname,)).fetchall()
        return {pid: _cpu_seconds(pid) for (pid,) in rows}

    def close(self) -> None:
        self.conn.close()


class Server:
    """A server process, its output in bench/out/<name>-server.log."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str],
                 profile: Path | None = None) -> None:
        self.name, self.port = name, port
        if profile:
            args = ["-m", "cProfile", "-o", str(profile), *args]
        self.log = open(OUT / f"{name}-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([PY, *args], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    @classmethod
    def peerlink(cls, port: int, env: dict[str, str], profile: Path | None = None,
                 workers: int = 1, name: str = "app") -> Server:
        """The API as `make run` starts it (`peerlink serve`: its settings, its log level and
        JSON access log, written here to the log file), on a database already migrated."""
        return cls(name, ["-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--no-migrate", "--workers", str(workers)], port, env, profile)

    @classmethod
    def uvicorn(cls, name: str, target: str, port: int, env: dict[str, str]) -> Server:
        """A comparison app (bench/baseline_app.py) under plain uvicorn."""
        return cls(name, ["-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port",
                          str(port), "--no-access-log", "--log-level", "warning"], port, env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited; see {self.log.name}")
            try:
                if one(self.port, raw_request("GET", path))[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready in {timeout}s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- the scenarios (bench/scenarios.py) -----------------------------------------------------

@dataclass
class Job:
    """A registered scenario in this run: its raw requests (rotated as the load goes through
    them) and its measured rounds."""

    sc: Scenario
    what: str
    requests: list[str]
    result: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.sc.name


def raw(sc: Scenario, r: Request, token: str) -> str:
    return raw_request(r.method, r.path, token if sc.auth else None, r.body)


def check(jobs: list[Job], ports: dict[str, int], seeded: Any) -> None:
    """Each scenario's first request answers as expected before it is measured."""
    for job in jobs:
        sc = job.sc
        status, _, body = one(ports[sc.server], job.requests[0])
        if status != sc.expect:
            raise RuntimeError(f"{sc.name}: expected {sc.expect}, got {status}: {body[:300]!r}")
        if sc.check:  # a JSON answer (a page of HTML is checked by its status)
            sc.check(json.loads(body), seeded, len(body))
        if sc.check_writes:  # the check moved the first row once: the load starts after it
            job.requests = job.requests[1:] + job.requests[:1]


def drive(job: Job, port: int, server_pid: int, dbcpu: DbCpu, cfg: dict[str, Any]) -> dict[str, Any]:
    spec = {"host": "127.0.0.1", "port": port, "requests": job.requests,
            "concurrency": job.sc.concurrency or cfg["concurrency"], "warmup": cfg["warmup"],
            "duration": cfg["duration"]}
    cpu0, db0, gen0, busy0 = (_tree_cpu_seconds(server_pid), dbcpu.sample(), _children_cpu(),
                              _machine_busy())
    w0 = time.perf_counter()
    proc = subprocess.run([PY, "-m", "bench.loadgen"], cwd=ROOT, input=json.dumps(spec),
                          capture_output=True, text=True, timeout=cfg["warmup"] + cfg["duration"] + 60)
    wall = time.perf_counter() - w0
    cpu1, db1, gen1, busy1 = (_tree_cpu_seconds(server_pid), dbcpu.sample(), _children_cpu(),
                              _machine_busy())
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed on {job.name}: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout)
    # The next run of this scenario goes on where this one stopped (each move stays a move).
    k = res["sent"] % len(job.requests)
    job.requests = job.requests[k:] + job.requests[:k]
    total = max(1, res["total"])
    server = cpu1 - cpu0
    db = sum(v - db0.get(pid, 0.0) for pid, v in db1.items())
    gen = gen1 - gen0
    res["server_cpu_ms_per_req"] = server * 1000 / total
    res["db_cpu_ms_per_req"] = db * 1000 / total
    res["server_cores"] = server / wall
    res["db_cores"] = db / wall
    res["loadgen_cores"] = gen / wall
    # Whatever else ran on the machine meanwhile (other jobs skew every number here).
    res["other_cores"] = max(0.0, (busy1 - busy0 - server - db - gen) / wall)
    return res


# --- round trips (in-process) -----------------------------------------------------------------

async def count_round_trips(url: str, seeded: Any, scenarios: list[Scenario]) -> dict[str, Any]:
    """Each scenario's round trips, in-process: its warm-up request, then its measured one."""
    import httpx

    from app.config import Settings
    from app.main import create_app
    from bench import baseline_app
    from bench.roundtrips import Tracer
    from bench.seed import PASSWORD, USERNAME

    app = create_app(Settings(database_url=url, mode="development", log_level="WARNING"))
    base = baseline_app.create_app(url)
    tracers = {"app": _Both(Tracer(app.state.engine.sync_engine, "app"),
                            Tracer(app.state.read_engine.sync_engine, "app-read")),
               "baseline": Tracer(base.state.engine, "baseline")}
    out: dict[str, Any] = {}
    try:
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://bench") as c, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=base),
                                  base_url="http://bench") as b:
            r = await c.post("/v1/auth/token", data={"grant_type": "password", "username": USERNAME,
                                                     "password": PASSWORD})
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            clients = {"app": c, "baseline": b}
            for sc in scenarios:
                if sc.trips_as:
                    continue
                client, tr = clients[sc.server], tracers[sc.server]
                headers = auth if sc.auth else {}
                warm, measured = sc.trip_requests(seeded)
                (await client.request(warm.method, warm.path, headers=headers,
                                      json=warm.body)).raise_for_status()
                mark = tr.mark()
                resp = await client.request(measured.method, measured.path, headers=headers,
                                            json=measured.body)
                resp.raise_for_status()
                out[sc.name] = tr.since(mark) | {"status": resp.status_code}
            for sc in scenarios:
                if sc.trips_as in out:
                    out[sc.name] = out[sc.trips_as]
    finally:
        await app.state.engine.dispose()
        base.state.engine.dispose()
        for t in tracers.values():
            t.close()
    return out


class _Both:
    """The app has two pools (writes, autocommit reads): trace both as one."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def mark(self) -> Any:
        return self.a.mark(), self.b.mark()

    def since(self, mark: Any) -> dict[str, Any]:
        x, y = self.a.since(mark[0]), self.b.since(mark[1])
        return {"round_trips": x["round_trips"] + y["round_trips"],
                "new_connections": x["new_connections"] + y["new_connections"],
                "sent": x["sent"] + y["sent"]}

    def close(self) -> None:
        self.a.close()
        self.b.close()


# --- report ----------------------------------------------------------------------------------

def _fmt(v: float, nd: int = 1) -> str:
    return f"{v:,.{nd}f}"


def report(jobs: list[Job], trips: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    measured = [j for j in jobs if j.result]
    r = {j.name: j.result for j in measured}
    print()
    print(f"concurrency {cfg['concurrency']}, {cfg['duration']:g}s measured after "
          f"{cfg['warmup']:g}s warmup per scenario"
          + (f", best of {cfg['rounds']} rounds" if cfg["rounds"] > 1 else "")
          + f"; the app server runs {cfg['workers']} uvicorn worker(s), the baseline one; "
          + f"{cfg['participants']:,} participants; "
          + (f"{cfg['sessions']:,} support sessions; " if cfg.get("sessions") else "")
          + f"{os.cpu_count()} cores")
    w = max([15] + [len(j.name) for j in measured])
    head = (f"{'scenario':<{w}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"{'srv cpu ms/req':>14} {'db cpu ms/req':>13} {'db trips':>8} "
            f"{'cores srv/db/gen/other':>22}")
    print(head)
    print("-" * len(head))
    for j in measured:
        res = j.result
        t = trips.get(j.name, {}).get("round_trips", "?")
        print(f"{j.name:<{w}} {_fmt(res['rps'], 0):>9} {_fmt(res['p50_ms'], 2):>8} "
              f"{_fmt(res['p99_ms'], 2):>8} {res['errors']:>6} "
              f"{_fmt(res['server_cpu_ms_per_req'], 3):>14} {_fmt(res['db_cpu_ms_per_req'], 3):>13} "
              f"{t!s:>8} {res['server_cores']:>7.2f}/{res['db_cores']:.2f}/{res['loadgen_cores']:.2f}"
              f"/{res['other_cores']:.2f}")
        if res.get("error_sample"):
            print(f"    first error: {res['error_sample']}")

    others = [j.result["other_cores"] for j in measured]
    if others and max(others) > 0.25:
        print(f"  WARNING: other processes used up to {max(others):.2f} of the {os.cpu_count()} "
              "cores during the run; the numbers are skewed (the ratios less so).")
    # Each scenario's targets (bench/scenarios.py), by kind (ratios between scenarios, then
    # latencies, then costs against another scenario), each kind in scenario order.
    targets = sorted(((t, j.sc) for j in measured for t in j.sc.targets), key=lambda x: x[0].order)
    ratios: dict[str, Any] = {}
    by_cpu: dict[str, float] = {}  # in results.json after the ratios (they fill it)
    print()
    for t, sc in targets:
        if (v := t.judge(sc, r, cfg["concurrency"])) is None:
            continue
        if t.order > Ratio.order:
            ratios.setdefault("by_server_cpu", by_cpu)
        for line in v.lines:
            print(line)
        ratios.update(v.ratios)
        by_cpu.update(v.by_cpu)
    ratios.setdefault("by_server_cpu", by_cpu)

    if trips:
        print()
        print("database round trips per request (libpq trace, one steady-state request each):")
        for j in jobs:
            t = trips.get(j.name)
            if not t or j.sc.trips_as:  # the same request as another scenario's
                continue
            stmts = [x for x in t["sent"] if x not in ("BEGIN", "COMMIT", "ROLLBACK")]
            bracket = len(t["sent"]) - len(stmts)
            print(f"  {j.name:<{w}} {t['round_trips']} round trips = {len(stmts)} statements"
                  + (f" + {bracket} BEGIN/COMMIT/ROLLBACK" if bracket else "")
                  + f"; the shape needs {j.sc.needs}")
            for s in t["sent"]:
                print(f"      {s}")
    return ratios


def main() -> int:
    cfg = {
        "url": os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL),
        "participants": int(os.environ.get("BENCH_PARTICIPANTS", "100000")),
        "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "32")),
        "warmup": float(os.environ.get("BENCH_WARMUP", "2")),
        "duration": float(os.environ.get("BENCH_DURATION", "10")),
        "rounds": max(1, int(os.environ.get("BENCH_ROUNDS", "1"))),
        # The production image serves with `peerlink serve --workers 2` (Dockerfile).
        "workers": max(1, int(os.environ.get("BENCH_WORKERS", "1"))),
        "profile": os.environ.get("BENCH_PROFILE", "") not in ("", "0"),
    }
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    picked = [sc for sc in SCENARIOS if sc.picked(only)]
    if not picked:  # BENCH_ONLY names only topology scenarios (bench/topologies.py runs them)
        print("no request scenario picked")
        return 0
    wants_sessions = any(sc.sessions for sc in picked)
    breach_env = os.environ.get("BENCH_BREACH", "")
    cfg["breach"] = (breach_env not in ("", "0") if breach_env
                     else any(sc.breach for sc in picked))
    cfg["sessions"] = int(os.environ.get("BENCH_SESSIONS", "1000000" if wants_sessions else "0"))
    url = cfg["url"]
    OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    from app.migrations import upgrade
    from bench.seed import PASSWORD, USERNAME, recreate_database, seed

    print(f"peerlink bench: {url.rsplit('@', 1)[-1]}", flush=True)
    t0 = time.perf_counter()
    recreate_database(url)
    upgrade(url)
    print(f"  database recreated and migrated in {time.perf_counter() - t0:.1f}s", flush=True)
    seeded = seed(url, cfg["participants"], cfg["sessions"])

    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLINK_")}
    # The app's own settings are the defaults a user's `make run` has (log level INFO: one
    # access line a request), but for the database and the per-caller budget.
    env.update(PEERLINK_DATABASE_URL=url, BENCH_BASELINE_DATABASE_URL=url, PYTHONDONTWRITEBYTECODE="1",
               # The load generator is one caller at thousands of requests a second: keep the
               # rate limiter on (its cost is measured) with a budget it never spends.
               PEERLINK_RATE_LIMIT_PER_CALLER="1000000000/minute",
               PEERLINK_RATE_LIMIT_ANONYMOUS="1000000000/minute")
    profile = OUT / "app.prof" if cfg["profile"] else None
    servers: dict[str, Server] = {}
    # The scenarios this seed allows (the sessions ones need BENCH_SESSIONS).
    available = [sc for sc in SCENARIOS if not sc.sessions or seeded.sessions is not None]
    jobs: list[Job] = []
    dbcpu: DbCpu | None = None
    try:
        servers["app"] = Server.peerlink(_free_port(), env, profile, workers=cfg["workers"])
        servers["baseline"] = Server.uvicorn("baseline", "bench.baseline_app:create_app",
                                             _free_port(), env)
        servers["app"].wait_ready("/livez")
        servers["baseline"].wait_ready("/bare")
        form = f"grant_type=password&username={USERNAME}&password={PASSWORD}"
        status, _, body = one(servers["app"].port, "\r\n".join([
            "POST /v1/auth/token HTTP/1.1", "Host: 127.0.0.1",
            "Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(form)}",
        ]) + "\r\n\r\n" + form)
        if status != 200:
            raise RuntimeError(f"token request failed: {status} {body[:300]!r}")
        token = json.loads(body)["access_token"]
        jobs = [Job(sc, sc.describe(seeded), [raw(sc, r, token) for r in sc.load(seeded)])
                for sc in available if sc.picked(only)]
        ports = {k: s.port for k, s in servers.items()}
        check(jobs, ports, seeded)
        dbcpu = DbCpu(url)
        for rnd in range(cfg["rounds"]):
            for job in jobs:
                srv = servers[job.sc.server]
                print(f"  running {job.name:<15} {job.what}"
                      + (f"  (round {rnd + 1})" if cfg["rounds"] > 1 else ""), flush=True)
                res = drive(job, srv.port, srv.pid, dbcpu, cfg)
                job.rounds.append(res)
                if not job.result or res["rps"] > job.result["rps"]:
                    job.result = res  # best round: the one least disturbed
    finally:
        if dbcpu:
            dbcpu.close()
        for s in servers.values():
            s.stop()

    breach = breach_check(url, seeded, env) if cfg["breach"] else None

    print("  counting database round trips in-process...", flush=True)
    trips = asyncio.run(count_round_trips(url, seeded, available))
    ratios = report(jobs, trips, cfg)
    if breach:
        print(f"\n  {breach['line']}")

    if profile and profile.exists():
        import pstats

        print(f"\ncProfile of the peerlink server ({profile}), top 30 by own time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)

    results = {
        "config": {k: v for k, v in cfg.items() if k != "url"},
        "scenarios": {j.name: {"what": j.what, "needs": j.sc.needs,
                               "concurrency": j.sc.concurrency or cfg["concurrency"], **j.result,
                               "db_round_trips": trips.get(j.name), "rounds": j.rounds}
                      for j in jobs},
        "ratios": ratios,
        "breach": breach,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {OUT / 'results.json'} ({results['elapsed_s']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Live stream benchmark (issue 11, point 3): `.venv/bin/python -m bench.stream`, about two
minutes on PostgreSQL, loopback only; it stops everything it started.

Recreates `peerlink_bench_stream` (BENCH_STREAM_DATABASE_URL; else BENCH_DATABASE_URL's name
with `_stream` appended: never the database bench.run seeded), migrates and seeds it (2 facilities,
500 participants in the first, boards' accounts: per facility 10 officers, 5 clinicians and 5
coordinators, plus 20 peer supporters in the first; tokens signed with the servers' key), and
starts two API processes (uvicorn, one worker each, rate limits off) on the same database.

(a) Delivery across processes: one officer's stream held on process A; BENCH_RAISES (120)
    imminent escalations raised one after another through process B (the next 0-50 ms after the
    previous answer); the delay from sending each raise to its `escalation.created` arriving on
    the stream. Target: p99 < 1 s. Measured with no other stream, then with BENCH_STREAMS open.
(b) Reads with streams open: the usual read load (`GET /v1/participants/{id}`, 500 ids, bearer
    token, BENCH_CONCURRENCY=32 connections from bench/loadgen.py, 2 s warmup, 10 s measured)
    on process A while process B raises an escalation every 0.5 s; without streams, then with
    BENCH_STREAMS (500) held by a separate process (spread over 6 board groups of the two
    facilities and 20 peer tablets: 26 groups), then without again. Target: p99 with streams
    <= 1.2 x without (the mean of the two runs without; both ratios printed).

Results also in bench/out/stream.json. The machine's cores are shared with whatever else
runs: the CPU the other jobs took is printed with each load run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/peerlink_bench_stream"
DELIVERY_TARGET_MS = 1000.0
READ_RATIO_TARGET = 1.2
CLK = os.sysconf("SC_CLK_TCK")


# --- seed ------------------------------------------------------------------------------------

def seed(url: str, key: str) -> dict[str, Any]:
    from app.config import Settings
    from app.models.common import Role
    from app.security.tokens import KeyRing
    from tests.factories import Factory

    settings = Settings(database_url=url, jwt_private_key=key, log_level="WARNING")
    f = Factory(settings, KeyRing.from_settings(settings))
    try:
        a, b = f.facility("BSA"), f.facility("BSB")
        people = [f.participant(a) for _ in range(500)]
        boards: list[str] = []
        for fac in (a, b):
            for role, n in ((Role.officer, 10), (Role.clinician, 5), (Role.coordinator, 5)):
                boards += [f.token(f.user(role, [fac])) for _ in range(n)]
        peers = [f.token(f.user(Role.peer_supporter, [a],
                                participant=f.participant(a, is_supporter=True)))
                 for _ in range(20)]
        return {"people": [str(p.id) for p in people],
                "officer": f.token(f.user(Role.officer, [a])),
                "raiser": f.token(f.user(Role.coordinator, [a])),
                "reader": f.token(f.user(Role.coordinator, [a])),
                "boards": boards, "peers": peers}
    finally:
        f.close()


# --- servers ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, key: str, name: str) -> tuple[subprocess.Popen[bytes], int, Any]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLINK_")}
    env.update(PEERLINK_DATABASE_URL=url, PEERLINK_MODE="development", PEERLINK_JWT_PRIVATE_KEY=key,
               PEERLINK_LOG_LEVEL="WARNING", PEERLINK_RATE_LIMIT_ENABLED="false",
               PEERLINK_EMBEDDED_WORKER="false", PYTHONDONTWRITEBYTECODE="1")
    log = open(OUT / f"stream-server-{name}.log", "w")  # noqa: SIM115
    # BENCH_PROFILE=1: process A under cProfile (bench/out/stream-a.prof; figures then slower).
    profile = (["-m", "cProfile", "-o", str(OUT / "stream-a.prof")]
               if os.environ.get("BENCH_PROFILE") == "1" and name == "a" else [])
    proc = subprocess.Popen([PY, *profile, "-m", "uvicorn", "app.main:create_app", "--factory",
                             "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--no-access-log", "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port, log
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server {name} did not start; see {log.name}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- streams (raw HTTP/1.1, asyncio) --------------------------------------------------------

async def open_stream(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    status = await reader.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # headers
    return reader, writer


async def _lines(reader: asyncio.StreamReader) -> Any:
    """SSE lines out of the chunked body (chunk-size lines are skipped: they are hex only)."""
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.rstrip(b"\r\n")


async def wait_live(reader: asyncio.StreamReader) -> None:
    async for line in _lines(reader):
        if line.startswith(b": live"):
            return
    raise RuntimeError("the stream ended before going live")


# --- (a) delivery --------------------------------------------------------------------------

async def delivery(port_a: int, port_b: int, world: dict[str, Any], raises: int) -> dict[str, Any]:
    import httpx

    reader, writer = await open_stream(port_a, world["officer"])
    await wait_live(reader)
    arrived: dict[str, float] = {}

    async def read() -> None:
        async for line in _lines(reader):
            if line.startswith(b"data: "):
                envelope = json.loads(line[6:])
                if envelope["type"] == "escalation.created":
                    arrived[envelope["data"]["id"]] = time.perf_counter()

    task = asyncio.create_task(read())
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    auth = {"Authorization": f"Bearer {world['raiser']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_b}", timeout=30) as http:
        for i in range(raises):
            t0 = time.perf_counter()
            r = await http.post("/v1/escalations", headers=auth | {
                "Idempotency-Key": str(uuid.uuid4())}, json={
                "participant_id": world["people"][i % len(world["people"])],
                "category": "self_harm", "description": "bench", "tier": "imminent"})
            if r.status_code != 201:
                raise RuntimeError(f"raise refused: {r.status_code} {r.text[:300]}")
            sent[r.json()["id"]] = t0
            answered[r.json()["id"]] = time.perf_counter()
            await asyncio.sleep(random.uniform(0, 0.05))  # noqa: S311
    for _ in range(200):  # stragglers: 10 s at most
        if len(arrived.keys() & sent.keys()) == len(sent):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    writer.close()
    lat = sorted((arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived)
    # The raise's own answer time, and what the stream added after it (negative: the event
    # reached the stream on A before B's answer reached the client).
    answer = sorted((answered[k] - t) * 1000 for k, t in sent.items())
    after = sorted((arrived[k] - answered[k]) * 1000 for k in sent if k in arrived)

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    return {"raises": len(sent), "missing": len(sent) - len(lat), "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99), "max_ms": lat[-1] if lat else float("nan"),
            "answer_p50_ms": pct(answer, 0.5), "answer_p99_ms": pct(answer, 0.99),
            "after_answer_p50_ms": pct(after, 0.5), "after_answer_p99_ms": pct(after, 0.99)}


# --- (b) reads, with and without streams -------------------------------------------------------

def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _machine_busy() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[7]) / CLK


class Raiser(threading.Thread):
    """Process B raises an escalation every `every` seconds while the reads run: the hub has
    events to fan out (to nobody, without streams)."""

    def __init__(self, port: int, world: dict[str, Any], every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.world, self.every = port, world, every
        self.halt = threading.Event()
        self.count = 0

    def run(self) -> None:
        import httpx

        auth = {"Authorization": f"Bearer {self.world['raiser']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            while not self.halt.wait(self.every):
                r = http.post("/v1/escalations", headers=auth | {
                    "Idempotency-Key": str(uuid.uuid4())}, json={
                    "participant_id": random.choice(self.world["people"]),  # noqa: S311
                    "category": "self_harm", "description": "bench", "tier": "high"})
                self.count += r.status_code == 201


def read_load(port_a: int, port_b: int, server: subprocess.Popen[Any], world: dict[str, Any],
              cfg: dict[str, Any]) -> dict[str, Any]:
    token = world["reader"]
    requests = [f"GET /v1/participants/{pid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Accept: application/json\r\nAuthorization: Bearer {token}\r\n\r\n"
                for pid in world["people"]]
    spec = {"host": "127.0.0.1", "port": port_a, "requests": requests,
            "concurrency": cfg["concurrency"], "warmup": cfg["warmup"],
            "duration": cfg["duration"]}
    raiser = Raiser(port_b, world)
    raiser.start()
    cpu0, busy0, w0 = _proc_cpu(server.pid), _machine_busy(), time.perf_counter()
    proc = subprocess.run([PY, "-m", "bench.loadgen"], cwd=ROOT, input=json.dumps(spec),
                          capture_output=True, text=True,
                          timeout=cfg["warmup"] + cfg["duration"] + 60)
    wall = time.perf_counter() - w0
    cpu, busy = _proc_cpu(server.pid) - cpu0, _machine_busy() - busy0
    raiser.halt.set()
    raiser.join(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(proc.stdout)
    res["server_cores"] = cpu / wall
    res["machine_cores_busy"] = busy / wall
    res["raises"] = raiser.count
    return res


def hold(port: int, tokens: list[str], count: int) -> subprocess.Popen[str]:
    """BENCH_STREAMS streams held by a process of their own (so their reading does not share the
    load generator's CPU); returns once every stream is live."""
    proc = subprocess.Popen([PY, "-m", "bench.stream", "hold"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"port": port, "tokens": tokens, "count": count}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        stop(proc, signal.SIGTERM)
        raise RuntimeError(f"the stream holder failed: {line!r}")
    return proc


def release(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()  # EOF: the holder reports and exits
    out = proc.stdout.readline()
    proc.wait(timeout=30)
    return json.loads(out) if out else {}


async def _holder(job: dict[str, Any]) -> None:
    tokens, count = job["tokens"], job["count"]
    stats = {"events": 0, "heartbeats": 0, "ended": 0}
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> asyncio.Task[None]:
        async with gate:
            reader, writer = await open_stream(job["port"], tokens[i % len(tokens)])
            await wait_live(reader)

        async def consume() -> None:
            async for line in _lines(reader):
                if line.startswith(b"event:"):
                    stats["events"] += 1
                elif line.startswith(b": heartbeat"):
                    stats["heartbeats"] += 1
            stats["ended"] += 1
            writer.close()

        return asyncio.create_task(consume())

    tasks = await asyncio.gather(*(one(i) for i in range(count)))
    print(f"ready {len(tasks)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"streams": count, **stats}), flush=True)
    for t in tasks:
        t.cancel()


# --- main ------------------------------------------------------------------------------------

def main() -> int:
    from app.migrations import upgrade
    from app.security.tokens import generate_private_key_pem
    from bench.seed import recreate_database

    # Its own database, recreated: never the one bench.run seeded (bench.precedence reuses it).
    base = os.environ.get("BENCH_DATABASE_URL")
    url = os.environ.get("BENCH_STREAM_DATABASE_URL") or (f"{base}_stream" if base
                                                           else DEFAULT_URL)
    cfg = {"concurrency": int(os.environ.get("BENCH_CONCURRENCY", "32")),
           "warmup": float(os.environ.get("BENCH_WARMUP", "2")),
           "duration": float(os.environ.get("BENCH_DURATION", "10"))}
    streams = int(os.environ.get("BENCH_STREAMS", "500"))
    raises = int(os.environ.get("BENCH_RAISES", "120"))
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"peerlink stream bench: {url.rsplit('@', 1)[-1]}", flush=True)
    t0 = time.perf_counter()
    recreate_database(url)
    upgrade(url)
    key = generate_private_key_pem()
    world = seed(url, key)
    print(f"  seeded in {time.perf_counter() - t0:.1f}s", flush=True)
    results: dict[str, Any] = {"streams": streams, **cfg}
    a, port_a, log_a = start_server(url, key, "a")
    b, port_b, log_b = start_server(url, key, "b")
    holder = None
    try:
        results["delivery_1_stream"] = d1 = asyncio.run(delivery(port_a, port_b, world, raises))
        _say_delivery("(a) 1 stream on A, raised through B", d1)
        results["reads_without"] = r0 = read_load(port_a, port_b, a, world, cfg)
        _say_reads("(b) reads on A, no stream", r0)
        tablets = world["boards"] + world["peers"]
        holder = hold(port_a, tablets, streams)
        results["reads_with"] = r1 = read_load(port_a, port_b, a, world, cfg)
        _say_reads(f"(b) reads on A, {streams} streams", r1)
        results["delivery_n_streams"] = dn = asyncio.run(delivery(port_a, port_b, world, raises))
        _say_delivery(f"(a) {streams} streams on A, raised through B", dn)
        results["holder"] = held = release(holder)
        holder = None
        print(f"  the {streams} streams received {held.get('events', 0):,} events and "
              f"{held.get('heartbeats', 0):,} heartbeats; {held.get('ended', 0)} were closed",
              flush=True)
        results["reads_without_again"] = r2 = read_load(port_a, port_b, a, world, cfg)
        _say_reads("(b) reads on A, no stream (again)", r2)
    finally:
        if holder is not None:
            stop(holder, signal.SIGTERM)
        for proc in (a, b):
            stop(proc)
        log_a.close()
        log_b.close()
    base = (r0["p99_ms"] + r2["p99_ms"]) / 2
    ratio = r1["p99_ms"] / base
    worst = max(d1["p99_ms"], dn["p99_ms"])
    ok_a = worst < DELIVERY_TARGET_MS and not d1["missing"] and not dn["missing"]
    ok_b = ratio <= READ_RATIO_TARGET
    results.update(read_p99_ratio=ratio, read_p99_ratio_first=r1["p99_ms"] / r0["p99_ms"],
                   read_p99_ratio_last=r1["p99_ms"] / r2["p99_ms"])
    print(f"\n  delivery across processes p99 {worst:.1f} ms (target < {DELIVERY_TARGET_MS:.0f} ms,"
          f" {raises} raises each run): {'PASS' if ok_a else 'FAIL'}")
    print(f"  read p99 with {streams} streams / without: {ratio:.3f} (vs each run without: "
          f"{results['read_p99_ratio_first']:.3f}, {results['read_p99_ratio_last']:.3f}; "
          f"target <= {READ_RATIO_TARGET}): {'PASS' if ok_b else 'FAIL'}")
    (OUT / "stream.json").write_text(json.dumps(results, indent=2))
    return 0 if ok_a and ok_b else 1


def _say_delivery(what: str, d: dict[str, Any]) -> None:
    print(f"  {what:<45} raise sent -> on the stream: p50 {d['p50_ms']:6.1f} ms  p99 "
          f"{d['p99_ms']:6.1f} ms  max {d['max_ms']:6.1f} ms  ({d['raises']} raises, "
          f"{d['missing']} missing)\n  {'':<45} of which the raise's answer p50/p99 "
          f"{d['answer_p50_ms']:.1f}/{d['answer_p99_ms']:.1f} ms; stream after the answer "
          f"p50/p99 {d['after_answer_p50_ms']:.1f}/{d['after_answer_p99_ms']:.1f} ms",
          flush=True)


def _say_reads(what: str, r: dict[str, Any]) -> None:
    print(f"  {what:<45} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
          f"{r['p99_ms']:6.1f} ms  errors {r['errors']}  (server {r['server_cores']:.2f} cores, "
          f"machine {r['machine_cores_busy']:.2f} of 2 busy; {r['raises']} raises)", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["hold"]:
        asyncio.run(_holder(json.loads(sys.stdin.readline())))
        sys.exit(0)
    sys.exit(main())

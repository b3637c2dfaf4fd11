"""In-process CPU per request: the app called as a bare ASGI callable (no server, no HTTP
parsing, no load generator), against a database `make bench` seeded and left behind. Quick
to re-run while changing a read path; `--profile` prints where the time goes (cProfile).

    .venv/bin/python -m bench.inproc [--url URL] [-n 200] [--rounds 5] [--profile NAME]

Prints CPU ms per request for the plain read and the session and dashboard reads, and each
as a ratio to the plain read in the same round (rounds interleaved; the median is printed).
The ratios are higher than over HTTP (no server overhead in the denominator): use them to
compare changes, `make bench` for the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import time
from typing import Any

from bench.run import DEFAULT_URL
from bench.scenarios import DASHBOARD


async def _call(app: Any, path: str, token: str) -> tuple[int, bytes]:
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
             "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {}}
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["body"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    ap.add_argument("-n", type=int, default=200, help="requests per scenario and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", default="", help="scenario name to run under cProfile")
    ap.add_argument("--show", default="", help="scenario name whose first answer to print")
    args = ap.parse_args()

    import psycopg

    from app.config import Settings
    from app.main import create_app
    from bench.seed import PASSWORD, USERNAME, _conninfo

    with psycopg.connect(_conninfo(args.url)) as conn:
        people = [r[0] for r in conn.execute(
            "SELECT id FROM participant ORDER BY id LIMIT 200").fetchall()]
        pairs = conn.execute(
            "SELECT p.id, p.recipient_id FROM pairing p JOIN facility f ON f.id = p.facility_id "
            "WHERE f.code = 'BENCH' AND p.status = 'active' ORDER BY p.id LIMIT 200").fetchall()
    scenarios = {
        "auth_read": [f"/v1/participants/{i}" for i in people],
        "sessions_by_participant": [f"/v1/support-sessions?participant_id={r}&limit=50"
                                    for _, r in pairs],
        "pairing_summary": [f"/v1/pairings/{p}/summary" for p, _ in pairs],
        "escalation_dashboard": [DASHBOARD],
    }
    app = create_app(Settings(database_url=args.url, mode="development", log_level="WARNING"))
    async with app.router.lifespan_context(app):
        form = f"grant_type=password&username={USERNAME}&password={PASSWORD}".encode()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": form, "more_body": False}

        got: dict[str, Any] = {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                got["body"] = got.get("body", b"") + message.get("body", b"")

        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                   "method": "POST", "scheme": "http", "path": "/v1/auth/token",
                   "raw_path": b"/v1/auth/token", "query_string": b"", "root_path": "",
                   "headers": [(b"host", b"bench"), (b"content-type",
                                                      b"application/x-www-form-urlencoded"),
                               (b"content-length", str(len(form)).encode())],
                   "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {}},
                  receive, send)
        token = json.loads(got["body"])["access_token"]
        for name, paths in scenarios.items():
            for p in paths[:50]:  # warm-up: pool connections, statement caches
                status, body = await _call(app, p, token)
                assert status == 200, (name, status, body[:300])
            if name == args.show:
                print(body.decode())
        # Interleaved rounds, each scenario's CPU as a ratio to auth_read's in the same round:
        # the machine is shared, and what else runs changes from one second to the next.
        cpu: dict[str, list[float]] = {name: [] for name in scenarios}
        ratio: dict[str, list[float]] = {name: [] for name in scenarios}
        prof = cProfile.Profile() if args.profile else None
        for _ in range(args.rounds):
            for name, paths in scenarios.items():
                profiled = prof is not None and name == args.profile
                c0 = time.process_time()
                if profiled:
                    prof.enable()  # type: ignore[union-attr]
                for k in range(args.n):
                    await _call(app, paths[k % len(paths)], token)
                if profiled:
                    prof.disable()  # type: ignore[union-attr]
                cpu[name].append((time.process_time() - c0) * 1000 / args.n)
                ratio[name].append(cpu[name][-1] / cpu["auth_read"][-1])
        for name in scenarios:
            print(f"{name:<26} cpu ms/req median {statistics.median(cpu[name]):6.3f}  "
                  f"x auth_read median {statistics.median(ratio[name]):5.2f}  "
                  f"(rounds: {' '.join(f'{r:.2f}' for r in ratio[name])})", flush=True)
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(35)

if __name__ == "__main__":
    asyncio.run(main())

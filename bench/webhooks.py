"""Webhook delivery benchmark (`.venv/bin/python -m bench.webhooks`): deliveries per second to
one fast local receiver, and how far behind a backlog an escalation arrives.

1. Throughput: BENCH_WEBHOOK_EVENTS (default 5,000) participant events, each about another
   participant, queued for one endpoint; the real worker (`app.worker.run_forever`) delivers
   them to a receiver answering 204 at once (a separate process, so it takes nothing from the
   sender); deliveries/s from the first request to the last.
2. Crisis lag: BENCH_WEBHOOK_BACKLOG (default 50,000) participant events committed for the same
   endpoint, the worker started, and after BENCH_WEBHOOK_AFTER seconds (default 3) one
   `escalation.created` committed: the seconds from its commit to its arrival at the receiver,
   and how much of the backlog was still waiting then. The run stops once it has arrived.

Database: BENCH_DATABASE_URL (PostgreSQL, dropped and recreated), else a fresh SQLite file in a
temporary directory. Loopback only; nothing is left running.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, func, insert, select, update

from app.config import Settings
from app.db import make_async_engine, make_sessionmaker, uuid7
from app.models import ApiClient, OutboxEvent, WebhookDelivery, WebhookEndpoint
from app.security.notes import NoteCipher

SCOPES = ["participants:read", "escalations:read", "webhooks:read", "events:read"]
TYPES = ["participant.created", "escalation.created"]


# --- the receiver (its own process) ---------------------------------------------------------

async def _serve() -> None:
    """Answers every POST with 204 and prints `<time.time()> <webhook-id>` for each."""
    out = sys.stdout

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                out.write(f"{time.time():.6f} {headers.get('webhook-id', '-')}\n")
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
    out.write(f"port {server.sockets[0].getsockname()[1]}\n")
    out.flush()

    async def flush() -> None:
        while True:
            await asyncio.sleep(0.05)
            out.flush()

    await asyncio.gather(server.serve_forever(), flush())


class Receiver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.webhooks", "--receiver"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])
        self.arrivals: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, msg_id = line.split()
            self.arrivals.append((float(at), msg_id))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the database ---------------------------------------------------------------------------

def _database(tmp: str) -> Settings:
    from app.migrations import upgrade

    url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/webhooks.db"
    if url.startswith("postgres"):
        from bench.seed import recreate_database

        recreate_database(url)
    upgrade(url)
    return Settings(database_url=url, mode="development", log_level="WARNING",
                    embedded_worker=False, webhook_poll_seconds=2)


def _endpoint(settings: Settings, port: int) -> uuid.UUID:
    from app.services.webhooks import new_secret, seal

    engine = create_engine(settings.sync_database_url)
    client = ApiClient(id=uuid7(), client_id=f"plc_bench_{uuid.uuid4().hex[:8]}", name="bench",
                       secret_hash="-", scopes=SCOPES, all_facilities=True, facility_ids=[],
                       networks=["incarcerated"])
    with engine.begin() as conn:  # the only endpoint: an earlier run's is switched off
        conn.execute(update(WebhookEndpoint).values(status="disabled"))
        conn.execute(insert(ApiClient).values(**client.model_dump()))
        newest = conn.execute(select(func.max(OutboxEvent.id))).scalar() or 0
    ep = WebhookEndpoint(owner_kind="client", owner_id=client.id,
                         url=f"http://127.0.0.1:{port}/hook", event_types=TYPES,
                         secret_ciphertext=b"", secret_wrapped_key=b"", secret_key_id="",
                         last_event_id=newest, created_by="bench")
    seal(NoteCipher.from_settings(settings), ep, new_secret(), None)
    with engine.begin() as conn:
        conn.execute(insert(WebhookEndpoint).values(**ep.model_dump()))
    engine.dispose()
    return ep.id


def _events(settings: Settings, n: int, type_: str = "participant.created",
            entity_type: str = "participant") -> tuple[float, list[str]]:
    """Commits n events (each about a record of its own); the wall time of the commit."""
    engine = create_engine(settings.sync_database_url)
    facility = uuid.UUID(int=1)
    now = datetime.now(UTC)
    rows = [{"event_id": uuid7(), "type": type_, "occurred_at": now, "entity_type": entity_type,
             "entity_id": uuid7(), "facility_id": facility, "network": "incarcerated",
             "data": {}} for _ in range(n)]
    with engine.begin() as conn:
        for i in range(0, n, 5000):
            conn.execute(insert(OutboxEvent), rows[i:i + 5000])
    committed = time.time()
    engine.dispose()
    return committed, [str(r["event_id"]) for r in rows]


def _pending(settings: Settings) -> int:
    engine = create_engine(settings.sync_database_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(WebhookDelivery)
                         .where(WebhookDelivery.status == "pending")).scalar() or 0
    engine.dispose()
    return n


async def _worker_until(settings: Settings, done: Any, limit: float) -> None:
    """The real worker, until done() (or `limit` seconds)."""
    from app.worker import run_forever

    engine = make_async_engine(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_forever(make_sessionmaker(engine), settings, stop))
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < limit:
            if done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await engine.dispose()


def throughput(settings: Settings, n: int) -> float:
    receiver = Receiver()
    try:
        _endpoint(settings, receiver.port)
        _events(settings, n)
        asyncio.run(_worker_until(settings, lambda: len(receiver.arrivals) >= n, 600))
        time.sleep(0.2)
        got = receiver.arrivals
        span = got[-1][0] - got[0][0]
        rate = (len(got) - 1) / span if span > 0 else float("inf")
        print(f"throughput: {len(got)} deliveries in {span:.1f} s = {rate:.0f}/s")
        return rate
    finally:
        receiver.close()


def crisis_lag(settings: Settings, backlog: int, after: float) -> float:
    receiver = Receiver()
    try:
        _endpoint(settings, receiver.port)
        t = time.time()
        _events(settings, backlog)
        print(f"backlog: {backlog} participant events committed in {time.time() - t:.1f} s")
        state: dict[str, Any] = {}

        def escalate() -> None:
            time.sleep(after)
            state["committed"], (state["id"],) = _events(settings, 1, "escalation.created",
                                                         "escalation")

        writer = threading.Thread(target=escalate)
        writer.start()

        def arrived() -> bool:
            return "id" in state and any(m == state["id"] for _t, m in receiver.arrivals)

        asyncio.run(_worker_until(settings, arrived, after + 120))
        writer.join()
        at = next(t for t, m in receiver.arrivals if m == state["id"])
        lag = at - state["committed"]
        before = sum(1 for t, m in receiver.arrivals if t < at)
        print(f"escalation.created arrived {lag:.2f} s after its commit, after {before} of the "
              f"{backlog} backlog deliveries ({_pending(settings)} still pending at the end)")
        return lag
    finally:
        receiver.close()


def main() -> None:
    if sys.argv[1:] == ["--receiver"]:
        asyncio.run(_serve())
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = _database(tmp)
        throughput(settings, int(os.environ.get("BENCH_WEBHOOK_EVENTS", "5000")))
        crisis_lag(settings, int(os.environ.get("BENCH_WEBHOOK_BACKLOG", "50000")),
                   float(os.environ.get("BENCH_WEBHOOK_AFTER", "3")))


if __name__ == "__main__":
    main()

"""A worker killed (SIGKILL) while it sends a webhook does not stall that delivery for the
lease (webhook timeout + 60 s): its lease names the process, which held a PostgreSQL
advisory lock while alive; the lock goes with the process, and another worker takes the
delivery over at its next claim, in seconds, long before the lease would run out. While the
first worker lives, the other never takes it.

The real workers (`peerlink worker`, subprocesses) run against the test database; the receiver
holds the first request open, so the first worker is killed mid-send. PostgreSQL only (on the
embedded SQLite the one worker lives inside the service; its leases run out as before)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from app.models import WebhookDelivery
from tests.test_webhooks import Receiver, _client, _register, deliveries

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="worker leases held by advisory locks are PostgreSQL's")


def _start(db_url: str) -> subprocess.Popen:
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
           "PEERLINK_WEBHOOK_TIMEOUT_SECONDS": "30", "PEERLINK_WEBHOOK_POLL_SECONDS": "1"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _until(what: str, done, procs: list[subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a worker exited ({p.returncode}) before {what}: "
                                     f"{p.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _lease_holders(factory) -> int:
    with factory.engine.connect() as c:
        return c.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'peerlink-worker-lease'")).scalar_one()


def test_a_delivery_held_by_a_killed_worker_is_taken_over_in_seconds(client, factory,
                                                                      settings):
    receiver = Receiver()
    receiver.server.daemon_threads = True
    receiver.server.block_on_close = False  # the held request's thread is not waited for
    receiver.hang_first = 60.0
    procs: list[subprocess.Popen] = []
    try:
        a = factory.facility()
        _c, h = _client(factory, a)
        _register(client, h, receiver.url())
        factory.outbox_event("participant.created", facility=a)

        first = _start(settings.database_url)
        procs.append(first)
        _until("the first worker to send", lambda: len(receiver.requests) == 1, procs)
        (held,) = deliveries(factory)
        assert held.status == "pending" and held.lease_owner is not None
        lease_until = held.lease_until
        assert lease_until is not None

        second = _start(settings.database_url)
        procs.append(second)
        _until("both workers to hold their lease locks", lambda: _lease_holders(factory) == 2,
               procs)
        # A live owner keeps its lease: the second worker's rounds come and go (poll: 1 s).
        time.sleep(3)
        assert len(receiver.requests) == 1
        assert deliveries(factory)[0].lease_owner == held.lease_owner

        first.kill()
        first.wait(timeout=15)
        procs.remove(first)
        killed_at = time.monotonic()
        _until("the delivery to be taken over and delivered",
               lambda: deliveries(factory)[0].status == "delivered", procs, timeout=60)
        taken_over_in = time.monotonic() - killed_at
        print(f"taken over and delivered {taken_over_in:.1f} s after the kill")
        # Long before the dead worker's lease would have run out.
        assert datetime.now(UTC) < lease_until
        (d,) = deliveries(factory)
        assert isinstance(d, WebhookDelivery) and d.lease_owner != held.lease_owner
        assert d.attempts == 2 and len(receiver.requests) == 2
        ids = [hd["webhook-id"] for _p, hd, _b in receiver.requests]
        assert ids[0] == ids[1]  # the same message: the receiver dedupes on webhook-id
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=15)
        receiver.close()

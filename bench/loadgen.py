"""The load generator: a separate process, raw HTTP/1.1 over keep-alive sockets (no pipelining).

Reads a JSON job on stdin, writes a JSON result on stdout:
  job    {"host", "port", "requests": [raw request text, ...], "concurrency", "warmup", "duration"}
  result {"completed", "total", "sent", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms",
          "errors", "statuses", "error_sample"}
Requests are sent in list order, round robin, shared by all connections. Only responses that
complete inside the measured window count; the warmup keeps the same connections.
It is a cheap asyncio Protocol (uvloop when present) so it steals little CPU from the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from typing import Any

_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


class _Gen:
    def __init__(self, job: dict[str, Any]) -> None:
        self.host, self.port = job["host"], int(job["port"])
        self.reqs = [r.encode("latin-1") for r in job["requests"]]
        self.concurrency = int(job["concurrency"])
        self.warmup = float(job["warmup"])
        self.duration = float(job["duration"])
        self.i = 0
        self.stopping = False
        self.win_start = float("inf")
        self.win_end = float("inf")
        self.lat: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.total = 0
        self.error_sample: str | None = None
        self.inflight = 0
        self.idle = asyncio.Event()
        self.conns: list[_Conn] = []

    def next_request(self) -> bytes:
        r = self.reqs[self.i % len(self.reqs)]
        self.i += 1
        return r

    def record(self, start: float, end: float, status: int, body: bytes) -> None:
        self.total += 1
        if self.win_start <= end <= self.win_end:
            self.lat.append(end - start)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 400:
                self.errors += 1
        if status >= 400 and self.error_sample is None:
            self.error_sample = f"{status}: {body[:300].decode('latin-1')}"

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        self.conns.append(proto)

    async def reconnect(self) -> None:
        try:
            await self.connect()
        except OSError:
            self.errors += 1
            return
        self.conns[-1].send()

    async def run(self) -> dict[str, Any]:
        await asyncio.gather(*(self.connect() for _ in range(self.concurrency)))
        for c in list(self.conns):
            c.send()
        await asyncio.sleep(self.warmup)
        self.win_start = time.perf_counter()
        await asyncio.sleep(self.duration)
        self.win_end = time.perf_counter()
        self.stopping = True
        if self.inflight:
            try:
                await asyncio.wait_for(self.idle.wait(), timeout=10)
            except TimeoutError:
                pass
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        lat = sorted(self.lat)
        window = self.win_end - self.win_start

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

        return {
            "completed": len(lat), "total": self.total, "sent": self.i, "window_s": window,
            "rps": len(lat) / window if window > 0 else 0.0,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"),
            "mean_ms": sum(lat) / len(lat) * 1000 if lat else float("nan"),
            "errors": self.errors, "statuses": {str(k): v for k, v in self.statuses.items()},
            "error_sample": self.error_sample,
        }


class _Conn(asyncio.Protocol):
    def __init__(self, gen: _Gen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.head_end = 0
        self.start = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self) -> None:
        g = self.gen
        if g.stopping or self.transport is None or self.transport.is_closing():
            return
        self.busy = True
        g.inflight += 1
        self.start = time.perf_counter()
        self.transport.write(g.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i + 2])
            self.status = int(head[9:12])
            m = _CL.search(head)
            if m is None:  # the servers here always send Content-Length
                self.gen.errors += 1
                self.gen.error_sample = "response without content-length"
                self.transport.close()  # type: ignore[union-attr]
                return
            self.head_end = i + 4
            self.need = self.head_end + int(m.group(1))
        if len(self.buf) < self.need:
            return
        end = time.perf_counter()
        body = bytes(self.buf[self.head_end:self.need]) if self.status >= 400 else b""
        del self.buf[:self.need]
        self.need = -1
        self._finish(end, self.status, body)
        self.send()

    def _finish(self, end: float, status: int, body: bytes) -> None:
        g = self.gen
        self.busy = False
        g.inflight -= 1
        g.record(self.start, end, status, body)
        if g.stopping and g.inflight == 0:
            g.idle.set()

    def connection_lost(self, exc: Exception | None) -> None:
        g = self.gen
        self.transport = None
        if self.busy:
            self._finish(time.perf_counter(), 599, b"connection lost")
        if not g.stopping:  # the server closed it: carry on with a new connection
            asyncio.ensure_future(g.reconnect())


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(_Gen(job).run())
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()

"""Counts database round trips per request, in-process, from libpq's own protocol trace.

Every new pool connection of an engine gets `PQtrace` switched on into its own file. A round
trip is one command the client sends and then waits for (psycopg without pipeline mode): a
simple Query, or the Sync that ends an extended-protocol command. So BEGIN, COMMIT and
ROLLBACK count too, which SQLAlchemy's cursor events never see.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

_PARSE = re.compile(r'^\s*"([^"]*)" "(.*)" \d+', re.S)
_QUERY = re.compile(r'^\s*"(.*)"\s*$', re.S)
_BIND = re.compile(r'^\s*"[^"]*" "([^"]+)"')


def _short(sql: str, width: int = 90) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= width else sql[: width - 1] + "…"


class Tracer:
    def __init__(self, engine: Engine, label: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"peerlink-bench-trace-{label}-")
        self.files: list[str] = []
        self._open: list[Any] = []  # the traced streams must outlive the connections
        event.listen(engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        conn = getattr(dbapi_conn, "driver_connection", None) or dbapi_conn
        path = os.path.join(self.dir, f"conn{len(self.files)}.trace")
        f = open(path, "w+", encoding="latin-1")  # noqa: SIM115 (kept open while traced)
        conn.pgconn.trace(f.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        self.files.append(path)
        self._open.append(f)

    def close(self) -> None:
        import shutil

        for f in self._open:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def mark(self) -> dict[str, int]:
        return {p: os.path.getsize(p) for p in self.files}

    def since(self, mark: dict[str, int]) -> dict[str, Any]:
        """Round trips after `mark`: their count, new connections, and what each one sent."""
        trips: list[str] = []
        new_conns = 0
        for path in self.files:
            start = mark.get(path)
            if start is None:
                new_conns += 1
                start = 0
            with open(path, encoding="latin-1") as f:
                f.seek(start)
                trips.extend(_trips(f.read()))
        return {"round_trips": len(trips), "new_connections": new_conns, "sent": trips}


def _trips(text: str) -> list[str]:
    # Messages start with "F\t" or "B\t"; a SQL text with newlines continues on later lines.
    msgs: list[tuple[str, str, str]] = []
    for line in text.split("\n"):
        parts = line.split("\t", 3)
        if len(parts) >= 3 and parts[0] in ("F", "B") and parts[1].isdigit():
            msgs.append((parts[0], parts[2], parts[3] if len(parts) > 3 else ""))
        elif msgs:
            d, t, rest = msgs[-1]
            msgs[-1] = (d, t, rest + "\n" + line)
    # Count what the client sends: each simple Query and each extended-protocol Sync ends a
    # command the client then waits for (one ReadyForQuery each). libpq buffers the trace of
    # received messages until its next send, so the replies are not what is counted.
    out: list[str] = []
    desc: str | None = None
    for d, t, rest in msgs:
        if d != "F":
            continue
        if t == "Query":
            m = _QUERY.match(rest)
            out.append(_short(m.group(1) if m else rest))
            desc = None
        elif t == "Sync":
            out.append(desc or "?")
            desc = None
        elif desc is None:
            if t == "Parse":
                m = _PARSE.match(rest)
                desc = _short(m.group(2) if m else rest)
            elif t == "Bind":
                m = _BIND.match(rest)
                desc = f"(prepared statement {m.group(1) if m else '?'})"
            else:
                desc = t
    return out

"""JSON-lines logs carrying the request id; never bodies, names or notes."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from asgi_correlation_id import CorrelationIdFilter

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "correlation_id", "color_message"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(), "request_id": getattr(record, "correlation_id", None),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(CorrelationIdFilter(uuid_length=36, default_value=None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn.access", "httpx"):
        logging.getLogger(name).disabled = True  # our access log carries the route template
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

"""The counters behind the rate limits (app.ratelimit) and the sign-in throttle
(services/auth.Throttle): the `limits` async storage named by PEERLINK_RATE_LIMIT_STORAGE.

`memory://` counts per process. `redis://` (or `rediss://`, `redis+unix://`) shares the counts
between every API process of a deployment, so a caller has one budget however many processes
answer it. Redis needs the project's `redis` extra (`pip install peerlink[redis]`; the image
has it): the asyncio client `limits` uses, coredis, pinned below its major version 6. coredis
6 runs every client inside an anyio task group that must be entered first (`async with
client`), which `limits` never does, so each counted request failed with
`'ConnectionPool' object has no attribute '_task_group'` (alisaifee/limits#307; 6.9.0 says
"Connection pool is not initialized or has exited"); `limits` itself declares `coredis<6` for
that reason. A coredis 6 installed by hand is refused here, at
start-up, instead of answering 500 to every request.

Every key starts with PEERLINK_RATE_LIMIT_PREFIX, so deployments (or a staging and a
production) can share one Redis without sharing budgets."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from limits.storage import storage_from_string

from app.config import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")
COREDIS_MAJOR_BELOW = 6


class CounterStorageError(RuntimeError):
    pass


def _check_client() -> None:
    try:
        version = metadata.version("coredis")
    except metadata.PackageNotFoundError:
        raise CounterStorageError(
            "PEERLINK_RATE_LIMIT_STORAGE names Redis, but its client is not installed: "
            "install the project's redis extra (pip install 'peerlink[redis]', or the "
            "requirements.lock)") from None
    if int(version.split(".")[0]) >= COREDIS_MAJOR_BELOW:
        raise CounterStorageError(
            f"coredis {version} is installed; the rate-limit library works only with "
            f"coredis < {COREDIS_MAJOR_BELOW} (the project's redis extra pins it)")


def counter_storage(settings: Settings) -> Any:
    """A fresh async `limits` storage (each user keeps its own connections)."""
    uri = settings.rate_limit_storage.removeprefix("async+")
    if uri.startswith(REDIS_SCHEMES):
        _check_client()
        return storage_from_string(f"async+{uri}", key_prefix=key_prefix(settings))
    return storage_from_string(f"async+{uri}")


def key_prefix(settings: Settings) -> str:
    return f"{settings.rate_limit_prefix}:limits"

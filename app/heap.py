"""The garbage collector's settings for a long-running peerlink process (API or worker)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Called once start-up is done. What start-up built lives as long as the process: it is
    kept out of every collection. A request allocates thousands of short-lived objects (the
    candidate list: ~20,000), an import chunk far more; at CPython's default threshold (700)
    that meant 30 young collections a request and a full one every few requests, 15-35 ms
    each (the p99), and it more than doubled an import's CPU in the worker. Reference counting
    frees almost all of them; the cycle collector now runs every 50,000 net allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

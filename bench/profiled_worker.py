"""`peerlink worker` with its import thread under cProfile (bench/imports.py, BENCH_PROFILE=1):
the jobs run on the ImportRunner's own thread, which `python -m cProfile` would not see. The
thread's profile is written to the file named first on the command line when it ends (at the
worker's shutdown), the main thread's (the worker's own jobs) to the same name + ".loop"."""

from __future__ import annotations

import cProfile
import sys
import threading

OUT = sys.argv.pop(1)
_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    if self.name != "peerlink-imports":
        _run(self)
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        _run(self)
    finally:
        prof.disable()
        prof.dump_stats(OUT)


threading.Thread.run = _profiled_run  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli import main

    sys.argv[0] = "peerlink"
    loop_prof = cProfile.Profile()  # the worker's own loop (its jobs), beside the imports
    loop_prof.enable()
    try:
        main()
    finally:
        loop_prof.disable()
        loop_prof.dump_stats(OUT + ".loop")

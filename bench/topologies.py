"""`make bench`, after bench.run: each TopologyScenario (bench/scenarios.py) that BENCH_ONLY
picks, as `python -m <module>`, in order; exits non-zero when one fails."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.scenarios import TOPOLOGY_SCENARIOS


def main() -> None:
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    failed = []
    for sc in TOPOLOGY_SCENARIOS:
        if not sc.picked(only):
            continue
        print(f"== {sc.name}: {sc.what}", flush=True)
        if subprocess.run([sys.executable, "-m", sc.module], check=False).returncode != 0:
            failed.append(sc.name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

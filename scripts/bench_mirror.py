#!/usr/bin/env python3
"""`python scripts/bench_mirror.py ...` is the `r1q-bench-mirror` command (benchmarks/mirror.py)."""

from benchmarks.mirror import run

if __name__ == "__main__":
    run()

#!/usr/bin/env python3
"""`python scripts/bench.py ...` is the `r1q-bench` command (benchmarks/bench_cli.py).

Kept so documented commands work: the project is installed editable in .venv (scripts/setup.sh),
so its packages import from anywhere.
"""

from benchmarks.bench_cli import run

if __name__ == "__main__":
    run()

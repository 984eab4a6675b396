#!/usr/bin/env python3
"""`python scripts/bench_routing.py ...` is the `r1q-bench-routing` command (benchmarks/routing_cli.py).

Kept so documented commands work: the project is installed editable in .venv (scripts/setup.sh),
so its packages import from anywhere.
"""

from benchmarks.routing_cli import run

if __name__ == "__main__":
    run()

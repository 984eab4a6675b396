#!/usr/bin/env python3
"""`python scripts/bench_gateway.py ...` is the `r1q-bench-gateway` command (benchmarks/gateway_cost_cli.py).

Kept so documented commands work: the project is installed editable in .venv (scripts/setup.sh),
so its packages import from anywhere.
"""

from benchmarks.gateway_cost_cli import run

if __name__ == "__main__":
    run()

#!/usr/bin/env python3
"""`python scripts/plan_memory.py ...` is the `r1q-plan-memory` command (planner/cli.py).

Kept so documented commands work: the project is installed editable in .venv (scripts/setup.sh),
so its packages import from anywhere.
"""

from planner.cli import run

if __name__ == "__main__":
    run()

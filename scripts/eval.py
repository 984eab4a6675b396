#!/usr/bin/env python3
"""`python scripts/eval.py ...` is the `r1q-eval` command (evaluation/cli.py).

Kept so documented commands work: the project is installed editable in .venv (scripts/setup.sh),
so its packages import from anywhere.
"""

from evaluation.cli import run

if __name__ == "__main__":
    run()

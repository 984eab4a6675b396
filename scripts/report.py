#!/usr/bin/env python3
"""Turn the measurements into one replace-or-keep report: `make report`.

    python scripts/report.py                               # latest bench + eval runs, the votes, decision/rules.yaml
    python scripts/report.py --gpu H100 --gpu-hour-usd 2.5 # add the GPU memory plan and a cost column
    python scripts/report.py --rules my-rules.yaml --bench results/bench/full-cpu --eval results/eval/cpu-test-limit5

Writes results/report/<UTC time>/{report.md, report.html, report.json, *.png, sources/}
(`--out DIR` for another place); the gateway serves the newest at /report/. Exits 2 with a
message when an input or the rules cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from decision.build import ReportInputs, build_report, default_out_dir, make_context, write_report  # noqa: E402
from decision.context import ReportError  # noqa: E402
from decision.rules import DEFAULT_RULES  # noqa: E402
from gateway.errors import ConfigError  # noqa: E402
from planner.gpus import GPUS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="decision rules (default %(default)s)")
    parser.add_argument("--bench", type=Path, help="a results/bench/<run> directory (default: newest full run)")
    parser.add_argument("--eval", type=Path, help="a results/eval/<run> directory (default: newest run)")
    parser.add_argument("--votes", help="vote store: SQLite file or database URL (default: the deployment's votes_db)")
    parser.add_argument("--config", type=Path, help="deployment YAML the runs used (default: found from the runs)")
    parser.add_argument("--gpu", help=f"add the memory plan for this GPU: {', '.join(GPUS)}")
    parser.add_argument("--gpu-config", type=Path, default=ROOT / "engine_config" / "gpu.yaml", help="for --gpu")
    parser.add_argument("--gpu-hour-usd", type=float, help="price of an hour of the hardware: adds cost per 1M tokens")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="where runs are looked up")
    parser.add_argument("--out", type=Path, help="output directory (default results/report/<UTC time>)")
    args = parser.parse_args(argv)
    if args.gpu_hour_usd is not None and args.gpu_hour_usd <= 0:
        parser.error("--gpu-hour-usd must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    inputs = ReportInputs(
        rules=args.rules,
        bench=args.bench,
        eval=args.eval,
        votes=args.votes if args.votes is None or "://" in args.votes else Path(args.votes),
        config=args.config,
        gpu=args.gpu,
        gpu_config=args.gpu_config,
        gpu_hour_usd=args.gpu_hour_usd,
        results_dir=args.results,
    )
    try:
        ctx = make_context(inputs)
        print(
            f"[report] bench {ctx.bench.directory if ctx.bench else 'none'}, eval "
            f"{ctx.quality.directory if ctx.quality else 'none'}, votes {ctx.votes_where()} "
            f"({'no file' if ctx.votes is None else len(ctx.votes)}); candidate {ctx.candidate}, "
            f"incumbent {ctx.incumbent}",
            flush=True,
        )
        report, decision = build_report(ctx)
    except (ReportError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_out_dir(args.results)
    paths = write_report(report, ctx, out)
    for row in ctx.summary:
        print(f"[report] {row.dimension}: {row.verdict}")
    print(f"[report] decision: {decision.action} ({decision.rule}): {decision.reason}")
    print("\n".join(f"[report] {kind}: {path}" for kind, path in paths.items()))
    print(f"[report] done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

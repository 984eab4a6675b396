"""`r1q-bench-routing` (`python scripts/bench_routing.py`): the routing benchmark's command line.

See benchmarks/routing.py for what it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import yaml

from benchmarks.routing import ROOT, Plan
from benchmarks.routing import __doc__ as ABOUT
from benchmarks.routing import run as measure
from benchmarks.routing_report import table, write
from gateway.process import exit_on_sigterm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=ABOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round of each, to check the script works")
    parser.add_argument("--rounds", type=int, help="rounds (each: both workloads under both policies)")
    parser.add_argument("--replicas", type=int, help="engine replicas (default 2), pinned to the cores in turn")
    parser.add_argument("--users", type=int, help="multi-turn: Locust users (open conversations)")
    parser.add_argument("--think-time", type=float, help="multi-turn: mean seconds between a user's turns")
    parser.add_argument(
        "--arrival-rate",
        type=float,
        help="multi-turn: requests/s over all users at a constant rate (open loop, no think time)",
    )
    parser.add_argument("--multi-turn-s", type=int, help="seconds per multi-turn run")
    parser.add_argument("--no-prefix-s", type=int, help="seconds per no-shared-prefix run")
    parser.add_argument("--kv-cache-gib", type=int, help="KV cache per replica (VLLM_CPU_KVCACHE_SPACE)")
    parser.add_argument("--kv-blocks", type=int, help="KV blocks per replica (0: all of --kv-cache-gib)")
    parser.add_argument("--workloads", help="comma-separated: multi-turn,pair-128-256 (default both)")
    parser.add_argument("--turns", type=int, help="multi-turn: turns per conversation")
    parser.add_argument(
        "--prefix-knob", action="append", default=[], metavar="KEY=VALUE", help="routing knob of the prefix gateway"
    )
    parser.add_argument(
        "--port-base", type=int, help="gateways on BASE and BASE+1, engines from BASE+101 (default: free ports)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "routing")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench-routing", help="logs and raw CSVs")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    overrides = {
        k: v
        for k, v in {
            "rounds": args.rounds,
            "replicas": args.replicas,
            "users": args.users,
            "think_time_s": args.think_time,
            "arrival_rate": args.arrival_rate,
            "multi_turn_s": args.multi_turn_s,
            "no_prefix_s": args.no_prefix_s,
            "kv_cache_gib": args.kv_cache_gib,
            "kv_blocks": args.kv_blocks,
            "turns": args.turns,
            "workloads": tuple(args.workloads.split(",")) if args.workloads else None,
        }.items()
        if v is not None
    }
    knobs = tuple((k, yaml.safe_load(v)) for k, _, v in (item.partition("=") for item in args.prefix_knob))
    plan = dataclasses.replace(plan, **overrides, prefix_knobs=knobs)
    if plan.kv_blocks == 0:
        plan = dataclasses.replace(plan, kv_blocks=None)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    workdir = args.workdir / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"configs, engine and gateway logs, Locust CSVs: {workdir}")
    results = measure(plan, port_base=args.port_base, progress=say, workdir=workdir)
    write(results, args.out)
    print(table(results))
    print(f"\nwritten to {args.out}/")
    return 1 if results["summary"]["failures"] else 0


def run() -> None:
    exit_on_sigterm()
    sys.exit(main())

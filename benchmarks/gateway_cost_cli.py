"""What the gateway costs: (a) against the real test engines, (b) against a FAKE upstream.

    python scripts/bench_gateway.py                       # both; starts the test engines for (a)
    python scripts/bench_gateway.py --engine-url qwen-tiny=http://127.0.0.1:8302 \\
        --engine-url r1-tiny=http://127.0.0.1:8301 --gateway-url http://127.0.0.1:8200   # reuse a stack
    python scripts/bench_gateway.py --only fake --profile # (b) only, with a py-spy profile

(a) Real engines, `--streams` (32) concurrent streams, 128->256 tokens: direct to the engine
    and through the gateway, interleaved `--rounds` times with fresh prompts each run.
    Reports gateway output tok/s as % of direct (target >= 97%) and the median TTFT added
    (target <= 2 ms). Token counts are checked against the engine's counters as in bench.py.
    Every run also records the CPU the engine's process tree, the gateway and this load
    generator used, and the gateway's CPU per 1,000 relayed tokens (table (a'')).
(b) benchmarks/fake_upstream.py (an instant fake engine, not vLLM) behind one gateway worker
    (`server.py --gateway-only`: one uvicorn process) pinned to core 0, with the load generator
    and the fake on core 1: requests/s the gateway proxies at `--fake-concurrency`, and p50/p99
    latency at one request in flight, direct vs through the gateway (targets: >= 1,000 req/s
    per core, <= 1 ms added at the median), for JSON and for streamed (SSE) answers.

Prints a table and writes results/bench/gateway/results.json (and the profile, if asked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gateway_cost import OUT, ROOT, fake_proxy, real_engines, say
from gateway.config import load_config
from gateway.process import exit_on_sigterm

# --- output -----------------------------------------------------------------------------------


def print_tables(results: dict[str, Any]) -> None:
    real = results.get("real")
    if real:
        print(
            f"\n(a) real engines, {real['streams']} concurrent streams, 128->256, {real['rounds']} interleaved rounds"
        )
        print(f"{'model':<12} {'direct tok/s':>13} {'gateway tok/s':>14} {'gateway/direct':>15} {'added TTFT p50':>15}")
        for name, row in real["models"].items():
            if "direct_output_tokens_per_s" not in row:  # --paired-only
                continue
            print(
                f"{name:<12} {row['direct_output_tokens_per_s']:>13.0f} {row['gateway_output_tokens_per_s']:>14.0f} "
                f"{100 * row['output_tps_ratio']:>14.1f}% {row['added_ttft_p50_ms']:>+12.2f} ms"
            )
        print("targets: gateway/direct >= 97%, added TTFT p50 <= 2 ms")
        print(
            f"\n(a') paired: {real['streams'] // 2} streams direct and {real['streams'] // 2} through the gateway at "
            "the same time (same engine steps), median over rounds"
        )
        print(f"{'model':<12} {'TTFT p50 direct':>16} {'TTFT p50 gateway':>17} {'added':>10} {'decode rate g/d':>16}")
        for name, row in real["models"].items():
            paired = row.get("paired")
            if not paired:
                continue
            direct = statistics.median(r["direct"]["ttft_ms"]["p50"] for r in paired["rounds"])
            gateway = statistics.median(r["gateway"]["ttft_ms"]["p50"] for r in paired["rounds"])
            print(
                f"{name:<12} {direct:>13.1f} ms {gateway:>14.1f} ms {paired['added_ttft_p50_ms']:>+7.2f} ms "
                f"{100 * paired['tpot_ratio']:>15.1f}%"
            )
        _print_cpu(real)
        print(_provenance(real))
    fake = results.get("fake")
    if fake:
        print(
            f"\n(b) FAKE upstream, one gateway worker on core(s) {fake['gateway_cores']}, "
            f"load generator + fake on {fake['client_and_fake_cores']}"
        )
        print(
            f"{'answer':<7} {'gateway req/s':>14} {'per core':>9} {'(fake direct)':>14} {'p50 direct':>11} "
            f"{'p50 gateway':>12} {'added p50':>10} {'added p99':>10} {'split added p50':>16} {'failed':>7}"
        )
        for mode, row in fake["modes"].items():
            print(
                f"{mode:<7} {row['gateway_requests_per_s']:>14.0f} {row['gateway_requests_per_core_s']:>9.0f} "
                f"{row['direct_requests_per_s']:>14.0f} {row['direct_p50_ms']:>8.3f} ms "
                f"{row['gateway_p50_ms']:>9.3f} ms "
                f"{row['added_p50_ms']:>7.3f} ms {row['added_p99_ms']:>7.3f} ms {row['split_added_p50_ms']:>13.3f} ms "
                f"{row['failures']:>7}"
            )
        print(f"targets: >= 1,000 req/s per core at c={fake['concurrency']}, added p50 <= 1 ms (at c=1)")
        print(_provenance(fake))
        profile = fake.get("profile")
        if profile and "top_self" in profile:
            print(f"\ngateway profile (py-spy, {profile['samples']} samples), self time by package:")
            print("  " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in profile["self_by_package"]))
            print("top functions by self time:")
            for frame, share in profile["top_self"][:10]:
                print(f"  {100 * share:5.1f}%  {frame}")


def _print_cpu(real: dict[str, Any]) -> None:
    """Where the CPU went: on a CPU host the gateway's share is time the engine did not get."""
    rows = [(name, row) for name, row in real["models"].items() if "cpu_cores" in row]
    if not rows:
        return
    print("\n(a'') CPU used while the A/B runs' requests ran, in cores (2.00 = two cores busy)")
    print(
        f"{'model':<12} {'engine direct':>14} {'engine via gw':>14} {'gateway':>8} "
        f"{'client direct':>14} {'client via gw':>14} {'gateway ms CPU / 1k tokens':>27}"
    )
    nan = float("nan")
    for name, row in rows:
        direct, through = row["cpu_cores"].get("direct", {}), row["cpu_cores"].get("gateway", {})
        print(
            f"{name:<12} {direct.get('engine', nan):>14.2f} {through.get('engine', nan):>14.2f} "
            f"{through.get('gateway', nan):>8.3f} {direct.get('client', nan):>14.3f} "
            f"{through.get('client', nan):>14.3f} {row.get('gateway_cpu_ms_per_1k_tokens', nan):>27.1f}"
        )


def _provenance(part: dict[str, Any]) -> str:
    before, after = (" ".join(f"{x:.1f}" for x in part[k]) for k in ("load_average_before", "load_average_after"))
    return f"measured {part['started']} with `{part['command']}`; load average {before} before, {after} after"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "engine_config" / "test.yaml")
    parser.add_argument("--port-base", type=int, help="(a): engines on N+101+i instead of the config's ports")
    parser.add_argument("--only", choices=("real", "fake"))
    parser.add_argument("--paired-only", action="store_true", help="(a): only the paired rounds, not the A/B runs")
    parser.add_argument("--results", default="results.json", help="file name under results/bench/gateway/")
    parser.add_argument("--engine-url", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--gateway-url")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests-per-stream", type=int, default=2)
    parser.add_argument("--stagger", type=float, default=4.0, help="paired rounds: streams start over this many s")
    parser.add_argument("--fake-concurrency", type=int, default=32)
    parser.add_argument("--fake-seconds", type=float, default=8)
    parser.add_argument("--fake-rounds", type=int, default=2)
    parser.add_argument("--gateway-core", type=int, default=0, help="(b): the core the gateway runs on alone")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway during a (b) run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / args.results
    # --only replaces its own part of an earlier results.json and keeps the other.
    results: dict[str, Any] = json.loads(path.read_text()) if args.only and path.exists() else {}
    command = " ".join(["python", "scripts/bench_gateway.py", *sys.argv[1:]])
    if args.port_base is not None:
        moved = load_config(args.config).with_port_base(args.port_base)
        args.config = moved.write(OUT / "logs" / f"config-{args.port_base}.yaml")
    for part in ("fake", "real"):
        if args.only in (None, part):
            # Other work on the machine moves these numbers a lot: keep the load next to them.
            started = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
            load_before = os.getloadavg()
            measured = fake_proxy(args) if part == "fake" else real_engines(args)
            load = {"load_average_before": load_before, "load_average_after": os.getloadavg()}
            results[part] = started | measured | load
    path.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    say(f"wrote {path}")
    problems = results.get("real", {}).get("problems", [])
    for problem in problems:
        print(f"TOKEN CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def run() -> None:
    """The console entry point (SIGTERM stops the engines and gateway this run started)."""
    exit_on_sigterm()
    sys.exit(main())


if __name__ == "__main__":  # python -m benchmarks.gateway_cost_cli
    run()

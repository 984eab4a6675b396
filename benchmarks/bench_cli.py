"""Benchmark the engines of a deployment and write a report: `make bench` / `make bench QUICK=1`.

    python scripts/bench.py                          # full mode, engine_config/test.yaml (CPU plan: ~35 min)
    python scripts/bench.py --quick                  # a few minutes on a 2-core CPU machine
    python scripts/bench.py --config engine_config/gpu.yaml --out results/bench/gpu-l4
    python scripts/bench.py --port-base 8400         # beside a stack on test.yaml's own ports
    python scripts/bench.py --sampling-only --config engine_config/cpu.yaml   # sampled vs greedy alone
    python scripts/bench.py --quick --engine-url r1-tiny=http://127.0.0.1:8301 \\
        --engine-url qwen-tiny=http://127.0.0.1:8302 --gateway-url http://127.0.0.1:8200   # reuse running ones

Writes results/bench/<run>/{results.json, report.md, *.png}. Exits 1 when any request failed
or our token counts disagree with an engine's Prometheus counters by more than 1%
(the report is written either way), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

from benchmarks.report import write_report
from benchmarks.suite import BenchPlan, run_benchmark
from gateway.config import load_config
from gateway.process import exit_on_sigterm

ROOT = Path(__file__).resolve().parent.parent


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    return tuple((int(p), int(o)) for p, _, o in (item.partition(":") for item in text.split(",")))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "engine_config" / "test.yaml")
    parser.add_argument(
        "--port-base",
        type=int,
        help="run on other ports: gateway on N, engine i on N+101+i (a moved copy of the config goes to --out)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, the 128->256 sweep only")
    parser.add_argument(
        "--sampling-only",
        action="store_true",
        help="only sampled vs greedy decoding, cpu_sampler plugin on and off (no gateway, sweep or transformers)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default results/bench/<date>-<mode>)")
    parser.add_argument("--engine-url", action="append", default=[], metavar="NAME=URL", help="reuse a running engine")
    parser.add_argument("--gateway-url", help="reuse a running gateway in front of those engines")
    over = parser.add_argument_group("plan overrides")
    over.add_argument("--pairs", type=_pairs, help="single-stream length pairs, e.g. 128:256,256:512")
    over.add_argument("--sweep-pairs", type=_pairs, help="length pairs of the concurrency sweep")
    over.add_argument("--concurrency", type=_ints, help="sweep levels, e.g. 1,4,16,32,64")
    over.add_argument("--ratio-concurrency", type=int, help="streams for vLLM/transformers and gateway/direct")
    over.add_argument("--requests-per-stream", type=int)
    over.add_argument("--gateway-rounds", type=int)
    over.add_argument("--hf-pairs", type=_pairs)
    over.add_argument("--hf-requests", type=int)
    over.add_argument("--idle-s", type=float)
    over.add_argument("--sampling", choices=("greedy", "model-defaults"), help="decoding of the vLLM runs")
    over.add_argument("--sampling-rounds", type=int, help="sampled vs greedy rounds (0 skips that section)")
    over.add_argument("--sampling-pair", type=lambda text: _pairs(text)[0], help="its length pair, e.g. 128:128")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> BenchPlan:
    if args.sampling_only:
        plan = BenchPlan.sampling_only()
    else:
        plan = BenchPlan.quick() if args.quick else BenchPlan.full(load_config(args.config).platform)
    overrides = {
        "pairs": args.pairs,
        "sweep_pairs": args.sweep_pairs,
        "concurrency": args.concurrency,
        "ratio_concurrency": args.ratio_concurrency,
        "requests_per_stream": args.requests_per_stream,
        "gateway_rounds": args.gateway_rounds,
        "hf_pairs": args.hf_pairs,
        "hf_requests": args.hf_requests,
        "idle_s": args.idle_s,
        "sampling": args.sampling,
        "sampling_rounds": args.sampling_rounds,
        "sampling_pair": args.sampling_pair,
    }
    return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    engine_urls = dict(item.split("=", 1) for item in args.engine_url) or None
    out = args.out or ROOT / "results" / "bench" / f"{time.strftime('%Y%m%d-%H%M%S')}-{plan.mode}"
    command = shlex.join(["python", "scripts/bench.py", *(argv if argv is not None else sys.argv[1:])])

    def say(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.port_base is not None:
        args.config = load_config(args.config).with_port_base(args.port_base).write(out / "config.yaml")
    say(f"{plan.mode} mode, config {args.config}, results in {out}")
    results = run_benchmark(
        args.config, plan, engine_urls=engine_urls, gateway_url=args.gateway_url, log_dir=out / "logs", progress=say
    )
    results["command"] = command
    write_report(results, out)
    say(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    print((out / "report.md").read_text())
    if results["problems"]:
        for problem in results["problems"]:
            print(f"BENCHMARK CHECK FAILED: {problem}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The console entry point (SIGTERM stops the engines and gateway this run started)."""
    exit_on_sigterm()
    sys.exit(main())


if __name__ == "__main__":  # python -m benchmarks.bench_cli
    run()

"""What the gateway costs: the measurements behind `make bench-gateway` (benchmarks/gateway_cost_cli.py).

    results = real_engines(args)     # (a) the real test engines, direct vs through the gateway
    results = fake_proxy(args)       # (b) a FAKE upstream behind one pinned gateway worker

(a) Real engines, `--streams` (32) concurrent streams, 128->256 tokens: direct to the engine
    and through the gateway, interleaved `--rounds` times with fresh prompts each run, plus
    paired rounds (half the streams direct, half through the gateway, at the same time).
(b) benchmarks/fake_upstream.py (an instant fake engine, not vLLM) behind one gateway worker
    pinned to a core of its own: requests/s per core and the latency added at one request in
    flight, for JSON and for streamed (SSE) answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import fake_upstream
from benchmarks.load import ChatRequest, LoadResult, raw_post, run_load, run_raw_http
from benchmarks.resources import CpuMeter, cpu_seconds, listener_pid
from benchmarks.suite import (
    BenchPlan,
    CountedLoad,
    gateway_process,
    gateway_vs_direct,
    mean_cores,
    reuse_engines,
    start_engines,
)
from gateway.config import load_config
from gateway.supervisor import EngineSupervisor
from workload.engine_metrics import TokenCounters, cross_check, read_token_counters
from workload.prompts import PromptFactory

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench" / "gateway"


def say(message: str) -> None:
    print(f"[bench-gateway {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- (a) real engines ----------------------------------------------------------------------


def real_engines(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config)
    plan = dataclasses.replace(
        BenchPlan.quick(),
        sweep_pairs=((128, 256),),
        ratio_concurrency=args.streams,
        gateway_rounds=args.rounds,
        gateway_requests_per_stream=args.requests_per_stream,
    )
    out: dict[str, Any] = {"streams": args.streams, "rounds": args.rounds, "models": {}, "problems": []}
    with contextlib.ExitStack() as cleanup:
        if args.engine_url:
            targets = reuse_engines(config, dict(item.split("=", 1) for item in args.engine_url))
        else:
            supervisor = EngineSupervisor(config, log_dir=OUT / "logs", progress=say)
            cleanup.callback(supervisor.stop_all)
            targets = start_engines(config, supervisor, together=True, progress=say)
        gateway_url, gateway_pid = args.gateway_url, None
        if gateway_url is None:
            engines = {t.spec.name: t.url for t in targets}
            gateway_url, gateway_pid = cleanup.enter_context(gateway_process(args.config, engines, OUT / "logs", say))
        for target in targets:
            assert target.spec.engine is not None
            factory = PromptFactory.from_dir(target.spec.engine.tokenizer or target.spec.engine.model)
            load = CountedLoad(target, factory, plan.tolerance, say)
            load.run(target.url, (128, 256), requests=4, concurrency=4, label=f"{target.spec.name} warm-up")
            cpu = _cpu_meter(target, gateway_pid)
            result = {} if args.paired_only else gateway_vs_direct(load, target, gateway_url, plan, cpu=cpu)
            result["paired"] = paired_rounds(load, target, gateway_url, args, cpu=cpu)
            result["token_problems"] = [p for c in load.checks for p in c["problems"]]
            out["problems"] += result["token_problems"]
            out["models"][target.spec.name] = result
    return out


def _cpu_meter(target: Any, gateway_pid: int | None) -> Callable[[], CpuMeter]:
    """Meters for the engine's process tree, the gateway we started and this load generator.

    On a CPU host the three share the cores, so the gateway's CPU is time the engine does not
    get; what it uses per output token is the cost the A/B ratio tries to see through noise."""
    engine_pid = target.pid or listener_pid(int(target.url.rsplit(":", 1)[1]))
    trees = {"engine": engine_pid} if engine_pid else {}
    if gateway_pid:
        trees["gateway"] = gateway_pid
    return lambda: CpuMeter(trees, own={"client": os.getpid()})


def paired_rounds(
    load: CountedLoad, target: Any, gateway_url: str, args: argparse.Namespace, *, cpu: Callable[[], CpuMeter]
) -> dict[str, Any]:
    """Half of the streams straight to the engine and half through the gateway, at the same time.

    Both halves share every engine step, so what differs between them is the gateway alone: the
    engine's own variation (batch composition, the other model's load, the machine) cancels out,
    which it does not between two runs one after the other. Per round, the TTFT medians and the
    per-stream decode rates (time per output token) of the two halves are compared.

    The streams start at random moments over `--stagger` seconds (sorted, then dealt alternately
    to the two halves, so both see the same arrival times), as requests reach a server in
    practice. Started all at the same instant, the direct half would fill the engine's next
    step and the gateway half, a millisecond later, would wait for the step after it: one step
    (100-200 ms here) of batching, not of gateway, would be measured."""
    half = args.streams // 2
    rounds = []
    rng = random.Random(1234)
    for i in range(args.rounds):
        direct, via_gateway = (load.requests((128, 256), half * args.requests_per_stream) for _ in range(2))
        starts = sorted(rng.uniform(0, args.stagger) for _ in range(2 * half))
        before = read_token_counters(target.url)
        per = args.requests_per_stream
        with cpu() as meter:
            results = asyncio.run(
                _staggered(
                    [(target.url, direct[k * per : (k + 1) * per], starts[2 * k]) for k in range(half)],
                    [(gateway_url, via_gateway[k * per : (k + 1) * per], starts[2 * k + 1]) for k in range(half)],
                )
            )
        direct_result, gateway_result = (r.summary() for r in results)
        time.sleep(0.3)
        counted = read_token_counters(target.url) - before
        ours = TokenCounters(
            direct_result["prompt_tokens"] + gateway_result["prompt_tokens"],
            direct_result["output_tokens"] + gateway_result["output_tokens"],
        )
        problems = cross_check(ours, counted, tolerance=load.tolerance)
        load.checks.append({"run": f"paired #{i + 1}", "problems": problems})
        row = {
            "round": i + 1,
            "direct": direct_result,
            "gateway": gateway_result,
            "added_ttft_p50_ms": gateway_result["ttft_ms"]["p50"] - direct_result["ttft_ms"]["p50"],
            "tpot_ratio": direct_result["tpot_ms"]["p50"] / gateway_result["tpot_ms"]["p50"],
            "failures": direct_result["failures"] + gateway_result["failures"],
        } | meter.as_dict()
        rounds.append(row)
        say(
            f"{target.spec.name} paired #{i + 1}: TTFT p50 direct {direct_result['ttft_ms']['p50']:.1f} ms, "
            f"gateway {gateway_result['ttft_ms']['p50']:.1f} ms ({row['added_ttft_p50_ms']:+.2f}); "
            f"decode rate gateway/direct {100 * row['tpot_ratio']:.1f}%"
        )
    return {
        "streams_each": half,
        "rounds": rounds,
        "added_ttft_p50_ms": statistics.median(r["added_ttft_p50_ms"] for r in rounds),
        "tpot_ratio": statistics.median(r["tpot_ratio"] for r in rounds),
        "failures": sum(r["failures"] for r in rounds),
        "cpu_cores": mean_cores(rounds),
    }


async def _staggered(*groups: list[tuple[str, list[ChatRequest], float]]) -> list[LoadResult]:
    """Per group, streams (url, its requests one after another, start delay) run at once; one
    merged result per group (its percentiles; its wall time is the whole run's)."""

    async def stream(url: str, requests: list[ChatRequest], delay: float) -> LoadResult:
        await asyncio.sleep(delay)
        return await run_load(url, requests, concurrency=1)

    started = time.perf_counter()
    per_group = [asyncio.gather(*(stream(*s) for s in group)) for group in groups]
    done = await asyncio.gather(*per_group)
    wall = time.perf_counter() - started
    return [LoadResult(len(runs), wall, [r for run in runs for r in run.records]) for runs in done]


# --- (b) fake upstream -----------------------------------------------------------------------


def measure(
    port: int, stream: bool, *, concurrency: int, duration_s: float, cpu_of: int | None = None
) -> dict[str, Any]:
    """Closed-loop load on one port; with `cpu_of`, also how much of a core that process used."""
    request = raw_post(
        "127.0.0.1",
        port,
        "/v1/chat/completions",
        {"model": "fake-upstream", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream},
    )
    for _ in range(3):  # a run in which nothing completed (the process was starved) is repeated
        started, cpu_before = time.perf_counter(), cpu_seconds(cpu_of) if cpu_of else 0.0
        summary = asyncio.run(
            run_raw_http("127.0.0.1", port, request, concurrency=concurrency, duration_s=duration_s)
        ).summary()
        if summary["latency_ms"]["p50"] is not None:
            break
        say(f"no request to port {port} completed in {duration_s} s; the machine is busy, measuring again")
    else:
        raise RuntimeError(f"no request to port {port} completed in 3 runs of {duration_s} s")
    if cpu_of:
        share = (cpu_seconds(cpu_of) - cpu_before) / (time.perf_counter() - started)
        summary["gateway_core_share"] = share
        summary["requests_per_core_s"] = summary["requests_per_s"] / share if share > 0 else None
    return summary


def fake_proxy(args: argparse.Namespace) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    others = [c for c in cpus if c != args.gateway_core] or cpus
    gateway_cores, client_cores = [args.gateway_core], others
    os.sched_setaffinity(0, client_cores)  # the load generator stays off the gateway's core
    try:
        return _fake_proxy(args, gateway_cores, client_cores)
    finally:
        os.sched_setaffinity(0, cpus)


def _fake_proxy(args: argparse.Namespace, gateway_cores: list[int], client_cores: list[int]) -> dict[str, Any]:
    """Throughput: the gateway alone on its core, the fake and the load generator on the other.

    Latency at one request in flight, in two placements:
    - "same hops" (the headline): the fake shares the gateway's core, so the client crosses
      one core boundary whether it calls the fake directly or the gateway. On this VM every
      wake-up of a process on the other core costs about 0.2 ms, so this is the placement that
      leaves only the gateway's own time in the difference;
    - "split": the fake on the client's core, so going through the gateway adds two cross-core
      wake-ups on top of the gateway's own time (reported, not the headline)."""
    out: dict[str, Any] = {
        "gateway_cores": gateway_cores,
        "client_and_fake_cores": client_cores,
        "concurrency": args.fake_concurrency,
        "duration_s": args.fake_seconds,
        "modes": {},
    }
    with (
        fake_upstream.running(cores=client_cores) as (fake_port, fake_pid),
        gateway_process(
            args.config, {"fake-upstream": f"http://127.0.0.1:{fake_port}"}, OUT / "logs", say, cores=gateway_cores
        ) as (gateway_url, gateway_pid),
    ):
        gateway_port = int(gateway_url.rsplit(":", 1)[1])
        measure(gateway_port, False, concurrency=4, duration_s=2)  # warm-up: connections, code paths
        for stream in (False, True):
            mode = "stream" if stream else "json"
            keys = ("c1", "c1_split", "cN")
            rounds: dict[str, list[dict[str, Any]]] = {f"{via}_{k}": [] for via in ("direct", "gateway") for k in keys}
            for i in range(args.fake_rounds):
                for via, port in (("direct", fake_port), ("gateway", gateway_port))[:: 1 if i % 2 == 0 else -1]:
                    c1_seconds = args.fake_seconds / 2
                    os.sched_setaffinity(fake_pid, gateway_cores)
                    rounds[f"{via}_c1"].append(measure(port, stream, concurrency=1, duration_s=c1_seconds))
                    os.sched_setaffinity(fake_pid, client_cores)
                    rounds[f"{via}_c1_split"].append(measure(port, stream, concurrency=1, duration_s=c1_seconds))
                    cpu_of = gateway_pid if via == "gateway" else None
                    rounds[f"{via}_cN"].append(
                        measure(
                            port, stream, concurrency=args.fake_concurrency, duration_s=args.fake_seconds, cpu_of=cpu_of
                        )
                    )
                    say(
                        f"{mode} {via} round {i + 1}: {rounds[f'{via}_cN'][-1]['requests_per_s']:.0f} req/s at "
                        f"c={args.fake_concurrency}, p50 {rounds[f'{via}_c1'][-1]['latency_ms']['p50']:.3f} ms at c=1"
                    )
            out["modes"][mode] = summarize_fake(rounds)
        if args.profile:
            out["profile"] = profile_gateway(gateway_pid, gateway_port, args)
    return out


def summarize_fake(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    def lat(key: str, pct: str) -> float:
        return median([r["latency_ms"][pct] for r in rounds[key]])

    failures = sum(r["failures"] for runs in rounds.values() for r in runs)
    return {
        "rounds": rounds,
        "failures": failures,
        "gateway_requests_per_s": median([r["requests_per_s"] for r in rounds["gateway_cN"]]),
        "gateway_requests_per_s_best": max(r["requests_per_s"] for r in rounds["gateway_cN"]),
        "gateway_requests_per_core_s": median([r["requests_per_core_s"] for r in rounds["gateway_cN"]]),
        "gateway_core_share": median([r["gateway_core_share"] for r in rounds["gateway_cN"]]),
        "direct_requests_per_s": median([r["requests_per_s"] for r in rounds["direct_cN"]]),
        "direct_p50_ms": lat("direct_c1", "p50"),
        "direct_p99_ms": lat("direct_c1", "p99"),
        "gateway_p50_ms": lat("gateway_c1", "p50"),
        "gateway_p99_ms": lat("gateway_c1", "p99"),
        "added_p50_ms": lat("gateway_c1", "p50") - lat("direct_c1", "p50"),
        "added_p99_ms": lat("gateway_c1", "p99") - lat("direct_c1", "p99"),
        "split_added_p50_ms": lat("gateway_c1_split", "p50") - lat("direct_c1_split", "p50"),
        "split_added_p99_ms": lat("gateway_c1_split", "p99") - lat("direct_c1_split", "p99"),
    }


def profile_gateway(pid: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """py-spy samples the gateway while it proxies JSON answers at full load; top frames by self time."""
    raw = OUT / "gateway-profile.txt"  # collapsed stacks: feed to flamegraph.pl or speedscope
    seconds = int(args.fake_seconds)
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--nonblocking"]
    recorder = subprocess.Popen([*argv, "--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches
    measure(port, False, concurrency=args.fake_concurrency, duration_s=seconds + 1)
    try:
        recorder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=10)
    if not raw.exists():
        return {"error": "py-spy wrote nothing (is ptrace allowed?)"}
    return summarize_profile(raw)


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Self time by function and by package (asyncio stacks are cut at awaits, so inclusive
    time undercounts; self time does not)."""
    self_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        samples = int(count)
        total += samples
        self_time[_short(leaf)] += samples
        by_package[_package(leaf)] += samples
    return {
        "samples": total,
        "raw": str(raw),
        "self_by_package": [(p, n / total) for p, n in by_package.most_common(12)],
        "top_self": [(f, n / total) for f, n in self_time.most_common(20)],
    }


def _package(frame: str) -> str:
    """'send (httpcore/_async/http11.py:283)' -> 'httpcore'; 'x (contextlib.py:144)' -> 'contextlib.py'."""
    where = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    return where.split("/")[0] or "?"


def _short(frame: str) -> str:
    """'handle (starlette/routing.py:123)' -> 'handle (starlette/routing.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("site-packages/")[-1].split("/")
    return f"{name} ({'/'.join(parts[-2:])})"

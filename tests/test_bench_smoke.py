"""The benchmark (benchmarks/, scripts/bench.py): its checks and load generators, then the quick
mode end to end against the test stack as CI's smoke test.

The smoke test reuses the session's engines and gateway (`--engine-url`, `--gateway-url`)
instead of starting its own, so it measures no cold start; everything else runs for real,
with tiny counts: single stream, a two-level sweep, gateway vs direct, transformers
`generate`, the Prometheus cross-check, and the report with its plots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks import fake_upstream
from benchmarks.bench_cli import build_plan, parse_args
from benchmarks.load import ChatRequest, raw_post, run_load, run_raw_http
from benchmarks.report import write_report
from benchmarks.resources import CpuMeter, idle_cpu_percent
from benchmarks.suite import BenchPlan, summarize_gateway_runs, summarize_sampling_runs
from tests.conftest import ROOT, Stack
from workload.engine_metrics import TokenCounters, cross_check, read_token_counters


def test_cross_check_flags_disagreements_beyond_the_tolerance() -> None:
    engine = TokenCounters(prompt=10_000, generation=20_000)
    assert cross_check(TokenCounters(10_000, 20_150), engine, tolerance=0.01) == []
    problems = cross_check(TokenCounters(10_000, 20_300), engine, tolerance=0.01)
    assert len(problems) == 1 and "generation tokens" in problems[0] and "1.50%" in problems[0]
    assert cross_check(TokenCounters(5, 0), TokenCounters(0, 0), tolerance=0.01)  # engine saw nothing
    assert engine - TokenCounters(1, 2) == TokenCounters(9_999, 19_998)


def test_vllm_runs_decode_greedy_without_the_models_repetition_penalty_unless_asked() -> None:
    greedy = ChatRequest("qwen-tiny", [], 8).body()
    # qwen's generation_config.json says repetition_penalty 1.1, which vLLM would otherwise apply.
    assert (greedy["temperature"], greedy["repetition_penalty"], greedy["ignore_eos"]) == (0.0, 1.0, True)
    defaults = ChatRequest("qwen-tiny", [], 8, sampling={}).body()
    assert "temperature" not in defaults and "repetition_penalty" not in defaults
    assert BenchPlan.full("cpu").concurrency == BenchPlan.full("gpu").concurrency
    assert {1, 4, 16, 32, 64} <= set(BenchPlan.full("cpu").concurrency)


def test_gateway_summary_compares_totals_and_median_ttft() -> None:
    def run(via: str, tokens: int, wall: float, ttft: float) -> dict[str, object]:
        return {"via": via, "output_tokens": tokens, "wall_s": wall, "ttft_ms": {"p50": ttft}}

    runs = [run("direct", 1000, 1.0, 10.0), run("gateway", 990, 1.0, 11.0), run("gateway", 980, 1.0, 12.0)]
    summary = summarize_gateway_runs([*runs, run("direct", 1000, 1.0, 10.5)])
    assert summary["direct_output_tokens_per_s"] == pytest.approx(1000)
    assert summary["output_tps_ratio"] == pytest.approx(0.985)
    assert summary["added_ttft_p50_ms"] == pytest.approx(11.5 - 10.25)  # medians of the rounds' p50s


def test_gateway_summary_puts_the_gateways_cpu_per_output_token() -> None:
    """Runs measured with a CpuMeter: cores per process and path (seconds over the runs' wall
    time), and the gateway's CPU per 1,000 tokens it relayed; runs without a meter give none."""

    def run(via: str, cpu: dict[str, float], wall: float) -> dict[str, object]:
        return {"via": via, "output_tokens": 2000, "wall_s": wall, "ttft_ms": {"p50": 1.0}} | {
            "cpu_s": cpu,
            "cpu_wall_s": wall,
        }

    runs = [run("direct", {"engine": 18.0, "client": 0.5}, 10.0)]
    runs += [run("gateway", {"engine": 19.0, "gateway": 0.3, "client": 0.5}, 10.0)]
    runs += [run("gateway", {"engine": 21.0, "gateway": 0.5, "client": 0.7}, 10.0)]
    summary = summarize_gateway_runs(runs)
    assert summary["cpu_cores"]["direct"] == {"engine": pytest.approx(1.8), "client": pytest.approx(0.05)}
    assert summary["cpu_cores"]["gateway"]["engine"] == pytest.approx(2.0)
    assert summary["cpu_cores"]["gateway"]["gateway"] == pytest.approx(0.04)
    assert summary["gateway_cpu_ms_per_1k_tokens"] == pytest.approx(200.0)  # 0.8 s over 4,000 tokens
    unmetered = [{k: v for k, v in r.items() if not k.startswith("cpu")} for r in runs]
    assert "cpu_cores" not in summarize_gateway_runs(unmetered)


def test_cpu_meter_counts_a_process_tree_and_a_process_alone() -> None:
    """A spinning child shows in its parent's tree and not in the parent alone."""
    spin = [sys.executable, "-c", "while True: pass"]
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess; subprocess.run({spin!r})"])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        with CpuMeter({"tree": parent.pid}, own={"alone": parent.pid}) as meter:
            time.sleep(1.0)
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert meter.wall_s == pytest.approx(1.0, abs=0.5)
    assert meter.seconds["tree"] > 0.3  # the child spun for most of the second (less on a busy machine)
    assert meter.seconds["alone"] < 0.1  # the parent only waited
    assert meter.cores["tree"] == pytest.approx(meter.seconds["tree"] / meter.wall_s)


def test_idle_cpu_percent_is_the_trees_share_of_one_core() -> None:
    """A parent that sleeps while its child spins: about one core; a process that only sleeps: ~0."""
    spin = [sys.executable, "-c", "while True: pass"]
    code = f"import subprocess, time; subprocess.Popen({spin!r}); time.sleep(60)"
    busy_tree, sleeper = subprocess.Popen([sys.executable, "-c", code]), subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(busy_tree.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        busy, quiet = idle_cpu_percent(busy_tree.pid, seconds=1.0), idle_cpu_percent(sleeper.pid, seconds=0.5)
    finally:
        for child in psutil.Process(busy_tree.pid).children(recursive=True):
            child.kill()
        for process in (busy_tree, sleeper):
            process.kill()
            process.wait()
    assert 30 < busy < 130  # the spinning child, most of one core (less on a busy machine)
    assert 0 <= quiet < 10


def test_sampling_summary_compares_sampled_with_greedy_per_plugin_state() -> None:
    def run(plugin: str, decoding: str, tokens: int, wall: float) -> dict[str, object]:
        return {"plugin": plugin, "decoding": decoding, "output_tokens": tokens, "wall_s": wall}

    runs = [run("on", "greedy", 1000, 2.0), run("on", "sampled", 800, 2.0), run("on", "greedy", 1000, 2.0)]
    runs += [run("off", "greedy", 1000, 2.0), run("off", "sampled", 100, 2.0)]
    summary = summarize_sampling_runs(runs)
    assert summary["plugin_on"] == {"greedy_tps": 500, "sampled_tps": 400, "sampled_vs_greedy": 0.8}
    assert summary["plugin_off"]["sampled_vs_greedy"] == pytest.approx(0.1)
    assert summary["sampled_speedup"] == pytest.approx(8.0)
    assert summarize_sampling_runs(runs[:3])["sampled_speedup"] is None  # no plugin-off engine (reused engines)


def test_sampling_only_plan_and_report(tmp_path: Path) -> None:
    """`--sampling-only`: that section alone, and a report of just it (no sweep, gateway or transformers)."""
    plan = build_plan(parse_args(["--sampling-only", "--config", "engine_config/cpu.yaml", "--sampling-rounds", "2"]))
    assert (plan.only_sampling, plan.sampling_rounds, plan.ratio_concurrency) == (True, 2, 32)

    tokens = {("on", "greedy"): 600, ("on", "sampled"): 500, ("off", "greedy"): 620, ("off", "sampled"): 50}
    runs = [
        {"plugin": plugin, "decoding": decoding, "concurrency": c, "output_tokens": n, "wall_s": 1.0}
        for (plugin, decoding), n in tokens.items()
        for c in (1, 32)
    ]
    levels = [summarize_sampling_runs([r for r in runs if r["concurrency"] == c]) | {"concurrency": c} for c in (1, 32)]
    section = {
        "runs": runs,
        "levels": levels,
        "concurrency": 32,
        "prompt_len": 128,
        "output_len": 128,
        "sampling": {"temperature": 0.6, "top_p": 0.95},
        "plugin_off_engine": "started",
    }
    results = {
        "started": "2026-12-01T00:00:00",
        "config": "engine_config/cpu.yaml",
        "platform": "cpu",
        "machine": {"cpus": 2, "load_average": [0.1, 0.1, 0.1]},
        "reused_engines": False,
        "plan": dataclasses.asdict(plan),
        "models": {"r1-distill-tiny": {"token_check": {"runs": [], "problems": []}, "sampling_vs_greedy": section}},
        "problems": [],
        "command": "python scripts/bench.py --sampling-only",
    }
    write_report(results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Sampled vs greedy" in report and "Command: `python scripts/bench.py --sampling-only`" in report
    assert (
        "| r1-distill-tiny | temperature 0.6, top_p 0.95 | 32 | 600 | 500 | 83.3% | 620 | 50 | 8.1% | 10.0x |" in report
    )
    assert "## Side by side" not in report and "## Concurrency sweep" not in report
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["sampling_vs_greedy.png"]


@pytest.fixture(scope="module")
def fake_upstream_port() -> Iterator[int]:
    """benchmarks/fake_upstream.py: an instant FAKE engine (8 tokens per answer)."""
    with fake_upstream.running(tokens=8) as (port, _):
        yield port


def test_streaming_load_generator_against_the_fake_upstream(fake_upstream_port: int) -> None:
    requests = [ChatRequest("fake-upstream", [{"role": "user", "content": "hi"}], 8, prompt_tokens=16)] * 40
    result = asyncio.run(run_load(f"http://127.0.0.1:{fake_upstream_port}", requests, concurrency=8))
    summary = result.summary()
    assert (summary["requests"], summary["failures"], summary["prompt_token_mismatches"]) == (40, 0, 0)
    assert summary["output_tokens"] == 40 * 8 and summary["prompt_tokens"] == 40 * 16
    assert all(summary["ttft_ms"][p] is not None for p in ("p50", "p90", "p99"))
    assert len([g for r in result.records for g in r.gaps]) == 40 * 7  # 8 token chunks -> 7 gaps each
    # A request asking for more tokens than the stream carries is a failure, not a silent success.
    wrong = [ChatRequest("fake-upstream", [{"role": "user", "content": "hi"}], 9)]
    failed = asyncio.run(run_load(f"http://127.0.0.1:{fake_upstream_port}", wrong, concurrency=1)).summary()
    assert failed["failures"] == 1 and "asked for exactly 9" in failed["errors"][0]


def test_raw_client_reads_json_and_chunked_answers(fake_upstream_port: int) -> None:
    for stream in (False, True):
        body = {"model": "fake-upstream", "messages": [], "stream": stream}
        request = raw_post("127.0.0.1", fake_upstream_port, "/v1/chat/completions", body)
        summary = asyncio.run(
            run_raw_http("127.0.0.1", fake_upstream_port, request, concurrency=4, duration_s=0.5, warmup_s=0.1)
        ).summary()
        assert summary["failures"] == 0 and summary["requests"] > 10
        assert summary["latency_ms"]["p50"] is not None


@pytest.mark.engines
def test_quick_benchmark_end_to_end_against_the_stack(stack: Stack, tmp_path: Path) -> None:
    engines = [f"{name}={stack.engine_url(name)}" for name in stack.model_names()]
    before = {name: read_token_counters(stack.engine_url(name)) for name in stack.model_names()}
    argv = [sys.executable, "scripts/bench.py", "--quick", "--config", str(stack.config_path), "--out", str(tmp_path)]
    argv += [arg for item in engines for arg in ("--engine-url", item)] + ["--gateway-url", stack.gateway_url]
    # Tiny counts: one length pair, a two-level sweep, one gateway round.
    argv += ["--pairs", "128:256", "--sweep-pairs", "128:256", "--hf-pairs", "128:256", "--concurrency", "1,8"]
    argv += ["--ratio-concurrency", "8", "--gateway-rounds", "1", "--idle-s", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "[bench " in done.stdout  # progress lines

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["problems"] == []
    assert set(results["models"]) == set(stack.model_names())
    for name, row in results["models"].items():
        assert row["rss_idle_bytes"] > 100 * 2**20 and row["rss_peak_bytes"] >= row["rss_idle_bytes"] * 0.9
        assert row["idle_cpu_percent"] >= 0
        assert [s["concurrency"] for s in row["sweep"]] == [1, 8]
        for point in [*row["single_stream"], *row["sweep"]]:
            assert point["failures"] == 0 and point["output_tokens_per_s"] > 0
            assert point["ttft_ms"]["p50"] is not None and point["itl_ms"]["p99"] is not None
        assert row["gateway_vs_direct"]["output_tps_ratio"] > 0
        assert row["hf"]["pairs"][0]["output_tokens_per_s"] > 0
        assert row["hf"]["sampling"] == results["plan"]["sampling"] == "greedy"  # the same decoding on both sides
        assert row["vllm_vs_hf"]["ratio"] > 0
        # Sampled (the model's defaults) beside greedy; reused engines: no plugin-off engine.
        sampled = row["sampling_vs_greedy"]
        assert [level["concurrency"] for level in sampled["levels"]] == [1, 8]
        for level in sampled["levels"]:
            assert level["plugin_on"]["sampled_tps"] > 0 and level["plugin_on"]["greedy_tps"] > 0
            assert "plugin_off" not in level  # reused engines: no second engine to compare with
        assert {r["decoding"] for r in sampled["runs"]} == {"greedy", "sampled"}
        # The per-run counter deltas add up to what the engine's counters moved by over the run.
        runs = row["token_check"]["runs"]
        moved = read_token_counters(stack.engine_url(name)) - before[name]
        assert sum(r["engine"]["generation"] for r in runs) == pytest.approx(moved.generation, rel=0.01)
        assert sum(r["ours"]["generation"] for r in runs) == pytest.approx(moved.generation, rel=0.01)

    report = (tmp_path / "report.md").read_text()
    for heading in (
        "## Side by side",
        "## Concurrency sweep",
        "## Gateway vs direct",
        "## Sampled vs greedy",
        "## Token",
    ):
        assert heading in report
    for png in (
        "comparison.png",
        "throughput_vs_concurrency.png",
        "latency_vs_concurrency.png",
        "sampling_vs_greedy.png",
    ):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

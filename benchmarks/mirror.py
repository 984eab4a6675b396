"""What shadow mirroring costs the client's request: the primary's TTFT and output tok/s with
the mirror at fraction 1.0 against the mirror off, interleaved in one run on the test stack.

    r1q-bench-mirror                               # = make bench-mirror: 6 rounds of 16 streams (~15 min here)
    r1q-bench-mirror --quick                       # 2 rounds of 4 short streams, to check it works
    python -m benchmarks.mirror --report results/bench/mirror/results.json   # tables and plot again

It starts the test deployment (`server.py --config`: engine_config/test.yaml with its ports moved
to `--port-base`, its own votes database, the `assistant` name with `mirror_max_in_flight` equal
to the requests of a run, so that at 1.0 every request is copied even when the copies lag). Two
candidates are measured, each behind its own gateway in front of the same primary engine
(qwen-tiny, core 1):

- `engine`: the test stack as it is, copies go to the real r1-tiny engine (core 0). On this
  2-core machine the candidate's engine then takes the core that the gateway, the load
  generator and the engines' API servers otherwise use, so this measures the machine's
  contention as well as the gateway's cost.
- `fake`: a second gateway (`--gateway-only`) whose r1-tiny is benchmarks/fake_upstream.py (a
  FAKE engine answering instantly with `--output-tokens` tokens): every bit of the gateway's
  mirroring (the copy, its admission, capturing the primary's stream, parsing both answers,
  the pair's database write) without the candidate's compute, which in production runs on its
  own GPU.

Per candidate and round, one run with the mirror off and one at 1.0 (`PUT /v1/traffic/assistant`;
ABBA order, so a drift over the run hits both alike). Each run: `--streams` concurrent streams to
`model: assistant`, closed loop, starting at random moments over `--stagger-s` (the same moments
for both modes of a round), `--prompt-tokens` -> `--output-tokens` exactly (ignore_eos, greedy),
fresh words per request so the prefix cache cannot help; the copies in flight finish before the
next run. Checked per run: the primary engine's token counters agree with the usage the clients got;
at 1.0 every request became a saved pair, and the r1-tiny engine generated exactly the copies'
tokens (`engine`) or none (`fake`). Reported per candidate: per round TTFT p50 and output tok/s
off and at 1.0 and their ratio; the verdict uses the median of the per-round ratios (target:
within 5%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load import ChatRequest, LoadResult, run_load
from gateway.config import load_config
from gateway.process import exit_on_sigterm, running
from workload.engine_metrics import TokenCounters, cross_check, read_token_counters
from workload.prompts import PromptFactory

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench" / "mirror"
TARGET = 0.05  # the primary may lose at most 5% with the mirror at 1.0
Progress = Callable[[str], None]


def say(message: str) -> None:
    print(f"[bench-mirror {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_config(directory: Path, *, port_base: int, room: int, name: str = "stack") -> Path:
    """engine_config/test.yaml with ports at `port_base` (+101, +102), a private votes database
    (one per gateway: runtime settings are shared through it) and room for every copy
    (`mirror_max_in_flight` = room)."""
    config = load_config(ROOT / "engine_config" / "test.yaml").with_port_base(port_base)
    compare = config.gateway.compare.model_copy(update={"votes_db": str(directory / f"votes-{name}.sqlite3")})
    gateway = config.gateway.model_copy(update={"access_log": False, "compare": compare})
    [traffic] = config.traffic
    traffic = traffic.model_copy(
        update={"mirror_fraction": 0.0, "split": None, "store_prompts": False, "mirror_max_in_flight": room}
    )
    config = config.model_copy(update={"gateway": gateway, "traffic": [traffic]})
    return config.write(directory / f"mirror-bench-{name}.yaml")


@contextmanager
def test_stack(config_path: Path, log_dir: Path, progress: Progress) -> Iterator[str]:
    """`server.py --config` (two engines and the gateway, as `make run`) until /ready; stopped after."""
    url = f"http://127.0.0.1:{load_config(config_path).gateway.port}"
    argv = [sys.executable, str(ROOT / "server.py"), "--config", str(config_path), "--log-dir", str(log_dir)]
    progress(f"starting the test stack (engines and gateway, log {log_dir / 'server.log'})")
    with running(argv, url=f"{url}/ready", deadline_s=900, log=log_dir / "server.log", cwd=ROOT, grace_s=120) as stack:
        progress(f"stack ready: {url} (pid {stack.pid})")
        yield url


@contextmanager
def child(argv: list[str], log_path: Path, url: str, progress: Progress, what: str) -> Iterator[str]:
    """A helper process (the fake engine, the second gateway) until its /health answers; stopped after."""
    with running(argv, url=f"{url}/health", deadline_s=120, log=log_path, cwd=ROOT):
        progress(f"{what}: {url}")
        yield url


def set_mirror(gateway: str, fraction: float) -> None:
    response = httpx.put(f"{gateway}/v1/traffic/assistant", json={"mirror_fraction": fraction}, timeout=30)
    response.raise_for_status()


def mirror_counters(gateway: str) -> dict[str, Any]:
    [entry] = httpx.get(f"{gateway}/v1/traffic", timeout=30).json()["data"]
    return dict(entry["counters"])


def wait_for_copies(gateway: str, timeout_s: float = 600) -> None:
    end = time.monotonic() + timeout_s
    while mirror_counters(gateway)["mirror_in_flight"]:
        if time.monotonic() > end:
            raise RuntimeError("mirror copies still in flight after the run")
        time.sleep(0.2)


async def staggered(url: str, requests: list[ChatRequest], *, streams: int, stagger_s: float, seed: int) -> LoadResult:
    """`streams` closed-loop streams, each starting at its own moment within `stagger_s` (the same
    moments for the same `seed`, so both modes of a round see the same arrivals): a burst of
    simultaneous first requests would measure where they fall on the engine's step boundaries."""
    rng = random.Random(seed)
    starts = sorted(rng.uniform(0, stagger_s) for _ in range(streams))
    per = len(requests) // streams

    async def stream(delay: float, mine: list[ChatRequest]) -> LoadResult:
        await asyncio.sleep(delay)
        return await run_load(url, mine, concurrency=1)

    started = time.perf_counter()
    runs = await asyncio.gather(*(stream(d, requests[k * per : (k + 1) * per]) for k, d in enumerate(starts)))
    return LoadResult(streams, time.perf_counter() - started, [r for run in runs for r in run.records])


def one_run(
    gateway: str,
    engines: dict[str, str],
    factory: PromptFactory,
    args: argparse.Namespace,
    fraction: float,
    *,
    candidate: str,
    seed: int = 0,
) -> dict[str, Any]:
    set_mirror(gateway, fraction)
    count = args.streams * args.requests_per_stream
    requests = [
        ChatRequest("assistant", p.messages, args.output_tokens, p.prompt_tokens)
        for p in (factory.chat(args.prompt_tokens) for _ in range(count))
    ]
    before = {name: read_token_counters(url) for name, url in engines.items()}
    counters_before = mirror_counters(gateway)["mirror"]
    result = asyncio.run(staggered(gateway, requests, streams=args.streams, stagger_s=args.stagger_s, seed=seed))
    wait_for_copies(gateway)
    time.sleep(0.5)  # the pairs' database writes and the engines' metrics catch up
    after = {name: read_token_counters(url) for name, url in engines.items()}
    counters = {k: v - counters_before[k] for k, v in mirror_counters(gateway)["mirror"].items()}
    summary = result.summary()
    problems = cross_check(
        TokenCounters(summary["prompt_tokens"], summary["output_tokens"]),
        after["qwen-tiny"] - before["qwen-tiny"],
        tolerance=0.01,
    )
    copied = (after["r1-tiny"] - before["r1-tiny"]).generation
    expected = count * args.output_tokens if fraction >= 1 and candidate == "engine" else 0
    if copied != expected:
        problems.append(f"the r1-tiny engine generated {copied:.0f} tokens, expected {expected}")
    if fraction >= 1 and counters["saved"] != count:
        problems.append(f"{counters['saved']} pairs saved for {count} requests")
    problems += [f"{summary['failures']} requests failed: {summary['errors']}"] if summary["failures"] else []
    return {
        "mirror_fraction": fraction,
        "requests": count,
        "ttft_p50_ms": summary["ttft_ms"]["p50"],
        "ttft_p90_ms": summary["ttft_ms"]["p90"],
        "itl_p50_ms": summary["itl_ms"]["p50"],
        "output_tokens_per_s": summary["output_tokens_per_s"],
        "wall_s": summary["wall_s"],
        "mirror": counters,
        "candidate_engine_output_tokens": copied,
        "problems": problems,
    }


CANDIDATES = ("engine", "fake")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    work = out / "logs"  # configs and the pairs databases: not results (git ignores logs/)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("votes-*.sqlite3*"):
        stale.unlink()
    room = args.streams * args.requests_per_stream  # every request of a run may have its copy in flight
    config_path = write_config(work, port_base=args.port_base, room=room)
    config = load_config(config_path)
    engines = {m.name: m.engine.url for m in config.models if m.engine}
    qwen = config.find_model("qwen-tiny")
    assert qwen is not None and qwen.engine is not None
    factory = PromptFactory.from_dir(qwen.engine.tokenizer or qwen.engine.model)
    results: dict[str, Any] = {
        "plan": {k: v for k, v in vars(args).items() if k not in ("report",)},
        "load_before": list(os.getloadavg()),
        "rounds": {candidate: [] for candidate in args.candidates},
    }
    logs = out / "logs"
    with ExitStack() as stack:
        gateways = {"engine": stack.enter_context(test_stack(config_path, logs, say))}
        if "fake" in args.candidates:
            fake_port, fake_gateway_port = args.port_base + 50, args.port_base + 1
            tokens = str(args.output_tokens)
            fake = stack.enter_context(
                child(
                    [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(fake_port), "--tokens", tokens],
                    logs / "fake-upstream.log",
                    f"http://127.0.0.1:{fake_port}",
                    say,
                    "FAKE candidate engine",
                )
            )
            fake_config = write_config(work, port_base=args.port_base, room=room, name="fake")
            argv = [sys.executable, str(ROOT / "server.py"), "--gateway-only", "--config", str(fake_config)]
            argv += ["--port", str(fake_gateway_port), "--engine", f"qwen-tiny={engines['qwen-tiny']}"]
            argv += ["--engine", f"r1-tiny={fake}"]
            url = f"http://127.0.0.1:{fake_gateway_port}"
            gateways["fake"] = stack.enter_context(
                child(argv, logs / "gateway-fake.log", url, say, "gateway (fake r1)")
            )
        for candidate in args.candidates:
            say(f"warm-up ({candidate} candidate, mirror on)")
            warm = argparse.Namespace(**(vars(args) | {"requests_per_stream": 1}))
            one_run(gateways[candidate], engines, factory, warm, 1.0, candidate=candidate)
        for i in range(args.rounds):
            order = (0.0, 1.0) if i % 2 == 0 else (1.0, 0.0)  # ABBA
            for candidate in args.candidates:
                runs = {}
                for fraction in order:
                    row = one_run(
                        gateways[candidate], engines, factory, args, fraction, candidate=candidate, seed=1000 + i
                    )
                    runs["on" if fraction else "off"] = row
                    say(
                        f"round {i + 1}/{args.rounds} {candidate} candidate, mirror {'1.0' if fraction else 'off'}: "
                        f"TTFT p50 {row['ttft_p50_ms']:.1f} ms, {row['output_tokens_per_s']:.0f} output tok/s, "
                        f"pairs saved {row['mirror']['saved']}, dropped "
                        f"{row['mirror']['dropped_candidate_full'] + row['mirror']['dropped_mirror_limit']}"
                        + (f"  !! {'; '.join(row['problems'])}" if row["problems"] else "")
                    )
                results["rounds"][candidate].append(
                    {
                        "round": i + 1,
                        "order": ["off" if f == 0 else "on" for f in order],
                        **runs,
                        "ttft_ratio": runs["on"]["ttft_p50_ms"] / runs["off"]["ttft_p50_ms"],
                        "throughput_ratio": runs["on"]["output_tokens_per_s"] / runs["off"]["output_tokens_per_s"],
                    }
                )
    results["load_after"] = list(os.getloadavg())
    results["summary"] = {candidate: summarize(rounds) for candidate, rounds in results["rounds"].items()}
    return results


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = statistics.median(r["ttft_ratio"] for r in rounds)
    tput = statistics.median(r["throughput_ratio"] for r in rounds)
    problems = [p for r in rounds for mode in ("off", "on") for p in r[mode]["problems"]]
    return {
        "ttft_p50_ratio": ttft,
        "throughput_ratio": tput,
        "ttft_p50_ms": {m: statistics.median(r[m]["ttft_p50_ms"] for r in rounds) for m in ("off", "on")},
        "output_tokens_per_s": {
            m: statistics.median(r[m]["output_tokens_per_s"] for r in rounds) for m in ("off", "on")
        },
        "within_target": ttft <= 1 + TARGET and tput >= 1 - TARGET,  # faster is not a failure
        "problems": problems,
    }


WHAT = {
    "engine": "copies to the real r1-tiny engine (sharing this 2-core machine with everything else)",
    "fake": "copies to a FAKE r1-tiny answering instantly: the gateway's own mirroring cost",
}


def render(results: dict[str, Any]) -> str:
    plan = results["plan"]
    lines = [
        f"Mirror cost on the test stack: {plan['streams']} streams to `assistant` (qwen-tiny), "
        f"{plan['prompt_tokens']}->{plan['output_tokens']} tokens, "
        f"{plan['requests_per_stream']} request(s) per stream (started over {plan['stagger_s']} s), "
        f"{plan['rounds']} rounds (ABBA). "
        f"Load average before {results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}.",
    ]
    for candidate, rounds in results["rounds"].items():
        summary = results["summary"][candidate]
        lines += [
            "",
            f"**{candidate}**: {WHAT[candidate]}",
            "",
            "| round | order | TTFT p50 off | TTFT p50 at 1.0 | on/off | tok/s off | tok/s at 1.0 | on/off | pairs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rounds:
            off, on = r["off"], r["on"]
            lines.append(
                f"| {r['round']} | {', '.join(r['order'])} | {off['ttft_p50_ms']:.1f} ms | {on['ttft_p50_ms']:.1f} ms"
                f" | {100 * r['ttft_ratio']:.1f}% | {off['output_tokens_per_s']:.0f} | {on['output_tokens_per_s']:.0f}"
                f" | {100 * r['throughput_ratio']:.1f}% | {on['mirror']['saved']}/{on['requests']} |"
            )
        verdict = "within" if summary["within_target"] else "NOT within"
        lines += [
            "",
            f"Median over rounds: TTFT p50 at 1.0 = **{100 * summary['ttft_p50_ratio']:.1f}%** of off "
            f"({summary['ttft_p50_ms']['on']:.1f} vs {summary['ttft_p50_ms']['off']:.1f} ms); output tok/s at 1.0 = "
            f"**{100 * summary['throughput_ratio']:.1f}%** of off ({summary['output_tokens_per_s']['on']:.0f} vs "
            f"{summary['output_tokens_per_s']['off']:.0f}): {verdict} the 5% target.",
            "Checks: "
            + ("; ".join(summary["problems"]) if summary["problems"] else "token counters agree, every copy saved"),
        ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    candidates = list(results["rounds"])
    fig, axes = plt.subplots(len(candidates), 2, figsize=(10, 3.6 * len(candidates)), squeeze=False)
    for row, candidate in enumerate(candidates):
        rounds = results["rounds"][candidate]
        summary = results["summary"][candidate]
        x = [r["round"] for r in rounds]
        for ax, key, title, ratio in (
            (axes[row][0], "ttft_p50_ms", "primary TTFT p50 (ms)", summary["ttft_p50_ratio"]),
            (axes[row][1], "output_tokens_per_s", "primary output tok/s", summary["throughput_ratio"]),
        ):
            ax.plot(x, [r["off"][key] for r in rounds], "o-", label="mirror off", color="#4f46e5")
            ax.plot(x, [r["on"][key] for r in rounds], "s--", label="mirror at 1.0", color="#0d9488")
            ax.set_title(f"{candidate} candidate: {title}, at 1.0 = {100 * ratio:.1f}% of off", fontsize=10)
            ax.set_xlabel("round (ABBA order)")
            ax.set_xticks(x)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[row][0].legend()
    fig.suptitle("Shadow mirror at 1.0 vs off: what the client's request sees (median of per-round ratios)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = render(results)
    (out / "report.md").write_text(table + "\n")
    plot(results, out / "mirror.png")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 streams, 64->32 tokens")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument("--stagger-s", type=float, default=2.0, help="streams start at random moments over this")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("TEST_PORT_BASE", "8600")))
    parser.add_argument("--candidates", default="engine,fake", help="engine and/or fake (see above)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--report", help="only render an existing results.json")
    args = parser.parse_args(argv)
    args.candidates = [c for c in args.candidates.split(",") if c]
    if not args.candidates or set(args.candidates) - set(CANDIDATES):
        parser.error(f"--candidates: one or both of {', '.join(CANDIDATES)}")
    if args.quick:
        args.rounds, args.streams, args.requests_per_stream, args.stagger_s = 2, 4, 1, 0.5
        args.prompt_tokens, args.output_tokens = 64, 32
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        results = json.loads(Path(args.report).read_text())
        print(write(results, Path(args.report).parent))
        return 0
    results = measure(args)
    print(write(results, Path(args.out)))
    return 1 if any(summary["problems"] for summary in results["summary"].values()) else 0


def run() -> None:
    """The console entry point, `r1q-bench-mirror` (SIGTERM stops the stack and helpers it started)."""
    exit_on_sigterm()
    sys.exit(main())


if __name__ == "__main__":  # python -m benchmarks.mirror
    run()

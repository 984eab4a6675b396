"""The routing benchmark's summary, table and plot (benchmarks/routing_report.py) from made-up records;
the measuring part runs real engines and is not a test (scripts/bench_routing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import routing
from benchmarks.hit_ceiling import conversation_turns, history_hit_ceiling
from benchmarks.reply_tokens import agreeing
from benchmarks.routing import Plan, _locust_argv
from benchmarks.routing_report import plot, summarize, table, write

ROOT = Path(__file__).resolve().parent.parent


def record(workload: str, policy: str, round_: int, **values: Any) -> dict[str, Any]:
    return {
        "workload": workload,
        "policy": policy,
        "round": round_,
        "failures": 0,
        "token_check": "agree",
        "hit_rate": None,
        "ttft_p50_ms": None,
        "output_tokens_per_s": 0.0,
        "requests": 10,
        "requests_per_engine": [5.0, 5.0],
        "routing_decisions": {},
    } | values


RECORDS = [
    record("multi-turn", "least_loaded", 1, hit_rate=0.4, ttft_p50_ms=2000.0, output_tokens_per_s=50.0),
    record("multi-turn", "prefix", 1, hit_rate=0.8, ttft_p50_ms=1000.0, output_tokens_per_s=60.0),
    record("pair-128-256", "least_loaded", 1, output_tokens_per_s=90.0, steady_tokens_per_s=100.0),
    record("pair-128-256", "prefix", 1, output_tokens_per_s=100.0, steady_tokens_per_s=98.0),
    record("multi-turn", "prefix", 2, hit_rate=0.9, ttft_p50_ms=900.0, output_tokens_per_s=66.0),
    record("multi-turn", "least_loaded", 2, hit_rate=0.5, ttft_p50_ms=1500.0, output_tokens_per_s=60.0),
]


def test_ratios_are_per_round_then_the_median() -> None:
    summary = summarize(RECORDS)
    first, second = summary["rounds"]
    assert first["hit_rate_ratio"] == pytest.approx(2.0)
    assert first["ttft_p50_reduction"] == pytest.approx(0.5)
    assert first["no_prefix_tok_s_ratio"] == pytest.approx(0.98)
    assert second["hit_rate_ratio"] == pytest.approx(1.8) and "no_prefix_tok_s_ratio" not in second
    assert summary["median"]["hit_rate_ratio"] == pytest.approx(1.9)
    assert summary["median"]["ttft_p50_reduction"] == pytest.approx((0.5 + 0.4) / 2)
    assert summary["median"]["no_prefix_tok_s_ratio"] == pytest.approx(0.98)


def test_throughput_compares_like_with_like() -> None:
    """The engines' steady-window figure when both runs have it, else Locust's whole-run figure for
    both (records of the first full run): never one of each."""
    both = [record("pair-128-256", "least_loaded", 1, output_tokens_per_s=100.0, steady_tokens_per_s=80.0)]
    both.append(record("pair-128-256", "prefix", 1, output_tokens_per_s=90.0, steady_tokens_per_s=84.0))
    assert summarize(both)["rounds"][0]["no_prefix_tok_s_ratio"] == pytest.approx(84 / 80)
    one = [both[0], record("pair-128-256", "prefix", 1, output_tokens_per_s=90.0)]
    assert summarize(one)["rounds"][0]["no_prefix_tok_s_ratio"] == pytest.approx(0.9)


def test_table_and_files(tmp_path: Path) -> None:
    results = {"date": "today", "runs": RECORDS, "summary": summarize(RECORDS)}
    text = table(results)
    assert "| 1 | 40.0% / 80.0% | 2.00x | 2,000 / 1,000 ms | 50% | 1.20x | 100.0 / 98.0 | 98.0% |" in text
    assert "**1.90x**" in text
    write(results, tmp_path)
    assert (tmp_path / "routing.png").stat().st_size > 10_000
    assert "2.00x" in (tmp_path / "report.md").read_text()


def test_report_lists_each_run_with_the_engines_time_split(tmp_path: Path) -> None:
    measured = {"requests": 12, "requests_per_engine": [7.0, 5.0], "routing_decisions": {"cache_hit": 11}}
    runs = [
        record("multi-turn", "least_loaded", 1, hit_rate=0.4, ttft_p50_ms=2000.0, **measured),
        record(
            "multi-turn",
            "prefix",
            1,
            hit_rate=0.8,
            ttft_p50_ms=1000.0,
            engine_queue_s_mean=1.25,
            engine_prefill_s_mean=3.5,
            preemptions=2.0,
            **measured,
        ),
    ]
    write({"date": "today", "runs": runs, "summary": summarize(runs)}, tmp_path)
    report = (tmp_path / "report.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("- round 1, multi-turn")]
    assert len(lines) == 2
    assert "per engine [7, 5]" in lines[0] and "engine queue" not in lines[0]  # recorded before the split was
    assert lines[1].endswith("engine queue 1.25 s + prefill 3.50 s a request, 2 preemptions")


def test_table_has_columns_only_for_the_workloads_that_ran() -> None:
    multi_turn = [r for r in RECORDS if r["workload"] == "multi-turn"]  # as with --workloads multi-turn
    text = table({"summary": summarize(multi_turn)})
    assert "no shared prefix" not in text and "n/a" not in text
    assert "| 2 | 50.0% / 90.0% | 1.80x | 1,500 / 900 ms | 40% | 1.10x |" in text
    pair = [r for r in RECORDS if r["workload"] == "pair-128-256"]
    text = table({"summary": summarize(pair)})
    assert text.splitlines()[0] == "| round | no shared prefix: tok/s least_loaded / prefix | ratio (goal >= 97%) |"
    assert "| 1 | 100.0 / 98.0 | 98.0% |" in text and "| **median** | | **98.0%** |" in text


def test_plot_draws_only_the_workloads_that_ran(tmp_path: Path) -> None:
    multi_turn = [r for r in RECORDS if r["workload"] == "multi-turn"]  # as with --workloads multi-turn
    titles = plot({"summary": summarize(multi_turn)}, tmp_path / "one.png")
    assert titles == ["prefix-cache hit rate (multi-turn)", "TTFT p50, ms (multi-turn)"]
    assert len(plot({"summary": summarize(RECORDS)}, tmp_path / "both.png")) == 3


def test_report_states_the_ceiling_and_the_ratio_it_allows(tmp_path: Path) -> None:
    results = {
        "date": "today",
        "runs": RECORDS,
        "summary": summarize(RECORDS),
        "hit_rate_ceiling": {"hit_rate": 0.9, "requests": 90, "users": 12},
    }
    results["engines"] = {"model": "m", "replicas": 3, "cores": [0, 1, 0]}
    write(results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Routing benchmark, today: 3 replicas on cores [0, 1, 0]\n")
    # least_loaded's hit rates in RECORDS: 40% and 50%, median 45%: no routing beats 0.9 / 0.45.
    assert "got through: 90 requests, their median, over 12 users): 90.0%, so at most 2.00x over" in report
    assert "least_loaded's median 45.0%" in report
    assert "ceiling" not in table(results)


def test_report_says_how_the_load_was_offered(tmp_path: Path) -> None:
    """A closed loop sends the faster policy more requests; a constant arrival rate sends both the
    same: the report names which, with the request rates each policy actually got."""
    paced = [r | {"requests_per_s": 0.2 if r["policy"] == "prefix" else 0.19} for r in RECORDS]
    results = {"date": "today", "runs": paced, "summary": summarize(paced)}
    results["plan"] = {"users": 12, "arrival_rate": 0.2, "think_time_s": 10.0}
    write(results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "Multi-turn load: 12 users, a constant 0.2 requests/s (Locust `--shape arrival`, no think time)" in report
    assert "requests/s achieved (median over rounds): least_loaded 0.190, prefix 0.200." in report
    results["plan"] = {"users": 12, "arrival_rate": None, "think_time_s": 10.0}
    write(results, tmp_path)
    assert "12 users, a closed loop, 10 s think time between a user's turns" in (tmp_path / "report.md").read_text()


def test_arrival_rate_paces_multi_turn_only(tmp_path: Path) -> None:
    """With an arrival rate, multi-turn runs as Locust's arrival shape with no think time (which
    would otherwise be added to the pacing); the warm-up and no-shared-prefix runs are unchanged."""
    plan = Plan(arrival_rate=0.25)
    multi = _locust_argv(
        "http://gw", tmp_path, "m", "multi-turn", seconds=60, users=12, seed=1, plan=plan, out=tmp_path
    )
    assert multi[multi.index("--think-time") + 1] == "0.0"
    assert multi[multi.index("--shape") :][:4] == ["--shape", "arrival", "--arrival-rate", "0.25"]
    closed = _locust_argv(
        "http://gw", tmp_path, "m", "multi-turn", seconds=60, users=12, seed=1, plan=Plan(), out=tmp_path
    )
    assert closed[closed.index("--think-time") + 1] == "10.0" and "--shape" not in closed
    pair = _locust_argv(
        "http://gw", tmp_path, "m", "pair-128-256", seconds=60, users=8, seed=1, plan=plan, out=tmp_path
    )
    assert pair[pair.index("--think-time") + 1] == "10.0" and "--shape" not in pair


def test_history_ceiling_counts_whole_blocks_of_the_history() -> None:
    smollm2 = str(ROOT / ".cache" / "models" / "smollm2-135m-instruct")
    shape = {"turn_tokens": 128, "reply_tokens": 64, "system_prompt_tokens": 256}
    twelve = history_hit_ceiling(smollm2, lengths=[12] * 3, **shape)
    # Per turn about 200 new tokens plus the partial last block are never cached, of prompts
    # growing by 192 tokens a turn from about 400: 80-90% over 12 turns.
    assert 0.8 < twelve < 0.9
    # Shorter conversations are more first turns (only the system prompt cached): lower.
    assert history_hit_ceiling(smollm2, lengths=[3] * 3, **shape) < twelve - 0.1
    assert history_hit_ceiling(smollm2, lengths=[12, 12, 3], **shape) < twelve
    # Larger blocks leave a larger partial block uncached.
    assert history_hit_ceiling(smollm2, lengths=[12] * 3, block_tokens=512, **shape) < twelve - 0.05


def test_conversation_turns_share_the_requests_out_and_cut_them_into_conversations() -> None:
    assert conversation_turns(requests=72, users=12, turns=12) == [6] * 12
    # 114 over 12: six users got 10 turns, six 9.
    assert conversation_turns(requests=114, users=12, turns=12) == [10] * 6 + [9] * 6
    # 15 turns a user: one whole conversation and three turns of the next.
    assert conversation_turns(requests=30, users=2, turns=12) == [12, 3, 12, 3]
    assert conversation_turns(requests=24, users=2, turns=12) == [12, 12]
    assert conversation_turns(requests=1, users=3, turns=12) == [1]


def test_ceiling_counts_the_turns_the_prefix_runs_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs end conversations part way (a closed loop at whatever turn its latency allowed, a paced
    one after rate x seconds / users turns): the ceiling is computed over the prefix runs' median
    request count, not the plan's whole conversations."""
    seen: list[list[int]] = []

    def counted(model_dir: str, *, lengths: list[int], **shape: int) -> float:
        seen.append(list(lengths))
        return 0.5

    monkeypatch.setattr(routing, "history_hit_ceiling", counted)
    runs = [
        {"workload": "multi-turn", "policy": "prefix", "requests": 70},
        {"workload": "multi-turn", "policy": "prefix", "requests": 72},
        {"workload": "multi-turn", "policy": "prefix", "requests": 90},
        {"workload": "multi-turn", "policy": "least_loaded", "requests": 20},  # not the prefix runs
        {"workload": "pair-128-256", "policy": "prefix", "requests": 500},  # not multi-turn
    ]
    best = routing.ceiling(Plan(users=12, turns=12), "m", runs)
    assert seen == [[6] * 12] and best == {"hit_rate": 0.5, "requests": 72, "users": 12}
    assert routing.ceiling(Plan(users=12, turns=4), "m", runs) is not None and seen[-1] == [4, 2] * 12
    assert routing.ceiling(Plan(), "m", [r for r in runs if r["workload"] != "multi-turn"]) is None
    assert routing.ceiling(Plan(), "m", [{"workload": "multi-turn", "policy": "prefix", "requests": 0}]) is None


def test_reply_agreement_counts_the_generated_ids_the_next_prompt_repeats() -> None:
    prompt, reply = [1, 2, 3], [10, 11, 12, 13]
    assert agreeing([1, 2, 3, 10, 11, 12, 13, 2, 9], prompt, reply) == 4  # all of it, then the template
    assert agreeing([1, 2, 3, 10, 11, 99, 13], prompt, reply) == 2  # re-tokenized differently from the third id
    assert agreeing([1, 2, 3, 77], prompt, reply) == 0
    assert agreeing([1, 2, 3], prompt, reply) == 0  # shorter than the prompt: nothing of the reply

"""The report built end to end from files, without engines: decision/build.py and its sections.

Inputs here are SYNTHETIC or DOCTORED, and named as such: evaluation records written by the test
(not model answers) and copies of the committed CPU bench run with chosen numbers changed, so
each rule and verdict can be made to fire. tests/test_report_run.py builds one from a real run.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision.build import ReportInputs, build_report, make_context, write_report
from evaluation.records import RecordStore
from evaluation.summary import summarize
from gateway.database import open_database
from gateway.votes import ComparisonRecord, Outcome, VoteStore

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_BENCH = ROOT / "results" / "bench" / "full-cpu" / "results.json"
MODELS = ("r1-tiny", "qwen-tiny")


def synthetic_eval(directory: Path, right: dict[str, dict[str, int]], items: int = 20) -> None:
    """Records where model m is right on the first right[suite][m] items of each suite."""
    store = RecordStore(directory / "records.jsonl")
    for suite, per_model in right.items():
        for i in range(items):
            for model in MODELS:
                correct = i < per_model[model]
                store.append(
                    {
                        "model": model, "suite": suite, "item_id": f"{suite}/{i}", "sample": 0, "task": suite,
                        "error": None, "correct": correct, "messages": [{"role": "user", "content": f"Q{i}"}],
                        "answer": f"{model} says {'RIGHT' if correct else 'WRONG'} {i}", "reasoning": f"thinking {i}",
                        "extracted": str(i), "reference": i, "completion_tokens": 10, "latency_s": 1.0,
                        "finish_reason": "stop",
                    }
                )  # fmt: skip
    run = {"models": list(MODELS), "suites": list(right), "limit": items, "samples": 1, "seed": 1,
           "started": "2026-11-30T00:00:00+00:00", "finished": "2026-11-30T00:01:00+00:00", "command": ["synthetic"],
           "model_info": {"r1-tiny": {"aliases": ["r1"]}, "qwen-tiny": {"aliases": ["qwen"]}}}  # fmt: skip
    summary = summarize(store.load(), run)
    (directory / "summary.json").write_text(json.dumps(summary))


def doctored_bench(directory: Path, *, speedup: float = 1.0) -> None:
    """The committed CPU run with the candidate's throughput multiplied by `speedup`."""
    results = json.loads(COMMITTED_BENCH.read_text())
    row = results["models"]["r1-tiny"]
    for point in [*row["single_stream"], *row["sweep"]]:
        point["output_tokens_per_s"] *= speedup
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results))


def rules_file(tmp_path: Path, **changes: Any) -> Path:
    rules = yaml.safe_load((ROOT / "decision" / "rules.yaml").read_text())
    rules.update(changes)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def build(tmp_path: Path, **inputs: Any) -> tuple[dict[str, Any], str, str, Path]:
    defaults: dict[str, Any] = {"results_dir": tmp_path / "results", "votes": tmp_path / "no-votes.sqlite3",
                                "root": tmp_path}  # fmt: skip
    if "rules" not in inputs:
        defaults["rules"] = rules_file(tmp_path)
    ctx = make_context(ReportInputs(**(defaults | inputs)))
    report, _ = build_report(ctx)
    out = tmp_path / "out"
    paths = write_report(report, ctx, out)
    return json.loads(paths["json"].read_text()), paths["markdown"].read_text(), paths["html"].read_text(), out


def row(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(r for r in data["summary"] if r["dimension"].startswith(prefix))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    doctored_bench(tmp_path / "results" / "bench" / "doctored")
    synthetic_eval(tmp_path / "results" / "eval" / "synthetic", {"math": {"r1-tiny": 16, "qwen-tiny": 4},
                                                                 "code": {"r1-tiny": 15, "qwen-tiny": 5}})  # fmt: skip
    return tmp_path / "results"


def test_a_clear_quality_gain_replaces_and_examples_are_chosen_by_rule(tmp_path: Path, results: Path) -> None:
    data, markdown, html, out = build(tmp_path)
    assert data["decision"]["action"] == "replace" and data["decision"]["rule"] == "weighted quality"
    assert row(data, "quality: math")["verdict"] == "r1-tiny ahead"
    assert row(data, "quality, weighted")["numbers"]["low"] > 0
    # Items 4..15 of math: only r1 right; none where only qwen is. The rule takes the first two.
    assert "math / math/4: only r1-tiny right" in markdown and "math / math/5: only r1-tiny right" in markdown
    assert "math/6:" not in markdown and "only qwen-tiny right" not in markdown
    assert "r1-tiny says RIGHT 4" in html and "qwen-tiny says WRONG 4" in html
    assert re.search(r'<details class="reasoning"><summary>reasoning \(\d+ characters\)</summary><pre>thinking 4', html)
    examples = json.loads((out / "sources" / "eval-examples.json").read_text())
    assert {(r["item_id"], r["model"]) for r in examples} >= {("math/4", "r1-tiny"), ("math/4", "qwen-tiny")}
    # The stand-in notice comes first: the committed bench run is a CPU run of random models.
    assert markdown.index("Stand-in models: these numbers are not the answer") < markdown.index("## 1. Deployment")


def test_memory_budget_and_latency_slo_come_before_quality(tmp_path: Path, results: Path) -> None:
    data, _, _, _ = build(tmp_path, rules=rules_file(tmp_path, memory_budget_gib=1))
    assert (data["decision"]["action"], data["decision"]["rule"]) == ("keep", "memory budget")
    assert "at least 4.23 GiB" in data["decision"]["would_change"][0]
    slo = {"concurrency": 32, "prompt_tokens": 128, "output_tokens": 256, "ttft_p90_ms": 100, "itl_p90_ms": None}
    data, _, _, _ = build(tmp_path, rules=rules_file(tmp_path, latency_slo=slo))
    assert (data["decision"]["action"], data["decision"]["rule"]) == ("keep", "latency SLO")
    assert "TTFT p90 469 ms > 100 ms" in data["decision"]["reason"]


def test_no_detectable_difference_keeps_with_what_would_change_it(tmp_path: Path) -> None:
    doctored_bench(tmp_path / "results" / "bench" / "doctored")
    synthetic_eval(tmp_path / "results" / "eval" / "close", {"math": {"r1-tiny": 11, "qwen-tiny": 9}})
    data, markdown, _, _ = build(tmp_path)
    math_row = row(data, "quality: math")
    assert (
        math_row["verdict"] == "no detectable difference"
        and math_row["numbers"]["low"] < 0 < math_row["numbers"]["high"]
    )
    assert re.fullmatch(r"about \d+ items \(\d+ more\)", math_row["to_resolve"])
    assert (data["decision"]["action"], data["decision"]["rule"]) == ("keep", "when undecided")
    assert any("x the items per suite" in change for change in data["decision"]["would_change"])
    assert "**Keep qwen-tiny.**" in markdown


def test_speed_verdict_says_ahead_only_when_the_interval_excludes_one(tmp_path: Path) -> None:
    doctored_bench(tmp_path / "results" / "bench" / "fast", speedup=2.0)
    data, _, _, _ = build(tmp_path)
    assert row(data, "output tok/s, one request at a time")["verdict"] == "r1-tiny ahead"
    assert row(data, "output tok/s under load")["numbers"]["low"] > 1
    # The committed run as it is: the intervals cover 1.
    (tmp_path / "results" / "bench" / "fast" / "results.json").write_text(COMMITTED_BENCH.read_text())
    data, _, _, _ = build(tmp_path)
    assert row(data, "output tok/s under load")["verdict"] == "no detectable difference"


def test_missing_inputs_never_become_numbers(tmp_path: Path) -> None:
    data, markdown, html, _ = build(tmp_path, config=ROOT / "engine_config" / "test.yaml", gpu=None)
    for section, command in (("resources", "`make bench`"), ("speed", "`make bench`"), ("quality", "`make eval`"),
                             ("preference", "`make run`"), ("preference", "traffic mirror")):  # fmt: skip
        assert any(m["section"] == section and command in m["command"] for m in data["missing"]), section
    assert "GPU=H100" in markdown  # the memory plan names its command too
    assert all(r["verdict"] == "not measured" for r in data["summary"]), data["summary"]
    assert "Produce it with <code>make bench</code>" in html
    assert data["decision"]["rule"] == "when undecided"
    assert any("skipped" in step for step in data["decision"]["trail"])


def test_votes_and_the_gpu_plan(tmp_path: Path, results: Path) -> None:
    store = VoteStore(open_database(tmp_path / "votes.sqlite3"))
    for i in range(41):  # r1 wins 30 of the first 40, and its answers are longer in most votes; one tie
        lengths = {"r1-tiny": 300 + 7 * i, "qwen-tiny": 200 + 11 * (i % 9)}
        models = {m: Outcome(answer="x" * n, answer_chars=n) for m, n in lengths.items()}
        store.save_comparison(ComparisonRecord(id=f"c{i}", source="compare", models=models))
        outcome = "tie" if i == 40 else "left" if i % 4 else "right"
        store.add_vote(f"c{i}", left="r1-tiny", right="qwen-tiny", outcome=outcome)
    data, markdown, _, out = build(tmp_path, votes=tmp_path / "votes.sqlite3", gpu="H100", gpu_hour_usd=2.0)
    preference = row(data, "preference: side-by-side")
    assert preference["numbers"]["kind"] == "length-controlled"
    assert preference["sample"] == "40 decisive of 41 votes"
    assert len(json.loads((out / "sources" / "votes.json").read_text())) == 41
    assert row(data, "preference: live")["verdict"] == "not measured"  # none of these votes were on live pairs
    # Raw, r1 wins 30 of 40 (qwen's share: 25% [14%, 40%]); but its answers were longer in most votes, and with
    # length in the model the interval covers 50%: no detectable preference at equal length.
    assert "| qwen-tiny vs r1-tiny | 41 | 10 / 30 | 1 | 0 | 25.0% [14.2%, 40.2%] |" in markdown
    assert preference["verdict"] == "no detectable difference" and preference["numbers"]["low"] < 0.5
    kv = row(data, "KV cache tokens on H100")
    assert kv["candidate"] == "1,160,464" and kv["incumbent"] == "1,176,736"  # the README's hand-checked plan
    assert "$ per 1M output tokens at $2/h" in markdown


def test_links_point_at_copies_inside_the_report(tmp_path: Path, results: Path) -> None:
    _, markdown, html, out = build(tmp_path)
    hrefs = set(re.findall(r"\]\((sources/[^)]+)\)", markdown)) | set(re.findall(r'href="(sources/[^"]+)"', html))
    assert hrefs and all((out / href).is_file() for href in hrefs), hrefs
    assert "sources/bench/doctored/results.json" in hrefs
    assert 'src="http' not in html and "<script" not in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3 and all(len(i) > 1000 for i in images)


def test_cli_refuses_bad_rules_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.report import main  # noqa: PLC0415

    bad = tmp_path / "rules.yaml"
    bad.write_text("candidate: gpt-9\n")
    assert main(["--rules", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "candidate 'gpt-9' is none of the measured models" in capsys.readouterr().err


def test_copy_is_unchanged_by_building(tmp_path: Path, results: Path) -> None:
    before = copy.deepcopy(json.loads((results / "bench" / "doctored" / "results.json").read_text()))
    build(tmp_path)
    assert json.loads((results / "bench" / "doctored" / "results.json").read_text()) == before

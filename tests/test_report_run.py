"""`make report` from a small REAL run on the test stack, and its HTML in a real browser.

One module-scoped run against the session's engines (reused, so no engine starts here):
`scripts/bench.py --quick` with tiny counts (one 128->32 pair, 1 and 4 streams), `scripts/eval.py`
on 3 math and 3 smoke items at 32 tokens, one real comparison and vote through the gateway's
API, then `scripts/report.py`. About 2-3 minutes on a 2-core machine, most of it the bench's
transformers baseline and the eval requests.

The test models have random weights and score 0 everywhere, so no item has exactly one model
right; to check the example rule with real answers, one test flips a single verdict in a copy of
the real records (DOCTORED, and named so) and rebuilds the report from that copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from evaluation.records import RecordStore
from evaluation.summary import summarize
from gateway.report_page import latest_report
from tests.conftest import ROOT, Stack, extra_gateway

ARTIFACTS = ROOT / "test-artifacts"
SECTIONS = ["1. Deployment", "2. Resources", "3. Speed", "4. Quality", "5. Preference", "6. Summary",
            "7. Recommendation"]  # fmt: skip


@dataclass
class RealRun:
    results: Path  # results/{bench,eval}/... of this run
    report: Path  # the report directory
    rules: Path
    votes: Path

    def data(self) -> dict[str, Any]:
        return dict(json.loads((self.report / "report.json").read_text()))


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _report(results: Path, rules: Path, votes: Path, out: Path) -> str:
    argv = [sys.executable, "scripts/report.py", "--results", str(results), "--rules", str(rules)]
    argv += ["--votes", str(votes), "--gpu", "H100", "--gpu-hour-usd", "2", "--out", str(out)]
    return _run(argv, timeout=120)


@pytest.fixture(scope="module")
def real_run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    base = tmp_path_factory.mktemp("report-run")
    results = base / "results"
    bench = [sys.executable, "scripts/bench.py", "--quick", "--config", str(stack.config_path)]
    bench += ["--out", str(results / "bench" / "tiny"), "--gateway-url", stack.gateway_url]
    for name in stack.model_names():
        bench += ["--engine-url", f"{name}={stack.engine_url(name)}"]
    bench += ["--pairs", "128:32", "--sweep-pairs", "128:32", "--hf-pairs", "128:32", "--concurrency", "1,4"]
    bench += ["--ratio-concurrency", "4", "--gateway-rounds", "1", "--idle-s", "1"]
    _run(bench, timeout=900)
    evaluation = [sys.executable, "scripts/eval.py", "--gateway", stack.gateway_url, "--suites", "math,smoke"]
    evaluation += ["--limit", "3", "--max-tokens", "32", "--concurrency", "4", "--no-progress"]
    _run([*evaluation, "--out", str(results / "eval" / "tiny")], timeout=900)

    # One real side-by-side comparison and vote, through the gateway's API, into the stack's votes file.
    compared = httpx.post(f"{stack.gateway_url}/v1/compare", json={"prompt": "Say hi.", "max_tokens": 16}, timeout=300)
    assert compared.status_code == 200, compared.text
    left, right = stack.model_names()
    vote = {"comparison_id": compared.json()["id"], "left": left, "right": right, "vote": "left"}
    voted = httpx.post(f"{stack.gateway_url}/v1/compare/votes", json=vote, timeout=30)
    assert voted.status_code == 200, voted.text

    rules = yaml.safe_load((ROOT / "decision" / "rules.yaml").read_text())
    rules["latency_slo"] = {"concurrency": 4, "prompt_tokens": 128, "output_tokens": 32, "ttft_p90_ms": 60000,
                            "itl_p90_ms": 60000}  # fmt: skip
    rules["quality_weights"] = {"math": 1.0, "code": 0.5}  # code was not run: left out, and the report says so
    rules_path = base / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules))
    votes = Path(stack.config.gateway.compare.votes_db)
    out = base / "report" / "20261130T000000Z"
    stdout = _report(results, rules_path, votes, out)
    assert "[report] decision:" in stdout and "done in" in stdout
    return RealRun(results, out, rules_path, votes)


@pytest.mark.engines
def test_report_from_a_real_run_has_every_section_and_honest_verdicts(real_run: RealRun) -> None:
    markdown = (real_run.report / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    assert headings == ["The answer under the rules", *SECTIONS]
    # The plain-words notice comes before anything else.
    assert markdown.index("Stand-in models: these numbers are not the answer") < markdown.index("## The answer")
    assert "`r1-tiny` is random weights" in markdown and "`qwen-tiny` is random weights" in markdown

    data = real_run.data()
    assert data["stand_in_models"] is True and (data["candidate"], data["incumbent"]) == ("r1-tiny", "qwen-tiny")
    rows = {r["dimension"]: r for r in data["summary"]}
    # Random models score 0 on every item: equal, and the intervals say so.
    math_row = next(r for d, r in rows.items() if d.startswith("quality: math"))
    assert math_row["verdict"] == "no detectable difference" and math_row["sample"] == "3 items"
    assert math_row["numbers"]["low"] < 0 < math_row["numbers"]["high"]
    assert math_row["to_resolve"] == "the models never disagreed: no gap to resolve"
    weighted = rows["quality, weighted by the rules (math 1)"]
    assert weighted["verdict"] == "no detectable difference" and "would be detected" in weighted["to_resolve"]
    # Every verdict follows its interval: "ahead" exactly when the interval excludes no difference.
    for row in data["summary"]:
        numbers = row["numbers"]
        if numbers.get("low") is None or numbers.get("high") is None:
            assert not row["verdict"].endswith(" ahead"), row
            continue
        null = 1.0 if "ratio" in numbers else numbers.get("null", 0.0)
        excludes = numbers["low"] > null or numbers["high"] < null
        assert row["verdict"].endswith(" ahead") == excludes, row
        if not excludes:
            assert row["verdict"] == "no detectable difference" and row["sample"] and row["to_resolve"], row
    # Speed from the real bench: the measured pair, the canonical ones named as not measured.
    assert re.search(r"\| 128->32 \| r1-tiny \(candidate\) \| \d+\.\d \|", markdown)
    assert any("128->256, 256->512, 512->1024" in m["what"] for m in data["missing"])
    assert "not measured: the bench reused running engines" in markdown  # no cold start: engines were reused
    # The vote through the API reached the report; live pairs are named as not there yet.
    assert re.search(r"\| qwen-tiny vs r1-tiny \| \d+ \|", markdown)
    assert any(m["section"] == "preference" and "/v1/traffic/assistant" in m["command"] for m in data["missing"])
    # Rules: the SLO was checked on the real sweep point, and the undecided default decided.
    trail = data["decision"]["trail"]
    assert any(step.startswith("latency SLO: r1-tiny meets it at 4 streams") for step in trail), trail
    assert data["decision"]["rule"] == "when undecided" and data["decision"]["action"] == "keep"
    # Examples: the rule ran on the real records and found nothing to show.
    assert "`math`: no item where exactly one model was right (3 items answered by both)." in markdown
    for png in ("speed.png", "quality.png", "summary.png"):
        assert (real_run.report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (real_run.report / "sources" / "bench" / "tiny" / "results.json").is_file()


@pytest.mark.engines
def test_examples_are_chosen_by_rule_from_real_answers(real_run: RealRun, tmp_path: Path) -> None:
    """A DOCTORED copy of the real eval run: r1-tiny's verdict on one math item flipped to right."""
    results = tmp_path / "results"
    shutil.copytree(real_run.results, results)
    directory = results / "eval" / "tiny"
    records = RecordStore(directory / "records.jsonl").load()
    first_item = sorted(r["item_id"] for r in records if r["suite"] == "math")[0]
    for record in records:
        if record["suite"] == "math" and record["item_id"] == first_item and record["model"] == "r1-tiny":
            record["correct"] = True
    (directory / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = json.loads((directory / "run.json").read_text())
    (directory / "summary.json").write_text(json.dumps(summarize(records, run)))
    out = tmp_path / "report"
    _report(results, real_run.rules, real_run.votes, out)
    html = (out / "report.html").read_text()
    assert f"math / {first_item}: only r1-tiny right" in html
    real = {r["model"]: r for r in records if r["suite"] == "math" and r["item_id"] == first_item}
    for model, record in real.items():
        shown = (record["answer"] or "(empty answer)")[:200]
        assert _escaped(shown) in html, model
    if real["r1-tiny"]["reasoning"]:  # R1's reasoning is folded, not shown inline
        assert '<details class="reasoning"><summary>reasoning' in html
    examples = json.loads((out / "sources" / "eval-examples.json").read_text())
    assert {r["model"] for r in examples} == {"r1-tiny", "qwen-tiny"}


def _escaped(text: str) -> str:
    import html  # noqa: PLC0415

    return html.escape(text)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    from tests.test_web_page import CHROMIUM, CHROMIUM_ARGS  # noqa: PLC0415

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900}, timeout=300_000,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def _check_page(page: Any, errors: list[str]) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    expect(page.locator("h1")).to_have_text("Replace Qwen with R1? The measurements, side by side")
    expect(page.locator(".notice")).to_contain_text("Stand-in models")
    assert page.locator("h2").all_inner_texts() == ["The answer under the rules", *SECTIONS]
    sizes = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(sizes) >= 3 and all(width > 300 for width in sizes), sizes
    expect(page.locator("#summary table")).to_contain_text("no detectable difference")
    assert not errors, errors


@pytest.mark.engines
def test_report_html_opens_in_a_real_browser_from_disk_and_from_the_gateway(
    real_run: RealRun, stack: Stack, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((real_run.report / "report.html").as_uri())
    _check_page(page, errors)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-page.png"))
    # A source link opens the copy beside the report.
    with page.expect_navigation():
        page.locator("a[href='sources/bench/tiny/results.json']").first.click()
    assert json.loads(page.inner_text("body"))["plan"]["mode"] == "quick"
    page.close()

    # The committed report (make report on the committed CPU results) opens the same way; its
    # screenshots are the README's (docs/report-*.png are copies of these).
    committed = latest_report(ROOT / "results" / "report")
    assert committed is not None, "no committed report under results/report"
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((committed / "report.html").as_uri())
    _check_page(page, errors)
    page.screenshot(path=str(ARTIFACTS / "report-committed-top.png"))
    page.locator("#summary").screenshot(path=str(ARTIFACTS / "report-committed-summary.png"))
    page.close()

    # Served by a gateway whose report_dir holds this report, reached from the comparison page's link.
    port = int(os.environ.get("TEST_PORT_BASE", "8010")) + 60
    settings = {"report_dir": str(real_run.report.parent)}
    with extra_gateway(stack, tmp_path, port=port, gateway=settings) as url:
        start = browser.new_page()
        start.goto(f"{url}/")
        start.wait_for_selector("body[data-ready='true']", timeout=30_000)
        with browser.expect_page() as opened:
            start.click("#report-link")
        served = opened.value
        served.wait_for_load_state()
        served_errors: list[str] = []
        served.on("pageerror", lambda exc: served_errors.append(str(exc)))
        assert served.url == f"{url}/report/"
        _check_page(served, served_errors)
        source = httpx.get(f"{url}/report/sources/bench/tiny/results.json", timeout=10)
        assert source.status_code == 200 and source.json()["plan"]["mode"] == "quick"
        start.close()
        served.close()

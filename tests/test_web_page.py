"""The side-by-side page in a real browser: Playwright driving Debian's Chromium against the
real test stack (two vLLM engines behind the gateway). Saves test-artifacts/compare-page.png
and, for the "Live pairs" view, test-artifacts/live-pairs.png.

Needs `apt-get install chromium` and the PyPI `playwright` package; `playwright install` is
not used (it downloads its own browser builds, which these machines cannot reach).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect, sync_playwright

from tests.conftest import extra_gateway, suite_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLACEHOLDERS = {"", "The answer streams here.", "(no answer after the reasoning)", "(empty answer)"}


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """One Chromium with a fresh profile (playwright passes it as --user-data-dir) for this
    module; each test opens its own page. Starting Chromium is the slow part on a busy machine."""
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
            timeout=300_000,
        )
        try:
            yield context
        finally:
            context.close()


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=30_000)
    return page, errors


def column_text(page: Page, side: str) -> str:
    """What the model wrote in a column: its answer, or its reasoning if it only reasoned."""
    answer = page.inner_text(f"#col-{side} .answer").strip()
    reasoning = page.inner_text(f"#col-{side} .reasoning-text").strip()
    return (answer if answer not in PLACEHOLDERS else "") + reasoning


@pytest.mark.engines
def test_compare_page_streams_both_models_and_counts_a_vote(stack: Any, browser: BrowserContext) -> None:
    page, errors = open_page(browser, f"{stack.gateway_url}/")
    expect(page.locator("#engines .pill.up")).to_have_count(2)  # engine status from /engines
    page.check("#anonymous", force=True)  # blind mode: names hidden until the vote
    page.fill("#max-tokens", "48")
    page.fill("#prompt", "Why is the sky blue? Answer in two sentences.")
    votes_before = int(page.get_attribute("#tally", "data-total-votes") or "0")

    page.click("#submit")
    expect(page.locator("button.vote[data-vote='left']")).to_be_enabled(timeout=180_000)

    for side in ("left", "right"):
        assert len(column_text(page, side)) > 10, f"{side} column stayed empty"
        assert page.inner_text(f"#col-{side} .model-name") in {"Model A", "Model B"}
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.inner_text(f"#col-{side} [data-metric='ttft']"))
        assert re.fullmatch(r"\d+ → \d+", page.inner_text(f"#col-{side} [data-metric='tokens']"))
        assert page.inner_text(f"#col-{side} [data-metric='speed']").endswith("tok/s")
    # R1's reasoning went to its column's collapsible thinking section, Qwen has none.
    expect(page.locator(".thinking:not([hidden])")).to_have_count(1)
    r1_side = "left" if page.is_visible("#col-left .thinking") else "right"

    page.click("button.vote[data-vote='left']")
    expect(page.locator("#tally")).to_have_attribute("data-total-votes", str(votes_before + 1))
    names = {page.inner_text(f"#col-{side} .model-name") for side in ("left", "right")}
    assert any(name.endswith("· r1-tiny") for name in names) and any(name.endswith("· qwen-tiny") for name in names)
    assert page.inner_text(f"#col-{r1_side} .model-name").endswith("r1-tiny")
    expect(page.locator("#tally .pair")).to_contain_text("r1-tiny")
    tally = httpx.get(f"{stack.gateway_url}/v1/compare/votes", timeout=10).json()
    assert tally["total_votes"] == votes_before + 1
    assert page.inner_text("#history").count("Why is the sky blue?") == 1  # kept in localStorage
    assert not errors, errors

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare-page.png"), full_page=True)
    page.close()


@pytest.mark.engines
def test_page_asks_for_an_api_key_on_401_and_sends_it(stack: Any, browser: BrowserContext) -> None:
    """The test stack runs without keys, so the browser itself answers 401 to requests that lack
    `Authorization: Bearer page-test-key` (request interception) and passes the others on."""
    seen: list[str | None] = []

    def require_key(route: Route) -> None:
        header = route.request.headers.get("authorization")
        seen.append(header)
        if header == "Bearer page-test-key":
            route.continue_()
        else:
            route.fulfill(status=401, json={"error": {"message": "Missing or invalid API key", "type": "x"}})

    page = browser.new_page()
    page.route(re.compile(r".*/v1/compare/settings$"), require_key)
    page.goto(f"{stack.gateway_url}/")  # no key stored yet: the profile is fresh, and no other test sets one
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "page-test-key")
    page.click("#key-dialog button[value='save']")
    page.wait_for_selector("body[data-ready='true']")
    assert seen == [None, "Bearer page-test-key"]
    assert page.evaluate("localStorage.getItem('compare.apiKey')") == "page-test-key"
    expect(page.locator("#model-left option")).to_have_count(2)  # settings arrived after the key
    page.evaluate("localStorage.removeItem('compare.apiKey')")  # the profile is shared within this module
    page.close()


@pytest.mark.engines
def test_live_pairs_view_reviews_blind_pairs_and_counts_each_vote_once(
    stack: Any, browser: BrowserContext, tmp_path: Path
) -> None:
    """A gateway with the mirror on and prompts stored records two pairs of real traffic; the
    page's "Live pairs" view shows one blind, takes the vote, reveals the names, counts it in
    the live tally (not the side-by-side one), and moves on to the other pair."""
    port = suite_port(66)
    traffic = [
        {"name": "assistant", "primary": "qwen", "candidate": "r1", "mirror_fraction": 1.0, "store_prompts": True}
    ]
    votes_db = {"compare": {"votes_db": str(tmp_path / "votes.sqlite3")}}
    with extra_gateway(stack, tmp_path, port=port, gateway=votes_db, traffic=traffic) as url:
        prompts = ["Why is the sky blue? Answer in two sentences.", "Write a haiku about autumn rain."]
        for prompt in prompts:
            body = {"model": "assistant", "messages": [{"role": "user", "content": prompt}], "max_tokens": 48}
            assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).status_code == 200
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/v1/traffic", timeout=10).json()["data"][0]["counters"]["mirror"]["saved"] < 2:
            assert time.monotonic() < deadline, "the mirror did not record both pairs"
            time.sleep(0.3)

        page, errors = open_page(browser, f"{url}/")
        page.wait_for_selector("body[data-live-ready='true']")
        page.click("#tab-live")
        expect(page.locator("#live-view")).to_be_visible()
        expect(page.locator("#compare-view")).to_be_hidden()
        expect(page.locator("h1")).to_have_text("Live pairs")  # the header follows the view
        expect(page).to_have_title("Live pairs · R1 vs Qwen")
        expect(page.locator("#live-counts")).to_contain_text("2 pairs stored")
        shown = page.inner_text("#live-prompt .messages")
        assert any(prompt in shown for prompt in prompts)
        for side, letter in (("left", "A"), ("right", "B")):
            assert page.inner_text(f"#live-{side} .model-name") == f"Model {letter}"  # blind until the vote
            text = page.inner_text(f"#live-{side} .answer") + page.inner_text(f"#live-{side} .reasoning-text")
            assert len(text.strip()) > 5, f"{side} column stayed empty"
            assert page.inner_text(f"#live-{side} [data-metric='total']") == "after the vote"
        first_prompt = next(prompt for prompt in prompts if prompt in shown)

        page.click("button.live-vote[data-vote='right']")
        expect(page.locator("#live-tally")).to_have_attribute("data-total-votes", "1")
        names = [page.inner_text(f"#live-{side} .model-name") for side in ("left", "right")]
        assert sorted(name.split(" · ")[1] for name in names) == ["qwen-tiny", "r1-tiny"]
        expect(page.locator("#live-status")).to_contain_text("saved")
        expect(page.locator("button.live-vote[data-vote='left']")).to_be_disabled()  # one vote per pair
        expect(page.locator("#live-tally .pair")).to_contain_text("r1-tiny")
        assert httpx.get(f"{url}/v1/traffic/tally", timeout=10).json()["total_votes"] == 1
        assert httpx.get(f"{url}/v1/compare/votes", timeout=10).json()["total_votes"] == 0  # kept apart
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live-pairs.png"), full_page=True)

        page.click("#live-next")  # the other pair, never the voted one
        expect(page.locator("#live-prompt .messages")).not_to_contain_text(first_prompt)
        expect(page.locator("#live-counts")).to_contain_text("1 voted")
        assert page.inner_text("#live-left .model-name") == "Model A"
        page.click("button.live-vote[data-vote='tie']")
        expect(page.locator("#live-tally")).to_have_attribute("data-total-votes", "2")
        page.click("#live-next")
        expect(page.locator("#live-status")).to_contain_text("No pair is waiting")
        page.click("#tab-compare")
        expect(page.locator("#compare-view")).to_be_visible()
        expect(page.locator("h1")).to_have_text("Side by side")
        assert not errors, errors
        page.close()

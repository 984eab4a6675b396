// The "Live pairs" view: blind review of pairs the mirror recorded from real traffic.
// GET /v1/traffic (names), GET /v1/traffic/review (a random unvoted pair, sides shuffled by the
// server), POST /v1/traffic/votes (once per pair), GET /v1/traffic/tally. Model output is only
// ever set with textContent.

import { $, api, errorMessage, renderTally, seconds } from "./app.js";

const SIDES = ["left", "right"];
const LETTER = { left: "A", right: "B" };

const live = {
  opened: false,
  pair: null,        // the pair on screen (from /v1/traffic/review)
  voted: false,
  skipped: [],       // pairs passed over with "Next pair" without a vote
};

// What the header says in each view: the page opens on "compare" with index.html's own header.
const VIEW_HEADINGS = {
  compare: [$("#view-title").textContent, $("#view-tagline").textContent],
  live: ["Live pairs", "Real traffic the mirror sent to both models: read both answers blind, then vote."],
};

function showView(name) {
  const isLive = name === "live";
  const [title, tagline] = VIEW_HEADINGS[isLive ? "live" : "compare"];
  $("#view-title").textContent = title;
  $("#view-tagline").textContent = tagline;
  document.title = `${title} · R1 vs Qwen`;
  $("#compare-view").hidden = isLive;
  $("#live-view").hidden = !isLive;
  $("#tab-compare").setAttribute("aria-selected", String(!isLive));
  $("#tab-live").setAttribute("aria-selected", String(isLive));
  if (isLive && !live.opened) {
    live.opened = true;
    openLive();
  }
}

function banner(text) {
  const box = $("#live-banner");
  box.textContent = text || "";
  box.hidden = !text;
}

async function openLive() {
  try {
    const response = await api("/v1/traffic");
    if (!response.ok) throw new Error(await errorMessage(response));
    const { data } = await response.json();
    const select = $("#live-name");
    select.replaceChildren(...data.map((t) => new Option(`${t.name} (${t.primary} / ${t.candidate})`, t.name)));
    if (!data.length) {
      banner("This gateway has no public traffic names (the `traffic` section of its config).");
      return;
    }
  } catch (error) {
    banner(`Cannot load the traffic names: ${error.message || error}`);
    return;
  }
  await Promise.all([nextPair(), refreshTally()]);
}

async function nextPair() {
  const name = $("#live-name").value;
  if (!name) return;
  if (live.pair && !live.voted) live.skipped.push(live.pair.id);
  const params = new URLSearchParams({ name });
  live.skipped.slice(-50).forEach((id) => params.append("exclude", id));
  let body;
  try {
    const response = await api(`/v1/traffic/review?${params}`);
    if (!response.ok) throw new Error(await errorMessage(response));
    body = await response.json();
  } catch (error) {
    banner(`Cannot load a pair: ${error.message || error}`);
    return;
  }
  banner("");
  const c = body.counts;
  $("#live-counts").textContent = `${c.pairs} pairs stored · ${c.reviewable} with prompts · ${c.voted} voted`;
  showPair(body.pair);
}

function showPair(pair) {
  live.pair = pair;
  live.voted = false;
  const prompt = $("#live-prompt");
  prompt.hidden = !pair;
  for (const side of SIDES) resetColumn(side);
  setVoting(Boolean(pair), pair ? "Read both answers, then vote." : "");
  if (!pair) {
    $("#live-status").textContent = "No pair is waiting for a vote. Turn the mirror on with store_prompts, then come back.";
    live.skipped = [];
    return;
  }
  const messages = $(".messages", prompt);
  messages.replaceChildren(...(pair.prompt || []).map((message) => {
    const row = document.createElement("div");
    row.className = "message";
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = message.role || "";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = typeof message.content === "string" ? message.content : JSON.stringify(message.content);
    row.append(role, text);
    return row;
  }));
  for (const side of SIDES) fillColumn(side, pair[side]);
}

function column(side) { return $(`#live-${side}`); }

function resetColumn(side) {
  const col = column(side);
  $(".model-name", col).textContent = `Model ${LETTER[side]}`;
  const thinking = $(".thinking", col);
  thinking.hidden = true;
  thinking.open = false;
  $(".reasoning-text", col).textContent = "";
  const answer = $(".answer", col);
  answer.textContent = "No pair loaded.";
  answer.classList.add("empty");
  col.querySelectorAll("[data-metric]").forEach((dd) => { dd.textContent = "–"; });
  $("[data-metric='total']", col).textContent = "after the vote";
}

function fillColumn(side, info) {
  const col = column(side);
  const answer = $(".answer", col);
  answer.textContent = info.answer || (info.reasoning ? "(no answer after the reasoning)" : "(empty answer)");
  answer.classList.toggle("empty", !info.answer);
  if (info.reasoning) {
    $(".thinking", col).hidden = false;
    $(".reasoning-text", col).textContent = info.reasoning;
    const words = info.reasoning.trim() ? info.reasoning.trim().split(/\s+/).length : 0;
    $(".thinking-meta", col).textContent = `${words} words`;
  }
  const usage = info.usage || {};
  $("[data-metric='tokens']", col).textContent = usage.completion_tokens != null ? String(usage.completion_tokens) : "–";
  $("[data-metric='finish']", col).textContent = info.finish_reason || "–";
}

function setVoting(enabled, text) {
  document.querySelectorAll("button.live-vote").forEach((b) => { b.disabled = !enabled; b.classList.remove("chosen"); });
  $("#live-vote-bar").classList.toggle("ready", enabled);
  if (text) $("#live-status").textContent = text;
}

async function vote(outcome, button) {
  const pair = live.pair;
  if (!pair || live.voted) return;
  live.voted = true;
  document.querySelectorAll("button.live-vote").forEach((b) => { b.disabled = true; });
  button.classList.add("chosen");
  const response = await api("/v1/traffic/votes", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pair_id: pair.id, left: pair.left.model, right: pair.right.model, vote: outcome }),
  });
  if (!response.ok) {
    const message = await errorMessage(response);
    if (response.status === 409) {
      $("#live-status").textContent = `This pair already has its vote (${message}). Take the next one.`;
    } else {
      live.voted = false;
      setVoting(true, `Vote not saved: ${message}`);
    }
    return;
  }
  const saved = await response.json();
  for (const side of SIDES) {
    const col = column(side);
    $(".model-name", col).textContent = `Model ${LETTER[side]} · ${pair[side].model}`;
    $("[data-metric='total']", col).textContent = seconds(pair[side].timings?.total_s);
  }
  const verdict = { left: `${saved.left} (A) was better`, right: `${saved.right} (B) was better`,
    tie: "a tie", both_bad: "both bad" }[outcome];
  $("#live-status").textContent = `Vote on ${saved.pair_id} saved: ${verdict}. A was ${saved.left}, B was ${saved.right}.`;
  renderTally(saved.tally, $("#live-tally"));
}

async function refreshTally() {
  try {
    const response = await api("/v1/traffic/tally", {}, { askKey: false });
    if (response.ok) renderTally(await response.json(), $("#live-tally"));
  } catch { /* the next vote refreshes it */ }
}

function init() {
  $("#tab-compare").addEventListener("click", () => showView("compare"));
  $("#tab-live").addEventListener("click", () => showView("live"));
  $("#live-next").addEventListener("click", () => nextPair());
  $("#live-name").addEventListener("change", () => { live.skipped = []; live.pair = null; nextPair(); refreshTally(); });
  document.querySelectorAll("button.live-vote").forEach((button) => {
    button.addEventListener("click", () => vote(button.dataset.vote, button));
  });
  if (location.hash === "#live") showView("live");
  document.body.dataset.liveReady = "true";  // for the browser test: handlers are bound
}

init();

// The side-by-side page: streams POST /v1/compare into two columns, then records a vote.
// No build step: a plain ES module. Model output is only ever set with textContent.
// live.js (the "Live pairs" view) imports the helpers marked `export`.

export const $ = (selector, root = document) => root.querySelector(selector);
const KEY_STORAGE = "compare.apiKey";
const HISTORY_STORAGE = "compare.history";
const HISTORY_SIZE = 8;
const SIDES = ["left", "right"];

const state = {
  models: [],          // served names, from /v1/compare/settings
  run: null,           // the comparison on screen (see startRun)
  controller: null,    // AbortController of the stream in flight
};

// ---------- talking to the gateway (with the API key when it asks for one) ----------

// Background polls pass askKey=false: a cancelled key dialog must not come back every 5 s.
export async function api(path, options = {}, { askKey = true } = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401 || !askKey) return response;
    const reason = key ? "The gateway refused the saved API key. Enter another one." : "This gateway asks for an API key.";
    if (!(await askForKey(reason))) return response;  // cancelled: let the caller show the 401
  }
}

let keyPrompt = null;  // one dialog at a time; requests that hit a 401 meanwhile wait for it

function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = `${reason} It is kept in this browser only.`;
  $("#key-input").value = localStorage.getItem(KEY_STORAGE) || "";
  dialog.returnValue = "";
  dialog.showModal();
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      keyPrompt = null;
      const value = $("#key-input").value.trim();
      if (dialog.returnValue === "save" && value) {
        localStorage.setItem(KEY_STORAGE, value);
        resolve(true);
      } else {
        if (dialog.returnValue === "clear") localStorage.removeItem(KEY_STORAGE);
        resolve(false);
      }
    }, { once: true });
  });
  return keyPrompt;
}

export async function errorMessage(response) {
  const text = await response.text();
  try {
    const error = JSON.parse(text).error;
    if (error && error.message) return `${error.message} (HTTP ${response.status})`;
  } catch { /* not JSON: show the text */ }
  return `HTTP ${response.status}${text ? `: ${text.slice(0, 300)}` : ""}`;
}

// ---------- engine status ----------

async function refreshEngines() {
  const list = $("#engines");
  let rows;
  try {
    const response = await api("/engines", {}, { askKey: false });
    if (response.status === 401) {
      list.replaceChildren(pill("API key needed", "down", "Set the key with the API key button"));
      return;
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    rows = await response.json();
  } catch (error) {
    list.replaceChildren(pill("gateway unreachable", "down", String(error.message || error)));
    return;
  }
  list.replaceChildren(...rows.map((row) => {
    const detail = [row.url, row.pid ? `pid ${row.pid}` : null, `in flight ${row.in_flight ?? 0}`,
      row.restarts ? `restarts ${row.restarts}` : null].filter(Boolean).join(" · ");
    return pill(`${row.name} · ${row.state}`, row.healthy ? "up" : "down", detail);
  }));
}

function pill(text, kind, title) {
  const li = document.createElement("li");
  li.className = `pill ${kind}`;
  li.dataset.state = kind;
  li.title = title || "";
  li.textContent = text;
  return li;
}

// ---------- prompt history (this browser only) ----------

function loadHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_STORAGE)) || []; } catch { return []; }
}

function remember(prompt) {
  const history = [prompt, ...loadHistory().filter((p) => p !== prompt)].slice(0, HISTORY_SIZE);
  localStorage.setItem(HISTORY_STORAGE, JSON.stringify(history));
  renderHistory();
}

function renderHistory() {
  const box = $("#history");
  const history = loadHistory();
  if (!history.length) { box.replaceChildren(); return; }
  const label = document.createElement("span");
  label.className = "history-label";
  label.textContent = "Recent";
  box.replaceChildren(label, ...history.map((prompt) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.title = prompt;
    chip.textContent = prompt.length > 42 ? `${prompt.slice(0, 40)}…` : prompt;
    chip.addEventListener("click", () => { $("#prompt").value = prompt; $("#prompt").focus(); });
    return chip;
  }));
}

// ---------- the comparison ----------

function readParams() {
  const params = { max_tokens: Number($("#max-tokens").value) || 256 };
  if (!$("#temperature-default").checked) params.temperature = Number($("#temperature").value);
  if (!$("#top-p-default").checked) params.top_p = Number($("#top-p").value);
  if ($("#seed").value !== "") params.seed = Number($("#seed").value);
  return params;
}

function startRun(prompt, params) {
  const chosen = [$("#model-left").value, $("#model-right").value];
  const anonymous = $("#anonymous").checked;
  // Blind mode: a coin decides which model sits on the left, and the names stay hidden.
  const order = anonymous && Math.random() < 0.5 ? [chosen[1], chosen[0]] : chosen;
  const run = {
    prompt, params, anonymous, revealed: !anonymous, voted: false, finished: false, seed: null,
    sides: {},   // side -> {model, answer, reasoning, summary, error, ended}
    bySide: (model) => SIDES.find((side) => run.sides[side].model === model),
  };
  SIDES.forEach((side, i) => {
    run.sides[side] = { model: order[i], answer: "", reasoning: "", summary: null, error: null, ended: false };
    resetColumn(side, run, i);
  });
  return run;
}

function column(side) { return $(`#col-${side}`); }

function label(run, side) {
  const index = SIDES.indexOf(side);
  const model = run.sides[side].model;
  if (!run.anonymous) return model;
  const letter = index === 0 ? "Model A" : "Model B";
  return run.revealed ? `${letter} · ${model}` : letter;
}

function resetColumn(side, run) {
  const col = column(side);
  col.classList.remove("has-error");
  $(".model-name", col).textContent = label(run, side);
  $(".badge", col).textContent = run.anonymous ? (side === "left" ? "A" : "B") : side === "left" ? "L" : "R";
  setState(side, "waiting", "waiting…");
  const thinking = $(".thinking", col);
  thinking.hidden = true;
  thinking.open = true;
  $(".reasoning-text", col).textContent = "";
  $(".thinking-meta", col).textContent = "";
  $(".thinking-title", col).textContent = "Thinking…";
  const answer = $(".answer", col);
  answer.textContent = "";
  answer.classList.add("empty", "streaming");
  const error = $(".column-error", col);
  error.hidden = true;
  error.textContent = "";
  col.querySelectorAll("[data-metric]").forEach((dd) => { dd.textContent = "–"; });
  $(".params", col).textContent = "";
}

function setState(side, kind, text) {
  const el = $(".state", column(side));
  el.dataset.state = kind;
  el.textContent = text;
}

async function compare(event) {
  event?.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (!prompt || state.controller) return;
  if ($("#model-left").value === $("#model-right").value) {
    showBanner("Choose two different models.");
    return;
  }
  hideBanner();
  remember(prompt);
  const params = readParams();
  const run = (state.run = startRun(prompt, params));
  setVoting(false, "Waiting for both answers…");
  const controller = (state.controller = new AbortController());
  setBusy(true);
  try {
    const response = await api("/v1/compare", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, models: SIDES.map((s) => run.sides[s].model), stream: true, ...params }),
      signal: controller.signal,
    });
    if (!response.ok) {
      const message = await errorMessage(response);
      const retry = response.headers.get("Retry-After");
      showBanner(`Comparison refused: ${message}${retry ? ` · retry in ${retry} s` : ""}`);
      SIDES.forEach((side) => failColumn(run, side, { status: response.status, error: { message } }));
      return;
    }
    await readStream(response, run);
    if (!run.finished) throw new Error("the stream ended before the summary");
  } catch (error) {
    if (error.name === "AbortError") {
      SIDES.forEach((side) => { if (!run.sides[side].ended) setState(side, "stopped", "stopped"); });
      setVoting(false, "Stopped. Run it again to vote.");
    } else {
      showBanner(`Connection problem: ${error.message || error}`);
      SIDES.forEach((side) => { if (!run.sides[side].ended) failColumn(run, side, { error: { message: String(error.message || error) } }); });
    }
  } finally {
    state.controller = null;
    setBusy(false);
    SIDES.forEach((side) => $(".answer", column(side)).classList.remove("streaming"));
    refreshEngines();
  }
}

async function readStream(response, run) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        handleEvent(run, JSON.parse(data));
      }
    }
  }
}

function handleEvent(run, event) {
  if (state.run !== run) return;
  if (event.type === "summary") {
    run.seed = event.seed;
    run.comparisonId = event.id;  // the server keeps the answers under it; a vote names only this id
    for (const [model, summary] of Object.entries(event.models)) {
      const side = run.bySide(model);
      if (side) { run.sides[side].summary = summary; showMetrics(run, side); }
    }
    run.finished = true;
    const usable = SIDES.every((side) => !run.sides[side].error);
    setVoting(usable, usable ? "Both answers are in. Your vote is stored with them."
      : "One model failed, so there is nothing fair to vote on.");
    return;
  }
  const side = run.bySide(event.model);
  if (!side) return;
  const col = column(side);
  const info = run.sides[side];
  if (event.type === "reasoning") {
    info.reasoning += event.delta;
    const thinking = $(".thinking", col);
    thinking.hidden = false;
    $(".reasoning-text", col).textContent = info.reasoning;
    $(".thinking-meta", col).textContent = `${words(info.reasoning)} words`;
    setState(side, "thinking", "thinking…");
    follow($(".reasoning-text", col));
  } else if (event.type === "content") {
    if (!info.answer) {
      $(".thinking", col).open = false;  // the answer has started: fold the reasoning away
      $(".thinking-title", col).textContent = "Thought";
    }
    info.answer += event.delta;
    const answer = $(".answer", col);
    answer.classList.remove("empty");
    answer.textContent = info.answer;
    setState(side, "answering", "answering…");
    follow(answer);
  } else if (event.type === "done") {
    info.ended = true;
    $(".thinking-title", col).textContent = "Thought";
    if (!info.answer) {
      const answer = $(".answer", col);
      answer.textContent = info.reasoning ? "(no answer after the reasoning)" : "(empty answer)";
    }
    setState(side, "done", event.finish_reason ? `done · ${event.finish_reason}` : "done");
  } else if (event.type === "error") {
    failColumn(run, side, event);
  }
}

function failColumn(run, side, event) {
  const info = run.sides[side];
  info.ended = true;
  info.error = event.error || { message: "failed" };
  const col = column(side);
  col.classList.add("has-error");
  const box = $(".column-error", col);
  box.hidden = false;
  const status = event.status ? `${event.status} · ` : "";
  const hint = event.status === 429 ? " The model is overloaded; try again shortly."
    : event.status === 503 ? " The engine is down or restarting." : "";
  box.textContent = `${status}${info.error.message || "failed"}${hint}`;
  if (!info.answer) $(".answer", col).textContent = "";
  setState(side, "error", event.status === 429 ? "overloaded" : "error");
}

function showMetrics(run, side) {
  const col = column(side);
  const summary = run.sides[side].summary;
  const t = summary.timings || {};
  const usage = summary.usage || {};
  const set = (name, text) => { $(`[data-metric="${name}"]`, col).textContent = text; };
  set("ttft", seconds(t.ttft_s));
  set("answer", seconds(t.time_to_answer_s));
  set("total", seconds(t.total_s));
  set("speed", t.output_tokens_per_s != null ? `${t.output_tokens_per_s.toFixed(1)} tok/s` : "–");
  set("tokens", usage.prompt_tokens != null ? `${usage.prompt_tokens} → ${usage.completion_tokens}` : "–");
  set("finish", summary.finish_reason || (summary.error ? `error ${summary.status}` : "–"));
  if (t.ttft_s != null && t.time_to_answer_s != null && run.sides[side].reasoning) {
    $(".thinking-meta", col).textContent =
      `${words(run.sides[side].reasoning)} words · ${(t.time_to_answer_s - t.ttft_s).toFixed(2)} s`;
  }
  showParams(run, side);
}

function showParams(run, side) {
  const summary = run.sides[side].summary;
  const el = $(".params", column(side));
  if (!summary || summary.error && !summary.params) { el.textContent = ""; return; }
  if (!run.revealed) {
    // Per-model defaults would give the model away; they are shown after the vote.
    el.textContent = `seed ${run.seed} · parameters shown after the vote`;
    return;
  }
  const defaults = summary.defaults_applied || {};
  const parts = Object.entries(summary.params || {}).map(([k, v]) => `${k} ${v}${k in defaults ? " (model default)" : ""}`);
  if (summary.system_prompt === "merge_into_user") parts.push("system prompt merged into the user message");
  el.textContent = parts.join(" · ");
}

export function seconds(value) { return value == null ? "–" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`; }
function words(text) { return text.trim() ? text.trim().split(/\s+/).length : 0; }

function follow(el) {
  // Keep the newest text in view while streaming, unless the reader scrolled up.
  if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
}

function setBusy(busy) {
  $("#submit").disabled = busy;
  $("#submit").textContent = busy ? "Comparing…" : "Compare";
  $("#stop").hidden = !busy;
}

function showBanner(text) { const b = $("#banner"); b.textContent = text; b.hidden = false; }
function hideBanner() { $("#banner").hidden = true; }

// ---------- votes and tally ----------

function setVoting(enabled, text) {
  document.querySelectorAll("#vote-bar button.vote").forEach((b) => { b.disabled = !enabled; b.classList.remove("chosen"); });
  $("#vote-bar").classList.toggle("ready", enabled);
  $("#vote-status").textContent = text;
}

async function vote(outcome, button) {
  const run = state.run;
  if (!run || !run.finished || run.voted) return;
  run.voted = true;
  document.querySelectorAll("#vote-bar button.vote").forEach((b) => { b.disabled = true; });
  button.classList.add("chosen");
  const response = await api("/v1/compare/votes", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      comparison_id: run.comparisonId, left: run.sides.left.model, right: run.sides.right.model,
      vote: outcome, anonymous: run.anonymous,
    }),
  });
  if (!response.ok) {
    run.voted = false;
    setVoting(true, `Vote not saved: ${await errorMessage(response)}`);
    return;
  }
  const saved = await response.json();
  run.revealed = true;
  SIDES.forEach((s) => { $(".model-name", column(s)).textContent = label(run, s); showParams(run, s); });
  const verdict = { left: `${saved.left} (left) was better`, right: `${saved.right} (right) was better`,
    tie: "a tie", both_bad: "both bad" }[outcome];
  $("#vote-status").textContent = `Vote on ${saved.comparison_id} saved: ${verdict}.${run.anonymous ? ` Left was ${saved.left}, right was ${saved.right}.` : ""}`;
  renderTally(saved.tally);
}

async function refreshTally() {
  try {
    const response = await api("/v1/compare/votes", {}, { askKey: false });
    if (response.ok) renderTally(await response.json());
  } catch { /* the next vote refreshes it */ }
}

export function renderTally(tally, box = $("#tally")) {
  box.dataset.totalVotes = String(tally.total_votes);
  if (!tally.pairs.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No votes yet.";
    box.replaceChildren(p);
    return;
  }
  box.replaceChildren(...tally.pairs.map(renderPair));
}

function renderPair(pair) {
  // Colour by the gateway's model order (first model = the left column's colour), not alphabetically.
  const rank = (m) => (state.models.includes(m) ? state.models.indexOf(m) : state.models.length);
  const [a, b] = [...pair.models].sort((x, y) => rank(x) - rank(y));
  const wrap = document.createElement("div");
  wrap.className = "pair";
  wrap.dataset.votes = String(pair.votes);

  const title = document.createElement("div");
  title.className = "pair-title";
  title.innerHTML = "<strong></strong> vs <strong></strong> <span class='muted'></span>";
  const [ta, tb] = title.querySelectorAll("strong");
  ta.textContent = a;
  tb.textContent = b;
  title.querySelector("span").textContent = `· ${pair.votes} vote${pair.votes === 1 ? "" : "s"}`;

  const bar = document.createElement("div");
  bar.className = "bar";
  const segments = [
    ["a", pair.wins[a], `${a} wins`], ["tie", pair.ties, "ties"],
    ["bad", pair.both_bad, "both bad"], ["b", pair.wins[b], `${b} wins`],
  ];
  for (const [kind, count, text] of segments) {
    if (!count) continue;
    const seg = document.createElement("span");
    seg.className = `seg ${kind}`;
    seg.style.flexGrow = String(count);
    seg.title = `${text}: ${count}`;
    seg.textContent = String(count);
    bar.append(seg);
  }

  const rates = document.createElement("div");
  rates.className = "rates";
  const rate = (model, kind) => {
    const r = pair.win_rate[model];
    const el = document.createElement("span");
    el.className = `rate ${kind}`;
    el.textContent = `${model} wins ${pct(r.rate)}  [${pct(r.low)}–${pct(r.high)}]`;
    return el;
  };
  const middle = document.createElement("span");
  middle.className = "rate muted";
  middle.textContent = `ties ${pair.ties} · both bad ${pair.both_bad}`;
  rates.append(rate(a, "a"), middle, rate(b, "b"));

  // Chatbot Arena's style control: the same votes, read at equal answer lengths.
  const control = document.createElement("div");
  control.className = "rates controlled";
  const lc = pair.length_controlled;
  if (lc) {
    const at = (model, kind) => {
      const r = lc.win_rate[model];
      const el = document.createElement("span");
      el.className = `rate ${kind}`;
      el.textContent = `${model} ${pct(r.rate)}  [${pct(r.low)}–${pct(r.high)}]`;
      return el;
    };
    const note = document.createElement("span");
    note.className = "rate muted";
    note.textContent = `length-controlled · ${lc.votes} decisive votes`;
    control.append(at(a, "a"), note, at(b, "b"));
  } else {
    control.classList.add("muted");
    control.textContent = "length-controlled estimate: after 10 decisive votes with answers of different lengths";
  }
  wrap.append(title, bar, rates, control);
  return wrap;
}

export function pct(x) { return `${Math.round(x * 100)}%`; }

// ---------- start ----------

function bindSlider(name) {
  const input = $(`#${name}`), out = $(`#${name}-out`), useDefault = $(`#${name}-default`);
  const show = () => {
    input.disabled = useDefault.checked;
    out.textContent = useDefault.checked ? "per model" : Number(input.value).toFixed(2);
  };
  input.addEventListener("input", show);
  useDefault.addEventListener("change", show);
  show();
}

function fillModelChoices(models) {
  for (const [id, index] of [["#model-left", 0], ["#model-right", 1]]) {
    const select = $(id);
    select.replaceChildren(...models.map((name) => new Option(name, name)));
    select.value = models[Math.min(index, models.length - 1)] || "";
  }
}

// A plain link cannot send the API key: with a key saved, fetch the report with it and show
// that copy (self-contained: its plots are embedded; its links to source files need the key too).
async function openReport(event) {
  if (!localStorage.getItem(KEY_STORAGE)) return;  // no key: the link itself works
  event.preventDefault();
  const tab = window.open("", "_blank");
  const response = await api("/report/");
  if (!response.ok) {
    tab?.close();
    showBanner(`Cannot open the report: ${await errorMessage(response)}`);
    return;
  }
  const blob = new Blob([await response.text()], { type: "text/html" });
  if (tab) tab.location = URL.createObjectURL(blob);
}

async function init() {
  bindSlider("temperature");
  bindSlider("top-p");
  renderHistory();
  $("#compare-form").addEventListener("submit", compare);
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) compare(e); });
  $("#stop").addEventListener("click", () => state.controller?.abort());
  $("#key-button").addEventListener("click", async () => {
    if (await askForKey("Set the key sent as 'Authorization: Bearer'.")) { refreshEngines(); refreshTally(); }
  });
  $("#report-link").addEventListener("click", openReport);
  document.querySelectorAll("#vote-bar button.vote").forEach((button) => {
    button.addEventListener("click", () => vote(button.dataset.vote, button));
  });
  try {
    const response = await api("/v1/compare/settings");
    if (!response.ok) throw new Error(await errorMessage(response));
    const settings = await response.json();
    state.models = settings.models;
    $("#anonymous").checked = settings.anonymous;
    fillModelChoices(settings.models);
  } catch (error) {
    showBanner(`Cannot load the gateway's settings: ${error.message || error}`);
  }
  await Promise.all([refreshEngines(), refreshTally()]);
  setInterval(refreshEngines, 5000);
  document.body.dataset.ready = "true";  // for the browser test: handlers are bound
}

init();

"""The routing benchmark's records as ratios, a Markdown table and a plot (nothing here measures).

results = json.loads(Path("results/bench/routing/results.json").read_text())
results["summary"] = summarize(results["runs"])
print(table(results)); write(results, Path("results/bench/routing"))
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # not pyplot: no global figure state, no display backend

POLICIES = ("least_loaded", "prefix")


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round ratios prefix / least_loaded and their medians."""
    rounds = sorted({r["round"] for r in records})

    def pick(workload: str, policy: str, round_: int) -> dict[str, Any] | None:
        return next(
            (r for r in records if (r["workload"], r["policy"], r["round"]) == (workload, policy, round_)), None
        )

    per_round = []
    for round_ in rounds:
        ll, px = pick("multi-turn", "least_loaded", round_), pick("multi-turn", "prefix", round_)
        ll_np, px_np = pick("pair-128-256", "least_loaded", round_), pick("pair-128-256", "prefix", round_)
        row: dict[str, Any] = {"round": round_}
        if ll and px:
            row["hit_rate"] = (ll["hit_rate"], px["hit_rate"])
            row["hit_rate_ratio"] = _ratio(px["hit_rate"], ll["hit_rate"])
            row["ttft_p50_ms"] = (ll["ttft_p50_ms"], px["ttft_p50_ms"])
            row["ttft_p50_reduction"] = (
                1 - px["ttft_p50_ms"] / ll["ttft_p50_ms"] if ll["ttft_p50_ms"] and px["ttft_p50_ms"] else None
            )
            row["multi_turn_tok_s"] = tokens_per_s(ll, px)
            row["multi_turn_tok_s_ratio"] = _ratio(row["multi_turn_tok_s"][1], row["multi_turn_tok_s"][0])
        if ll_np and px_np:
            row["no_prefix_tok_s"] = tokens_per_s(ll_np, px_np)
            row["no_prefix_tok_s_ratio"] = _ratio(row["no_prefix_tok_s"][1], row["no_prefix_tok_s"][0])
        per_round.append(row)

    def median(key: str) -> float | None:
        values = [r[key] for r in per_round if r.get(key) is not None]
        return statistics.median(values) if values else None

    keys = ("hit_rate_ratio", "ttft_p50_reduction", "multi_turn_tok_s_ratio", "no_prefix_tok_s_ratio")
    return {
        "rounds": per_round,
        "median": {key: median(key) for key in keys},
        "failures": sum(r["failures"] for r in records),
        "token_checks": sorted({str(r["token_check"]) for r in records}),
    }


def tokens_per_s(*records: dict[str, Any]) -> tuple[float | None, ...]:
    """Output tokens/s of runs to compare, the same measure for all: over each run's steady window
    (the engines' counters) if every one has it, else Locust's whole-run figure, which moves by a
    whole request's tokens with how many requests fit in the run (records of the first full run
    have only that one)."""
    key = "steady_tokens_per_s" if all(r.get("steady_tokens_per_s") is not None for r in records) else None
    return tuple(r.get(key or "output_tokens_per_s") for r in records)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def one_line(r: dict[str, Any]) -> str:
    hit = _fmt(r["hit_rate"], ".1%")
    return (
        f"{r['requests']} requests, {r['failures']} failed, {r['output_tokens_per_s']:.1f} output tok/s "
        f"(steady {_fmt(r.get('steady_tokens_per_s'), '.1f')}), "
        f"TTFT p50 {_fmt(r['ttft_p50_ms'], '.0f')} ms, prefix-cache hit rate {hit}, "
        f"per engine {[int(x) for x in r['requests_per_engine']]}, decisions {r['routing_decisions']}" + engine_time(r)
    )


def engine_time(r: dict[str, Any]) -> str:
    """The engines' split of the time to first token (records before 2026-12-02 have none)."""
    if "preemptions" not in r:
        return ""
    return (
        f", engine queue {_fmt(r['engine_queue_s_mean'], '.2f')} s + prefill "
        f"{_fmt(r['engine_prefill_s_mean'], '.2f')} s a request, {r['preemptions']:.0f} preemptions"
    )


def table(results: dict[str, Any]) -> str:
    """One row per round and the medians; a workload left out with --workloads has no columns."""
    rows, m = results["summary"]["rounds"], results["summary"]["median"]

    def both(row: dict[str, Any], key: str, spec: str) -> str:
        ll, px = row.get(key, (None, None))
        return f"{_fmt(ll, spec)} / {_fmt(px, spec)}"

    # (header, the round's cell, the median's cell)
    columns: list[tuple[str, Any, str]] = []
    if any("hit_rate" in row for row in rows):
        columns += [
            ("hit rate least_loaded / prefix", lambda r: both(r, "hit_rate", ".1%"), ""),
            (
                "ratio (goal >= 1.5x)",
                lambda r: f"{_fmt(r.get('hit_rate_ratio'), '.2f')}x",
                f"**{_fmt(m['hit_rate_ratio'], '.2f')}x**",
            ),
            ("TTFT p50 least_loaded / prefix", lambda r: both(r, "ttft_p50_ms", ",.0f") + " ms", ""),
            (
                "reduction (goal >= 25%)",
                lambda r: _fmt(r.get("ttft_p50_reduction"), ".0%"),
                f"**{_fmt(m['ttft_p50_reduction'], '.0%')}**",
            ),
            (
                "multi-turn tok/s ratio",
                lambda r: f"{_fmt(r.get('multi_turn_tok_s_ratio'), '.2f')}x",
                f"**{_fmt(m['multi_turn_tok_s_ratio'], '.2f')}x**",
            ),
        ]
    if any("no_prefix_tok_s" in row for row in rows):
        columns += [
            ("no shared prefix: tok/s least_loaded / prefix", lambda r: both(r, "no_prefix_tok_s", ".1f"), ""),
            (
                "ratio (goal >= 97%)",
                lambda r: _fmt(r.get("no_prefix_tok_s_ratio"), ".1%"),
                f"**{_fmt(m['no_prefix_tok_s_ratio'], '.1%')}**",
            ),
        ]
    lines = [_row(["round", *(header for header, _, _ in columns)]), "|---|" + "---|" * len(columns)]
    lines += [_row([str(row["round"]), *(cell(row) for _, cell, _ in columns)]) for row in rows]
    lines.append(_row(["**median**", *(median for _, _, median in columns)]))
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "|" + "".join(f" {cell} |" if cell else " |" for cell in cells)


def load_line(results: dict[str, Any]) -> str:
    """How the multi-turn load was offered: a closed loop (the faster policy is sent more
    requests) or a constant arrival rate (both carry the same load), with the rates achieved."""
    plan = results.get("plan", {})
    runs = [r for r in results["runs"] if r["workload"] == "multi-turn"]
    if not runs:
        return ""
    rate = plan.get("arrival_rate")
    how = (
        f"a constant {rate:g} requests/s (Locust `--shape arrival`, no think time)"
        if rate
        else f"a closed loop, {plan.get('think_time_s', 0):g} s think time between a user's turns"
    )
    achieved = []
    for policy in POLICIES:
        values = [r["requests_per_s"] for r in runs if r["policy"] == policy and r.get("requests_per_s")]
        if values:
            achieved.append(f"{policy} {statistics.median(values):.3f}")
    got = f"; requests/s achieved (median over rounds): {', '.join(achieved)}" if achieved else ""
    return f"\nMulti-turn load: {plan.get('users', '?')} users, {how}{got}.\n"


def ceiling_line(results: dict[str, Any]) -> str:
    """The hit rate no routing can beat on the conversations the runs got through, and the ratio
    over least_loaded it allows."""
    best = results.get("hit_rate_ceiling")
    rates = [r["hit_rate"][0] for r in results["summary"]["rounds"] if r.get("hit_rate", (None,))[0]]
    if best is None or not rates:
        return ""
    base = statistics.median(rates)
    return (
        f"\nHistory ceiling (every turn finds its whole conversation cached, benchmarks/hit_ceiling.py, "
        f"over the turns the prefix runs got through: {best['requests']} requests, their median, over "
        f"{best['users']} users): {best['hit_rate']:.1%}, so at most {best['hit_rate'] / base:.2f}x over "
        f"least_loaded's median {base:.1%}.\n"
    )


def plot(results: dict[str, Any], path: Path) -> list[str]:
    """One panel per measured figure (a workload left out with --workloads gets none); returns their titles."""
    rows = results["summary"]["rounds"]
    panels = [
        panel
        for panel in (
            ("hit_rate", "prefix-cache hit rate (multi-turn)", 100, "%"),
            ("ttft_p50_ms", "TTFT p50, ms (multi-turn)", 1, "ms"),
            ("no_prefix_tok_s", "output tok/s (no shared prefix)", 1, "tok/s"),
        )
        if any(panel[0] in r for r in rows)
    ]
    figure = Figure(figsize=(4 * max(len(panels), 1), 3.6))
    for i, (key, title, scale, unit) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        xs = [r["round"] for r in rows if key in r]
        for j, (policy, color) in enumerate(zip(POLICIES, ("tab:gray", "tab:blue"), strict=True)):
            values = [(r[key][j] or 0) * scale for r in rows if key in r]
            ax.bar([x + (j - 0.5) * 0.38 for x in xs], values, width=0.38, color=color, label=policy)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_ylabel(unit)
        ax.set_xticks(xs)
        if i == 0:
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return [title for _, title, _, _ in panels]


def runs_section(results: dict[str, Any]) -> str:
    """Every run in the order it ran: the figures behind the table, the split over the engines and
    where the engines' time to first token went."""
    lines = [f"- round {r['round']}, {r['workload']} through {r['policy']}: {one_line(r)}" for r in results["runs"]]
    return "\n## Runs\n\n" + "\n".join(lines) + "\n" if lines else ""


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    engines = results.get("engines", {})
    setup = f": {engines['replicas']} replicas on cores {engines['cores']}" if "replicas" in engines else ""
    (out / "report.md").write_text(
        f"# Routing benchmark, {results['date']}{setup}\n\n{table(results)}\n{load_line(results)}"
        f"{ceiling_line(results)}{runs_section(results)}"
    )
    plot(results, out / "routing.png")

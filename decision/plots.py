"""The report's plots as PNG bytes (written beside report.md and embedded in report.html).

    png = speed(bench_models, ("r1-tiny", "qwen-tiny"))
    png = quality(eval_summary, models)
    png = preference(pairs)
    png = summary(summary_rows, candidate, incumbent)    # None when no row has an interval

matplotlib's object API (Figure, not pyplot): no global state, no display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from gateway.preference import PairPreference

if TYPE_CHECKING:
    from decision.context import SummaryRow

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
STYLES = ("-", "--", ":", "-.")
# Fixed metadata, so the same inputs give the same bytes.
_METADATA = {"Software": None}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata=_METADATA)
    return buffer.getvalue()


def speed(models: dict[str, dict[str, Any]], names: Sequence[str]) -> bytes:
    """Output tok/s and median TTFT against concurrency, one line per model and length pair."""
    figure = Figure(figsize=(10, 4))
    throughput, ttft = figure.subplots(1, 2)
    for i, name in enumerate(names):
        sweep = models.get(name, {}).get("sweep", [])
        pairs = sorted({(p["prompt_len"], p["output_len"]) for p in sweep})
        for j, pair in enumerate(pairs):
            points = sorted(
                (p for p in sweep if (p["prompt_len"], p["output_len"]) == pair), key=lambda p: p["concurrency"]
            )
            xs = [p["concurrency"] for p in points]
            style = {"color": COLORS[i % len(COLORS)], "linestyle": STYLES[j % len(STYLES)], "marker": "o"}
            label = f"{name} {pair[0]}->{pair[1]}"
            throughput.plot(xs, [p["output_tokens_per_s"] for p in points], label=label, **style)
            ttft.plot(xs, [p["ttft_ms"]["p50"] for p in points], label=label, **style)
    for axes, title, unit in ((throughput, "Output tokens/s", "tok/s"), (ttft, "TTFT p50", "ms")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent streams")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.grid(alpha=0.3)
    throughput.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def quality(summary: dict[str, Any], names: Sequence[str]) -> bytes:
    """Accuracy per suite and model, Wilson intervals as error bars."""
    suites = list(summary["suites"])
    figure = Figure(figsize=(max(6.0, 1.6 * len(suites) + 2), 4))
    axes = figure.subplots()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        stats = [summary["suites"][s].get(name) or {"accuracy": None, "ci95": [0, 0], "n": 0} for s in suites]
        values = [st["accuracy"] or 0.0 for st in stats]
        below = [v - st["ci95"][0] for v, st in zip(values, stats, strict=True)]
        above = [st["ci95"][1] - v for v, st in zip(values, stats, strict=True)]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(suites))]
        bars = axes.bar(xs, values, width, yerr=[below, above], capsize=4, label=name, color=COLORS[i % len(COLORS)])
        axes.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=2, fontsize="small")
    counts = [max((st.get("n") or 0 for st in summary["suites"][s].values()), default=0) for s in suites]
    axes.set_xticks(range(len(suites)), [f"{s}\n(n={n})" for s, n in zip(suites, counts, strict=True)])
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("accuracy (95% Wilson interval)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def preference(pairs: Sequence[PairPreference]) -> bytes:
    """Per pair: the first model's decisive win rate and length-controlled win probability."""
    figure = Figure(figsize=(8, 1.2 + 0.7 * len(pairs)))
    axes = figure.subplots()
    labels = []
    for i, pair in enumerate(pairs):
        labels.append(f"{pair.models[0]}\nvs {pair.models[1]}")
        rate = pair.win_rate
        axes.errorbar(rate.rate, i + 0.1, xerr=[[rate.rate - rate.low], [rate.high - rate.rate]], fmt="o",
                      color=COLORS[0], capsize=4, label="decisive win rate" if i == 0 else None)  # fmt: skip
        lc = pair.length_controlled
        if lc is not None:
            p = lc.win_probability
            axes.errorbar(p.rate, i - 0.1, xerr=[[p.rate - p.low], [p.high - p.rate]], fmt="s", color=COLORS[1],
                          capsize=4, label="length-controlled" if i == 0 else None)  # fmt: skip
    axes.axvline(0.5, color="grey", linestyle="--")
    axes.set_yticks(range(len(pairs)), labels)
    axes.set_xlim(0, 1)
    axes.set_xlabel("first model's win probability (95% interval)")
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    return _png(figure)


def summary(rows: Sequence[SummaryRow], candidate: str, incumbent: str) -> bytes | None:
    """Forest plot: quality and preference differences in points, speed as ratios, with intervals."""
    points = [r for r in rows if r.numbers.get("low") is not None and r.numbers.get("high") is not None]
    differences = [r for r in points if "ratio" not in r.numbers]
    ratios = [r for r in points if "ratio" in r.numbers]
    if not points:
        return None
    panels = [p for p in (differences, ratios) if p]
    figure = Figure(figsize=(11, 0.9 + 0.45 * max(len(p) for p in panels)))
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_list, panels, strict=True):
        is_ratio = panel is ratios
        for i, row in enumerate(panel):
            numbers = row.numbers
            null = 1.0 if is_ratio else numbers.get("null", 0.0)
            estimate = numbers["ratio"] if is_ratio else numbers["estimate"]
            centre, low, high = (100 * (v - null) for v in (estimate, numbers["low"], numbers["high"]))
            decided = row.verdict.endswith(" ahead")
            axes.errorbar(centre, i, xerr=[[centre - low], [high - centre]], fmt="o", capsize=4,
                          color=COLORS[1] if decided else "grey")  # fmt: skip
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set_yticks(range(len(panel)), [r.dimension for r in panel], fontsize="small")
        axes.invert_yaxis()
        axes.set_xlabel(f"{candidate} / {incumbent} - 1, in %" if is_ratio else f"{candidate} - {incumbent}, in points")
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle("Candidate relative to incumbent (orange: interval excludes no difference)", fontsize="medium")
    figure.tight_layout()
    return _png(figure)

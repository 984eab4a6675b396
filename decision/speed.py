"""Section 3, Speed: output tokens/s per length pair one request at a time and at the best measured
concurrency, TTFT and inter-token latency percentiles, optional cost per million output tokens.

    section = speed_section(ctx)     # also adds summary rows and ctx.facts["slo_point"]

Verdicts compare the two models over *paired conditions* (the same length pair and load for
both): the geometric mean of the per-condition ratio with a 95% t interval. The bench keeps one
run per condition, so this interval is the only one its records allow; it mixes run-to-run
noise with real differences between conditions, and says so in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decision import plots
from decision.context import Context, SummaryRow
from decision.document import Image, Missing, Paragraph, Section, Table
from decision.stats import PairedRatio, paired_conditions_needed, paired_ratio, verdict

CANONICAL_PAIRS = ((128, 256), (256, 512), (512, 1024))
Point = dict[str, Any]


def _pair(point: Point) -> tuple[int, int]:
    return int(point["prompt_len"]), int(point["output_len"])


def speed_section(ctx: Context) -> Section:
    section = Section("speed", "3. Speed")
    if ctx.bench is None:
        section.blocks.append(Missing("output tokens/s, TTFT and inter-token latency per model", "`make bench`"))
        return section
    source = ctx.sources.file(ctx.bench.path)
    models = {n: ctx.bench.results["models"].get(n) or {} for n in ctx.models}
    measured = sorted(
        {_pair(p) for row in models.values() for p in [*row.get("single_stream", []), *row.get("sweep", [])]}
    )
    pairs = [p for p in CANONICAL_PAIRS if p in measured] + [p for p in measured if p not in CANONICAL_PAIRS]
    price = ctx.gpu_hour_usd
    header = [
        "length pair",
        "model",
        "one at a time: tok/s",
        "TTFT p50 ms (one at a time)",
        "best concurrency",
        "tok/s there",
        "TTFT p50 / p90 / p99 ms there",
        "ITL p50 / p90 / p99 ms there",
    ]
    if price is not None:
        header.append(f"$ per 1M output tokens at ${price:g}/h")
    rows = []
    for pair in pairs:
        for name in ctx.models:
            single = _single(models[name], pair)
            best = _best(models[name], pair)
            row = [
                f"{pair[0]}->{pair[1]}",
                ctx.label(name),
                _num(single["output_tokens_per_s"] if single else None, ".1f"),
                _num(single["ttft_ms"]["p50"] if single else None, ".0f"),
                str(best["concurrency"]) if best else "not swept",
                _num(best["output_tokens_per_s"] if best else None, ".0f"),
                _pcts(best, "ttft_ms", ".0f"),
                _pcts(best, "itl_ms", ".1f"),
            ]
            if price is not None:
                tps = best["output_tokens_per_s"] if best else None
                row.append(f"${price / (tps * 3600) * 1e6:,.2f}" if tps else "n/a")
            rows.append(row)
    section.blocks.append(
        Table(
            header,
            rows,
            sources=[source],
            caption="Direct to each engine, fixed output lengths, greedy decoding (`models.<name>.single_stream`, "
            "`models.<name>.sweep`). Best concurrency = the sweep level with the most output tok/s.",
        )
    )
    absent = [p for p in CANONICAL_PAIRS if p not in measured]
    if absent:
        section.blocks.append(
            Missing(
                f"{', '.join(f'{p}->{o}' for p, o in absent)}: not measured by this {ctx.bench.mode}-mode run",
                "`make bench` (full mode)",
            )
        )
    if price is not None and ctx.bench.results.get("platform") == "cpu":
        section.blocks.append(
            Paragraph(
                f"The cost column applies ${price:g} per hour to throughput measured on a CPU: it shows the "
                "arithmetic, not a GPU price."
            )
        )
    section.blocks.append(
        Image(
            "speed.png",
            "Output tokens/s and median TTFT against concurrent streams, per model and length pair",
            plots.speed(models, ctx.models),
            sources=[source],
        )
    )
    _summary_rows(ctx, models, source)
    return section


def _single(row: dict[str, Any], pair: tuple[int, int]) -> Point | None:
    return next((p for p in row.get("single_stream", []) if _pair(p) == pair), None)


def _best(row: dict[str, Any], pair: tuple[int, int]) -> Point | None:
    points = [p for p in row.get("sweep", []) if _pair(p) == pair and p.get("output_tokens_per_s")]
    return max(points, key=lambda p: p["output_tokens_per_s"], default=None)


def _conditions(row: dict[str, Any], *, loaded: bool) -> dict[tuple[Any, ...], Point]:
    """One-at-a-time points (single-stream runs and sweep level 1) or sweep points under load."""
    out: dict[tuple[Any, ...], Point] = {}
    if not loaded:
        for p in row.get("single_stream", []):
            out[("single", *_pair(p))] = p
    for p in row.get("sweep", []):
        if (p["concurrency"] > 1) == loaded:
            out[("sweep", p["concurrency"], *_pair(p))] = p
    return out


def _summary_rows(ctx: Context, models: dict[str, dict[str, Any]], source: Any) -> None:
    cand, inc = (models[n] for n in ctx.models)
    slo = ctx.rules.latency_slo
    if slo is not None:
        point = next(
            (
                p
                for p in cand.get("sweep", [])
                if p["concurrency"] == slo.concurrency and _pair(p) == (slo.prompt_tokens, slo.output_tokens)
            ),
            None,
        )
        ctx.facts["slo_point"] = {"point": point, "source": source}

    def metric(p: Point, key: str) -> float | None:
        value = p.get(key)
        if isinstance(value, dict):
            value = value.get("p50")
        return float(value) if value is not None else None

    specs: list[tuple[str, str, bool, bool, str, Callable[[float], str]]] = [
        ("output tok/s, one request at a time", "output_tokens_per_s", False, True, "tok/s", lambda v: f"{v:.1f}"),
        ("output tok/s under load (2+ streams)", "output_tokens_per_s", True, True, "tok/s", lambda v: f"{v:.0f}"),
        ("TTFT p50 under load", "ttft_ms", True, False, "ms", lambda v: f"{v:.0f} ms"),
        ("inter-token latency p50 under load", "itl_ms", True, False, "ms", lambda v: f"{v:.1f} ms"),
    ]
    for label, key, loaded, higher_better, unit, fmt in specs:
        a, b = _conditions(cand, loaded=loaded), _conditions(inc, loaded=loaded)
        common = [k for k in a if k in b and metric(a[k], key) and metric(b[k], key)]
        if not common:
            ctx.summary.append(SummaryRow(label, "n/a", "n/a", "—", "not measured", "—", "`make bench`", [source]))
            continue
        xs = [metric(a[k], key) or 0.0 for k in common]
        ys = [metric(b[k], key) or 0.0 for k in common]
        ratio = paired_ratio(xs, ys)
        assert ratio is not None
        shown = _headline(common, loaded)
        ctx.summary.append(
            SummaryRow(
                label,
                f"{fmt(metric(a[shown], key) or 0)} {_where(shown)}",
                f"{fmt(metric(b[shown], key) or 0)} {_where(shown)}",
                _ratio_text(ratio),
                _verdict_text(ctx, ratio, higher_better),
                f"{ratio.n} paired condition{'s' if ratio.n != 1 else ''}",
                _to_resolve(ratio),
                [source],
                {
                    "ratio": ratio.ratio,
                    "low": ratio.low,
                    "high": ratio.high,
                    "n": ratio.n,
                    "unit": f"candidate / incumbent, {unit}",
                    "conditions": [list(k) for k in common],
                },
            )
        )


def _headline(keys: list[tuple[Any, ...]], loaded: bool) -> tuple[Any, ...]:
    """The condition whose values the summary shows: the first length pair, most streams."""
    if not loaded:
        return keys[0]
    first_pair = keys[0][2:]
    same = [k for k in keys if k[2:] == first_pair]
    return max(same, key=lambda k: k[1])


def _where(key: tuple[Any, ...]) -> str:
    if key[0] == "single":
        return f"({key[1]}->{key[2]})"
    return f"({key[2]}->{key[3]}, {key[1]} streams)"


def _ratio_text(ratio: PairedRatio) -> str:
    if ratio.low is None or ratio.high is None:
        return f"x{ratio.ratio:.3f} (no interval)"
    return f"x{ratio.ratio:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]"


def _verdict_text(ctx: Context, ratio: PairedRatio, higher_better: bool) -> str:
    if ratio.low is None:
        return "no interval: one paired condition"
    direction = verdict(ratio.log_low, ratio.log_high, null=0.0)
    if direction is None:
        return "no detectable difference"
    candidate_better = (direction == "higher") == higher_better
    return f"{ctx.candidate if candidate_better else ctx.incumbent} ahead"


def _to_resolve(ratio: PairedRatio) -> str:
    if ratio.low is not None and verdict(ratio.log_low, ratio.log_high, null=0.0) is not None:
        return "resolved"
    needed = paired_conditions_needed(ratio.log_mean, ratio.log_sd)
    if needed is None:
        return "a second paired condition (`make bench`)" if ratio.log_sd is None else "no gap to resolve"
    return f"about {needed} paired conditions ({max(0, needed - ratio.n)} more)"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def _pcts(point: Point | None, key: str, fmt: str) -> str:
    if not point or not point.get(key):
        return "n/a"
    values = point[key]
    return " / ".join(_num(values.get(p), fmt) for p in ("p50", "p90", "p99"))

"""Section 4, Quality: accuracy per suite with 95% Wilson intervals, the paired difference
(Newcombe interval, McNemar's exact test), the rules' weighted difference, and examples chosen
by rule: per suite, the items where exactly one model was right, with both answers.

    section = quality_section(ctx)     # also adds summary rows and ctx.facts["quality"]

The weighted difference is sum(w_s * d_s) / sum(w_s) over the suites with results and a
positive weight; its standard error combines the suites' (independent items) as
sqrt(sum(w_s^2 * se_s^2)) / sum(w_s), each se_s read off the suite's Newcombe interval
(half-width / 1.96), which stays positive at 0 or n correct where the Wald form collapses.
"""

from __future__ import annotations

import math
from typing import Any

from decision import plots
from decision.context import Context, SummaryRow
from decision.document import Example, Image, Missing, Paragraph, Section, Table
from decision.stats import Z_ALPHA, Z_BETA, mcnemar_items_needed, scale_needed, verdict

EVAL_COMMAND = "`make eval`"


def quality_section(ctx: Context) -> Section:
    section = Section("quality", "4. Quality")
    if ctx.quality is None:
        section.blocks.append(Missing("accuracy per suite with intervals and the paired test", EVAL_COMMAND))
        return section
    summary = ctx.quality.summary
    source = ctx.sources.file(ctx.quality.path, note="make eval summary")
    missing_models = [n for n in ctx.models if n not in (summary.get("models") or [])]
    if missing_models:
        section.blocks.append(
            Missing(f"quality of {', '.join(missing_models)}: not in this evaluation run", "`make eval MODELS=r1,qwen`")
        )
        return section
    suites = list(summary["suites"])
    paired = {suite: _oriented(ctx, summary["paired"].get(suite) or []) for suite in suites}
    rows = []
    for suite in suites:
        stats = summary["suites"][suite]
        p = paired[suite]
        rows.append(
            [
                suite,
                _accuracy(stats[ctx.candidate]),
                _accuracy(stats[ctx.incumbent]),
                str(p["n"]) if p else "0",
                str(p["only_cand"]) if p else "—",
                str(p["only_inc"]) if p else "—",
                _difference(p),
                f"{p['mcnemar_exact_p']:.3g}" if p and p["n"] else "—",
                f"{ctx.rules.quality_weights.get(suite, 0):g}",
            ]
        )
    section.blocks.append(
        Table(
            [
                "suite",
                f"{ctx.label(ctx.candidate)} accuracy [95% CI]",
                f"{ctx.label(ctx.incumbent)} accuracy [95% CI]",
                "items paired",
                "only candidate right",
                "only incumbent right",
                "candidate - incumbent [95% CI]",
                "McNemar exact p",
                "rule weight",
            ],
            rows,
            sources=[source],
            caption="Sample 0 of each item; Wilson intervals per model, Newcombe's paired interval for the "
            "difference (`suites.<suite>.<model>`, `paired.<suite>`).",
        )
    )
    run = ctx.quality.run
    section.blocks.append(
        Paragraph(
            f"Run settings: {run.get('limit') or 'all'} items per suite, max_tokens "
            f"{run.get('max_tokens') or 'rest of the context'}, seed {run.get('seed')}; each model prompted and "
            "sampled as its card recommends (see the evaluation's run.json)."
        )
    )
    section.blocks.append(
        Image(
            "quality.png",
            "Accuracy per suite with 95% Wilson intervals",
            plots.quality(summary, ctx.models),
            sources=[source],
        )
    )
    _summary_rows(ctx, suites, paired, source)
    _examples(ctx, section, suites)
    return section


def _oriented(ctx: Context, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The suite's paired comparison as candidate - incumbent, whichever order the run used."""
    for p in entries:
        if (p["a"], p["b"]) == ctx.models:
            return {**p, "only_cand": p["only_a"], "only_inc": p["only_b"]}
        if (p["b"], p["a"]) == ctx.models:
            return {
                **p,
                "difference": -p["difference"],
                "low": -p["high"],
                "high": -p["low"],
                "only_cand": p["only_b"],
                "only_inc": p["only_a"],
            }
    return None


def _summary_rows(ctx: Context, suites: list[str], paired: dict[str, Any], source: Any) -> None:
    assert ctx.quality is not None
    stats = ctx.quality.summary["suites"]
    weights = {s: ctx.rules.quality_weights.get(s, 0.0) for s in suites if paired[s] and paired[s]["n"]}
    for suite in suites:
        p = paired[suite]
        if not p or not p["n"]:
            ctx.summary.append(
                SummaryRow(f"quality: {suite}", "n/a", "n/a", "—", "not measured", "0 items", EVAL_COMMAND, [source])
            )
            continue
        direction = verdict(p["low"], p["high"], null=0.0)
        needed = mcnemar_items_needed(p["only_cand"], p["only_inc"], p["n"])
        ctx.summary.append(
            SummaryRow(
                f"quality: {suite} (weight {weights.get(suite, 0):g})",
                _accuracy(stats[suite][ctx.candidate]),
                _accuracy(stats[suite][ctx.incumbent]),
                _difference(p),
                _ahead(ctx, direction),
                f"{p['n']} items",
                _items_text(direction, needed, p),
                [source],
                {"estimate": p["difference"], "low": p["low"], "high": p["high"], "n": p["n"], "unit": "accuracy"},
            )
        )
    deciding = {s: w for s, w in weights.items() if w > 0}
    unweighted = [s for s, w in ctx.rules.quality_weights.items() if w > 0 and s not in deciding]
    if not deciding:
        ctx.facts["quality"] = None
        ctx.summary.append(
            SummaryRow(
                "quality, weighted by the rules",
                "n/a",
                "n/a",
                "—",
                "not measured: no suite with a positive weight has results",
                "—",
                EVAL_COMMAND,
                [source],
            )
        )
        return
    total = sum(deciding.values())
    estimate = sum(w * paired[s]["difference"] for s, w in deciding.items()) / total
    se = math.sqrt(sum((w * (paired[s]["high"] - paired[s]["low"]) / (2 * Z_ALPHA)) ** 2 for s, w in deciding.items()))
    se /= total
    low, high = estimate - Z_ALPHA * se, estimate + Z_ALPHA * se
    direction = verdict(low, high, null=0.0)
    factor = scale_needed(estimate, se)
    items = {s: paired[s]["n"] for s in deciding}
    if direction is not None:
        to_resolve = "resolved"
    elif factor is None:
        detectable = (Z_ALPHA + Z_BETA) * se
        to_resolve = (
            f"observed gap 0, which more items cannot resolve; at these sizes only a gap of about "
            f"{100 * detectable:.0f} pts would be detected (80% power)"
        )
    else:
        per_suite = ", ".join(f"{s} ~{math.ceil(n * factor)}" for s, n in items.items())
        to_resolve = f"about {factor:.1f}x the items per suite ({per_suite})"
    ctx.facts["quality"] = {
        "estimate": estimate,
        "low": low,
        "high": high,
        "se": se,
        "weights": deciding,
        "items": items,
        "missing_suites": unweighted,
        "to_resolve": to_resolve,
        "source": source,
    }
    ctx.summary.append(
        SummaryRow(
            "quality, weighted by the rules (" + ", ".join(f"{s} {w:g}" for s, w in deciding.items()) + ")",
            _pct(sum(w * (stats[s][ctx.candidate]["accuracy"] or 0) for s, w in deciding.items()) / total),
            _pct(sum(w * (stats[s][ctx.incumbent]["accuracy"] or 0) for s, w in deciding.items()) / total),
            f"{_pts(estimate)} [{_pts(low)}, {_pts(high)}]",
            _ahead(ctx, direction),
            ", ".join(f"{s} {n}" for s, n in items.items()) + " items",
            to_resolve,
            [source],
            {"estimate": estimate, "low": low, "high": high, "unit": "accuracy", "weights": deciding},
        )
    )


def _ahead(ctx: Context, direction: str | None) -> str:
    if direction is None:
        return "no detectable difference"
    return f"{ctx.candidate if direction == 'higher' else ctx.incumbent} ahead"


def _items_text(direction: str | None, needed: int | None, p: dict[str, Any]) -> str:
    if direction is not None:
        return "resolved"
    if needed is None:
        if p["only_cand"] + p["only_inc"] == 0:
            return "the models never disagreed: no gap to resolve"
        return "disagreements split evenly: no gap to resolve"
    return f"about {needed} items ({max(0, needed - p['n'])} more)"


def _examples(ctx: Context, section: Section, suites: list[str]) -> None:
    assert ctx.quality is not None
    k = ctx.rules.examples_per_suite
    section.blocks.append(
        Paragraph(
            f"**Examples, chosen by rule** (`examples_per_suite: {k}`): per suite, the first {k} items in item "
            "order where only the candidate was right, and the first "
            f"{k} where only the incumbent was; both answers shown, reasoning folded."
        )
    )
    records = ctx.quality.records
    if records is None:
        section.blocks.append(
            Missing(
                f"examples: `{ctx.sources.origin(ctx.quality.records_path)}` is not here (records.jsonl files are "
                "git-ignored, so committed runs have none)",
                f"`make eval EVAL_OUT={ctx.sources.origin(ctx.quality.directory)}` (or any new run)",
            )
        )
        return
    first = {(r["suite"], r["item_id"], r["model"]): r for r in records if r.get("sample") == 0 and not r.get("error")}
    chosen_records: list[dict[str, Any]] = []
    for suite in suites:
        items = sorted({i for s, i, _ in first if s == suite}, key=_item_order)
        both = [i for i in items if (suite, i, ctx.candidate) in first and (suite, i, ctx.incumbent) in first]
        only_cand = [
            i
            for i in both
            if first[suite, i, ctx.candidate]["correct"] and not first[suite, i, ctx.incumbent]["correct"]
        ]
        only_inc = [
            i
            for i in both
            if first[suite, i, ctx.incumbent]["correct"] and not first[suite, i, ctx.candidate]["correct"]
        ]
        chosen = [(i, ctx.candidate) for i in only_cand[:k]] + [(i, ctx.incumbent) for i in only_inc[:k]]
        if not chosen:
            section.blocks.append(
                Paragraph(f"`{suite}`: no item where exactly one model was right ({len(both)} items answered by both).")
            )
            continue
        for item_id, winner in chosen:
            pair = [first[suite, item_id, ctx.candidate], first[suite, item_id, ctx.incumbent]]
            chosen_records += pair
            section.blocks.append(_example(ctx, suite, item_id, winner, pair))
    if chosen_records:
        source = ctx.sources.data(
            "eval-examples.json",
            chosen_records,
            origin=ctx.sources.origin(ctx.quality.records_path),
            note="the records of the examples shown, copied from records.jsonl",
        )
        for block in section.blocks:
            if isinstance(block, Example):
                block.sources.append(source)


def _example(ctx: Context, suite: str, item_id: str, winner: str, pair: list[dict[str, Any]]) -> Example:
    limit = ctx.rules.example_chars
    messages = pair[0].get("messages") or []
    prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    answers = []
    for record in pair:
        verdict_word = "right" if record["correct"] else "wrong"
        extracted = record.get("extracted")
        heading = f"{ctx.label(record['model'])}: {verdict_word}" + (
            f" (extracted: `{extracted}`)" if extracted else ""
        )
        answers.append((heading, _cut(record.get("answer") or "", limit), _cut(record.get("reasoning") or "", limit)))
    return Example(
        f"{suite} / {item_id}: only {winner} right (reference: {_cut(str(pair[0].get('reference')), 200)})",
        _cut(prompt, limit),
        answers,
    )


def _item_order(item_id: str) -> tuple[str, int]:
    """humaneval/HumanEval/10 after HumanEval/9: numbers at the end sort as numbers."""
    head, _, tail = item_id.rpartition("/")
    return (head, int(tail)) if tail.isdigit() else (item_id, 0)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit:,} more characters]"


def _accuracy(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "—"
    low, high = stats["ci95"]
    return f"{stats['correct']}/{stats['n']} = {_pct(stats['accuracy'])} [{_pct(low)}, {_pct(high)}]"


def _difference(p: dict[str, Any] | None) -> str:
    if not p or not p["n"]:
        return "—"
    return f"{_pts(p['difference'])} [{_pts(p['low'])}, {_pts(p['high'])}]"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _pts(value: float) -> str:
    """A difference of accuracies, in percentage points."""
    return f"{100 * value:+.1f} pts"

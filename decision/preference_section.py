"""Section 5, Preference: votes from the comparison page and on live-traffic pairs, tallied apart:
decisive win rates with Wilson intervals, ties apart, and the length-controlled estimate of
gateway/preference.py where the data allow it.

    section = preference_section(ctx)     # adds a summary row per source, ctx.facts["preference"]
"""

from __future__ import annotations

import math
from typing import Any

from decision import plots
from decision.context import Context, SummaryRow
from decision.document import Image, Missing, Paragraph, Section, Table
from decision.stats import Z_ALPHA, scale_needed, verdict, votes_needed
from gateway.preference import MIN_DECISIVE, Judgement, PairPreference, pair_preferences

VOTE_COMMAND = "`make run`, then votes on the comparison page (http://127.0.0.1:8000/)"
LIVE_COMMAND = (
    "the gateway's traffic mirror: `PUT /v1/traffic/assistant` with a `mirror_fraction` (and `store_prompts: true` "
    "in the config), then votes in the page's Live pairs view; this section reads them from the same store"
)
SOURCES = {
    "compare": ("side-by-side votes", "votes.json", VOTE_COMMAND),
    "live": ("live-traffic pairs", "live-votes.json", LIVE_COMMAND),
}


def preference_section(ctx: Context) -> Section:
    section = Section("preference", "5. Preference")
    facts: dict[str, Any] = {}
    for source, judgements in (("compare", ctx.votes), ("live", ctx.live)):
        label, _, command = SOURCES[source]
        section.blocks.append(Paragraph(f"**{label[0].upper() + label[1:]}**"))
        if judgements is None:
            section.blocks.append(Missing(f"{label}: no vote store at `{ctx.votes_where()}`", command))
        elif not judgements:
            section.blocks.append(Missing(f"{label}: `{ctx.votes_where()}` holds none yet", command))
        else:
            found = _tally(ctx, section, source, judgements)
            if found is not None:
                facts[source] = found
        if source not in facts:
            ctx.summary.append(
                SummaryRow(f"preference: {label}", "n/a", "n/a", "—", "not measured", "0 votes", command, [])
            )
    deciding = next((facts[s] | {"source_kind": s} for s in ctx.rules.preference_sources if s in facts), None)
    ctx.facts["preference"] = deciding
    return section


def _tally(ctx: Context, section: Section, source: str, judgements: list[Judgement]) -> dict[str, Any] | None:
    label, file_name, command = SOURCES[source]
    rows_data = [
        {
            "model_a": j.model_a,
            "model_b": j.model_b,
            "outcome": j.outcome,
            "length_a": j.length_a,
            "length_b": j.length_b,
        }
        for j in judgements
    ]
    copy = ctx.sources.data(
        file_name,
        rows_data,
        origin=f"{ctx.votes_where()} ({source})",
        note="per-vote models, outcome and answer lengths (characters) from decision/votes_source.py; no prompts",
    )
    pairs = pair_preferences(judgements)
    rows = []
    for pair in pairs:
        first, second = pair.models
        lc = pair.length_controlled
        rows.append(
            [
                f"{first} vs {second}",
                str(pair.votes),
                f"{pair.wins[first]} / {pair.wins[second]}",
                str(pair.ties),
                str(pair.both_bad),
                _rate(pair.win_rate.rate, pair.win_rate.low, pair.win_rate.high)
                if pair.decisive
                else "no decisive votes",
                _rate(lc.win_probability.rate, lc.win_probability.low, lc.win_probability.high)
                if lc
                else _why_not(pair),
            ]
        )
    section.blocks.append(
        Table(
            [
                "pair (first vs second)",
                "votes",
                "wins first / second",
                "ties",
                "both bad",
                "first's win rate, decisive votes [95% Wilson]",
                "first's win probability at equal length [95% CI]",
            ],
            rows,
            sources=[copy],
            caption="Ties and both-bad are counted apart from the win rate; the length-controlled estimate is a "
            "logistic regression on the normalized answer-length difference over the decisive votes "
            "(gateway/preference.py).",
        )
    )
    found = next((p for p in pairs if set(p.models) == set(ctx.models)), None)
    if found is None:
        section.blocks.append(
            Paragraph(
                f"No {label} between {ctx.candidate} and {ctx.incumbent}: the ones above are between other models."
            )
        )
        return None
    pair = found
    section.blocks.append(
        Image(f"preference-{source}.png", f"Win rates of the {label}, 95% intervals", plots.preference(pairs), [copy])
    )
    lc = pair.length_controlled
    if lc is not None:
        rate, low, high, kind = (
            lc.win_probability.rate,
            lc.win_probability.low,
            lc.win_probability.high,
            "length-controlled",
        )
    else:
        rate, low, high, kind = pair.win_rate.rate, pair.win_rate.low, pair.win_rate.high, "raw decisive"
    if pair.models[0] != ctx.candidate:  # the estimates are for models[0]
        rate, low, high = 1 - rate, 1 - high, 1 - low
    direction = verdict(low, high, null=0.5) if pair.decisive else None
    needed = votes_needed(rate) if pair.decisive else None
    if lc is not None:  # the fit's own standard error (length soaks up some of the signal), on the logit scale
        se = (_logit(high) - _logit(low)) / (2 * Z_ALPHA)
        factor = scale_needed(_logit(rate), se)
        needed = math.ceil(pair.decisive * factor) if factor is not None else None
    if direction is not None:
        to_resolve = "resolved"
    elif needed is None:
        to_resolve = "an even split: no gap to resolve" if pair.decisive else command
    else:
        to_resolve = f"about {needed} decisive votes ({max(0, needed - pair.decisive)} more)"
    ahead = (
        "no detectable difference"
        if direction is None
        else f"{ctx.candidate if direction == 'higher' else ctx.incumbent} ahead"
    )
    ctx.summary.append(
        SummaryRow(
            f"preference: {label}, candidate's {kind} win rate",
            _rate(rate, low, high),
            _rate(1 - rate, 1 - high, 1 - low),
            f"{100 * (rate - 0.5):+.1f} pts from 50%",
            ahead,
            f"{pair.decisive} decisive of {pair.votes} votes",
            to_resolve,
            [copy],
            {"estimate": rate, "low": low, "high": high, "null": 0.5, "kind": kind},
        )
    )
    return {"rate": rate, "low": low, "high": high, "kind": kind, "decisive": pair.decisive, "to_resolve": to_resolve,
            "label": label}  # fmt: skip


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _why_not(pair: PairPreference) -> str:
    if pair.decisive < MIN_DECISIVE:
        return f"not estimated: {pair.decisive} decisive votes (needs {MIN_DECISIVE})"
    if 0 in pair.wins.values():
        return "not estimated: one model won every decisive vote"
    return "not estimated: the length difference separates or does not vary"


def _rate(rate: float, low: float, high: float) -> str:
    return f"{100 * rate:.1f}% [{100 * low:.1f}%, {100 * high:.1f}%]"

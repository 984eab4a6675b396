"""Sections 6 and 7: the summary table across dimensions, and the recommendation the rules give.

    summary = summary_section(ctx)
    decision = decide(ctx)                   # Decision(action, rule, reason, would_change, trail)
    section = recommendation_section(ctx, decision)

The rules (decision/rules.yaml) are applied in order and the first that fires decides:
1 memory budget, 2 latency SLO, 3 weighted quality, 4 preference, 5 `when_undecided`.
A rule whose measurement is missing does not fire; the trail says it was skipped and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decision import plots
from decision.context import Context
from decision.document import Bullets, Image, Paragraph, Section, Table

GIB = 2**30


@dataclass
class Decision:
    action: str  # "replace" | "keep"
    rule: str  # the rule that decided
    reason: str
    would_change: list[str]
    trail: list[str] = field(default_factory=list)  # every rule, in order, and what it found

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "rule": self.rule,
            "reason": self.reason,
            "would_change": self.would_change,
            "trail": self.trail,
        }


def summary_section(ctx: Context) -> Section:
    section = Section("summary", "6. Summary")
    section.blocks.append(
        Paragraph(
            "One row per dimension, candidate beside incumbent. A model is called **ahead** only when the 95% "
            "interval of the difference excludes no difference; otherwise the row says **no detectable "
            "difference**, with the sample size and roughly how much more data would resolve the observed gap "
            "(two-sided 5% test, 80% power). Speed rows compare the models over paired conditions (same length "
            "pair and load): the geometric mean ratio candidate / incumbent with a t interval over those "
            "conditions, which mixes run-to-run noise with real differences between conditions."
        )
    )
    rows = [
        [
            row.dimension,
            row.candidate,
            row.incumbent,
            row.difference,
            f"**{row.verdict}**" if row.verdict.endswith(" ahead") else row.verdict,
            row.sample,
            row.to_resolve,
            ", ".join(s.link() for s in row.sources) or "—",
        ]
        for row in ctx.summary
    ]
    section.blocks.append(
        Table(
            [
                "dimension",
                ctx.label(ctx.candidate),
                ctx.label(ctx.incumbent),
                "difference [95% CI]",
                "verdict",
                "sample",
                "what would resolve it",
                "source",
            ],
            rows,
        )
    )
    png = plots.summary(ctx.summary, ctx.candidate, ctx.incumbent)
    if png is not None:
        section.blocks.append(
            Image("summary.png", "Candidate relative to incumbent, with 95% intervals", png, sources=[])
        )
    return section


def decide(ctx: Context) -> Decision:
    rules = ctx.rules
    trail: list[str] = []
    cand, inc = ctx.candidate, ctx.incumbent

    memory = ctx.facts.get("memory")
    if rules.memory_budget_gib is None:
        trail.append("memory budget: none set in the rules")
    elif memory is None or memory["peak_bytes"].get(cand) is None:
        trail.append("memory budget: skipped, the candidate's peak memory was not measured (`make bench`)")
    else:
        peak = memory["peak_bytes"][cand] / GIB
        if peak > rules.memory_budget_gib:
            trail.append(f"memory budget: {cand} peaks at {peak:.2f} GiB > {rules.memory_budget_gib:g} GiB")
            return Decision(
                "keep",
                "memory budget",
                f"{cand}'s peak memory under load ({memory['kind']}) is {peak:.2f} GiB, over the budget of "
                f"{rules.memory_budget_gib:g} GiB.",
                [
                    f"a budget of at least {peak:.2f} GiB (`memory_budget_gib`), or a candidate configuration that "
                    "peaks under the budget (smaller KV cache, shorter max_model_len)"
                ],
                trail,
            )
        trail.append(f"memory budget: {cand} peaks at {peak:.2f} GiB <= {rules.memory_budget_gib:g} GiB: passes")

    slo = rules.latency_slo
    point_info = ctx.facts.get("slo_point")
    if slo is None:
        trail.append("latency SLO: none set in the rules")
    elif not point_info or point_info["point"] is None:
        trail.append(
            f"2. latency SLO: skipped, no measurement of {cand} at {slo.concurrency} streams for "
            f"{slo.prompt_tokens}->{slo.output_tokens} (`make bench`)"
        )
    else:
        point = point_info["point"]
        misses = []
        for label, key, limit in (("TTFT p90", "ttft_ms", slo.ttft_p90_ms), ("ITL p90", "itl_ms", slo.itl_p90_ms)):
            value = (point.get(key) or {}).get("p90")
            if limit is not None and value is not None and value > limit:
                misses.append((label, value, limit))
        where = f"at {slo.concurrency} streams, {slo.prompt_tokens}->{slo.output_tokens}"
        if misses:
            text = "; ".join(f"{label} {value:.0f} ms > {limit:g} ms" for label, value, limit in misses)
            trail.append(f"latency SLO: {cand} misses it {where}: {text}")
            return Decision(
                "keep",
                "latency SLO",
                f"{cand} misses the latency SLO {where}: {text}.",
                [
                    f"{cand} meeting {label} <= {limit:g} ms {where} (measured {value:.0f} ms), or a looser SLO"
                    for label, value, limit in misses
                ],
                trail,
            )
        trail.append(f"latency SLO: {cand} meets it {where}")

    quality = ctx.facts.get("quality")
    if quality is None:
        trail.append("quality: skipped, no evaluated suite with a positive weight (`make eval`)")
    else:
        gap = f"{100 * quality['estimate']:+.1f} pts [{100 * quality['low']:+.1f}, {100 * quality['high']:+.1f}]"
        if quality["low"] > 0 or quality["high"] < 0:
            action = "replace" if quality["low"] > 0 else "keep"
            trail.append(f"quality: weighted difference {gap} excludes 0: {action}")
            return Decision(
                action,
                "weighted quality",
                f"The weighted accuracy difference ({cand} - {inc}) is {gap}: its 95% interval "
                f"{'lies above' if action == 'replace' else 'lies below'} 0.",
                [
                    "a larger evaluation whose interval reaches 0 (rerun `make eval` with more items)",
                    "other quality weights in the rules (`quality_weights`)",
                ],
                trail,
            )
        trail.append(f"quality: weighted difference {gap} includes 0: no detectable difference")

    preference = ctx.facts.get("preference")
    if not rules.preference_decides:
        trail.append("preference: not deciding (`preference_decides: false`)")
    elif preference is None:
        trail.append("preference: skipped, no votes between the two models (live pairs or side-by-side)")
    else:
        text = (
            f"{preference['label']}: {preference['kind']} win rate of {cand} {100 * preference['rate']:.1f}% "
            f"[{100 * preference['low']:.1f}%, {100 * preference['high']:.1f}%] over {preference['decisive']} "
            "decisive votes"
        )
        if preference["low"] > 0.5 or preference["high"] < 0.5:
            action = "replace" if preference["low"] > 0.5 else "keep"
            trail.append(f"preference: {text} excludes 50%: {action}")
            return Decision(
                action,
                "preference",
                f"The judges prefer {cand if action == 'replace' else inc}: {text}, whose 95% interval excludes 50%.",
                ["a quality result that excludes 0 (rule 3 comes first)", "more votes moving the interval over 50%"],
                trail,
            )
        trail.append(f"preference: {text} includes 50%: no detectable difference")

    default = rules.when_undecided
    trail.append(f"undecided: `when_undecided: {default}`")
    changes = []
    if quality is not None:
        changes.append(f"quality (observed {100 * quality['estimate']:+.1f} pts): {quality['to_resolve']}")
    else:
        changes.append("quality results (`make eval`) whose weighted difference excludes 0")
    if rules.preference_decides:
        if preference is not None:
            changes.append(f"preference: {preference['to_resolve']}")
        else:
            changes.append(
                "votes between the two models (live pairs or side-by-side) whose win-rate interval excludes 50%"
            )
    return Decision(
        default,
        "when undecided",
        "No rule found a detectable difference that decides"
        + (
            ": switching has a cost, so the incumbent stays."
            if default == "keep"
            else ": the rules replace by default."
        ),
        changes,
        trail,
    )


def recommendation_section(ctx: Context, decision: Decision) -> Section:
    section = Section("recommendation", "7. Recommendation")
    verb = (
        f"**Replace {ctx.incumbent} with {ctx.candidate}.**"
        if decision.action == "replace"
        else (f"**Keep {ctx.incumbent}.**")
    )
    section.blocks.append(Paragraph(f"{verb} Decided by the rule “{decision.rule}”: {decision.reason}"))
    section.blocks.append(Paragraph("The rules in order, and what each found:"))
    section.blocks.append(Bullets(decision.trail, ordered=True))
    section.blocks.append(Paragraph("What evidence would change it:"))
    section.blocks.append(Bullets(decision.would_change))
    rules_source = ctx.facts.get("rules_source")
    if rules_source is not None:
        section.blocks.append(Paragraph(f"Rules: {rules_source.link()}."))
    return section

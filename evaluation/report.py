"""Write a summary as report.md, summary.json and accuracy.png.

summary = summarize(RecordStore(out / "records.jsonl").load(), run_info)
paths = write_report(out, summary)        # {"markdown": ..., "json": ..., "plot": ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt

READING_GUIDE = """\
## How to read this

- **Accuracy** is the share of items answered fully right (sample 0 of each item), with a 95%
  Wilson score interval. Items whose request failed (see *errors*) are left out, not scored 0.
- **A - B** compares two models on the items both answered. Its 95% interval is Newcombe's
  paired score interval; McNemar's exact p-value asks whether the items only A got right and
  the items only B got right could be a 50/50 split. An interval that contains 0 (or p > 0.05)
  means this run cannot tell the two models apart on that suite: run more items (`--limit`).
- **Tokens and latency**: output tokens count reasoning too (R1 thinks before it answers);
  latency is the whole request under this run's concurrency, so compare models within a run.
  *Truncated* answers hit `max_tokens` or the context window before finishing.
- Smoke has three items: whatever it shows, its intervals are nearly the whole range.
"""


def write_report(out_dir: Path, summary: dict[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "summary.json", "markdown": out_dir / "report.md", "plot": out_dir / "accuracy.png"}
    paths["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(render_markdown(summary))
    plot_accuracy(summary, paths["plot"])
    return paths


def render_markdown(summary: dict[str, Any]) -> str:
    models: list[str] = summary["models"]
    suites: dict[str, Any] = summary["suites"]
    run = summary["run"]
    lines = ["# Answer-quality evaluation", ""]
    lines += _run_section(run)
    lines += ["## Accuracy (95% Wilson interval)", ""]
    lines += _table(
        ["suite", *models],
        [[suite, *(_accuracy_cell(suites[suite][m]) for m in models)] for suite in suites],
    )
    pairs = [(suite, p) for suite, ps in summary["paired"].items() for p in ps]
    if pairs:
        lines += ["## Paired difference on items both models answered", ""]
        lines += _table(
            ["suite", "A", "B", "items", "only A right", "only B right", "A - B [95% CI]", "McNemar exact p"],
            [
                [
                    suite,
                    p["a"],
                    p["b"],
                    str(p["n"]),
                    str(p["only_a"]),
                    str(p["only_b"]),
                    f"{_pct(p['difference'])} [{_pct(p['low'])}, {_pct(p['high'])}]" if p["n"] else "—",
                    f"{p['mcnemar_exact_p']:.3g}" if p["n"] else "—",
                ]
                for suite, p in pairs
            ],
        )
    lines += ["## Output tokens and latency", ""]
    lines += _table(
        [
            "suite",
            "model",
            "mean tokens",
            "mean latency s",
            "mean tokens (correct)",
            "mean latency s (correct)",
            "truncated",
            "errors",
        ],
        [
            [
                suite,
                m,
                _num(s["mean_output_tokens"], 0),
                _num(s["mean_latency_s"], 2),
                _num(s["mean_output_tokens_correct"], 0),
                _num(s["mean_latency_s_correct"], 2),
                str(s["truncated"]),
                str(s["errors"]),
            ]
            for suite in suites
            for m, s in suites[suite].items()
        ],
    )
    passk = [(suite, m, s) for suite in suites for m, s in suites[suite].items() if s.get("pass_at_k")]
    if passk:
        lines += ["## pass@k (unbiased estimator, 95% bootstrap interval over items)", ""]
        lines += _table(
            ["suite", "model", "samples", "pass@k"],
            [
                [
                    suite,
                    m,
                    str(s["samples"]),
                    "; ".join(
                        f"@{k}: {_pct(v['value'])} [{_pct(v['ci95'][0])}, {_pct(v['ci95'][1])}]"
                        for k, v in s["pass_at_k"].items()
                    ),
                ]
                for suite, m, s in passk
            ],
        )
    lines += ["## Accuracy per task", ""]
    lines += _table(
        ["suite", "task", *models],
        [
            [suite, task, *(_accuracy_cell(row[m]) for m in models)]
            for suite, tasks in summary["tasks"].items()
            for task, row in tasks.items()
        ],
    )
    lines += [READING_GUIDE]
    return "\n".join(lines)


def plot_accuracy(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars: accuracy per suite and model, with the Wilson interval as error bars."""
    models: list[str] = summary["models"]
    suites = list(summary["suites"])
    figure, axes = plt.subplots(figsize=(max(6.0, 1.8 * len(suites) + 2), 4.5))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        stats = [summary["suites"][s][model] for s in suites]
        values = [st["accuracy"] or 0.0 for st in stats]
        below = [v - st["ci95"][0] for v, st in zip(values, stats, strict=True)]
        above = [st["ci95"][1] - v for v, st in zip(values, stats, strict=True)]
        positions = [j + (i - (len(models) - 1) / 2) * width for j in range(len(suites))]
        bars = axes.bar(positions, values, width, label=model, yerr=[below, above], capsize=4)
        # Printed values keep a 0% bar visible and save reading heights off the axis.
        axes.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=2, fontsize="small")
    axes.set_xticks(range(len(suites)), [f"{s}\n(n={_n(summary, s)})" for s in suites])
    axes.set_ylim(0, 1.1)  # room for the labels of 100% bars
    axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.set_ylabel("accuracy (95% Wilson interval)")
    axes.set_title("Answer quality per suite")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=max(1, len(models)), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _run_section(run: dict[str, Any]) -> list[str]:
    lines = [
        f"- Gateway: `{run.get('gateway')}`; started {run.get('started')}, finished {run.get('finished')}",
        f"- Suites: {', '.join(run.get('suites') or [])}; limit per suite: {run.get('limit') or 'none'}; "
        f"samples per item: {run.get('samples')}; max_tokens: {run.get('max_tokens') or 'rest of the context'}; "
        f"seed: {run.get('seed')}",
    ]
    sandbox = run.get("sandbox") or {}
    if sandbox:
        lines.append(
            f"- Code sandbox: {sandbox.get('isolation')} isolation, network {sandbox.get('network')}, "
            f"timeout {sandbox.get('timeout_s')} s"
        )
        lines += [f"  - {layer}" for layer in sandbox.get("layers") or []]
    for name, policy in (run.get("policies") or {}).items():
        values = ", ".join(f"{k}={v}" for k, v in policy["sampling"].items())
        sampling = f"{values} ({policy['sampling_source']})" if values else policy["sampling_source"]
        system = "none" if not policy.get("system_prompt") else repr(policy["system_prompt"])
        lines.append(f"- `{name}`: {policy['family']} prompting; system prompt {system}; sampling: {sampling}")
    return [*lines, ""]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def _accuracy_cell(stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return "—"
    low, high = stats["ci95"]
    return f"{stats['correct']}/{stats['n']} = {_pct(stats['accuracy'])} [{_pct(low)}, {_pct(high)}]"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _n(summary: dict[str, Any], suite: str) -> int:
    return max((s["n"] for s in summary["suites"][suite].values()), default=0)

"""Records -> the numbers of the report (a plain dict, saved as summary.json).

    summary = summarize(records, run_info)
    summary["suites"]["math"]["r1-tiny"]["ci95"]      # [low, high], Wilson
    summary["paired"]["math"][0]["mcnemar_exact_p"]

What counts: a record with an `error` (the request failed) is left out and counted under
`errors`. Accuracy, its interval and the paired comparison use sample 0 of every item, one
binary verdict per item and model; with more samples, pass@1 (mean over samples) and pass@k
(unbiased estimator) get percentile-bootstrap intervals over items.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from statistics import fmean
from typing import Any

from evaluation.stats import bootstrap_mean_interval, compare_paired, pass_at_k, wilson_interval

PASS_AT = (1, 5, 10, 20, 50, 100)


def summarize(records: list[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    models = _ordered(run_info.get("models") or [], [r["model"] for r in records])
    suites = _ordered(run_info.get("suites") or [], [r["suite"] for r in records])
    answered = [r for r in records if not r.get("error")]
    first = [r for r in answered if r["sample"] == 0]
    summary: dict[str, Any] = {"run": run_info, "models": models, "suites": {}, "tasks": {}, "paired": {}}
    for suite in suites:
        summary["suites"][suite] = {
            model: _model_suite(
                [r for r in first if r["suite"] == suite and r["model"] == model],
                [r for r in answered if r["suite"] == suite and r["model"] == model],
                errors=sum(1 for r in records if r.get("error") and r["suite"] == suite and r["model"] == model),
            )
            for model in models
        }
        tasks = _ordered([], [r["task"] for r in first if r["suite"] == suite])
        summary["tasks"][suite] = {
            task: {
                model: _accuracy(
                    [r for r in first if r["suite"] == suite and r["task"] == task and r["model"] == model]
                )
                for model in models
            }
            for task in tasks
        }
        summary["paired"][suite] = [_paired(first, suite, a, b) for a, b in combinations(models, 2)]
    return summary


def _model_suite(first: list[dict[str, Any]], all_samples: list[dict[str, Any]], *, errors: int) -> dict[str, Any]:
    correct = [r for r in first if r["correct"]]
    result = _accuracy(first) | {
        "errors": errors,
        "truncated": sum(1 for r in first if r.get("finish_reason") == "length"),
        "mean_output_tokens": _mean(r.get("completion_tokens") for r in first),
        "mean_latency_s": _mean(r.get("latency_s") for r in first),
        "mean_output_tokens_correct": _mean(r.get("completion_tokens") for r in correct),
        "mean_latency_s_correct": _mean(r.get("latency_s") for r in correct),
    }
    samples = max((r["sample"] for r in all_samples), default=0) + 1
    if samples > 1:
        result["samples"] = samples
        result["pass_at_k"] = _pass_at_k(all_samples, samples)
    return result


def _accuracy(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    correct = sum(1 for r in records if r["correct"])
    low, high = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None, "ci95": [low, high]}


def _pass_at_k(records: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    per_item: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        per_item[r["item_id"]].append(bool(r["correct"]))
    out: dict[str, Any] = {}
    for k in sorted({k for k in PASS_AT if k <= samples} | {samples}):
        values = [pass_at_k(len(v), sum(v), k) for v in per_item.values() if len(v) >= k]
        if values:
            low, high = bootstrap_mean_interval(values)
            out[str(k)] = {"items": len(values), "value": fmean(values), "ci95": [low, high]}
    return out


def _paired(first: list[dict[str, Any]], suite: str, a: str, b: str) -> dict[str, Any]:
    verdicts: dict[str, dict[str, bool]] = {a: {}, b: {}}
    for r in first:
        if r["suite"] == suite and r["model"] in verdicts:
            verdicts[r["model"]][r["item_id"]] = bool(r["correct"])
    both = sorted(set(verdicts[a]) & set(verdicts[b]))
    comparison = compare_paired([verdicts[a][i] for i in both], [verdicts[b][i] for i in both])
    return {"a": a, "b": b, **comparison.to_json()}


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return fmean(present) if present else None


def _ordered(preferred: list[str], seen: list[str]) -> list[str]:
    """`preferred` first (the run's own order), then anything else the records mention."""
    out = [x for x in preferred if x in seen or not seen]
    for x in seen:
        if x not in out:
            out.append(x)
    return out

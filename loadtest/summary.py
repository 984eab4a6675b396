"""Per-model totals from Locust's stats at the end of a run: output tokens and tokens/s.

    summary = summarize(environment.stats)
    summary["models"]["qwen-tiny"]["output_tokens"], summary["output_tokens_per_s"]

Locust's own CSV has a row per (type, name) with latency percentiles; this adds what it
cannot: the sum of the servers' `usage.completion_tokens` (the content length of the `chat`
and `compare` rows) per model and over the run's wall time. Row names are "<scenario> <model>"
(compare rows: "compare <model>+<model>").

Pure module: no User classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Rows whose content length is output tokens: chat requests and compare requests (both models).
TOKEN_TYPES = ("chat", "compare")


def summarize(stats: Any) -> dict[str, Any]:
    total = stats.total
    wall_s = max(0.0, (total.last_request_timestamp or 0) - (total.start_time or 0))
    models: dict[str, dict[str, Any]] = {}
    for entry in stats.entries.values():
        if entry.method not in TOKEN_TYPES:
            continue
        model = entry.name.rsplit(" ", 1)[-1]
        row = models.setdefault(model, {"requests": 0, "failures": 0, "output_tokens": 0})
        row["requests"] += entry.num_requests
        row["failures"] += entry.num_failures
        row["output_tokens"] += entry.total_content_length
    for row in models.values():
        row["output_tokens_per_s"] = row["output_tokens"] / wall_s if wall_s else 0.0
    tokens = sum(row["output_tokens"] for row in models.values())
    return {
        "wall_s": wall_s,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall_s if wall_s else 0.0,
        "models": models,
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<28} {'requests':>9} {'failures':>9} {'output tokens':>14} {'output tok/s':>13}"]
    for model, row in sorted(summary["models"].items()):
        lines.append(
            f"{model:<28} {row['requests']:>9} {row['failures']:>9} {row['output_tokens']:>14} "
            f"{row['output_tokens_per_s']:>13.1f}"
        )
    lines.append(
        f"{'all (wall ' + format(summary['wall_s'], '.1f') + ' s)':<28} {'':>9} {'':>9} "
        f"{summary['output_tokens']:>14} {summary['output_tokens_per_s']:>13.1f}"
    )
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")

"""Turn a DeploymentPlan into Markdown tables (for the terminal, the README and config comments).

print(render_plan(plan))
rows = engine_table(plan)      # just the table lines
"""

from __future__ import annotations

from planner.gpus import GIB
from planner.memory import DeploymentPlan, Split


def render_plan(plan: DeploymentPlan) -> str:
    lines = [_title(plan), "", *engine_table(plan)]
    notes = [f"- {e.name}: {w}" for e in plan.engines for w in e.warnings] + [f"- {w}" for w in plan.warnings]
    if notes:
        lines += ["", "Warnings:", *notes]
    if plan.splits:
        lines += ["", *split_table(plan.splits)]
    if plan.platform == "gpu" and plan.engines:
        allowance = plan.engines[0].allowance
        lines += [
            "",
            f"Allowance per engine = {allowance.runtime / GIB:.2f} GiB runtime (CUDA graphs, workspaces) "
            "+ activations (max_num_batched_tokens x layer widths x dtype) + sampler (max_num_seqs x vocab x 8 B).",
        ]
    return "\n".join(lines)


def engine_table(plan: DeploymentPlan) -> list[str]:
    if plan.platform == "cpu":
        header = ["engine", "dtype", "KV GiB", "KV B/token", "block", "KV tokens", "seqs @ max_len", "seqs @ typical"]
        rows = [
            [
                e.name,
                e.kv_dtype,
                f"{e.budget_bytes / GIB:g}",
                f"{e.kv_bytes_per_token:,}",
                str(e.block_size),
                f"{e.kv_tokens:,}",
                _seqs(e.seqs_at_max_len, e.max_model_len, e.max_num_seqs),
                _seqs(e.seqs_at_typical, e.typical_len, e.max_num_seqs),
            ]
            for e in plan.engines
        ]
    else:
        header = [
            "engine",
            "dtype",
            "util",
            "budget GiB",
            "weights GiB",
            "allowance GiB",
            "KV GiB",
            "KV B/token",
            "KV tokens",
            "seqs @ max_len",
            "seqs @ typical",
        ]
        rows = [
            [
                e.name + (f" (TP {e.tensor_parallel})" if e.tensor_parallel > 1 else ""),
                e.dtype if e.kv_dtype == e.dtype else f"{e.dtype}, KV {e.kv_dtype}",
                f"{e.utilization:.2f}",
                f"{e.budget_bytes / GIB:.2f}",
                f"{e.weight_bytes / GIB:.2f}",
                f"{e.allowance.total / GIB:.2f}",
                f"{e.kv_bytes / GIB:.2f}",
                f"{e.kv_bytes_per_token:,}",
                f"{e.kv_tokens:,}",
                _seqs(e.seqs_at_max_len, e.max_model_len, e.max_num_seqs),
                _seqs(e.seqs_at_typical, e.typical_len, e.max_num_seqs),
            ]
            for e in plan.engines
        ]
    return _markdown(header, rows)


def split_table(splits: list[Split]) -> list[str]:
    header = ["suggested split", "engine", "util", "KV tokens"]
    rows = [
        [split.label if i == 0 else "", name, f"{util:.3f}", f"{split.kv_tokens[name]:,}"]
        for split in splits
        for i, (name, util) in enumerate(split.utilizations.items())
    ]
    return _markdown(header, rows)


def _title(plan: DeploymentPlan) -> str:
    if plan.platform == "cpu":
        return "Platform cpu: KV cache = kv_cache_gib (VLLM_CPU_KVCACHE_SPACE); token counts as vLLM logs them"
    assert plan.gpu is not None
    return f"GPU {plan.gpu.name}: {plan.gpu.total_gib:.2f} GiB ({plan.gpu.memory_mib:,} MiB) per device"


def _seqs(fit: float, length: int, max_num_seqs: int) -> str:
    """Sequences of `length` tokens whose KV fits, and the max_num_seqs cap when it binds."""
    text = f"{fit:,.1f} x {length:,}"
    return text + f" (cap {max_num_seqs})" if fit > max_num_seqs else text


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]

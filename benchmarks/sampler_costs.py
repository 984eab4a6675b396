"""Per-step costs of vLLM's CPU sampler and of cpu_sampler's replacements, on the same inputs.

    python -m benchmarks.sampler_costs            # one thread, as an engine runs; tables on stdout
    python -m benchmarks.sampler_costs --json results/bench/sampler-costs.json

Top-p first: candidate techniques, timed on the same logits (why cpu_sampler does what it does).

Per logits shape (32 rows each): the R1 stand-in's (peaked, 151,936 tokens), SmolLM2's real
logits at its card's temperature 0.2 (49,152 tokens) and flat random logits (151,936 tokens),
all with top-p 0.95. Times are CPU seconds of this process (best of several runs), so other
work on the machine inflates them less than wall time would. The techniques:

- `vllm sort`: vLLM 0.32's own `apply_top_k_top_p` (the reference; full sort with indices);
- `torch.topk 32` / `chunked topk 32`: the prefilter of tier 1, over the row or over the 32
  chunks with the largest maxima (what cpu_sampler does);
- `np.partition 1000`: a selection kernel (introselect) for the 1,000 largest, unordered;
- `bisection`: bisection on the logit threshold, 30 passes of "mass above tau" over the row;
- `np.sort values`: the sorted values alone, tier 2's input;
- `cpu_sampler`: the whole exact function, all tiers included.

Only the prefilter and the sort are complete answers by themselves; selection and bisection
find the boundary of exact sums, not of vLLM's float32 ones, so they would need the same
certification and the same exact fallback as the prefilter, at a higher price per step.

Then the other two per-step costs of sampled decoding, vLLM's against ours: the repetition
penalty (Qwen's generation_config 1.1) for 32 sequences of 128 prompt and 200 output tokens,
and the Gumbel-max draw over rows that top-p left with one token and with 20 nearby tokens.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpu_sampler.top_k_top_p import TopKTopP, largest, make_apply_top_k_top_p

ROOT = Path(__file__).resolve().parent.parent


def cpu_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1000


def bisection(logits: torch.Tensor, p: float, passes: int = 30) -> torch.Tensor:
    """The logit threshold whose mass above is p, by bisection: one masked sum over the row per pass."""
    top = logits.amax(dim=1, keepdim=True)
    mass = torch.exp(logits - top)
    total = mass.sum(dim=1, keepdim=True)
    lo, hi = logits.amin(dim=1, keepdim=True), top
    for _ in range(passes):
        mid = (lo + hi) / 2
        above = torch.where(logits >= mid, mass, 0).sum(dim=1, keepdim=True) / total
        lo, hi = torch.where(above >= p, mid, lo), torch.where(above >= p, hi, mid)
    return lo


def shapes() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    peaked = torch.randn(32, 151936) * 4.3 / 0.6
    peaked[torch.arange(32), torch.randint(0, 151936, (32,))] += 150 / 0.6  # r1-tiny: max - mean ~ 155
    out = {"R1 stand-in (peaked), 151,936": peaked, "flat random, 151,936": torch.randn(32, 151936) * 0.5}
    smol = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
    if smol.exists():
        import transformers  # noqa: PLC0415  (heavy, and only when the model is built)

        tokenizer = transformers.AutoTokenizer.from_pretrained(smol)
        model = transformers.AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
        ids = tokenizer("The capital of France is Paris. It is known for the Eiffel Tower and", return_tensors="pt")
        with torch.no_grad():
            logits = model(ids.input_ids).logits[0]
        out["SmolLM2 real, T 0.2, 49,152"] = (logits[torch.arange(32) % logits.shape[0]] / 0.2).contiguous()
    return out


def measure() -> list[dict[str, Any]]:
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch  # noqa: PLC0415

    def vllm(x: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        return apply_top_k_top_p_pytorch(x, k, p, allow_cpu_sync=True)

    ours = make_apply_top_k_top_p(vllm)
    rows = []
    for name, logits in shapes().items():
        timings = time_techniques(logits, vllm, ours)
        rows.append({"logits": name, "rows": logits.shape[0]} | {k: round(v, 2) for k, v in timings.items()})
    return rows


def time_techniques(logits: torch.Tensor, vllm: TopKTopP, ours: TopKTopP) -> dict[str, float]:
    p = torch.full((logits.shape[0],), 0.95)
    copy = cpu_ms(logits.clone)
    return {
        "vllm sort": cpu_ms(lambda: vllm(logits.clone(), None, p), repeat=2) - copy,
        "torch.topk 32": cpu_ms(lambda: logits.topk(32, dim=1)),
        "chunked topk 32": cpu_ms(lambda: largest(logits, 32)),
        "np.partition 1000": cpu_ms(lambda: np.partition(logits.numpy(), logits.shape[1] - 1000, axis=1)),
        "bisection": cpu_ms(lambda: bisection(logits, 0.95), repeat=2),
        "np.sort values": cpu_ms(lambda: np.sort(logits.numpy(), axis=1)),
        "cpu_sampler": cpu_ms(lambda: ours(logits.clone(), None, p)) - copy,
    }


def other_costs() -> list[dict[str, Any]]:
    """The repetition penalty and the Gumbel-max draw, vLLM's way and ours."""
    import vllm._custom_ops  # noqa: F401, PLC0415  (registers torch.ops._C)
    from vllm.v1.sample.ops.penalties import apply_all_penalties  # noqa: PLC0415

    from cpu_sampler.penalties import make_apply_all_penalties  # noqa: PLC0415
    from cpu_sampler.sampling import gumbel_argmax  # noqa: PLC0415

    torch.manual_seed(1)
    rows, vocab = 32, 151936
    logits = torch.randn(rows, vocab)
    prompt = torch.randint(0, vocab, (rows, 128))
    outputs = [torch.randint(0, vocab, (200,)).tolist() for _ in range(rows)]
    zeros, penalty = torch.zeros(rows), torch.full((rows,), 1.1)
    ours = make_apply_all_penalties(apply_all_penalties)
    copy = cpu_ms(logits.clone)
    out = [
        {
            "step": "repetition penalty 1.1",
            "vllm": cpu_ms(lambda: apply_all_penalties(logits.clone(), prompt, zeros, zeros, penalty, outputs), 2)
            - copy,
            "cpu_sampler": cpu_ms(lambda: ours(logits.clone(), prompt, zeros, zeros, penalty, outputs)) - copy,
        }
    ]
    seeds = torch.randint(0, 2**31, (rows,))
    for kept in (1, 20):
        masked = torch.full((rows, vocab), -float("inf"))
        survivors: dict[int, torch.Tensor] = {}
        for row in range(rows):
            # within 140 positions: the window case (survivors spread over the row take vLLM's path)
            index = torch.arange(kept) * 7 + 1000 * row
            masked[row, index] = torch.randn(kept)
            survivors[row] = index
        out.append(
            {
                "step": f"Gumbel-max draw, {kept} token(s) left per row",
                "vllm": cpu_ms(functools.partial(torch.ops._C.fused_gumbel_argmax, masked, seeds)),
                "cpu_sampler": cpu_ms(functools.partial(gumbel_argmax, masked, seeds, survivors)),
            }
        )
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = measure()
    columns = [c for c in rows[0] if c not in ("logits", "rows")]
    print("| logits (32 rows, top-p 0.95) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        print(f"| {row['logits']} | " + " | ".join(f"{row[c]:.1f} ms" for c in columns) + " |")
    others = other_costs()
    print("\n| per step, 32 rows of 151,936 | vLLM 0.32 | cpu_sampler |\n|---|---|---|")
    for row in others:
        print(f"| {row['step']} | {row['vllm']:.1f} ms | {row['cpu_sampler']:.1f} ms |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"unit": "CPU ms per step, best of runs", "top_p": rows, "other_steps": others}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

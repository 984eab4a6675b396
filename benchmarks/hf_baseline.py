"""The baseline method: Hugging Face transformers `generate`, one request at a time.

    python -m benchmarks.hf_baseline --model .cache/models/qwen-tiny --pairs 128:256,256:512 \\
        --requests 2 --cores 0 --dtype float32 --out hf.json
    result = run_hf_baseline(model_dir, pairs=[(128, 256)], requests=2, cores=[0])   # same, in a subprocess

Prompts are built exactly as the vLLM runs build them (traffic/prompts.py: the model's chat
template, exact token count, fresh words per request) and generation is plain greedy
(`do_sample=False, repetition_penalty=1.0`, like the vLLM runs; `--sampling model-defaults`
keeps generation_config.json instead) with `min_new_tokens = max_new_tokens`, so every request
produces exactly the same number of tokens as vLLM's `ignore_eos` runs. Output tokens/s per
request = new tokens / wall time of `generate` (prefill included), which is what a
one-at-a-time comparison measures.

Runs in its own process, pinned to the same cores as the engine it is compared with (and
with as many torch threads), so that both get the same hardware; it reports load time, RSS
after loading and peak RSS while generating.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_hf_baseline(
    model_dir: str,
    *,
    pairs: list[tuple[int, int]],
    requests: int,
    cores: list[int],
    dtype: str = "float32",
    sampling: str = "greedy",
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Run this module in a subprocess and return its JSON result."""
    argv = [sys.executable, "-m", "benchmarks.hf_baseline", "--model", model_dir, "--dtype", dtype]
    argv += ["--sampling", sampling]
    argv += ["--pairs", ",".join(f"{p}:{o}" for p, o in pairs), "--requests", str(requests)]
    argv += ["--cores", ",".join(map(str, cores))]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"transformers baseline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(
    model_dir: str,
    pairs: list[tuple[int, int]],
    requests: int,
    cores: list[int],
    dtype: str,
    *,
    sampling: str = "greedy",
) -> dict[str, Any]:
    os.sched_setaffinity(0, cores)  # before torch starts its thread pool
    import torch  # noqa: PLC0415 - after pinning
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from workload.prompts import PromptFactory, chat_ids  # noqa: PLC0415

    torch.set_num_threads(len(cores))
    started = time.perf_counter()
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), local_files_only=True)
    model.eval()
    load_s = time.perf_counter() - started
    rss_loaded = _rss_bytes()
    prompts = PromptFactory.from_dir(model_dir)
    tokenizer = prompts.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # generate() starts from the model's generation_config.json (qwen: sampling, repetition_penalty
    # 1.1); "greedy" overrides both, as the vLLM runs do (benchmarks.load.GREEDY).
    decoding: dict[str, Any] = {"do_sample": False, "repetition_penalty": 1.0} if sampling == "greedy" else {}

    def generate(prompt_tokens: int, output_tokens: int) -> float:
        messages = prompts.chat(prompt_tokens).messages
        input_ids = torch.tensor([chat_ids(tokenizer, messages)])
        begin = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=output_tokens,
                min_new_tokens=output_tokens,
                pad_token_id=pad,
                **decoding,
            )
        seconds = time.perf_counter() - begin
        produced = out.shape[1] - input_ids.shape[1]
        if produced != output_tokens:
            raise RuntimeError(f"generate produced {produced} tokens, asked for exactly {output_tokens}")
        return seconds

    generate(64, 8)  # warm-up: first-call allocations are not part of the steady state
    results = []
    for prompt_tokens, output_tokens in pairs:
        times = [generate(prompt_tokens, output_tokens) for _ in range(requests)]
        results.append(
            {
                "prompt_tokens": prompt_tokens,
                "output_tokens": output_tokens,
                "requests": requests,
                "seconds": times,
                "output_tokens_per_s": output_tokens * requests / sum(times),
            }
        )
        print(f"[hf] {prompt_tokens}->{output_tokens}: {results[-1]['output_tokens_per_s']:.1f} tok/s", file=sys.stderr)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model_dir": model_dir,
        "dtype": dtype,
        "sampling": sampling,
        "generation_config": {k: v for k, v in model.generation_config.to_diff_dict().items() if "token_id" not in k},
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "load_s": load_s,
        "rss_loaded_bytes": rss_loaded,
        "rss_peak_bytes": peak_kib * 1024,
        "pairs": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", default="128:256")
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--cores", default="0")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--sampling", default="greedy", choices=("greedy", "model-defaults"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    pairs = [(int(p), int(o)) for p, _, o in (item.partition(":") for item in args.pairs.split(","))]
    cores = [int(c) for c in args.cores.split(",")]
    result = measure(args.model, pairs, args.requests, cores, args.dtype, sampling=args.sampling)
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

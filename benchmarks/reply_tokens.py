"""Do multi-turn replies re-tokenize to the ids the engine generated? `python -m benchmarks.reply_tokens`

A chat client appends the reply's *text* to the conversation, and the next turn's prompt is
tokenized afresh. The engine cached the reply's KV under the ids it generated, so the next turn
hits those blocks only as far as the re-tokenized text agrees with them. The history ceiling
(benchmarks/hit_ceiling.py) assumes it always agrees; this measures how often it does, with
one SmolLM2 replica on one core (the routing benchmark's engine settings) and vLLM's
`return_token_ids`. Two ways of getting exactly `--reply-tokens` tokens, as the `multi-turn`
scenario needs: `ignore_eos` (what it sends: the model may say `<|im_end|>` and go on, and the
text leaves special tokens out) and `min_tokens` (the end of turn is forbidden until then).

    python -m benchmarks.reply_tokens --port 8950 --replies 10 --out results/bench/routing/reply-tokens.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.hit_ceiling import common_prefix
from benchmarks.routing import MODEL, ROOT, Plan, _engine, smollm2_dir
from loadtest.conversations import Conversation, shared_system_prompt
from workload.prompts import PromptFactory, chat_ids, load_tokenizer

MODES = ("ignore_eos", "min_tokens")


def agreeing(next_prompt: list[int], prompt: list[int], generated: list[int]) -> int:
    """How many of the generated ids the next turn's prompt repeats, from the start of the reply."""
    return max(0, min(common_prefix(next_prompt, prompt + generated) - len(prompt), len(generated)))


def measure(url: str, model_dir: str, *, mode: str, replies: int, reply_tokens: int, seed: int) -> dict[str, Any]:
    tokenizer = load_tokenizer(model_dir)
    factory = PromptFactory(tokenizer, seed=seed)
    system = shared_system_prompt(model_dir, tokens=256, seed=seed)
    extra: dict[str, Any] = {"ignore_eos": True} if mode == "ignore_eos" else {"min_tokens": reply_tokens}
    special = set(tokenizer.all_special_ids)
    lost: list[int] = []
    specials = 0
    with httpx.Client(timeout=300) as client:
        for _ in range(replies):
            conversation = Conversation(system, turns=2)
            body = {
                "model": MODEL,
                "messages": conversation.ask(factory.words(128)),
                "max_tokens": reply_tokens,
                "return_token_ids": True,
                **extra,
            }
            response = client.post(f"{url}/v1/chat/completions", json=body)
            response.raise_for_status()
            answer = response.json()
            generated = answer["choices"][0]["token_ids"]
            specials += sum(1 for t in generated if t in special)
            conversation.answer(answer["choices"][0]["message"]["content"])
            next_prompt = chat_ids(tokenizer, conversation.ask(factory.words(128)))
            lost.append(len(generated) - agreeing(next_prompt, answer["prompt_token_ids"], generated))
    return {
        "mode": mode,
        "replies": replies,
        "agreeing_replies": sum(1 for n in lost if n <= 1),  # the last id's KV is never computed
        "ids_lost_per_reply": lost,
        "mean_ids_lost": statistics.mean(lost),
        "special_tokens_generated": specials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8950)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--replies", type=int, default=10)
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "routing" / "reply-tokens.json")
    args = parser.parse_args(argv)
    model_dir = smollm2_dir()
    url = f"http://127.0.0.1:{args.port}"

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    rows = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        _engine(url, index=0, core=args.core, plan=Plan(kv_blocks=None), workdir=Path(workdir), progress=say),
    ):
        for mode in MODES:
            say(f"{args.replies} replies of {args.reply_tokens} tokens with {mode}")
            rows.append(
                measure(url, model_dir, mode=mode, replies=args.replies, reply_tokens=args.reply_tokens, seed=args.seed)
            )
    print("\n| exactly N tokens by | replies the next prompt repeats | ids lost per reply (mean) | special tokens |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['agreeing_replies']} of {row['replies']} | "
            f"{row['mean_ids_lost']:.1f} of {args.reply_tokens} | {row['special_tokens_generated']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "runs": rows}, indent=1) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

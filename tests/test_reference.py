"""Guard against dtypes or kernels that silently produce garbage (bf16 on this CPU backend
did): each local model's greedy output from vLLM equals transformers' greedy output, token
for token, for the same prompt token ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.config import load_config
from gateway.supervisor import EngineSupervisor
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.engines

NEW_TOKENS = 32
PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that checks whether a string is a palindrome.",
    "A shirt costs $40 after a 20% discount. What was the original price?",
]


def chat_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@torch.no_grad()
def transformers_greedy(model: Any, prompt_ids: list[int], n: int) -> list[int]:
    """Plain argmax decoding with the KV cache, ignoring EOS (as the engine is told to)."""
    past = None
    current = torch.tensor([prompt_ids])
    out: list[int] = []
    for _ in range(n):
        result = model(input_ids=current, past_key_values=past, use_cache=True)
        past = result.past_key_values
        token = int(result.logits[0, -1].argmax())
        out.append(token)
        current = torch.tensor([[token]])
    return out


def engine_greedy(url: str, served_name: str, prompt_ids: list[int], n: int) -> list[int]:
    response = httpx.post(
        f"{url}/v1/completions",
        json={
            "model": served_name,
            "prompt": prompt_ids,
            "max_tokens": n,
            "temperature": 0,
            # vLLM applies a model's generation_config as request defaults (qwen's
            # repetition_penalty 1.1); the reference is plain argmax, so switch it off.
            "repetition_penalty": 1.0,
            "ignore_eos": True,
            "return_token_ids": True,
        },
        timeout=120,
    )
    response.raise_for_status()
    return list(response.json()["choices"][0]["token_ids"])


def check_model(model_dir: Path, url: str, served_name: str) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = []
    for prompt in PROMPTS:
        ids = chat_token_ids(tokenizer, prompt)
        expected = transformers_greedy(model, ids, NEW_TOKENS)
        got = engine_greedy(url, served_name, ids, NEW_TOKENS)
        assert got == expected, (
            f"{served_name}: vLLM and transformers disagree for {prompt!r}\n"
            f"vLLM:         {tokenizer.decode(got)!r}\ntransformers: {tokenizer.decode(expected)!r}"
        )
        texts.append(tokenizer.decode(expected, skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("name", ["r1-tiny", "qwen-tiny"])
def test_test_models_match_transformers(stack: Stack, name: str) -> None:
    model = stack.config.find_model(name)
    assert model is not None and model.engine is not None
    check_model(Path(model.engine.model), stack.engine_url(name), name)


@pytest.fixture(scope="module")
def smollm2_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """SmolLM2 as cpu.yaml serves it (float32), on its own port for this module."""
    config = load_config(ROOT / "engine_config" / "cpu.yaml")
    smol = config.find_model("qwen")
    assert smol is not None and smol.engine is not None
    engine = smol.engine.model_copy(update={"port": 8161, "kv_cache_gib": 1, "cpu_cores": None})
    single = config.model_copy(update={"models": [smol.model_copy(update={"engine": engine})]})
    supervisor = EngineSupervisor(single, log_dir=tmp_path_factory.mktemp("smollm2-logs"), progress=print)
    supervisor.start_all()
    try:
        yield Path(engine.model), engine.url, smol.name
    finally:
        supervisor.stop_all()


def test_smollm2_matches_transformers_and_knows_paris(smollm2_url: tuple[Path, str, str]) -> None:
    model_dir, url, served_name = smollm2_url
    texts = check_model(model_dir, url, served_name)
    assert "Paris" in texts[0]

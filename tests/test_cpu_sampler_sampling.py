"""cpu_sampler.sampling: vLLM's CPU sampling step gives the same tokens for the same seeds.

The reference is vLLM's own code: `inspect.unwrap` reaches it even when the plugin has been
installed in this process (vLLM's argument parser, used by other tests, loads general plugins).
"""

from __future__ import annotations

import inspect
import random
from collections import Counter
from collections.abc import Callable
from types import MethodType
from typing import Any

import pytest
import torch
import vllm._custom_ops  # noqa: F401  (registers torch.ops._C)
from vllm.v1.sample import sampler as sampler_module
from vllm.v1.sample.logits_processor import LogitsProcessors
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.ops import topk_topp_sampler
from vllm.v1.sample.sampler import Sampler

from cpu_sampler.penalties import make_apply_all_penalties
from cpu_sampler.sampling import gumbel_argmax, make_forward_cpu, splitmix64, unsplitmix64, window_seed
from cpu_sampler.top_k_top_p import make_apply_top_k_top_p

VLLM_FORWARD_CPU = inspect.unwrap(topk_topp_sampler.TopKTopPSampler.forward_cpu)
VLLM_APPLY = inspect.unwrap(topk_topp_sampler.apply_top_k_top_p)
VLLM_PENALTIES = inspect.unwrap(sampler_module.apply_all_penalties)


def test_splitmix64_inverse_and_window_seed() -> None:
    rng = random.Random(0)
    for _ in range(1000):
        z = rng.getrandbits(64)
        assert unsplitmix64(splitmix64(z)) == z
    assert splitmix64(window_seed(1234, 0) % (1 << 64)) == splitmix64(1234)
    assert -(1 << 63) <= window_seed(-5, 151935) < 1 << 63


def test_gumbel_argmax_matches_the_kernel_on_masked_rows() -> None:
    """Rows with 1 to 50 finite tokens, narrow or spread out, some rows without survivor
    information: the same token as vLLM's kernel over the whole row, for any 64-bit seed."""
    rng = random.Random(7)
    torch.manual_seed(7)
    checked = 0
    for vocab in (151936, 49152, 100):
        for _ in range(30):
            logits = torch.full((16, vocab), -float("inf"))
            survivors = {}
            for row in range(16):
                spread = min(vocab, rng.choice((4, 300, vocab)))
                lo = rng.randrange(vocab - spread + 1)
                index = torch.tensor(rng.sample(range(lo, lo + spread), min(spread, rng.choice((1, 2, 5, 50)))))
                logits[row, index] = torch.randn(index.numel()) * rng.choice((0.1, 1.0, 8.0))
                if rng.random() < 0.8:
                    survivors[row] = index
            seeds = torch.randint(-(2**63), 2**63 - 1, (16,))
            expected = torch.ops._C.fused_gumbel_argmax(logits, seeds)
            assert torch.equal(gumbel_argmax(logits, seeds, survivors), expected)
            checked += 16
    assert checked == 1440


def metadata(
    batch: int,
    vocab: int,
    *,
    seed: int,
    temperature: list[float],
    top_p: list[float] | None,
    top_k: list[int] | None,
    penalty: list[float] | None = None,
    logprobs: int | None = None,
) -> SamplingMetadata:
    rng = random.Random(seed)
    prompt = torch.randint(0, vocab, (batch, 30), generator=torch.Generator().manual_seed(seed))
    prompt[:, 25:] = vocab
    return SamplingMetadata(
        temperature=torch.tensor(temperature),
        all_greedy=all(t == 0 for t in temperature),
        all_random=all(t > 0 for t in temperature),
        top_p=torch.tensor(top_p) if top_p is not None else None,
        top_k=torch.tensor(top_k, dtype=torch.int32) if top_k is not None else None,
        # half the rows carry a request seed (their own generator), the rest use the global RNG
        generators={i: torch.Generator().manual_seed(seed * 100 + i) for i in range(0, batch, 2)},
        max_num_logprobs=logprobs,
        no_penalties=penalty is None,
        prompt_token_ids=prompt if penalty is not None else None,
        frequency_penalties=torch.zeros(batch),
        presence_penalties=torch.zeros(batch),
        repetition_penalties=torch.tensor(penalty) if penalty is not None else torch.ones(batch),
        output_token_ids=[[rng.randrange(vocab) for _ in range(rng.randrange(20))] for _ in range(batch)],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors(),
    )


def run(
    sampler: Sampler,
    logits: torch.Tensor,
    make: Callable[[], SamplingMetadata],
    penalties: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setattr(sampler_module, "apply_all_penalties", penalties)
    torch.manual_seed(99)  # the rows without a request seed draw from the global RNG
    return sampler(logits.clone(), make())


@pytest.mark.parametrize("mode", ["raw_logprobs", "processed_logprobs"])
def test_sampler_gives_vllms_tokens(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    batch, vocab = 8, 151936
    peaked = torch.randn(batch, vocab) * 2
    peaked[torch.arange(batch), torch.randint(0, vocab, (batch,))] += 12  # a trained model's shape
    flat = torch.randn(batch, vocab) * 0.5  # a random model's
    scenarios = {
        "R1 card": dict(temperature=[0.6] * batch, top_p=[0.95] * batch, top_k=None),
        "Qwen generation_config": dict(
            temperature=[0.7] * batch, top_p=[0.8] * batch, top_k=[20] * batch, penalty=[1.1] * batch
        ),
        "mixed rows, greedy among them": dict(
            temperature=[0.0, 0.2, 1.0, 0.6, 1.5, 0.0, 0.9, 0.6],
            top_p=[1.0, 0.9, 0.5, 0.95, 0.99, 0.95, 1.0, 0.8],
            top_k=[vocab, 20, vocab, 1, 50, vocab, vocab, 200],
            penalty=[1.0, 1.1, 1.0, 1.3, 1.0, 1.05, 1.0, 1.2],
        ),
        "temperature only": dict(temperature=[1.0] * batch, top_p=None, top_k=None),
    }
    ours_tiers: Counter[str] = Counter()
    vllm_sampler, our_sampler = Sampler(logprobs_mode=mode), Sampler(logprobs_mode=mode)
    vllm_sampler.topk_topp_sampler.forward = MethodType(VLLM_FORWARD_CPU, vllm_sampler.topk_topp_sampler)
    ours_forward = make_forward_cpu(VLLM_FORWARD_CPU, VLLM_APPLY, tiers=ours_tiers)
    our_sampler.topk_topp_sampler.forward = MethodType(ours_forward, our_sampler.topk_topp_sampler)
    ours_penalties = make_apply_all_penalties(VLLM_PENALTIES)
    for name, kwargs in scenarios.items():
        for shape, logits in (("peaked", peaked), ("flat", flat)):
            for seed in range(3):

                def make(kwargs: dict[str, Any] = kwargs, seed: int = seed) -> SamplingMetadata:
                    return metadata(batch, vocab, seed=seed, logprobs=3, **kwargs)

                expected = run(vllm_sampler, logits, make, VLLM_PENALTIES, monkeypatch)
                got = run(our_sampler, logits, make, ours_penalties, monkeypatch)
                label = f"{name}, {shape}, seed {seed}"
                assert torch.equal(got.sampled_token_ids, expected.sampled_token_ids), label
                assert torch.equal(
                    got.logprobs_tensors.logprob_token_ids, expected.logprobs_tensors.logprob_token_ids
                ), label
                assert torch.equal(got.logprobs_tensors.logprobs, expected.logprobs_tensors.logprobs), label
    assert ours_tiers["certified"] > 0 and ours_tiers["replayed"] > 0, ours_tiers


def test_apply_top_k_top_p_drop_in_hands_other_cases_to_vllm() -> None:
    calls: list[tuple[Any, ...]] = []

    def vllm(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        calls.append((k, p))
        return logits

    apply = make_apply_top_k_top_p(vllm)
    apply(torch.randn(2, 50), torch.tensor([3, 4]), None)  # top-k alone: vLLM's is sort-free already
    apply(torch.randn(2, 50).double(), None, torch.tensor([0.9, 0.9]))  # not float32
    assert len(calls) == 2

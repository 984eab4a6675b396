"""cpu_sampler.penalties: vLLM's penalties, bit for bit, touching only the tokens a row has seen."""

from __future__ import annotations

import random

import pytest
import torch
from vllm.v1.sample.ops.penalties import apply_all_penalties as vllm_apply_all_penalties

from cpu_sampler.penalties import make_apply_all_penalties


def not_called(*args: object) -> torch.Tensor:
    raise AssertionError("the repetition penalty alone must not go through vLLM's dense path")


def batch(rng: random.Random, rows: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    logits = torch.randn(rows, vocab) * 3
    logits[0, :8] = 0.0
    logits[1, :8] = -0.0
    logits[2, 3] = float("nan")
    logits[3, 4], logits[3, 5] = float("-inf"), float("inf")
    prompt = torch.randint(0, vocab, (rows, 40))
    prompt[:, 30:] = vocab  # vLLM pads prompts with the vocabulary size
    prompt[:, :8] = torch.arange(8)  # the special values above are seen tokens
    outputs = [[rng.randrange(vocab) for _ in range(rng.randrange(0, 25))] for _ in range(rows)]
    outputs[1] += [5, 5, 5, -1]  # repeats, and the async scheduler's placeholder
    return logits, prompt, outputs


@pytest.mark.parametrize("vocab", [151936, 1000])
def test_repetition_penalty_matches_vllm_bit_for_bit(vocab: int) -> None:
    rng = random.Random(vocab)
    torch.manual_seed(vocab)
    ours = make_apply_all_penalties(not_called)
    zeros = torch.zeros(8)
    for _ in range(10):
        logits, prompt, outputs = batch(rng, 8, vocab)
        penalty = torch.tensor([1.1, 1.0, 2.0, 0.5, 1.05, 1.3, 1.0, 1.2])
        expected = vllm_apply_all_penalties(logits.clone(), prompt, zeros, zeros, penalty, outputs)
        got = ours(logits.clone(), prompt, zeros, zeros, penalty, outputs)
        assert torch.equal(expected.view(torch.int32), got.view(torch.int32))
        assert not torch.equal(expected.view(torch.int32), logits.view(torch.int32))  # the penalty did act


def test_frequency_and_presence_penalties_are_left_to_vllm() -> None:
    rng = random.Random(1)
    ours = make_apply_all_penalties(vllm_apply_all_penalties)
    logits, prompt, outputs = batch(rng, 8, 5000)
    penalty = torch.full((8,), 1.1)
    for frequency, presence in ((0.2, 0.0), (0.0, 0.5), (-0.0, 0.0)):  # -0.0 too: x - (-0.0) turns -0.0 into +0.0
        f, pr = torch.full((8,), frequency), torch.full((8,), presence)
        expected = vllm_apply_all_penalties(logits.clone(), prompt, pr, f, penalty, outputs)
        got = ours(logits.clone(), prompt, pr, f, penalty, outputs)
        assert torch.equal(expected.view(torch.int32), got.view(torch.int32))
    with pytest.raises(AssertionError, match="dense path"):
        make_apply_all_penalties(not_called)(logits, prompt, torch.zeros(8), torch.full((8,), 0.2), penalty, outputs)


def test_no_penalty_rows_are_untouched() -> None:
    ours = make_apply_all_penalties(not_called)
    logits = torch.randn(4, 100)
    out = ours(
        logits.clone(), torch.randint(0, 100, (4, 10)), torch.zeros(4), torch.zeros(4), torch.ones(4), [[1, 2]] * 4
    )
    assert torch.equal(out, logits)

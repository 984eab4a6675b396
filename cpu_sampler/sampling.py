"""vLLM's CPU sampling step (`TopKTopPSampler.forward_cpu`) without its passes over masked logits.

    from cpu_sampler.sampling import make_forward_cpu
    TopKTopPSampler.forward_cpu = make_forward_cpu(TopKTopPSampler.forward_cpu, vllm_apply_top_k_top_p)

vLLM 0.32 samples on the CPU with `torch.ops._C.fused_gumbel_argmax(logits, seeds)`: per row,
the argmax of `logit + Gumbel noise`, the noise of token i being a pure function of
(splitmix64(seed), i), scanned left to right, tokens at -inf skipped. After top-p most of a row
is -inf, yet the kernel still walks all of it: 6-8 ms per step for 32 rows of 151,936 tokens.

We draw the seeds exactly as vLLM does (same calls on the same generators, so every random
stream advances as before) and call vLLM's own kernel on less:

- a row that top-p left with one token: the kernel returns that token whatever the noise;
- a row whose survivors span a narrow window [lo, hi]: the kernel on that window, with the
  seed whose key is `splitmix64(seed) + lo * GAMMA`, so local token j draws exactly the noise
  of token lo + j and the scan meets the same tokens in the same order (`window_seed`);
- every other row: the kernel on the whole row, as vLLM does.

The survivors come from tier 1 of `top_k_top_p`, which knows them without a scan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from cpu_sampler.top_k_top_p import TopKTopP, applies, top_k_top_p

ForwardCpu = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment, as in vLLM's kernel
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_WINDOW_SHARE = 0.25  # a window wider than this share of the row is not worth the copy


def splitmix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * _C1) & _MASK
    z = ((z ^ (z >> 27)) * _C2) & _MASK
    return z ^ (z >> 31)


def _unshift_xor(y: int, shift: int) -> int:
    """Inverse of x -> x ^ (x >> shift) on 64 bits."""
    x = y
    for _ in range(64 // shift + 1):
        x = y ^ (x >> shift)
    return x


def unsplitmix64(z: int) -> int:
    """Inverse of `splitmix64`: every step (xor-shift, multiplication by an odd constant) is a bijection."""
    z = _unshift_xor(z, 31)
    z = (z * pow(_C2, -1, 1 << 64)) & _MASK
    z = _unshift_xor(z, 27)
    z = (z * pow(_C1, -1, 1 << 64)) & _MASK
    return _unshift_xor(z, 30)


def window_seed(seed: int, lo: int) -> int:
    """The int64 seed that makes vLLM's kernel draw, for token j of a row that starts at token
    `lo`, the noise of token lo + j under `seed`."""
    key = (splitmix64(seed & _MASK) + lo * GAMMA) & _MASK
    raw = unsplitmix64(key)
    return raw - (1 << 64) if raw >= 1 << 63 else raw


def gumbel_argmax(logits: torch.Tensor, seeds: torch.Tensor, survivors: dict[int, torch.Tensor]) -> torch.Tensor:
    """`torch.ops._C.fused_gumbel_argmax(logits, seeds)`, given the finite tokens of some rows."""
    batch, vocab = logits.shape
    out = torch.empty(batch, dtype=torch.long)
    whole: list[int] = []
    for row in range(batch):
        index = survivors.get(row)
        if index is None:
            whole.append(row)
        elif index.numel() == 1:
            out[row] = index[0]
        else:
            lo, hi = int(index.min()), int(index.max())
            if hi - lo + 1 > _WINDOW_SHARE * vocab:
                whole.append(row)
                continue
            seed = torch.tensor([window_seed(int(seeds[row]), lo)], dtype=torch.long)
            out[row] = lo + torch.ops._C.fused_gumbel_argmax(logits[row : row + 1, lo : hi + 1].contiguous(), seed)[0]
    if len(whole) == batch:
        return torch.ops._C.fused_gumbel_argmax(logits, seeds)  # type: ignore[no-any-return]
    if whole:
        rows = torch.tensor(whole)
        out[rows] = torch.ops._C.fused_gumbel_argmax(logits[rows], seeds[rows])
    return out


def make_forward_cpu(
    vllm_forward_cpu: ForwardCpu, vllm_apply: TopKTopP, *, tiers: Counter[str] | None = None
) -> ForwardCpu:
    """A drop-in `TopKTopPSampler.forward_cpu`: vLLM's own for float64 Gumbel noise (it draws
    its noise differently) and wherever `top_k_top_p` does not apply."""

    def forward_cpu(
        self: Any,
        logits: torch.Tensor,
        generators: dict[int, torch.Generator],
        k: torch.Tensor | None,
        p: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.use_fp64_gumbel or p is None or not applies(logits, p) or logits.shape[0] == 0:
            return vllm_forward_cpu(self, logits, generators, k, p)
        # From here on, vLLM's forward_cpu line by line, with its two calls replaced.
        logits, survivors = top_k_top_p(logits, k, p, vllm_apply=vllm_apply, tiers=tiers)
        logits_to_return = None
        if self.logprobs_mode == "processed_logits":
            logits_to_return = logits
        elif self.logprobs_mode == "processed_logprobs":
            logits_to_return = logits.log_softmax(dim=-1, dtype=torch.float32)
        batch_size = logits.shape[0]
        seeds = torch.randint(0, 2**31, (batch_size,), dtype=torch.long)
        for i, gen in generators.items():
            seeds[i] = torch.randint(0, 2**31, (1,), generator=gen, dtype=torch.long).item()
        logits_f32 = logits.to(dtype=torch.float32)
        return gumbel_argmax(logits_f32, seeds, survivors), logits_to_return

    return forward_cpu

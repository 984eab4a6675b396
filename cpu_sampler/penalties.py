"""Repetition penalty for vLLM's CPU sampler on the tokens a sequence has seen, not the vocabulary.

    from cpu_sampler.penalties import make_apply_all_penalties
    apply = make_apply_all_penalties(vllm_apply_all_penalties)   # vLLM's own, for what we hand back
    logits = apply(logits, prompt_token_ids, presence, frequency, repetition, output_token_ids)

vLLM 0.32 (`vllm/v1/sample/ops/penalties.py` and `apply_penalties` in
`vllm/model_executor/layers/utils.py`) builds two int64 token counts of batch x (vocab + 1), a
penalty matrix and a scaling matrix of batch x vocab at every step, even when only the
repetition penalty is set: about 65 ms per step for 32 sequences of Qwen's 151,936 tokens on
one core. Qwen's `generation_config.json` sets `repetition_penalty` 1.1, so the engine applies it
to every request that does not set its own.

The repetition penalty changes only the logits of tokens in the prompt or the output: those are
multiplied by `1 / penalty` (float32 reciprocal, as vLLM computes it) where positive and by
`penalty` elsewhere, and every other logit is multiplied by 1.0, which leaves it as it is. We
apply the same two float32 products to the seen tokens alone, so the result is bit for bit
vLLM's. Frequency and presence penalties are handed back to vLLM: with them nonzero every logit
takes part in a subtraction (and `-0.0 - (-0.0)` is `+0.0`), and no model here sets them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

ApplyAllPenalties = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]], torch.Tensor
]


def _is_plain_zero(values: torch.Tensor) -> bool:
    """All +0.0: then vLLM's `logits -= penalty * count` subtracts +0.0 from every logit, a no-op."""
    return bool((values == 0).all()) and not bool(torch.signbit(values).any())


def _padded(rows: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def make_apply_all_penalties(vllm_apply: ApplyAllPenalties) -> ApplyAllPenalties:
    """Our `apply_all_penalties`; `vllm_apply` (vLLM's own) serves frequency and presence
    penalties and tensors other than 2-D float32 on the CPU."""

    def apply_all_penalties(  # noqa: PLR0917 (vLLM's signature, called positionally)
        logits: torch.Tensor,
        prompt_token_ids: torch.Tensor,
        presence_penalties: torch.Tensor,
        frequency_penalties: torch.Tensor,
        repetition_penalties: torch.Tensor,
        output_token_ids: list[list[int]],
    ) -> torch.Tensor:
        if (
            logits.device.type != "cpu"
            or logits.dtype != torch.float32
            or logits.dim() != 2
            or not _is_plain_zero(presence_penalties)
            or not _is_plain_zero(frequency_penalties)
        ):
            return vllm_apply(
                logits,
                prompt_token_ids,
                presence_penalties,
                frequency_penalties,
                repetition_penalties,
                output_token_ids,
            )
        batch, vocab = logits.shape
        active = repetition_penalties != 1.0  # x * (1 / 1.0) and x * 1.0 are x: skip those rows
        if batch == 0 or not bool(active.any()):
            return logits
        # Token ids per row; vLLM pads with `vocab` and marks not-yet-known outputs with -1.
        seen = torch.cat([prompt_token_ids.to(torch.int64), _padded(output_token_ids, vocab)], dim=1)
        seen = seen.masked_fill(seen < 0, vocab)
        seen = seen[active]
        rows_of = active.nonzero().flatten()
        keys = torch.unique((seen + torch.arange(seen.shape[0]).unsqueeze(1) * (vocab + 1)).flatten())
        row, col = rows_of[keys // (vocab + 1)], keys % (vocab + 1)
        real = col < vocab
        row, col = row[real], col[real]
        penalty = repetition_penalties[row]
        x = logits[row, col]
        logits[row, col] = torch.where(x > 0, x * (1.0 / penalty), x * penalty)
        return logits

    return apply_all_penalties

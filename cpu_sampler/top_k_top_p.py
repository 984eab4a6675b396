"""Top-k/top-p for vLLM's CPU sampler that keeps exactly the tokens vLLM keeps, without a full sort.

    from cpu_sampler.top_k_top_p import make_apply_top_k_top_p
    apply = make_apply_top_k_top_p(vllm_apply_top_k_top_p)   # vLLM's own, for the cases we hand back
    logits = apply(logits, k, p)                             # same arguments and result as vLLM 0.32's

What vLLM computes (`apply_top_k_top_p_pytorch`, its CPU path): sort each row ascending, set
everything below the k-th largest value to -inf (ties with it survive), softmax the sorted row
in float32, take the cumulative sum (float64 accumulation, float32 result), and mask every
position whose cumulative sum is <= `1 - p`, except the last. The survivors are "the n largest
logits" for some n per row, but n depends on the float32 rounding of the softmax's sum, which
vLLM takes in sorted order: the same sum in another order moves n in a visible share of rows
(74 of 320 random rows at logit scale 3). So this module never recomputes vLLM's floats in its
own order. Per row, in three tiers:

1. **Certify from the largest logits** (`_certify`). The K largest logits, their masses
   `exp(x - max)` in float64 and a bound on the mass of all other tokens give the exact
   cumulative sums to within a proven relative error of vLLM's float32 ones; where every
   candidate is certainly kept or certainly masked, n is known. Peaked rows (trained models at
   their usual temperatures, the random-weight test models) end here: K = 32, then 512 for the
   rows that need more. The K largest come from the K 128-wide chunks with the largest maxima
   (`largest`), a fifth of the cost of `torch.topk` over the row.
2. **Replay on the sorted values** (`_replay`). Otherwise the row's values are sorted with
   NumPy (values only, no indices: about 15x cheaper than vLLM's `torch.sort`) and vLLM's own
   masking, softmax and cumsum run on exactly the sorted row vLLM builds, so n is vLLM's n by
   construction. Flat rows (random logits, high temperatures) end here.
3. **vLLM itself** for a row whose boundary falls inside a run of equal logits (which of them
   survive depends on how vLLM's unstable sort orders equal keys) or that holds NaN or +inf.

Top-k alone is left to vLLM, whose CPU path for it (`apply_top_k_only`) does not sort.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

TopKTopP = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]

WIDTHS = (32, 512)  # candidates tried by tier 1; the second only for rows the first could not settle
CHUNK = 128  # chunk width of the candidate search
_U = 2.0**-24  # float32 unit roundoff
# Allowance for the softmax's exp (PyTorch's vectorised float32 exp is within a few ulp, ~1e-6)
# and float32 rounding of its argument and of each probability, with a wide margin.
_EXP_ERROR = 1e-4
_ABS_SLACK = 1e-12  # our own float64 arithmetic; vLLM's thresholds 1 - p are >= 2**-24 unless 0
# With p = 1 vLLM masks only tokens of float32 probability exactly 0: -inf, or underflow far below
# the maximum. exp(-60) / vocab is a normal float32 for any vocabulary below 10**10.
_SURELY_NONZERO = 60.0


def relative_error(terms: torch.Tensor) -> torch.Tensor:
    """Bound on the relative error of vLLM's float32 cumulative sums against exact arithmetic.

    A float32 sum of n non-negative terms, in any order, is within (n-1)u/(1-(n-1)u) of the
    exact sum (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2); vLLM's
    softmax divides by such a sum, so every probability and every cumulative sum carries that
    factor, plus the exp allowance and a few roundings (quotient, product, float32 result).

        relative_error(torch.tensor([151936]))   # tensor([0.0092]) for a 151,936-token vocabulary
        relative_error(torch.tensor([20]))       # tensor([0.0001]) for top-k 20
    """
    n = terms.double() - 1
    return n * _U / (1 - n * _U) + _EXP_ERROR + 8 * _U


class Largest(NamedTuple):
    values: torch.Tensor  # [rows, width], descending
    indices: torch.Tensor  # [rows, width]
    floor: torch.Tensor  # [rows] float64: a lower bound on the row's sum of exp(x - max)


def largest(x: torch.Tensor, width: int) -> Largest:
    """`x.topk(width, dim=1)`: the `width` largest values of a row all lie in the `width` chunks
    with the largest maxima, so only those are searched. The chunk maxima also bound the row's
    total mass from below (each chunk holds at least its maximum)."""
    rows, vocab = x.shape
    if vocab % CHUNK or vocab // CHUNK <= 4 * width:
        values, indices = x.topk(width, dim=1)
        return Largest(values, indices, torch.exp(values.double() - values[:, :1].double()).sum(dim=1))
    chunks = x.view(rows, vocab // CHUNK, CHUNK)
    maxima = chunks.amax(dim=2)
    picked = maxima.topk(width, dim=1).indices  # NaN counts as the largest: kept in
    candidates = chunks.gather(1, picked.unsqueeze(2).expand(-1, -1, CHUNK)).reshape(rows, width * CHUNK)
    values, where = candidates.topk(width, dim=1)
    floor = torch.exp(maxima.double() - values[:, :1].double()).sum(dim=1)
    return Largest(values, picked.gather(1, where // CHUNK) * CHUNK + where % CHUNK, floor)


class Certificate(NamedTuple):
    settled: torch.Tensor  # [rows] bool: vLLM keeps exactly the n largest (and the n-th > the next)
    n: torch.Tensor  # [rows]
    promising: torch.Tensor  # [rows] bool: `wider` candidates might settle what these could not


def _certify(top: Largest, k: torch.Tensor | None, thr: torch.Tensor, vocab: int, wider: int) -> Certificate:
    """What the row's largest logits prove about vLLM's boundary."""
    vals = top.values
    rows, width = vals.shape
    mass = torch.exp(vals.double() - vals[:, :1].double())  # relative to the row's max; -inf -> 0
    above = torch.cumsum(mass, dim=1) - mass  # mass strictly above each candidate
    total = above[:, -1] + mass[:, -1]
    # A row whose top-k set lies inside the candidates has exactly that total; for the others
    # the tokens beyond the candidates weigh at most (vocab - width) x the last candidate.
    if k is None:
        has_k = torch.zeros(rows, dtype=torch.bool)
        k_pos = torch.full((rows,), width - 1)
    else:
        has_k = (k < vocab) & (k.long() < width)
        k_pos = k.long().clamp(max=width - 1)
    k_total = above.gather(1, k_pos.unsqueeze(1)).squeeze(1)  # mass of the k largest
    total_lo = torch.where(has_k, k_total, total)
    total_hi = torch.where(has_k, k_total, total + (vocab - width) * mass[:, -1])
    eps = relative_error(torch.where(has_k, k_pos, torch.full_like(k_pos, vocab))).unsqueeze(1)
    # vLLM's cumulative sum at a candidate's sorted position is (total - above) / total.
    cum_lo = (1 - above / total_lo.unsqueeze(1)) * (1 - eps) - _ABS_SLACK
    cum_hi = (1 - above / total_hi.unsqueeze(1)) * (1 + eps) + _ABS_SLACK
    position = torch.arange(width).unsqueeze(0)
    valid = position < torch.where(has_k, k_pos, torch.full_like(k_pos, width)).unsqueeze(1)  # top-k masks the rest
    first = position == 0  # vLLM always keeps the largest
    thr64 = thr.double().unsqueeze(1)
    n_lo = ((first | (cum_lo > thr64)) & valid).sum(dim=1)  # certainly kept: a prefix (cum_lo falls)
    n_hi = ((first | (cum_hi > thr64)) & valid).sum(dim=1)  # possibly kept
    n = n_lo.clamp(min=1, max=width - 1)
    distinct = vals.gather(1, (n - 1).unsqueeze(1)) > vals.gather(1, n.unsqueeze(1))
    # With top-k, the k-th largest must differ from the next, or more than k tokens survive it.
    k_distinct = vals.gather(1, (k_pos - 1).clamp(min=0).unsqueeze(1)) > vals.gather(1, k_pos.unsqueeze(1))
    settled = (
        (n_lo == n_hi)
        & (n_lo < width)  # the first masked candidate is visible
        & distinct.squeeze(1)
        & (~has_k | k_distinct.squeeze(1))
        & torch.isfinite(vals[:, 0])
    )
    # `wider` candidates settle a row only if their first masked one is certainly masked, so if
    # their mass (at most ours plus (wider - width) x our last) reaches (1 - thr) of the total.
    reach = total + (wider - width) * mass[:, -1]
    promising = has_k | (reach >= top.floor * (1 - thr.double() / (1 + eps.squeeze(1))) - _ABS_SLACK)
    return Certificate(settled, n, promising)


def _replay(rows: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, exact) per row: vLLM keeps the logits >= tau, unless `exact` is False (the boundary
    splits equal logits, or the row holds NaN or +inf). vLLM's own masking, softmax and cumsum,
    on the same sorted values."""
    vocab = rows.shape[1]
    ordered = torch.from_numpy(np.sort(rows.numpy(), axis=-1))
    work = ordered
    if k is not None:
        kth = ordered.gather(1, (vocab - k.to(torch.long)).unsqueeze(1))
        work = ordered.masked_fill(ordered < kth, -float("inf"))
    probs = work.softmax(dim=-1)
    cumulative = torch.cumsum(probs, dim=-1, out=probs)
    # vLLM masks the positions whose cumulative sum is <= 1 - p, except the last: a prefix, since
    # the sum only grows, so its length is a binary search away.
    thr = (1 - p).unsqueeze(dim=1)
    boundary = torch.searchsorted(cumulative, thr, right=True).clamp(max=vocab - 1)
    tau = ordered.gather(1, boundary)
    below = ordered.gather(1, (boundary - 1).clamp(min=0))
    exact = ((boundary == 0) | (below < tau)) & torch.isfinite(ordered[:, -1:])
    return tau.squeeze(1), exact.squeeze(1)


def _keeps_everything(row: torch.Tensor) -> bool:
    """With p = 1 (and no top-k): is every finite token certainly of nonzero probability?"""
    top = row.max()
    return bool(torch.isfinite(top)) and not bool(((row < top - _SURELY_NONZERO) & (row > -math.inf)).any())


def top_k_top_p(
    logits: torch.Tensor,
    k: torch.Tensor | None,
    p: torch.Tensor,
    *,
    vllm_apply: TopKTopP,
    tiers: Counter[str] | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """vLLM's top-k/top-p on a 2-D float32 CPU `logits` with a top-p (in place, as vLLM's), and
    the indices of the survivors of every row tier 1 settled (for the sampler: those rows need
    no pass over the vocabulary). `vllm_apply` serves tier 3; `tiers` counts rows per tier."""
    count = tiers if tiers is not None else Counter[str]()
    batch, vocab = logits.shape
    thr = 1 - p  # float32, exactly as vLLM computes it
    pending = torch.arange(batch)
    survivors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # row -> (indices, values)

    unit = thr == 0 if k is None else (thr == 0) & (k >= vocab)
    if bool(unit.any()):
        done = [r for r in unit.nonzero().flatten().tolist() if _keeps_everything(logits[r])]
        count["untouched"] += len(done)
        pending = pending[~torch.isin(pending, torch.tensor(done, dtype=torch.long))]

    replay = torch.empty(0, dtype=torch.long)
    for width in WIDTHS:  # tier 1
        if pending.numel() == 0:
            break
        k_rows = k[pending] if k is not None else None
        need = width
        if k_rows is not None and bool((k_rows < vocab).any()):
            need = max(width, int(k_rows[k_rows < vocab].max()) + 1)
        need = min(need, vocab)
        top = largest(logits if pending.numel() == batch else logits[pending], need)
        cert = _certify(top, k_rows, thr[pending], vocab, wider=WIDTHS[-1])
        for i in cert.settled.nonzero().flatten().tolist():
            count_i = int(cert.n[i])
            survivors[int(pending[i])] = (top.indices[i, :count_i], top.values[i, :count_i])
        count["certified"] += int(cert.settled.sum())
        unsettled = ~cert.settled
        hopeless = pending[unsettled & ~cert.promising]  # flat rows: straight to tier 2
        replay = torch.cat([replay, hopeless])
        pending = pending[unsettled & cert.promising]
        if need == vocab:
            break
    pending = torch.cat([replay, pending]).sort().values

    fallback: list[int] = []
    if pending.numel():  # tier 2
        everything = pending.numel() == batch
        sub = logits if everything else logits[pending]
        tau, exact = _replay(sub, k[pending] if k is not None else None, p[pending])
        tau = torch.where(exact, tau, -math.inf)  # x < -inf never: tier 3 rows stay as they are
        sub.masked_fill_(sub < tau.unsqueeze(1), -math.inf)
        if not everything:
            logits[pending] = sub
        fallback = pending[~exact].tolist()
        count["replayed"] += int(exact.sum())
        count["vllm"] += len(fallback)

    for row, (index, values) in survivors.items():
        logits[row].fill_(-math.inf)
        logits[row].index_copy_(0, index, values)
    for row in fallback:  # tier 3
        sl = slice(row, row + 1)
        logits[sl] = vllm_apply(logits[sl].clone(), k[sl] if k is not None else None, p[sl])
    return logits, {row: index for row, (index, _) in survivors.items()}


def applies(logits: torch.Tensor, p: torch.Tensor | None) -> bool:
    """Whether `top_k_top_p` takes the call (else vLLM's own: top-k alone is already sort-free)."""
    return p is not None and logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2


def make_apply_top_k_top_p(vllm_apply: TopKTopP, *, tiers: Counter[str] | None = None) -> TopKTopP:
    """A drop-in `apply_top_k_top_p`: ours where `applies`, `vllm_apply` (vLLM's own) elsewhere."""

    def apply_top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        if p is None or not applies(logits, p) or logits.shape[0] == 0:
            return vllm_apply(logits, k, p)
        return top_k_top_p(logits, k, p, vllm_apply=vllm_apply, tiers=tiers)[0]

    return apply_top_k_top_p

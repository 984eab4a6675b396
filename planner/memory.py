"""The memory arithmetic: what each engine of a deployment gets for its KV cache.

    config = load_config(Path("engine_config/gpu.yaml"), check_paths=False)
    plan = plan_deployment(config, find_gpu("H200"))
    for engine in plan.engines:
        print(engine.name, engine.kv_tokens, engine.seqs_at_max_len)
    print(plan.warnings, plan.splits)

GPU (vLLM's CUDA worker): an engine may use `ceil(total x gpu_memory_utilization)` bytes.
From that come the weights (parameters x dtype size, split over tensor-parallel GPUs) and an
allowance, stated here because vLLM measures it at startup and we cannot:

* RUNTIME_ALLOWANCE (1 GiB): CUDA graphs (vLLM 0.32 profiles them and takes them from the
  KV budget by default), cuBLAS/NCCL workspaces and other non-torch allocations;
* activations of the largest step: max_num_batched_tokens x (2 x intermediate + 4 x hidden
  + q/k/v widths) x dtype size;
* the sampler: max_num_seqs x vocab x 8 bytes (fp32 logits and probabilities).

The rest is KV cache, cut into blocks of 16 tokens (vLLM's default on CUDA); the token count is
what vLLM logs as "GPU KV cache size: N tokens". Compare with the engine's own "Available KV
cache memory" line on the real card.

CPU (vLLM's CPU worker): the KV cache is exactly VLLM_CPU_KVCACHE_SPACE GiB (kv_cache_gib),
in blocks of 128 tokens; `num_blocks = bytes // bytes_per_block` and the logged size is
`int(num_blocks / blocks_per_request * max_model_len)` (vllm/v1/core/kv_cache_utils.py), which
this module reproduces exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import MAX_GPU_UTILIZATION_PER_DEVICE, DeploymentConfig, EngineSpec, Platform
from planner.gpus import GIB, Gpu
from planner.model_shapes import ModelShape, load_shape

RUNTIME_ALLOWANCE_BYTES = GIB
GPU_BLOCK_SIZE = 16  # vLLM CacheConfig.DEFAULT_BLOCK_SIZE
CPU_BLOCK_SIZE = 128  # vLLM CpuPlatform default
DEFAULT_TYPICAL_LEN = 1024
DEFAULT_SPLIT_TOTAL = 0.90

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
_DTYPE_NAMES = {"half": "float16", "float": "float32", "fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class Allowance:
    runtime: int
    activations: int
    sampler: int

    @property
    def total(self) -> int:
        return self.runtime + self.activations + self.sampler


@dataclass(frozen=True)
class EnginePlan:
    """One engine's memory, per GPU it runs on (or for the CPU KV cache)."""

    name: str
    model: str
    platform: Platform
    shape: ModelShape
    dtype: str
    kv_dtype: str
    tensor_parallel: int
    devices: tuple[int, ...]
    utilization: float | None
    max_model_len: int
    max_num_seqs: int
    block_size: int
    budget_bytes: int  # GPU: util x total; CPU: kv_cache_gib
    weight_bytes: int  # per GPU
    allowance: Allowance
    kv_bytes: int  # per GPU, after weights and allowance (0 if they do not fit)
    kv_bytes_per_token: int  # per GPU
    num_blocks: int
    kv_tokens: int  # as vLLM logs it
    seqs_at_max_len: float
    seqs_at_typical: float
    typical_len: int
    warnings: tuple[str, ...] = ()
    blocks_override: int | None = None  # num_gpu_blocks_override: the cache no utilization changes


@dataclass(frozen=True)
class Split:
    """A suggested pair of gpu_memory_utilization values for two engines sharing a GPU."""

    label: str
    utilizations: dict[str, float]
    kv_tokens: dict[str, int]


@dataclass
class DeploymentPlan:
    platform: Platform
    gpu: Gpu | None
    engines: list[EnginePlan]
    warnings: list[str] = field(default_factory=list)
    splits: list[Split] = field(default_factory=list)


def plan_deployment(
    config: DeploymentConfig,
    gpu: Gpu | None,
    *,
    typical_len: int = DEFAULT_TYPICAL_LEN,
    split_total: float = DEFAULT_SPLIT_TOTAL,
    shape_of: Callable[[str], ModelShape] = load_shape,
) -> DeploymentPlan:
    """Plan every local engine of `config`; a GPU is required for platform gpu."""
    if config.platform == "gpu" and gpu is None:
        raise ValueError("platform gpu needs a GPU (--gpu NAME or --gpu-gib N)")
    engines = [
        plan_engine(m.name, m.engine, shape_of(m.engine.model), config.platform, gpu, typical_len=typical_len)
        for m in config.models
        if m.engine is not None
    ]
    plan = DeploymentPlan(config.platform, gpu if config.platform == "gpu" else None, engines)
    if config.platform == "gpu" and gpu is not None:
        paired: set[frozenset[str]] = set()  # TP engines share several GPUs: suggest once per pair
        for device, sharing in engines_by_device(engines).items():
            total = sum(e.utilization or 0 for e in sharing)
            if total > MAX_GPU_UTILIZATION_PER_DEVICE + 1e-9:
                names = ", ".join(e.name for e in sharing)
                plan.warnings.append(
                    f"GPU {device}: engines {names} ask for {total:.2f} of its memory, more than "
                    f"{MAX_GPU_UTILIZATION_PER_DEVICE} (the second one to start will fail)"
                )
            pair = frozenset(e.name for e in sharing)
            # An engine with num_gpu_blocks_override has its cache whatever its utilization: no split to suggest.
            fixed = any(e.blocks_override is not None for e in sharing)
            if len(sharing) == 2 and pair not in paired and not fixed:
                paired.add(pair)
                plan.splits.extend(suggest_splits(sharing[0], sharing[1], gpu, total=split_total))
    return plan


def engines_by_device(engines: list[EnginePlan]) -> dict[int, list[EnginePlan]]:
    by_device: dict[int, list[EnginePlan]] = defaultdict(list)
    for engine in engines:
        for device in engine.devices:
            by_device[device].append(engine)
    return dict(by_device)


def plan_engine(
    name: str,
    spec: EngineSpec,
    shape: ModelShape,
    platform: Platform,
    gpu: Gpu | None,
    *,
    typical_len: int = DEFAULT_TYPICAL_LEN,
) -> EnginePlan:
    warnings: list[str] = []
    dtype, note = resolve_dtype(spec.dtype, shape.config_dtype, platform, gpu)
    if note:
        warnings.append(note)
    kv_dtype = dtype if spec.kv_cache_dtype == "auto" else spec.kv_cache_dtype
    tp = spec.tensor_parallel_size
    block_size = spec.block_size or (CPU_BLOCK_SIZE if platform == "cpu" else GPU_BLOCK_SIZE)
    kv_per_token = shape.kv_bytes_per_token(DTYPE_BYTES[kv_dtype], tensor_parallel=tp)
    weight_bytes = math.ceil(shape.parameter_count() * DTYPE_BYTES[dtype] / tp)

    if platform == "cpu":
        devices: tuple[int, ...] = ()
        if spec.kv_cache_gib is None:
            warnings.append("no kv_cache_gib: vLLM sizes the CPU KV cache from free RAM, which cannot be predicted")
        budget = (spec.kv_cache_gib or 0) * GIB
        allowance = Allowance(0, 0, 0)
        kv_bytes = budget
    else:
        assert gpu is not None
        devices = tuple(spec.devices)
        budget = math.ceil(gpu.total_bytes * (spec.gpu_memory_utilization or 0))
        batched = spec.max_num_batched_tokens or _default_batched_tokens(gpu)
        allowance = gpu_allowance(shape, DTYPE_BYTES[dtype], batched_tokens=batched, max_num_seqs=spec.max_num_seqs)
        kv_bytes = max(0, budget - weight_bytes - allowance.total)
        if kv_bytes == 0:
            warnings.append(
                f"weights ({weight_bytes / GIB:.2f} GiB) and allowance ({allowance.total / GIB:.2f} GiB) "
                f"do not fit in {budget / GIB:.2f} GiB: raise gpu_memory_utilization"
            )

    num_blocks = kv_bytes // (kv_per_token * block_size)
    if spec.num_gpu_blocks_override is not None:
        # vLLM allocates exactly the override (kv_cache_utils.may_override_num_blocks), fit or not.
        if spec.num_gpu_blocks_override > num_blocks:
            warnings.append(
                f"num_gpu_blocks_override {spec.num_gpu_blocks_override:,} blocks is more than the "
                f"{num_blocks:,} the memory budget holds: vLLM allocates them anyway"
            )
        num_blocks = spec.num_gpu_blocks_override
        kv_bytes = num_blocks * kv_per_token * block_size
    kv_tokens = logged_kv_tokens(num_blocks, block_size, spec.max_model_len)
    if kv_tokens < spec.max_model_len:
        warnings.append(
            f"KV cache holds {kv_tokens:,} tokens, less than one sequence of max_model_len "
            f"{spec.max_model_len:,}: vLLM will refuse to start"
        )
    return EnginePlan(
        name=name,
        model=spec.model,
        platform=platform,
        shape=shape,
        dtype=dtype,
        kv_dtype=kv_dtype,
        tensor_parallel=tp,
        devices=devices,
        utilization=spec.gpu_memory_utilization,
        max_model_len=spec.max_model_len,
        max_num_seqs=spec.max_num_seqs,
        block_size=block_size,
        budget_bytes=budget,
        weight_bytes=weight_bytes,
        allowance=allowance,
        kv_bytes=kv_bytes,
        kv_bytes_per_token=kv_per_token,
        num_blocks=num_blocks,
        kv_tokens=kv_tokens,
        seqs_at_max_len=num_blocks / math.ceil(spec.max_model_len / block_size),
        seqs_at_typical=num_blocks / math.ceil(typical_len / block_size),
        typical_len=typical_len,
        warnings=tuple(warnings),
        blocks_override=spec.num_gpu_blocks_override,
    )


def logged_kv_tokens(num_blocks: int, block_size: int, max_model_len: int) -> int:
    """vLLM's `get_kv_cache_capacity`: concurrency at max_model_len times max_model_len, as a float."""
    max_concurrency = num_blocks / math.ceil(max_model_len / block_size)
    return int(max_concurrency * max_model_len)


def gpu_allowance(shape: ModelShape, dtype_bytes: int, *, batched_tokens: int, max_num_seqs: int) -> Allowance:
    q_kv_width = (shape.num_attention_heads + 2 * shape.num_kv_heads) * shape.head_dim
    per_token = 2 * shape.intermediate_size + 4 * shape.hidden_size + q_kv_width
    return Allowance(
        runtime=RUNTIME_ALLOWANCE_BYTES,
        activations=batched_tokens * per_token * dtype_bytes,
        sampler=max_num_seqs * shape.vocab_size * 8,
    )


def resolve_dtype(engine_dtype: str, config_dtype: str, platform: Platform, gpu: Gpu | None) -> tuple[str, str]:
    """The dtype vLLM will run (and a warning, or ""), following vllm/config/model.py."""
    bf16_ok = platform == "cpu" or gpu is None or gpu.supports_bf16
    wanted = _DTYPE_NAMES.get(engine_dtype, engine_dtype)
    if wanted == "auto":
        resolved = _DTYPE_NAMES.get(config_dtype, config_dtype)
        if resolved == "float32" and platform == "gpu":
            resolved = "bfloat16" if bf16_ok else "float16"  # vLLM downcasts fp32 checkpoints on GPU
        if resolved == "bfloat16" and not bf16_ok:
            assert gpu is not None
            return "float16", f"dtype auto: {gpu.name} has no bfloat16, vLLM falls back to float16"
        return resolved, ""
    if wanted == "bfloat16" and not bf16_ok:
        assert gpu is not None
        capability = ".".join(map(str, gpu.compute_capability or ()))
        return wanted, (
            f"dtype bfloat16 is unsupported on {gpu.name} (compute capability {capability}): "
            "vLLM refuses to start; use float16"
        )
    return wanted, ""


def suggest_splits(a: EnginePlan, b: EnginePlan, gpu: Gpu, *, total: float = DEFAULT_SPLIT_TOTAL) -> list[Split]:
    """Utilization pairs for two engines on one GPU, each pair adding up to at most `total`:

    * equal KV tokens for both;
    * KV in proportion to what each can use (max_num_seqs full sequences of max_model_len);
    * just enough for each to hold max_num_seqs full sequences (the rest of the GPU stays free).
    """
    memory = gpu.total_bytes
    fixed_a, fixed_b = a.weight_bytes + a.allowance.total, b.weight_bytes + b.allowance.total
    per_a, per_b = a.kv_bytes_per_token, b.kv_bytes_per_token
    # Equal tokens: (u_a M - f_a) / p_a == (u_b M - f_b) / p_b with u_a + u_b = total.
    u_equal = (total * memory * per_a - fixed_b * per_a + fixed_a * per_b) / (memory * (per_a + per_b))
    demand_a = a.max_num_seqs * a.max_model_len * per_a
    demand_b = b.max_num_seqs * b.max_model_len * per_b
    kv_total = total * memory - fixed_a - fixed_b
    u_demand = (fixed_a + kv_total * demand_a / (demand_a + demand_b)) / memory
    candidates = [("equal KV tokens", u_equal, total - u_equal), ("KV by demand", u_demand, total - u_demand)]
    full_a = _round_up((fixed_a + demand_a) / memory)
    full_b = _round_up((fixed_b + demand_b) / memory)
    if full_a + full_b <= total + 1e-9:
        candidates.append(("all max_num_seqs at max_model_len", full_a, full_b))
    splits: list[Split] = []
    for label, exact_a, exact_b in candidates:
        u_a, u_b = _round_down(exact_a), _round_down(exact_b)
        if u_a <= 0 or u_b <= 0 or any(s.utilizations == {a.name: u_a, b.name: u_b} for s in splits):
            continue
        splits.append(
            Split(
                label,
                {a.name: u_a, b.name: u_b},
                {a.name: _tokens_at(a, u_a, memory), b.name: _tokens_at(b, u_b, memory)},
            )
        )
    return splits


def _tokens_at(engine: EnginePlan, utilization: float, memory: int) -> int:
    kv = max(0, math.ceil(memory * utilization) - engine.weight_bytes - engine.allowance.total)
    num_blocks = kv // (engine.kv_bytes_per_token * engine.block_size)
    return logged_kv_tokens(num_blocks, engine.block_size, engine.max_model_len)


def _round_down(value: float) -> float:
    return math.floor(value * 1000 + 1e-9) / 1000


def _round_up(value: float) -> float:
    return math.ceil(value * 1000 - 1e-9) / 1000


def _default_batched_tokens(gpu: Gpu) -> int:
    # vLLM's OpenAI-server default (engine/arg_utils.py): 8192 on >= 70 GiB cards other than A100.
    return 8192 if gpu.total_bytes >= 70 * GIB and "A100" not in gpu.name else 2048

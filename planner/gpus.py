"""The GPUs the planner knows by name, and what it needs to know about each.

    gpu = find_gpu("H200")          # case-insensitive; "h200", "A100-80G", ...
    gpu = gpu_with_memory(48)       # any other card, by its memory in GiB
    gpu.total_bytes, gpu.supports_bf16

Memory is the total `nvidia-smi --query-gpu=memory.total` reports (in MiB), which is what
vLLM multiplies by gpu_memory_utilization. SKUs differ a little (PCIe vs SXM, ECC on or off);
pass `--gpu-gib` with your card's own number when it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    # None for a card given only by its memory: assumed recent (bf16 capable).
    compute_capability: tuple[int, int] | None = None

    @property
    def total_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def supports_bf16(self) -> bool:
        # vLLM refuses bfloat16 below compute capability 8.0 (Turing T4, Volta V100).
        return self.compute_capability is None or self.compute_capability >= (8, 0)


GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        Gpu("T4", 15_360, (7, 5)),
        Gpu("V100-16G", 16_384, (7, 0)),
        Gpu("V100-32G", 32_768, (7, 0)),
        Gpu("A10", 23_028, (8, 6)),
        Gpu("L4", 23_034, (8, 9)),
        Gpu("A100-40G", 40_960, (8, 0)),
        Gpu("A100-80G", 81_920, (8, 0)),
        Gpu("H100", 81_559, (9, 0)),
        Gpu("H200", 143_771, (9, 0)),
    )
}
_ALIASES = {"A10G": "A10", "V100": "V100-32G", "H100-80G": "H100", "H200-141G": "H200"}


def find_gpu(name: str) -> Gpu:
    """A catalogued GPU by name (case-insensitive); ValueError listing the known names."""
    wanted = name.strip().upper()
    wanted = _ALIASES.get(wanted, wanted)
    for key, gpu in GPUS.items():
        if key.upper() == wanted:
            return gpu
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)} (or give --gpu-gib N)")


def gpu_with_memory(gib: float) -> Gpu:
    if gib <= 0:
        raise ValueError(f"GPU memory must be positive, got {gib}")
    return Gpu(f"{gib:g} GiB GPU", round(gib * 1024))
